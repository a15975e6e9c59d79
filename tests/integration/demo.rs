//! `sudo bash demo.sh`'s demo (examples/demo.rs), run as the script runs it: it deploys,
//! reboots and deploys a fleet, prints each command before flakem's own lines, and leaves no
//! process, mount or file behind, also when Ctrl-C ends it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long the whole demo may take here.
const DEADLINE: Duration = Duration::from_secs(180);

/// The demo's binary, built now so that a test run of one target still runs the current one.
fn demo_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or("cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--example", "demo"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(built.success(), "cargo build --example demo: {built}");
    // This test binary is <target>/debug/deps/integration-*; the example is beside deps.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo")
}

/// The demo, running, with everything it prints (stdout and stderr, in order) as lines.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: String,
}

impl Demo {
    fn start() -> Demo {
        let (reader, writer) = std::io::pipe().unwrap();
        let child = Command::new(demo_binary())
            .arg(env!("CARGO_BIN_EXE_flakem"))
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .spawn()
            .expect("the demo");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Reads until a line holds `needle`, or until the output ends when `needle` is `None`.
    fn read_until(&mut self, needle: Option<&str>, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if needle.is_some_and(|n| line.contains(n)) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) if needle.is_none() => return,
                Err(e) => {
                    self.child.kill().ok();
                    panic!("no {needle:?} ({e}) in:\n{}", self.seen);
                }
            }
        }
    }

    /// Its exit status and everything it printed.
    fn finish(mut self, deadline: Instant) -> (Option<i32>, String) {
        self.read_until(None, deadline);
        let status = self.child.wait().unwrap();
        (status.code(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The directories the run made: the bed's (from the demo's first line) and each of
/// flakem's private ones (from its ssh lines).
fn made(seen: &str) -> Vec<String> {
    let mut dirs: Vec<String> = seen
        .split(|c: char| c.is_whitespace() || c == '=' || c == '\'')
        .filter_map(|w| w.strip_prefix("/tmp/"))
        .map(|w| w.split('/').next().unwrap_or_default())
        .filter(|d| d.starts_with("flakem-"))
        .map(|d| format!("/tmp/{d}"))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Nothing the run made is left: no directory, no process naming one, no mount under one.
fn assert_nothing_left(seen: &str) {
    let dirs = made(seen);
    assert!(
        dirs.iter().any(|d| d.starts_with("/tmp/flakem-testbed-")),
        "the bed's directory is named: {seen}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for dir in &dirs {
        assert!(!Path::new(dir).exists(), "{dir} is left:\n{seen}");
        assert!(
            !mounts.contains(dir.as_str()),
            "a mount under {dir} is left"
        );
        crate::e2e::assert_no_leftovers(Path::new(dir), seen);
    }
}

#[test]
fn the_demo_deploys_reboots_and_deploys_a_fleet_then_leaves_nothing() {
    let deadline = Instant::now() + DEADLINE;
    let (status, seen) = Demo::start().finish(deadline);
    assert_eq!(status, Some(0), "{seen}");
    let commands: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("$ flakem "))
        .collect();
    assert_eq!(
        commands,
        [
            "$ flakem switch-push demo1",
            "$ flakem switch-push-reset demo1",
            "$ flakem switch-push @all",
            "$ flakem switch-push --rollback-timeout 5s demo2"
        ],
        "{seen}"
    );
    // flakem's own lines follow each command: what it runs, the proven reboot, the summary.
    for want in [
        "NIXOS_REBUILD_SSH_DEFAULT_OPTS='' nixos-rebuild switch --no-reexec --sudo --use-substitutes --target-host demo1 --flake .#demo1",
        "NIXOS_REBUILD_SSH_DEFAULT_OPTS='' nixos-rebuild boot --no-reexec --sudo --use-substitutes --target-host demo1 --flake .#demo1",
        "flakem: demo1 rebooted from boot id ",
        "flakem: demo2 was rolled back to /nix/store/",
        "NIXOS_REBUILD_SSH_DEFAULT_OPTS='' nixos-rebuild switch --no-reexec --sudo --use-substitutes --store-path /nix/store/",
    ] {
        assert!(seen.contains(want), "{want}:\n{seen}");
    }
    for host in ["demo1", "demo2"] {
        let row = seen.lines().find(|l| l.starts_with(&format!("{host}  ")));
        assert!(
            row.is_some_and(|r| r.contains(" ok ")),
            "{host}'s row:\n{seen}"
        );
    }
    assert!(
        seen.contains("demo: stopped demo1 and demo2 and removed"),
        "{seen}"
    );
    assert_nothing_left(&seen);
}

#[test]
fn ctrl_c_stops_the_demo_and_leaves_nothing() {
    let deadline = Instant::now() + DEADLINE;
    let mut demo = Demo::start();
    // Ctrl-C while the host reboots: flakem, a wait and the host's supervisor all running.
    demo.read_until(Some("does not accept connections yet"), deadline);
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(demo.child.id() as libc::pid_t, libc::SIGINT) };
    let (status, seen) = demo.finish(deadline);
    assert_eq!(status, Some(130), "{seen}");
    assert!(seen.contains("flakem: interrupted"), "{seen}");
    assert!(seen.contains("demo: interrupted"), "{seen}");
    assert!(!seen.contains("$ flakem switch-push @all"), "{seen}");
    assert_nothing_left(&seen);
}
