//! A test host: what it owns on disk, and the handle tests use to look at it and steer it.

use super::client::Client;
use super::process::output_with_deadline;
use super::supervisor::Control;
use super::{FIXTURES, shell_quote};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one of the helpers' ssh calls may take.
const SSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the host does when it is asked to reboot (`reboot`, `sudo reboot`, `systemctl
/// reboot`, `shutdown -r now`). Set with [`Host::set_reboot`]; read at each reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reboot {
    /// Down at once for this long, then back with a new boot id, `/run` emptied, and
    /// `/run/booted-system` and `/run/current-system` at the system profile.
    Down(Duration),
    /// Down for good (until [`Host::start`]).
    Never,
    /// Down for this long, then back as it was: same boot id, same `/run`.
    SameBootId(Duration),
    /// Like `Down`, but the client key is no longer authorized, for any user.
    RefuseKey(Duration),
    /// Like `Down`, but back with a new host key, as a system that did not keep `/etc/ssh`.
    NewHostKey(Duration),
    /// Sessions end at once, but sshd goes on accepting new connections (on the old boot
    /// id) for `accept_for`; then down for `down` and back as with `Down`.
    SlowShutdown {
        accept_for: Duration,
        down: Duration,
    },
}

impl Default for Reboot {
    fn default() -> Reboot {
        Reboot::Down(Duration::from_millis(300))
    }
}

/// What a user added with [`Host::add_user`] may do with sudo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sudo {
    /// Not in sudoers.
    No,
    /// `ALL` with a password, which no test knows: `sudo -n` fails.
    WithPassword,
    /// `NOPASSWD: ALL`.
    NoPassword,
    /// `ALL` with this password, set in the host's own `/etc/shadow`: the machine's real
    /// sudo checks it on the host (through PAM), so `sudo -n` fails ("a password is
    /// required"), `sudo` without a terminal fails ("a terminal is required"), and only
    /// `sudo --stdin` given this password on its stdin runs the command.
    Password(&'static str),
}

/// A handle on one test host; cheap to clone and to send to other threads. The host itself
/// lives as long as its [`TestBed`](super::TestBed).
#[derive(Clone)]
pub struct Host {
    state: Arc<HostState>,
    control: Sender<Control>,
}

impl Host {
    pub(super) fn new(state: Arc<HostState>, control: Sender<Control>) -> Host {
        Host { state, control }
    }

    /// The host's name: its `Host` alias in the bed's ssh config.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The loopback address its sshd listens on (port 22).
    pub fn address(&self) -> Ipv4Addr {
        self.state.address
    }

