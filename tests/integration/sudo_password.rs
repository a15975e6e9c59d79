//! `--ask-sudo-password` on the test bed, with the real ssh and nix: hosts whose sudo wants
//! a password (the machine's real sudo, checking it through PAM against the host's own
//! `/etc/shadow`), one prompt on a pseudo-terminal for a whole fleet, a wrong password
//! failing every host's check before anything is built, and the password in no argument
//! list (spies here and on the hosts), trace, `--log-dir` file, child's environment or file.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::e2e::{OnTerminal, run};
use crate::ssh_deploy::{Secret, files_under, identity, key_file};
use crate::support::fixtures;
use crate::testbed::{Host, Sudo, TestBed};

/// With a space and a quote: a password split or spliced anywhere would show.
const PASSWORD: &str = "tr0ub4dor & 'horse";
const USER: &str = "erin";

/// Makes `erin` on `host` a login whose sudo wants [`PASSWORD`], trusted by its nix (to
/// receive what is built here).
fn password_login(host: &Host) {
    host.add_user(USER, Sudo::Password(PASSWORD));
    host.trust_in_nix(USER);
}

/// A bed of web1 and web2, each with [`password_login`], spied on.
fn password_fleet() -> (TestBed, [Host; 2], Spies) {
    let bed = TestBed::with_hosts(&["web1", "web2"]);
    let hosts = [bed.host("web1"), bed.host("web2")];
    hosts.iter().for_each(password_login);
    let spies = Spies::new(&bed, &[&hosts[0], &hosts[1]]);
    (bed, hosts, spies)
}

/// The spy wrappers (tests/fixtures/spy), here and on each host, and the environments of
/// the children flakem starts here.
struct Spies {
    dir: PathBuf,
    hosts: Vec<PathBuf>,
}

impl Spies {
    fn new(bed: &TestBed, hosts: &[&Host]) -> Spies {
        // nixos-rebuild too: its argument list and environment, as flakem starts it.
        let dir = wrappers(
            bed,
            "spy-here",
            &["ssh", "nix", "nix-store", "nixos-rebuild"],
        );
        let mut spies = Spies {
            dir,
            hosts: Vec::new(),
        };
        for host in hosts {
            let on_host = wrappers(bed, &format!("spy-{}", host.name()), &["sudo", "nix-env"]);
            // sudo runs as the login, who must be able to log it.
            let log = on_host.join("spy.log");
            std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
            host.put_first_on_path(&on_host);
            spies.hosts.push(on_host.join("spy.log"));
        }
        spies
    }

    /// What flakem runs with: the wrappers first on PATH (the ng stand-in behind them).
    fn env(&self) -> Vec<(&'static str, String)> {
        let system = std::env::var_os("PATH").unwrap_or_default();
        let path = [self.dir.clone(), fixtures().join("bin-ng")]
            .into_iter()
            .chain(std::env::split_paths(&system));
        let path = std::env::join_paths(path).unwrap();
        vec![
            ("PATH", path.to_string_lossy().into_owned()),
            ("FLAKEM_SPY_LOG", self.log().display().to_string()),
            ("FLAKEM_SPY_ENVIRON", self.environ().display().to_string()),
        ]
    }

    fn log(&self) -> PathBuf {
        self.dir.join("spy.log")
    }

    fn environ(&self) -> PathBuf {
        self.dir.join("environ")
    }

    fn here(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn on_hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect()
    }
}

/// A directory of spy wrappers named `names`, logging to its spy.log.
fn wrappers(bed: &TestBed, name: &str, names: &[&str]) -> PathBuf {
    let dir = bed.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("spy/spy"), dir.join("spy")).unwrap();
    for name in names {
        symlink("spy", dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("spy.log"), "").unwrap();
    dir
}

/// flakem on a terminal with the spies, given `typed` at its one prompt.
fn on_terminal(bed: &TestBed, spies: &Spies, args: &[&str], typed: &str) -> (Option<i32>, String) {
    let tmp = bed.dir().join("t");
    std::fs::create_dir_all(&tmp).unwrap();
    let env = spies.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut terminal = OnTerminal::start(bed, &tmp, args, &env);
    terminal.until("(asked once for every host): ");
    terminal.type_keys(format!("{typed}\r").as_bytes());
    let (status, seen) = terminal.finish();
    crate::e2e::assert_no_leftovers(&tmp, &seen);
    (status, seen)
}

