//! The test bed: NixOS-like hosts on this machine, for end-to-end tests of flakem with the
//! real nix and the real OpenSSH. See docs/TESTBED.md for why it is built this way.
//!
//! Each host is an sshd on its own loopback address (`127.0.N.M`, N per bed) in its own mount
//! and pid namespaces, with a private `/nix` (its own store and system profile), `/run`,
//! `/var/lib`, `/root`, `/home`, boot id, and copies of the account files. Its own `sudo`
//! (which keeps PATH), `reboot`, `poweroff`, `halt`, `shutdown`, `systemctl` and `systemd-run`
//! come first on its PATH, so nothing run there reaches this machine. `systemd-run` and
//! `systemctl` (tests/fixtures/host/units) emulate transient units strictly: a unit runs
//! detached in the host (the end of the ssh session that started it does not end it, a reboot
//! does), with `--unit`, `--collect`, `--quiet`, `--no-ask-password`, `-p RuntimeMaxSec=`,
//! `-p Type=simple|exec`; `systemctl is-active`, `stop`, `show -p`, `reset-failed`,
//! `is-system-running` and the power verbs. Anything else is an error, exit 1.
//!
//! The test flake (tests/fixtures/flake) has `nixosConfigurations.<name>` for bigmachine,
//! another-machine, web1, web2, db and spare, `darwinConfigurations.macbook`, and
//! `homeConfigurations` for `root@bigmachine`, `alice@bigmachine` and `alice`; each builds in
//! milliseconds. A toplevel's `bin/switch-to-configuration` logs to the host's
//! `/var/lib/flakem-test/activations` ([`Host::activations`]); `switch` and `test` point
//! `/run/current-system` at it, and write the authorized keys the generation declares (the
//! bed's client key, for root and every user of the host) into the files the host's sshd
//! reads. Generations named `lockout...` declare none: new logins are refused, open ssh
//! masters go on, and switching back to a good generation lets logins in again. Generations
//! named `failing...` switch (`switch`, `test`) and then exit 4, as when units fail. At each
//! new boot `/run/booted-system` and `/run/current-system` are the host's system profile (a
//! boot does not rewrite the keys).
//!
//! ```ignore
//! let mut bed = TestBed::with_hosts(&["web1"]);
//! let web1 = bed.host("web1");
//! bed.set_generation("web1", "2"); // web1's next toplevel
//! let expected = bed.toplevel("web1");
//! let mut flakem = bed.command(env!("CARGO_BIN_EXE_flakem"));
//! let output = output_with_deadline(flakem.args(["switch-push", "web1"]), deadline);
//! assert_eq!(web1.readlink("/run/current-system"), Some(expected));
//! web1.set_reboot(Reboot::SlowShutdown { accept_for: secs(2), down: millis(500) });
//! ```
//!
//! The API:
//! - [`TestBed::new`], [`TestBed::with_hosts`]: a bed in a fresh temporary directory; panics,
//!   naming what is missing, if this machine cannot run one (never skips).
//! - [`TestBed::add_host`], [`TestBed::host`]: boot a host (alias = flake name) / find one.
//! - [`TestBed::command`]: a `Command` for flakem, nix or ssh with the bed's environment
//!   ([`TestBed::env`]: `NIX_SSHOPTS="-F <ssh config>"`, a nix.conf, a HOME) in the flake
//!   copy ([`TestBed::flake_dir`], a plain directory).
//! - [`TestBed::set_generation`], [`TestBed::set_generation_of`]: change or add a
//!   configuration; [`TestBed::build`], [`TestBed::toplevel`]: its store path;
//!   [`TestBed::keep_only`]: a flake of just these configurations (the demo's).
//! - [`TestBed::forget_host_keys`]: empty known_hosts with `StrictHostKeyChecking yes`;
//!   [`TestBed::record_wrong_host_key`]: known_hosts has another key for a host.
//! - [`TestBed::add_mute_host`]: a configuration whose address takes connections and never
//!   answers; [`TestBed::add_alias`]: a configuration that is another host under a new name.
//! - [`Host`]: `ssh`, `run`, `boot_id`, `readlink`, `store_has`, `activations`, `path`,
//!   `set_reboot`, `stop`, `start`, `add_user`, `trust_in_nix`, `put_first_on_path` (a
//!   directory of wrappers first on the PATH of its ssh sessions; reboots it),
//!   `override_command` (one such script), `sshd_log`, `units` (the transient units loaded
//!   now), `journal` (what a unit wrote), `authorized_keys` (what sshd accepts for a user), ...
//! - [`Reboot`]: what a reboot does: `Down(d)`, `Never`, `SameBootId(d)`, `RefuseKey(d)`,
//!   `NewHostKey(d)`, `SlowShutdown { accept_for, down }`. The host's `reboot` asks its
//!   supervisor (a thread of the test) through a pipe; the supervisor kills the host's init,
//!   waits, boots it again.
//! - [`poll_until`], [`output_with_deadline`]: every wait has a deadline.
//!
//! Dropping the bed (also on panic) ends every host by pid and removes the directory.

