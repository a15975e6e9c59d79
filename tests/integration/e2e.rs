//! flakem end to end on the test bed: real nix, real sshd, the stand-in nixos-rebuild doing
//! the real work, hosts that reboot as each test chooses.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Outcome, fixtures};
use crate::testbed::{Reboot, TestBed};

const SECOND: Duration = Duration::from_secs(1);

/// A deadline for a whole flakem run on the bed; far above what any run needs.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// flakem in the bed's environment.
pub fn flakem(bed: &TestBed, tmp: &Path, args: &[&str]) -> Command {
    in_bed(bed, tmp, env!("CARGO_BIN_EXE_flakem").as_ref(), args)
}

/// `program` as flakem runs on the bed: the ng stand-in first on PATH, temporary files
/// (control sockets) under `tmp`, so leftovers can be found by path.
pub fn in_bed(bed: &TestBed, tmp: &Path, program: &Path, args: &[&str]) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![fixtures().join("bin-ng")];
    dirs.extend(std::env::split_paths(&path));
    let mut cmd = bed.command(program);
    cmd.args(args)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    cmd
}

/// flakem on a pseudo-terminal (util-linux `script`), as a person runs it: what the terminal
/// shows, and keys typed into it. Every read has a deadline.
pub struct OnTerminal {
    child: Child,
    keys: std::process::ChildStdin,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl OnTerminal {
    pub fn start(bed: &TestBed, tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> OnTerminal {
        let line = std::iter::once(env!("CARGO_BIN_EXE_flakem"))
            .chain(args.iter().copied())
            .map(crate::testbed::shell_quote)
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = in_bed(bed, tmp, Path::new("script"), &["-qec", &line, "/dev/null"]);
        script
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = script.spawn().unwrap();
        let keys = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (send, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if send.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTerminal {
            child,
            keys,
            output,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until the terminal shows `needle`; panics if it ends or takes too long first.
    pub fn until(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + RUN_DEADLINE;
        while !self.text().contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(e) => panic!("no `{needle}` ({e}) in:\n{}", self.text()),
            }
        }
    }

    pub fn type_keys(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.keys.write_all(keys).unwrap();
    }

    /// Its exit status and everything the terminal showed.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + RUN_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => {
                    self.child.kill().ok();
                    panic!("still running ({e}):\n{}", self.text());
                }
            }
        }
        let status = self.child.wait().unwrap();
        (status.code(), self.text())
    }
}

pub fn tmp_dir(bed: &TestBed) -> PathBuf {
    let tmp = bed.dir().join("t");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

pub fn run(bed: &TestBed, args: &[&str]) -> Outcome {
    let tmp = tmp_dir(bed);
    let out = crate::testbed::output_with_deadline(&mut flakem(bed, &tmp, args), RUN_DEADLINE);
    let outcome = Outcome::from(out);
    assert_no_leftovers(&tmp, &outcome.stderr);
    outcome
}

/// No process whose command line names `dir` (an ssh control master, a child) is left.
pub fn assert_no_leftovers(dir: &Path, output: &str) {
    let needle = dir.to_string_lossy().into_owned();
    let stragglers = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline
                    .contains(&needle)
                    .then_some(format!("{pid}: {cmdline}"))
            })
            .collect::<Vec<_>>()
    };
    // A master that was told to exit may take a moment to go.
    let deadline = std::time::Instant::now() + 5 * SECOND;
    loop {
        let left = stragglers();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:#?}\nafter:\n{output}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn deployed_generation(bed: &mut TestBed, name: &str, generation: &str) -> String {
    bed.set_generation(name, generation);
    bed.toplevel(name)
}

#[test]
fn build_builds_here() {
    let bed = TestBed::new();
    let out = run(&bed, &["build", "bigmachine"]);
    out.status(0);
    let result = std::fs::read_link(bed.flake_dir().join("result")).unwrap();
    assert_eq!(result.to_string_lossy(), bed.toplevel("bigmachine"));
}

#[test]
fn build_there_builds_on_the_host() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    let system = deployed_generation(&mut bed, "web1", "there");
    run(&bed, &["build-there", "web1"]).status(0);
    assert!(web1.store_has(&system));
    assert_eq!(
        web1.readlink("/nix/var/nix/profiles/system"),
        None,
        "nothing activated"
    );
}

#[test]
fn switch_push_and_pull_switch_and_boot() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    for (command, host) in [("switch-push", "web1"), ("switch-pull", "web2")] {
        let h = bed.host(host);
        let first = deployed_generation(&mut bed, host, "1");
        run(&bed, &[command, host]).status(0);
        assert_eq!(
            h.readlink("/nix/var/nix/profiles/system").as_deref(),
            Some(first.as_str())
        );
        assert_eq!(
            h.readlink("/run/current-system").as_deref(),
            Some(first.as_str())
        );
        assert!(
            h.store_has(&first),
            "the closure is in the host's own store"
        );

        let second = deployed_generation(&mut bed, host, "2");
        run(&bed, &[command, "boot", host]).status(0);
        assert_eq!(
            h.readlink("/nix/var/nix/profiles/system").as_deref(),
            Some(second.as_str())
        );
        assert_eq!(
            h.readlink("/run/current-system").as_deref(),
            Some(first.as_str()),
            "boot activates nothing now"
        );
        assert_eq!(
            h.activations().last().map(String::as_str),
            Some(format!("boot {second}").as_str())
        );
    }
}