/// The bed's host: sudo there wants the password, on stdin only, and checks it.
#[test]
fn a_password_host_takes_its_password_on_stdin_only() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    password_login(&web1);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = web1.ssh_as(USER, "sudo -n true");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a password is required"), "{out:?}");
    let out = web1.ssh_as(USER, "sudo true");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a terminal is required"), "{out:?}");
    let quoted = crate::testbed::shell_quote(PASSWORD);
    let given = |password: &str| {
        web1.ssh_as(
            USER,
            &format!("printf '%s\\n' {password} | sudo --stdin --prompt= id -u"),
        )
    };
    let out = given(&quoted);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    // What flakem's verdict reads when the password is wrong.
    let out = given("wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("sudo: 1 incorrect password attempt"),
        "{}",
        stderr(&out)
    );
}

/// A fleet of two such hosts: one prompt, both deploy (the checks, the guards and ng's
/// activation all take the password), and the password shows nowhere.
#[test]
fn a_fleet_of_password_hosts_asks_once_and_deploys() {
    let (bed, [web1, web2], spies) = password_fleet();
    let logs = bed.dir().join("logs");
    let logs_arg = logs.display().to_string();
    let args = [
        "switch-push",
        "--ask-sudo-password",
        "--log-dir",
        &logs_arg,
        "erin@web1,erin@web2",
    ];
    let (status, seen) = on_terminal(&bed, &spies, &args, PASSWORD);
    assert_eq!(status, Some(0), "{seen}");
    assert_eq!(seen.matches("sudo password for").count(), 1, "{seen}");
    for host in [&web1, &web2] {
        let system = bed.toplevel(host.name());
        assert_eq!(
            host.readlink("/run/current-system").as_deref(),
            Some(&*system)
        );
        assert!(
            seen.contains(&format!("erin@{}  ok", host.name())),
            "{seen}"
        );
    }
    // Each sudo on the hosts read it from stdin; ng was asked to read it.
    let on_hosts = spies.on_hosts();
    assert!(on_hosts.contains("sudo --stdin --prompt="), "{on_hosts}");
    assert!(
        spies.here().contains("--ask-sudo-password"),
        "{}",
        spies.here()
    );
    assert_nowhere(&bed, &spies, &seen, &logs);
}

/// The password in none of: the terminal (echo was off), the argument lists the spies saw
/// here and on the hosts, the environments of flakem's children, the `--log-dir` files, any
/// file of the bed (flakem's TMPDIR, the flake, the spies' logs).
#[track_caller]
fn assert_nowhere(bed: &TestBed, spies: &Spies, seen: &str, logs: &Path) {
    assert!(
        !seen.contains(PASSWORD),
        "the password on the terminal:\n{seen}"
    );
    let environ = std::fs::read_to_string(spies.environ()).unwrap();
    assert!(
        environ.contains("== nixos-rebuild"),
        "the spies saw no environment"
    );
    assert!(!spies.here().is_empty() && !spies.on_hosts().is_empty());
    let files = files_under(bed.dir());
    assert!(
        files.iter().any(|f| f.starts_with(logs)),
        "no --log-dir file"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password in {}",
            file.display()
        );
    }
}

