//! The demo of `sudo bash demo.sh`: flakem deploying to two throwaway hosts of the test bed
//! (sshd in namespaces on loopback addresses, the real nix and OpenSSH, the test stand-in
//! for `nixos-rebuild`), showing each command before it runs it: a deploy, a reset, a fleet,
//! and a deploy that locks the deploy user out and that the host rolls back by itself. Every
//! host stops and everything made is removed on any way out, Ctrl-C included.
//!
//! Usage: `demo FLAKEM` (the flakem binary to run).

// The same bed as the tests; the demo uses part of it.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use testbed::{Reboot, TestBed};

/// The longest one command of the demo may take before the demo gives up on it.
const DEADLINE: Duration = Duration::from_secs(120);
const HOSTS: [&str; 2] = ["demo1", "demo2"];

/// One step of the demo: the generations it deploys, the command that does it, and the
/// status flakem must end with.
struct Step {
    generations: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    status: i32,
}

const STEPS: [Step; 4] = [
    Step {
        generations: &[("demo1", "2")],
        args: &["switch-push", "demo1"],
        status: 0,
    },
    Step {
        generations: &[("demo1", "3")],
        args: &["switch-push-reset", "demo1"],
        status: 0,
    },
    Step {
        generations: &[("demo1", "4"), ("demo2", "2")],
        args: &["switch-push", "@all"],
        status: 0,
    },
    // A configuration that takes the deploy user's keys away (the test flake's `lockout`
    // generations): nobody can log in to confirm it, and the host puts back what it ran.
    Step {
        generations: &[("demo2", "lockout")],
        args: &["switch-push", "--rollback-timeout", "5s", "demo2"],
        status: 6,
    },
];

fn main() -> ExitCode {
    // flakem runs in the flake's directory: a path given from here must still lead to it.
    let Some(Ok(flakem)) = std::env::args_os().nth(1).map(std::fs::canonicalize) else {
        eprintln!("usage: demo FLAKEM (the path of a flakem binary)");
        return ExitCode::from(2);
    };
    let flakem = flakem.into_os_string();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(signal, stop.clone()).expect("a signal handler");
    }
    let mut bed = TestBed::new();
    bed.keep_only(&HOSTS);
    say(&format!(
        "two throwaway hosts, demo1 and demo2, with a flake of their own in {}",
        bed.flake_dir().display()
    ));
    for host in HOSTS {
        // Down long enough for flakem's wait to show.
        bed.add_host(host)
            .set_reboot(Reboot::Down(Duration::from_secs(1)));
    }
    let code = run(&mut bed, &flakem, &stop);
    let dir = bed.dir().to_owned();
    drop(bed);
    say(&format!(
        "stopped demo1 and demo2 and removed {}",
        dir.display()
    ));
    code
}

/// Runs the steps in order, stopping at the first that fails or at a signal.
fn run(bed: &mut TestBed, flakem: &OsString, stop: &AtomicBool) -> ExitCode {
    for step in &STEPS {
        if stop.load(Ordering::SeqCst) {
            say("interrupted");
            return ExitCode::from(130);
        }
        for (host, generation) in step.generations {
            bed.set_generation(host, generation);
        }
        println!("\n$ flakem {}", step.args.join(" "));
        let status = match flakem_in(bed, flakem, step.args) {
            Ok(child) => wait(child, stop),
            Err(e) => {
                say(&format!("cannot start {}: {e}", flakem.to_string_lossy()));
                return ExitCode::FAILURE;
            }
        };
        if stop.load(Ordering::SeqCst) {
            say("interrupted");
            return ExitCode::from(130);
        }
        match status {
            Some(status) if status.code() == Some(step.status) => {}
            Some(status) => {
                say(&format!(
                    "flakem {} ended with {status}",
                    step.args.join(" ")
                ));
                return ExitCode::FAILURE;
            }
            None => {
                say(&format!(
                    "flakem {} took over {DEADLINE:?}",
                    step.args.join(" ")
                ));
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// flakem on the bed, in a process group of its own: a Ctrl-C reaches it once, from here.
fn flakem_in(bed: &TestBed, flakem: &OsString, args: &[&str]) -> std::io::Result<Child> {
    let stand_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin-ng");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(stand_in).chain(std::env::split_paths(&path));
    let mut command = bed.command(flakem);
    command
        .args(args)
        .env("PATH", std::env::join_paths(dirs).expect("a PATH"))
        .process_group(0);
    command.spawn()
}

/// Waits for `child` until its deadline; a signal to the demo is passed on to it once.
fn wait(mut child: Child, stop: &AtomicBool) -> Option<ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    let mut passed_on = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if stop.load(Ordering::SeqCst) && !passed_on {
            passed_on = true;
            // SAFETY: kill(2) on the process group this demo started and has not reaped.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGINT) };
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn say(line: &str) {
    println!("demo: {line}");
}