    /// The host's directory (its `/nix` is `dir/nix`, and so on; see [`Host::path`]).
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// Where a path private to the host (under `/nix`, `/run`, `/var/lib`, `/root`, `/home`
    /// or `/etc/nix`) is seen from outside, to read or prepare it without ssh.
    pub fn path(&self, inside: &str) -> PathBuf {
        for (prefix, outside) in [
            ("/nix", "nix"),
            ("/run", "run"),
            ("/var/lib", "var-lib"),
            ("/root", "root"),
            ("/home", "home"),
            ("/etc/nix", "etc/nix"),
        ] {
            if let Some(rest) = inside.strip_prefix(prefix)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return self
                    .state
                    .dir
                    .join(outside)
                    .join(rest.trim_start_matches('/'));
            }
        }
        panic!("{inside} is not private to a test host; it is this machine's own");
    }

    /// `ssh HOST COMMAND` as root through the bed's ssh config, in batch mode, without
    /// connection sharing; panics only if it runs past a minute.
    pub fn ssh(&self, command: &str) -> Output {
        self.ssh_to(&self.state.name, command)
    }

    /// Like [`Host::ssh`], logged in as `user`.
    pub fn ssh_as(&self, user: &str, command: &str) -> Output {
        self.ssh_to(&format!("{user}@{}", self.state.name), command)
    }

    /// Runs `command` on the host as root and returns its stdout, trimmed; panics with the
    /// details when it fails.
    pub fn run(&self, command: &str) -> String {
        let output = self.ssh(command);
        if !output.status.success() {
            panic!("{}", self.describe_failure(command, &output));
        }
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The host's boot id; panics if the host cannot be reached.
    pub fn boot_id(&self) -> String {
        self.run("cat /proc/sys/kernel/random/boot_id")
    }

    /// The host's boot id, or `None` when ssh fails (host down, key refused, ...).
    pub fn try_boot_id(&self) -> Option<String> {
        let output = self.ssh("cat /proc/sys/kernel/random/boot_id");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// `readlink -e PATH` on the host: where a link such as `/run/current-system` or
    /// `/nix/var/nix/profiles/system` finally leads, or `None` if that does not exist.
    pub fn readlink(&self, path: &str) -> Option<String> {
        let command = format!("readlink -e -- {}", shell_quote(path));
        let output = self.ssh(&command);
        match output.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&output.stdout).trim().to_string()),
            Some(1) => None,
            _ => panic!("{}", self.describe_failure(&command, &output)),
        }
    }

    /// Whether `store_path` is a valid path in the host's own Nix store.
    pub fn store_has(&self, store_path: &str) -> bool {
        let command = format!("nix-store --check-validity {}", shell_quote(store_path));
        let output = self.ssh(&command);
        match output.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("{}", self.describe_failure(&command, &output)),
        }
    }

    /// Lines of the host's activation log: `ACTION STORE-PATH` per `switch-to-configuration`
    /// run (kept across reboots, in `/var/lib/flakem-test/activations`).
    pub fn activations(&self) -> Vec<String> {
        let log = self.path("/var/lib/flakem-test/activations");
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The transient units loaded on the host now (started by its `systemd-run`, running or
    /// failed and not yet collected), as `NAME STATE` (`web-guard.service active`), sorted.
    /// Read from outside, in the host's `/run/flakem-test-units`; a unit whose process is
    /// gone without its supervisor noticing (never in normal use) would still be listed.
    pub fn units(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.path("/run/flakem-test-units")) else {
            return Vec::new();
        };
        let mut units: Vec<String> = entries
            .flatten()
            .map(|entry| {
                let state = fs::read_to_string(entry.path().join("state"))
                    .unwrap_or_else(|_| "activating".into());
                format!("{} {}", entry.file_name().to_string_lossy(), state.trim())
            })
            .collect();
        units.sort();
        units
    }

    /// What a transient unit (`NAME.service`) wrote on stdout and stderr since the host
    /// booted, and a last line on how its main process ended; empty if it never ran.
    pub fn journal(&self, unit: &str) -> String {
        fs::read_to_string(self.path(&format!("/run/flakem-test-journal/{unit}")))
            .unwrap_or_default()
    }

    /// The public keys sshd accepts for `user` now (its `AuthorizedKeysFile`): what the bed
    /// wrote, or what the last NixOS activation declared.
    pub fn authorized_keys(&self, user: &str) -> String {
        fs::read_to_string(self.state.dir.join("keys").join(user)).unwrap_or_default()
    }

    /// Gives the host this machine id (written in place: the host sees the file through a
    /// bind mount), e.g. this machine's own, to test that flakem never reboots it.
    pub fn set_machine_id(&self, id: &str) {
        fs::write(self.state.dir.join("etc/machine-id"), format!("{id}\n"))
            .expect("write machine-id");
    }

    /// Chooses what the next reboots do.
    pub fn set_reboot(&self, reboot: Reboot) {
        *self.state.reboot.lock().expect("reboot lock") = reboot;
    }

    /// Whether sshd accepts TCP connections right now.
    pub fn is_accepting(&self) -> bool {
        let address = SocketAddr::from((self.state.address, 22));
        TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    }

    /// Ends the host now (like pulling the plug); it stays down until [`Host::start`].
    pub fn stop(&self) {
        let (reply, done) = mpsc::channel();
        self.control.send(Control::Stop(reply)).expect("supervisor");
        done.recv_timeout(Duration::from_secs(30))
            .expect("host did not stop within 30 s");
    }

    /// Boots the host if it is down (a new boot, as after a reboot) and returns once sshd
    /// accepts connections; panics with sshd's log if it does not within 10 s.
    pub fn start(&self) {
        let (reply, result) = mpsc::channel();
        self.control
            .send(Control::Start(reply))
            .expect("supervisor");
        match result.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{error}"),
            Err(e) => panic!("host {} did not start: {e}", self.state.name),
        }
    }

    /// Adds a login `user` that exists only on this host (its own `/etc/passwd`, `/home`),
    /// authorized for the bed's client key, with the given sudo rights.
    pub fn add_user(&self, user: &str, sudo: Sudo) {
        self.state.add_user(user, sudo);
    }

    /// Makes `user` a trusted user of the host's Nix (it can then receive unsigned paths
    /// through `nix copy`), by adding it to the group named in `trusted-users`.
    pub fn trust_in_nix(&self, user: &str) {
        let _guard = self.state.users.lock().expect("users lock");
        let group = self.state.dir.join("etc/group");
        let text = fs::read_to_string(&group).expect("host's /etc/group");
        let edited: String = text
            .lines()
            .map(|line| match line.strip_prefix("flakem-trusted:") {
                Some(rest) if rest.ends_with(':') => format!("{line}{user}\n"),
                Some(_) => format!("{line},{user}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        // In place: the host sees this very file through a bind mount.
        fs::write(&group, edited).expect("write host's /etc/group");
    }

    /// Makes `name` on the host a `/bin/sh` script with `body`, first on the PATH of its ssh
    /// sessions: a host whose own `name` is missing or older. Reboots it, as
    /// [`Host::put_first_on_path`] does.
    pub fn override_command(&self, name: &str, body: &str) {
        let dir = self.state.dir.join("overrides");
        fs::create_dir_all(&dir).expect("create the host's overrides");
        let script = dir.join(name);
        fs::write(&script, format!("#!/bin/sh\n{body}")).expect("write the override");
        set_mode(&script, 0o755);
        self.put_first_on_path(&dir);
    }

    /// Puts `dir` (seen the same from inside: not one of the host's private paths) first on
    /// the PATH of the host's ssh sessions, before its own `bin`, e.g. for wrappers that log
    /// what runs there. sshd reads its PATH at boot, so the host reboots (a new boot id, `/run`
    /// emptied) before this returns.
    pub fn put_first_on_path(&self, dir: &Path) {
        let config = self.state.dir.join("sshd_config");
        let text = fs::read_to_string(&config).expect("host's sshd_config");
        let edited = text.replacen(
            "SetEnv PATH=",
            &format!("SetEnv PATH={}:", dir.display()),
            1,
        );
        assert_ne!(text, edited, "no SetEnv PATH in {}", config.display());
        fs::write(&config, edited).expect("write host's sshd_config");
        self.stop();
        self.start();
    }

    /// sshd's log (`sshd -E`).
    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.state.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The supervisor's log: each start, reboot request and halt, with times.
    pub fn supervisor_log(&self) -> String {
        fs::read_to_string(self.state.dir.join("supervisor.log")).unwrap_or_default()
    }

    /// The pids of the running host as seen from outside: unshare and the host's init.
    /// Empty while it is down. For checks that the bed cleans up after itself.
    pub fn pids(&self) -> Vec<u32> {
        self.state.pids.lock().expect("pids lock").clone()
    }

    fn ssh_to(&self, destination: &str, command: &str) -> Output {
        let mut ssh = self.state.client.command("ssh");
        ssh.args(["-F", &self.state.client.ssh_config.to_string_lossy()])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
            .args(["-o", "ControlPath=none", "-o", "ServerAliveInterval=5"])
            .args([destination, command]);
        output_with_deadline(&mut ssh, SSH_TIMEOUT)
    }

    fn describe_failure(&self, command: &str, output: &Output) -> String {
        format!(
            "on test host {}: `{command}` failed with {}\nstdout: {}\nstderr: {}\n\
             --- supervisor.log ---\n{}",
            self.state.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.supervisor_log()
        )
    }
}

/// What a host owns, shared by its handles and its supervisor.
pub(super) struct HostState {
    pub(super) name: String,
    pub(super) address: Ipv4Addr,
    pub(super) dir: PathBuf,
    pub(super) reboot: Mutex<Reboot>,
    pub(super) client: Arc<Client>,
    pids: Mutex<Vec<u32>>,
    users: Mutex<()>,
    created: Instant,
}

impl HostState {
    /// Lays out the host's directory: private `/nix`, `/run`, `/var/lib`, `/root`, `/home`,
    /// copies of the account files, its nix.conf, its own `sudo` and power commands, a host
    /// key, and the client key authorized for root.
    pub(super) fn create(
        name: &str,
        address: Ipv4Addr,
        dir: PathBuf,
        client: Arc<Client>,
    ) -> HostState {
        for sub in [
            "nix", "run", "var-lib", "root", "home", "etc/nix", "bin", "keys",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("create host directory");
        }
        for sub in [
            "", "nix", "run", "var-lib", "home", "etc", "etc/nix", "bin", "keys",
        ] {
            set_mode(&dir.join(sub), 0o755);
        }
        set_mode(&dir.join("root"), 0o700);
        for file in ["passwd", "group", "shadow", "sudoers"] {
            let from = Path::new("/etc").join(file);
            fs::copy(&from, dir.join("etc").join(file))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        let trusted_gid = free_id(&dir, 2900);
        append(
            &dir.join("etc/group"),
            &format!("flakem-trusted:x:{trusted_gid}:\n"),
        );
        // Builds run as root, inside the host: with build users (`nixbld*`, whose accounts
        // are this machine's too), a build started here, on this machine, first kills every
        // process of its build user (nix's killUser), a host's builder included.
        fs::write(
            dir.join("etc/nix/nix.conf"),
            "experimental-features = nix-command flakes\n\
             substituters =\n\
             sandbox = false\n\
             build-users-group =\n\
             trusted-users = root @flakem-trusted\n\
             flake-registry = /etc/nix/registry.json\n",
        )
        .expect("write host nix.conf");
        fs::write(
            dir.join("etc/nix/registry.json"),
            "{\"flakes\":[],\"version\":2}\n",
        )
        .expect("write host registry");

        let scripts = Path::new(FIXTURES).join("host");
        install(&scripts.join("start"), &dir.join("start"));
        install(&scripts.join("sudo"), &dir.join("bin/sudo"));
        for power in ["reboot", "poweroff", "halt", "shutdown"] {
            install(&scripts.join("power"), &dir.join("bin").join(power));
        }
        install(&scripts.join("units"), &dir.join("units"));
        for units in ["systemctl", "systemd-run"] {
            install(&scripts.join("units"), &dir.join("bin").join(units));
        }

        generate_host_key(&dir, name);
        write_public(&dir.join("keys/root"), &client.public_key);

        let d = dir.display();
        fs::write(
            dir.join("sshd_config"),
            format!(
                "# sshd of flakem test host {name}\n\
                 ListenAddress {address}:22\n\
                 HostKey {d}/ssh_host_ed25519_key\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/keys/%u\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 MaxStartups 100:30:200\n\
                 MaxSessions 100\n\
                 Subsystem sftp internal-sftp\n\
                 SetEnv PATH={d}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
                 NIX_CONF_DIR=/etc/nix\n"
            ),
        )
        .expect("write sshd_config");
        fs::write(dir.join("boot_id"), "").expect("write boot_id");
        // Its own machine id, as a real host has: flakem refuses to reboot its own machine.
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random uuid");
        fs::write(
            dir.join("etc/machine-id"),
            format!("{}\n", uuid.trim().replace('-', "")),
        )
        .expect("write machine-id");

        HostState {
            name: name.to_string(),
            address,
            dir,
            reboot: Mutex::new(Reboot::default()),
            client,
            pids: Mutex::new(Vec::new()),
            users: Mutex::new(()),
            created: Instant::now(),
        }
    }

    /// The line the client's known_hosts needs for this host.
    pub(super) fn known_hosts_line(&self) -> String {
        let public =
            fs::read_to_string(self.dir.join("ssh_host_ed25519_key.pub")).expect("host public key");
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("{} {}\n", self.address, key.join(" "))
    }

    /// Replaces the host's key with a new one (sshd reads it when it starts).
    pub(super) fn new_host_key(&self) {
        for file in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
            fs::remove_file(self.dir.join(file)).expect("remove the host key");
        }
        generate_host_key(&self.dir, &self.name);
    }

    /// Empties every authorized_keys file of the host.
    pub(super) fn refuse_keys(&self) {
        let entries = fs::read_dir(self.dir.join("keys")).expect("host keys directory");
        for entry in entries.flatten() {
            fs::write(entry.path(), "").expect("empty authorized keys");
        }
    }

    pub(super) fn set_pids(&self, pids: Vec<u32>) {
        *self.pids.lock().expect("pids lock") = pids;
    }

    pub(super) fn log(&self, line: &str) {
        let elapsed = self.created.elapsed().as_secs_f64();
        append(
            &self.dir.join("supervisor.log"),
            &format!("[{elapsed:8.3}s] {line}\n"),
        );
    }

    fn add_user(&self, user: &str, sudo: Sudo) {
        assert!(
            !user.is_empty()
                && user
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !user.starts_with('-'),
            "user name {user:?}: use lowercase letters, digits and dashes"
        );
        let _guard = self.users.lock().expect("users lock");
        let id = free_id(&self.dir, 2000);
        let etc = self.dir.join("etc");
        // Appended in place: the host sees these very files through bind mounts.
        append(
            &etc.join("passwd"),
            &format!("{user}:x:{id}:{id}:flakem test user:/home/{user}:/bin/bash\n"),
        );
        append(&etc.join("group"), &format!("{user}:x:{id}:\n"));
        let hash = match sudo {
            Sudo::Password(password) => crypt(password),
            _ => "*".to_owned(),
        };
        append(
            &etc.join("shadow"),
            &format!("{user}:{hash}:19000:0:99999:7:::\n"),
        );
        match sudo {
            Sudo::No => {}
            Sudo::WithPassword | Sudo::Password(_) => {
                append(&etc.join("sudoers"), &format!("{user} ALL=(ALL:ALL) ALL\n"))
            }
            Sudo::NoPassword => append(
                &etc.join("sudoers"),
                &format!("{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
            ),
        }
        let home = self.dir.join("home").join(user);
        fs::create_dir_all(&home).expect("create home");
        std::os::unix::fs::chown(&home, Some(id), Some(id)).expect("chown home");
        write_public(&self.dir.join("keys").join(user), &self.client.public_key);
    }
}

/// The SHA-512 crypt hash of `password`, as `/etc/shadow` holds it (`openssl passwd -6`,
/// the password on its stdin).
fn crypt(password: &str) -> String {
    use std::io::Write;
    let mut openssl = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl, to hash a test user's password");
    let mut stdin = openssl.stdin.take().expect("openssl's stdin");
    writeln!(stdin, "{password}").expect("write to openssl");
    drop(stdin);
    let out = openssl.wait_with_output().expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8(out.stdout)
        .expect("a hash")
        .trim()
        .to_owned()
}

/// A uid and gid from `from` up that neither the host's passwd nor its group uses.
fn free_id(dir: &Path, from: u32) -> u32 {
    let mut used = std::collections::BTreeSet::new();
    for file in ["etc/passwd", "etc/group"] {
        for line in fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
        {
            if let Some(id) = line.split(':').nth(2).and_then(|id| id.parse::<u32>().ok()) {
                used.insert(id);
            }
        }
    }
    (from..).find(|id| !used.contains(id)).expect("a free id")
}

fn install(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    set_mode(to, 0o755);
}

fn write_public(path: &Path, contents: &str) {
    fs::write(path, contents).expect("write authorized keys");
    set_mode(path, 0o644);
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The host's ed25519 key, in its directory.
fn generate_host_key(dir: &Path, name: &str) {
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("flakem-test-host-{name}"))
        .arg("-f")
        .arg(dir.join("ssh_host_ed25519_key"));
    let output = output_with_deadline(&mut keygen, Duration::from_secs(30));
    assert!(output.status.success(), "ssh-keygen: {output:?}");
}