mod client;
mod host;
mod process;
mod supervisor;

pub use host::{Host, Reboot, Sudo};
pub use process::{output_with_deadline, poll_until};

use client::Client;
use host::HostState;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use supervisor::{Control, Supervisor};
use tempfile::TempDir;

pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// What to install when this machine lacks something the bed needs.
pub const APT_LINE: &str =
    "apt-get install -y nix-bin openssh-server openssh-client sudo age iproute2 util-linux";

/// How long a local `nix build` of the test flake may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// A kind of configuration in the test flake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `nixosConfigurations.<name>.config.system.build.toplevel`
    Nixos,
    /// `darwinConfigurations.<name>.system`
    Darwin,
    /// `homeConfigurations."<user@host>".activationPackage`
    Home,
}

/// The start of the `trace:` line nix prints each time a process evaluates the test flake's
/// shared part with the cost model on (`TestBed::set_evaluation_cost`).
pub const COST_TRACE_SHARED: &str = "trace: flakem-test-cost: shared part evaluated";
/// The start of the `trace:` line nix prints each time a process evaluates one
/// configuration's own part; the configuration's name follows.
pub const COST_TRACE_OWN: &str = "trace: flakem-test-cost: own part of ";

/// A set of test hosts and the client side to reach them. See the module documentation.
pub struct TestBed {
    hosts: Vec<Host>,
    supervisors: Vec<Supervisor>,
    client: Arc<Client>,
    generations: BTreeMap<(Kind, String), String>,
    /// The test flake's evaluation cost model is on (`set_evaluation_cost`).
    evaluation_cost: bool,
    strict_host_keys: bool,
    /// ssh aliases besides the hosts' own (`add_alias`, `add_mute_host`).
    aliases: Vec<(String, Ipv4Addr)>,
    /// What listens at the mute hosts' addresses.
    mute: Vec<TcpListener>,
    net: NetLease,
    flake: PathBuf,
    dir: TempDir,
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // Each supervisor ends its host and joins its threads before the directory goes.
        self.supervisors.clear();
    }
}

impl TestBed {
    /// An empty bed in a fresh temporary directory, with its own loopback block. Panics if
    /// this machine cannot run hosts (not root, or a program missing), saying what to do.
    pub fn new() -> TestBed {
        let missing = missing_prerequisites(
            &std::env::var_os("PATH").unwrap_or_default(),
            // SAFETY: geteuid cannot fail.
            unsafe { libc::geteuid() },
        );
        assert!(
            missing.is_empty(),
            "the flakem test bed cannot run on this machine: {}. It needs root and: {APT_LINE}",
            missing.join(", ")
        );
        let dir = tempfile::Builder::new()
            .prefix("flakem-testbed-")
            .tempdir()
            .expect("create the test bed's directory");
        // Other users of a host (sshd reading their keys, their sessions) pass through it.
        host::set_mode(dir.path(), 0o755);
        let net = NetLease::take();
        let client = Arc::new(Client::create(&dir.path().join("client")));
        let flake = dir.path().join("flake");
        copy_dir(&Path::new(FIXTURES).join("flake"), &flake);
        let bed = TestBed {
            hosts: Vec::new(),
            supervisors: Vec::new(),
            client,
            generations: BTreeMap::new(),
            evaluation_cost: false,
            strict_host_keys: false,
            aliases: Vec::new(),
            mute: Vec::new(),
            net,
            flake,
            dir,
        };
        bed.write_overrides();
        bed.write_ssh_config();
        bed
    }