/// Deploys generation 1 with a plain switch, then resets to generation 2.
fn reset(
    bed: &mut TestBed,
    command: &str,
    host: &str,
    extra: &[&str],
) -> (String, String, Outcome) {
    let first = deployed_generation(bed, host, "1");
    run(bed, &["switch-push", host]).status(0);
    let second = deployed_generation(bed, host, "2");
    let args = [&[command, "--gc-older-than", "0d"][..], extra, &[host]].concat();
    (first, second, run(bed, &args))
}

#[test]
fn resets_reboot_verify_and_collect() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    for (command, host) in [("switch-push-reset", "web1"), ("switch-pull-reset", "web2")] {
        let h = bed.host(host);
        h.set_reboot(Reboot::Down(Duration::from_millis(500)));
        let boot_before = h.boot_id();
        let (first, second, out) = reset(&mut bed, command, host, &[]);
        out.status(0);
        let boot_after = h.boot_id();
        assert_ne!(boot_before, boot_after);
        assert_eq!(
            h.readlink("/run/booted-system").as_deref(),
            Some(second.as_str())
        );
        assert_eq!(
            h.readlink("/run/current-system").as_deref(),
            Some(second.as_str())
        );
        assert_eq!(
            h.readlink("/nix/var/nix/profiles/system").as_deref(),
            Some(second.as_str())
        );
        assert!(
            !h.store_has(&first),
            "the previous generation was collected"
        );
        let report = out
            .messages()
            .into_iter()
            .last()
            .unwrap_or_default()
            .to_owned();
        assert!(
            report.contains(&format!(
                "rebooted from boot id {boot_before} to {boot_after}, running {second}"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(
            h.activations().last().map(String::as_str),
            Some(format!("boot {second}").as_str()),
            "the boot menu was pruned"
        );
    }
}

#[test]
fn a_failed_rebuild_never_reboots() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    let boot = h.boot_id();
    bed.set_generation("web1", "never-built");
    // No build slots and no substituters: nix cannot build the new generation.
    let out = run(&bed, &["switch-push-reset", "web1", "--max-jobs", "0"]);
    assert_ne!(out.status, Some(0));
    assert!(!out.stderr.contains("reboot"), "{}", out.stderr);
    assert_eq!(h.boot_id(), boot);
    assert!(h.activations().is_empty());
}

#[test]
fn a_host_that_never_returns_times_out_and_nothing_is_collected() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.set_reboot(Reboot::Never);
    let (first, _, out) = reset(&mut bed, "switch-push-reset", "web1", &["--timeout", "3s"]);
    out.status(3);
    assert!(
        out.messages()[0].contains("web1 did not answer as expected within 3s"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nix-collect-garbage"));
    h.start();
    assert!(h.store_has(&first), "nothing was collected");
    // The message names the generation that boots what the host ran before.
    let pick = "; to boot the system it ran before, pick generation ";
    let n = out.messages()[0]
        .split_once(pick)
        .and_then(|(_, n)| n.strip_suffix(" in its boot menu"))
        .unwrap_or_else(|| panic!("{}", out.stderr))
        .to_owned();
    let link = format!("/nix/var/nix/profiles/system-{n}-link");
    assert_eq!(h.readlink(&link).as_deref(), Some(first.as_str()));
}

#[test]
fn the_same_boot_id_is_not_a_reboot() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.set_reboot(Reboot::SameBootId(Duration::from_millis(300)));
    let (first, _, out) = reset(&mut bed, "switch-push-reset", "web1", &["--timeout", "4s"]);
    out.status(3);
    assert!(
        out.stderr.contains("still on the old boot id"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nix-collect-garbage"));
    assert!(h.store_has(&first));
}

#[test]
fn a_slow_shutdown_is_waited_out() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.set_reboot(Reboot::SlowShutdown {
        accept_for: Duration::from_millis(2500),
        down: Duration::from_millis(300),
    });
    let boot_before = h.boot_id();
    let (first, second, out) = reset(&mut bed, "switch-push-reset", "web1", &[]);
    out.status(0);
    assert!(
        out.stderr.contains("still on the old boot id"),
        "the old boot answered: {}",
        out.stderr
    );
    let boot_after = h.boot_id();
    assert_ne!(boot_before, boot_after);
    // Garbage is collected only after the old boot id was turned away.
    let turned_away = out.stderr.rfind("still on the old boot id").unwrap();
    let collected = out.stderr.find("nix-collect-garbage").unwrap();
    assert!(turned_away < collected);
    assert_eq!(
        h.readlink("/run/booted-system").as_deref(),
        Some(second.as_str())
    );
    assert!(!h.store_has(&first));
}

#[test]
fn a_host_that_refuses_our_key_came_back_wrong() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.set_reboot(Reboot::RefuseKey(Duration::from_millis(300)));
    let (first, _, out) = reset(&mut bed, "switch-push-reset", "web1", &[]);
    out.status(4);
    let message = out.messages()[0];
    assert!(
        message.contains("came back but refuses us") && message.contains("Permission denied"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nix-collect-garbage"));
    let _ = first;
}

/// A host back with a new host key (its new system did not keep /etc/ssh) came back wrong:
/// nothing is collected, and the message says what changed and how to go on.
#[test]
fn a_host_back_with_another_host_key_came_back_wrong() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    bed.host("web1")
        .set_reboot(Reboot::NewHostKey(Duration::from_millis(300)));
    let (_, _, out) = reset(&mut bed, "switch-push-reset", "web1", &[]);
    out.status(4);
    let message = out.messages()[0];
    assert!(
        message.contains("came back but refuses us")
            && message.contains("its host key changed: it sent SHA256:")
            && message.contains("ssh-keygen -R"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nix-collect-garbage"));
}

/// A flakem started in the background; killed and reaped if the test fails first.
pub struct Started {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
    seen: String,
}

impl Started {
    /// Starts flakem and returns once it printed a line containing `needle` on stderr.
    pub fn until(cmd: &mut Command, needle: &str) -> Started {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut started = Started {
            child,
            stderr,
            seen: String::new(),
        };
        let deadline = std::time::Instant::now() + RUN_DEADLINE;
        loop {
            let mut line = String::new();
            let read = started.stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "flakem ended first:\n{}", started.seen);
            started.seen.push_str(&line);
            if line.contains(needle) {
                return started;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{needle}` in:\n{}",
                started.seen
            );
        }
    }

    pub fn interrupt(&self) {
        // SAFETY: kill(2) on the child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Its exit status and everything it printed on stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let mut seen = std::mem::take(&mut self.seen);
        self.stderr.read_to_string(&mut seen).unwrap();
        (self.child.wait().unwrap().code(), seen)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn ctrl_c_during_the_wait_leaves_nothing_behind() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.set_reboot(Reboot::Never);
    deployed_generation(&mut bed, "web1", "1");
    let tmp = tmp_dir(&bed);
    let mut cmd = flakem(&bed, &tmp, &["switch-push-reset", "web1"]);
    let flakem = Started::until(&mut cmd, "does not accept connections yet");
    flakem.interrupt();
    let (status, seen) = flakem.finish();
    assert_eq!(status, Some(130), "{seen}");
    assert!(seen.contains("flakem: interrupted"));
    assert_no_leftovers(&tmp, &seen);
}

/// Ctrl-C typed on a terminal reaches flakem and nixos-rebuild at once (they share the
/// terminal's process group); flakem must not send nixos-rebuild a second one, which could
/// cut short its cleanup. The stand-in says each signal it gets.
#[test]
fn ctrl_c_on_a_terminal_reaches_nixos_rebuild_once() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    deployed_generation(&mut bed, "web1", "interrupted");
    let tmp = tmp_dir(&bed);
    let slow = [("FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS", "60")];
    let mut terminal = OnTerminal::start(&bed, &tmp, &["switch-push", "web1"], &slow);
    terminal.until("activation takes 60s");
    terminal.type_keys(b"\x03");
    let (status, seen) = terminal.finish();
    assert_eq!(status, Some(130), "{seen}");
    assert_eq!(seen.matches("interrupted by SIGINT").count(), 1, "{seen}");
    assert!(!seen.contains("while cleaning up"), "{seen}");
    assert!(seen.contains("flakem: interrupted"), "{seen}");
    assert_no_leftovers(&tmp, &seen);
}

/// ssh-wait stops at once, with exit 4 and the advice, on a host that answers with another
/// host key: waiting would not change it.
#[test]
fn ssh_wait_stops_at_once_on_a_host_that_refuses_us() {
    let bed = TestBed::with_hosts(&["web1"]);
    bed.record_wrong_host_key("web1");
    let out = run(&bed, &["ssh-wait", "--timeout", "30s", "web1", "true"]);
    out.status(4);
    let message = out.messages()[0];
    assert!(
        message.contains("web1 answers but refuses us")
            && message.contains("its host key changed: it sent SHA256:"),
        "{}",
        out.stderr
    );
}

#[test]
fn ssh_wait_for_a_host_that_comes_up_late_and_one_that_never_does() {
    let bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    h.stop();
    let tmp = tmp_dir(&bed);
    let mut cmd = flakem(&bed, &tmp, &["ssh-wait", "web1", "exit", "7"]);
    let flakem = Started::until(&mut cmd, "does not accept connections yet");
    h.start();
    let (status, seen) = flakem.finish();
    assert_eq!(status, Some(7), "the remote command's status: {seen}");

    h.stop();
    let out = run(&bed, &["ssh-wait", "--timeout", "2s", "web1"]);
    out.status(3);
    assert!(
        out.messages()[0].contains("web1 did not answer as expected within 2s"),
        "{}",
        out.stderr
    );
}