/// A wrong password fails the check of both hosts, each named, with exit 5, before anything
/// is built or activated; without the option, the check says to use it.
#[test]
fn a_wrong_password_fails_every_check_before_any_build() {
    let (bed, [web1, web2], spies) = password_fleet();
    let args = ["switch-push", "--ask-sudo-password", "erin@web1,erin@web2"];
    let (status, seen) = on_terminal(&bed, &spies, &args, "not it");
    assert_eq!(status, Some(5), "{seen}");
    for host in ["web1", "web2"] {
        let said =
            format!("sudo on erin@{host} did not take the password given with --ask-sudo-password");
        assert!(seen.contains(&said), "{seen}");
    }
    let here = spies.here();
    assert!(!here.contains("nix-store --realise"), "{here}");
    assert!(!here.contains("nixos-rebuild switch"), "{here}");
    assert!(web1.activations().is_empty() && web2.activations().is_empty());

    // Ctrl-C at the prompt ends the run there (130), nothing contacted.
    std::fs::write(spies.log(), "").unwrap();
    let (status, seen) = on_terminal(&bed, &spies, &args, "\x03");
    assert_eq!(status, Some(130), "{seen}");
    assert!(seen.contains("flakem: interrupted"), "{seen}");
    // Only ssh's reading of its own configuration (`ssh -G`), which contacts nothing.
    let here = spies.here();
    let contacted = here
        .lines()
        .any(|l| l.starts_with("ssh ") && !l.starts_with("ssh -G "));
    assert!(!contacted, "{here}");

    let out = run(&bed, &["switch-push", "erin@web1"]);
    out.status(5);
    assert!(
        out.stderr
            .contains("sudo on erin@web1 wants a password (sudo: a password is required): pass --ask-sudo-password"),
        "{}",
        out.stderr
    );
}

/// One host, by nixos-rebuild itself and by a reset: what runs is what `--dry-run` says,
/// each fed command marked in both, and the password is nowhere.
#[test]
fn the_dry_run_lists_what_runs_with_a_password() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    password_login(&web1);
    let spies = Spies::new(&bed, &[&web1]);
    let logs = bed.dir().join("logs");
    let cases: &[&[&str]] = &[
        &["switch-push", "--ask-sudo-password", "erin@web1"],
        &["switch-pull-reset", "--ask-sudo-password", "erin@web1"],
    ];
    for (i, args) in cases.iter().enumerate() {
        crate::e2e::deployed_generation(&mut bed, "web1", &format!("pw{i}"));
        let dry = run(&bed, &[&["--dry-run"], *args].concat());
        dry.status(0);
        assert!(
            dry.stdout.contains("# <sudo password on stdin>"),
            "{}",
            dry.stdout
        );
        let logged = [&["--log-dir", logs.to_str().unwrap()], *args].concat();
        let (status, seen) = on_terminal(&bed, &spies, &logged, PASSWORD);
        assert_eq!(status, Some(0), "{args:?}:\n{seen}");
        let found = crate::plan_vs_trace::mismatches(&dry.stdout, &seen);
        assert!(
            found.is_empty(),
            "{args:?}:\n{}\n--- plan:\n{}--- trace:\n{seen}",
            found.join("\n"),
            dry.stdout
        );
        assert_nowhere(&bed, &spies, &seen, &logs);
    }
    assert!(web1.activations().iter().any(|a| a.contains("boot")));
}

/// `ssh-deploy` gives the password as the first line of the key's stdin: a login whose
/// sudo reads it, and one whose sudo needs none (the script reads the line itself), both
/// get exactly the key, and the password is in no argument list.
#[test]
fn ssh_deploy_takes_the_password_and_installs_exactly_the_key() {
    let (bed, [web1, web2], spies) = password_fleet();
    web2.add_user("frank", Sudo::NoPassword);
    let (admin, recipient) = identity(&bed, "admin");
    let admin = admin.to_string_lossy().into_owned();
    for (login, host) in [("erin@web1", &web1), ("frank@web2", &web2)] {
        let secret = Secret::new();
        secret.encrypt_with_age(&recipient, false, &key_file(&bed, host.name()));
        let args = [
            "ssh-deploy",
            "--ask-sudo-password",
            "--identity",
            &admin,
            login,
        ];
        let (status, seen) = on_terminal(&bed, &spies, &args, PASSWORD);
        assert_eq!(status, Some(0), "{login}: {seen}");
        let key = std::fs::read(host.path("/var/lib/sops-nix/key.txt")).unwrap_or_default();
        assert!(
            key == secret.plaintext,
            "{login}: the key, byte for byte: {seen}"
        );
        assert!(seen.contains("# <sudo password on stdin>"), "{seen}");
    }
    let logged = spies.here() + &spies.on_hosts();
    assert!(!logged.contains(PASSWORD), "{logged}");
}