    /// A bed with these hosts already up.
    pub fn with_hosts(names: &[&str]) -> TestBed {
        let mut bed = TestBed::new();
        for name in names {
            bed.add_host(name);
        }
        bed
    }

    /// Boots a host named `name` (its ssh alias; use a configuration name of the test flake
    /// to deploy to it) and returns once its sshd accepts connections.
    pub fn add_host(&mut self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && !name.starts_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'),
            "host name {name:?}: use letters, digits, '-', '_' and '.'"
        );
        assert!(
            self.hosts.iter().all(|h| h.name() != name),
            "host {name} is already in this bed"
        );
        let index = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|i| *i < 255)
            .expect("at most 254 hosts in a bed");
        let address = Ipv4Addr::new(127, 0, self.net.octet, index);
        let dir = self.dir.path().join("hosts").join(name);
        let state = Arc::new(HostState::create(
            name,
            address,
            dir,
            Arc::clone(&self.client),
        ));
        let mut known_hosts = OpenOptions::new()
            .append(true)
            .open(&self.client.known_hosts)
            .expect("open known_hosts");
        std::io::Write::write_all(&mut known_hosts, state.known_hosts_line().as_bytes())
            .expect("write known_hosts");
        let supervisor = Supervisor::spawn(Arc::clone(&state));
        let host = Host::new(state, supervisor.control());
        // Registered before it boots, so that a failed start is cleaned up too.
        self.supervisors.push(supervisor);
        self.hosts.push(host.clone());
        self.write_ssh_config();
        let (reply, result) = mpsc::channel();
        self.supervisors
            .last()
            .expect("supervisor")
            .control()
            .send(Control::Start(reply))
            .expect("supervisor");
        match result.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => host,
            Ok(Err(error)) => panic!("{error}"),
            Err(e) => panic!("host {name} did not start: {e}"),
        }
    }

    /// A configuration `name` whose ssh alias leads to an address of the bed that takes TCP
    /// connections and never says a word, like a hung sshd or a firewall that swallows the
    /// greeting. The kernel completes each handshake into the listener's backlog; nothing
    /// reads or writes. It lasts as long as the bed.
    pub fn add_mute_host(&mut self, name: &str) {
        let address = Ipv4Addr::new(127, 0, self.net.octet, 250 - self.mute.len() as u8);
        let listener = TcpListener::bind((address, 22))
            .unwrap_or_else(|e| panic!("listen on {address}:22 for {name}: {e}"));
        self.mute.push(listener);
        self.add_configuration_at(name, address);
    }

    /// A configuration `name` whose ssh alias leads to the host `host`: one machine under
    /// two names.
    pub fn add_alias(&mut self, name: &str, host: &str) {
        let address = self.host(host).address();
        self.add_configuration_at(name, address);
    }

    fn add_configuration_at(&mut self, name: &str, address: Ipv4Addr) {
        self.aliases.push((name.to_owned(), address));
        self.set_generation(name, "1");
        self.write_ssh_config();
    }

    /// The host named `name`; panics if there is none.
    pub fn host(&self, name: &str) -> Host {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .unwrap_or_else(|| panic!("no host {name} in this bed"))
            .clone()
    }

    /// The bed's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bed's copy of the test flake: a plain directory (not a git repository), so that
    /// nix sees every file in it.
    pub fn flake_dir(&self) -> &Path {
        &self.flake
    }

    /// The ssh config with one `Host` alias per host (what `NIX_SSHOPTS` names).
    pub fn ssh_config(&self) -> &Path {
        &self.client.ssh_config
    }

    /// The environment for flakem, nix and ssh: `NIX_SSHOPTS="-F <ssh config>"`,
    /// `NIX_CONF_DIR` (flakes on, no substituters, no sandbox), `NIX_PATH` empty, and HOME
    /// and the XDG directories inside the bed.
    pub fn env(&self) -> Vec<(String, String)> {
        self.client.env()
    }

    /// `program` with the bed's environment, run in [`TestBed::flake_dir`] (so that the
    /// flake `.` is the test flake).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = self.client.command(program);
        command.current_dir(&self.flake);
        command
    }

    /// Sets the generation of `nixosConfigurations.<name>`, adding it if the flake has no
    /// such configuration: a new generation is a new store path.
    pub fn set_generation(&mut self, name: &str, generation: &str) {
        self.set_generation_of(Kind::Nixos, name, generation);
    }

    /// Sets the generation of a configuration of any kind (for `Kind::Home` the name is
    /// `user@host` or `user`).
    pub fn set_generation_of(&mut self, kind: Kind, name: &str, generation: &str) {
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
        };
        assert!(
            safe(name) && safe(generation),
            "{name:?} = {generation:?}: use letters, digits and -_.@+"
        );
        self.generations
            .insert((kind, name.to_string()), generation.to_string());
        self.write_overrides();
    }

    /// Switches the test flake's evaluation cost model on or off (off in a new bed). On,
    /// evaluating a NixOS configuration's toplevel costs what tests/fixtures/flake/cost.nix
    /// says: a shared part once per nix process (about 0.5 s of CPU and 160 MB here, as
    /// nixpkgs and the module system), and each configuration's own part (about 0.1 s and a
    /// few MB). Each part prints a `trace: flakem-test-cost: ...` line on nix's stderr when
    /// it runs (`COST_TRACE_SHARED`, `COST_TRACE_OWN`). The toplevels' store paths change
    /// with it (their derivations carry the model's results).
    pub fn set_evaluation_cost(&mut self, on: bool) {
        self.evaluation_cost = on;
        self.write_overrides();
    }

    /// Makes the bed's copy of the test flake one of its own: only these NixOS
    /// configurations, at generation 1, and no nix-darwin or Home Manager ones, so that
    /// `@all` means exactly them.
    pub fn keep_only(&mut self, nixos: &[&str]) {
        let names: String = nixos
            .iter()
            .map(|n| format!("    \"{n}\" = \"1\";\n"))
            .collect();
        let text = format!(
            "# Written by the flakem test bed: a flake of these configurations only.\n\
             {{\n  system = \"x86_64-linux\";\n  nixos = {{\n{names}  }};\n  darwin = {{ }};\n  \
             home = {{ }};\n}}\n"
        );
        fs::write(self.flake.join("generations.nix"), text).expect("write generations.nix");
    }

    /// Builds `attribute` of the test flake here and returns its output path.
    pub fn build(&self, attribute: &str) -> String {
        let installable = format!("{}#{attribute}", self.flake.display());
        let mut nix = self.command("nix");
        nix.args(["build", "--json", "--no-link", &installable]);
        let output = output_with_deadline(&mut nix, BUILD_TIMEOUT);
        assert!(
            output.status.success(),
            "nix build {installable} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json = String::from_utf8_lossy(&output.stdout);
        let start = json.find("\"out\":\"").expect("an out path in nix's JSON") + 7;
        let end = json[start..].find('"').expect("end of the out path") + start;
        json[start..end].to_string()
    }

    /// Builds the NixOS toplevel of `name` here and returns its store path.
    pub fn toplevel(&self, name: &str) -> String {
        self.build(&format!(
            "nixosConfigurations.{name}.config.system.build.toplevel"
        ))
    }

    /// Records another key for `name` in known_hosts, as the client sees a host reinstalled
    /// with new host keys (or someone in between): ssh refuses it whatever the settings.
    pub fn record_wrong_host_key(&self, name: &str) {
        let address = self.host(name).address().to_string();
        let other: Vec<&str> = self.client.public_key.split_whitespace().take(2).collect();
        let text = fs::read_to_string(&self.client.known_hosts).expect("read known_hosts");
        let lines: Vec<String> = text
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((who, _)) if who == address => format!("{address} {}", other.join(" ")),
                _ => line.to_owned(),
            })
            .collect();
        assert_ne!(
            lines.join("\n"),
            text.trim_end(),
            "{name} is in known_hosts"
        );
        fs::write(&self.client.known_hosts, lines.join("\n") + "\n").expect("write known_hosts");
    }

    /// Empties known_hosts and makes ssh refuse unknown host keys
    /// (`StrictHostKeyChecking yes`), for tests of a first connection.
    pub fn forget_host_keys(&mut self) {
        fs::write(&self.client.known_hosts, "").expect("empty known_hosts");
        self.strict_host_keys = true;
        self.write_ssh_config();
    }

    fn write_ssh_config(&self) {
        let hosts: Vec<(String, Ipv4Addr)> = self
            .hosts
            .iter()
            .map(|h| (h.name().to_string(), h.address()))
            .chain(self.aliases.iter().cloned())
            .collect();
        self.client
            .write_ssh_config(&hosts, self.net.octet, self.strict_host_keys);
    }

    fn write_overrides(&self) {
        let mut text = format!(
            "# Written by the flakem test bed: this machine's system, the key of the bed's\n\
             # client (what good NixOS generations authorize), and the generations its test set.\n\
             {{\n  system = \"{}-linux\";\n  authorizedKeys = [ \"{}\" ];\n",
            std::env::consts::ARCH,
            self.client.public_key.trim()
        );
        for (kind, attribute) in [
            (Kind::Nixos, "nixos"),
            (Kind::Darwin, "darwin"),
            (Kind::Home, "home"),
        ] {
            text.push_str(&format!("  {attribute} = {{\n"));
            for ((_, name), generation) in self.generations.iter().filter(|((k, _), _)| *k == kind)
            {
                text.push_str(&format!("    \"{name}\" = \"{generation}\";\n"));
            }
            text.push_str("  };\n");
        }
        if self.evaluation_cost {
            text.push_str("  # The evaluation cost model (cost.nix) is on.\n  cost = true;\n");
        }
        text.push_str("}\n");
        fs::write(self.flake.join("test-overrides.nix"), text).expect("write test-overrides.nix");
    }
}

/// What keeps this machine from running a bed, for an error message; empty when nothing.
pub fn missing_prerequisites(path: &OsStr, euid: u32) -> Vec<String> {
    let mut missing = Vec::new();
    if euid != 0 {
        missing.push("root (hosts need mount and pid namespaces)".to_string());
    }
    let on_path = |program: &str| std::env::split_paths(path).any(|d| d.join(program).is_file());
    for program in [
        "nix",
        "nix-store",
        "nix-daemon",
        "ssh",
        "ssh-keygen",
        "unshare",
        "nsenter",
        "sudo",
        "timeout",
    ] {
        if !on_path(program) {
            missing.push(format!("`{program}` on PATH"));
        }
    }
    for file in ["/usr/sbin/sshd", "/usr/bin/sudo"] {
        if !Path::new(file).is_file() {
            missing.push(file.to_string());
        }
    }
    missing
}

/// Quotes `word` for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A block of loopback addresses `127.0.N.*` held by this bed: an exclusive lock on a file
/// named after it, which other beds, in this process or another, see taken. The kernel drops
/// the lock when the process dies, however it dies.
struct NetLease {
    octet: u8,
    _lock: File,
}

impl NetLease {
    const FIRST: usize = 20;
    const COUNT: usize = 230;

    fn take() -> NetLease {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new("/tmp/flakem-testbed-nets");
        fs::create_dir_all(dir).expect("create /tmp/flakem-testbed-nets");
        let start = std::process::id() as usize * 31 + NEXT.fetch_add(1, Ordering::Relaxed);
        for i in 0..Self::COUNT {
            let octet = (Self::FIRST + (start + i) % Self::COUNT) as u8;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("127.0.{octet}")))
                .expect("open a lease file");
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                continue;
            }
            // Something left from elsewhere is listening there: not ours to use.
            let probe = SocketAddr::from((Ipv4Addr::new(127, 0, octet, 1), 22));
            if TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_ok() {
                continue;
            }
            return NetLease { octet, _lock: lock };
        }
        panic!("no free loopback block 127.0.N.* (N in 20..250): too many test beds at once?");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy a flake file");
        }
    }
}
