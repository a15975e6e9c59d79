//! Ctrl-C and friends. Every child flakem starts is registered here, so a signal stops exactly
//! what was started, and flakem then exits with status 130.
//!
//! Without a terminal, each child leads its own process group and the signal goes to the whole
//! group, grandchildren included. With a terminal, children stay in flakem's group, so that
//! sudo and nix can still prompt; the terminal's Ctrl-C reaches them all by itself. A child
//! started detached (in a session of its own, without the terminal: one fed the sudo
//! password) leads its own group in either case, and hears every signal from flakem.

use std::io;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Each running child: its pid, and whether it was started detached from the terminal.
static CHILDREN: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());
static OWN_GROUPS: OnceLock<bool> = OnceLock::new();

/// How long a child may take to stop (and clean up) after the signal is passed on, before
/// it is killed; a second Ctrl-C kills at once.
const GRACE: Duration = Duration::from_secs(10);

pub fn install() -> io::Result<()> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for origin in signals.forever() {
            let again = INTERRUPTED.swap(true, Ordering::SeqCst);
            // One the terminal raised (Ctrl-C, hang-up) reached every child in flakem's group
            // already; a second one could cut short their own cleanup (nixos-rebuild stopping
            // its build on the host, closing its ssh masters). One sent by a process (`kill`)
            // or to children in groups of their own, they hear from flakem.
            let from_terminal = origin.cause == Cause::Kernel && !own_groups();
            if again {
                forward(libc::SIGKILL, true);
            } else {
                forward(origin.signal, !from_terminal);
            }
            std::thread::spawn(|| {
                std::thread::sleep(GRACE);
                forward(libc::SIGKILL, true);
            });
        }
    });
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn own_groups() -> bool {
    *OWN_GROUPS.get_or_init(|| std::fs::File::open("/dev/tty").is_err())
}

/// Sends `signal` to the detached children, and to the others too when `all`.
fn forward(signal: i32, all: bool) {
    let children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    for &(pid, detached) in children.iter() {
        if all || detached {
            send(pid, detached, signal);
        }
    }
}

/// Sends `signal` to a child: to its whole group when it has one of its own (it leads it, so
/// it gets it once; twice could end a child's own cleanup before it is done).
fn send(pid: u32, detached: bool, signal: i32) {
    let pid = pid as libc::pid_t;
    let target = if own_groups() || detached { -pid } else { pid };
    // SAFETY: kill(2) on a pid (or the group it leads) this process started and has not yet
    // reaped.
    unsafe {
        libc::kill(target, signal);
    }
}

/// A registered child; it leaves the registry when dropped.
pub struct Running {
    child: Child,
    detached: bool,
}

impl Running {
    /// Starts `cmd`; `detached`, in a session of its own, without the controlling terminal.
    pub fn spawn(cmd: &mut Command, detached: bool) -> io::Result<Running> {
        use std::os::unix::process::CommandExt;
        if detached {
            // SAFETY: setsid(2) is async-signal-safe; the child has just forked.
            unsafe {
                cmd.pre_exec(|| match libc::setsid() {
                    -1 => Err(io::Error::last_os_error()),
                    _ => Ok(()),
                });
            }
        } else if own_groups() {
            cmd.process_group(0);
        }
        let child = cmd.spawn()?;
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((child.id(), detached));
        // Started as Ctrl-C came: stopped at once. Only this one: the others already got the
        // signal and may be cleaning up.
        if interrupted() {
            send(child.id(), detached, libc::SIGTERM);
        }
        Ok(Running { child, detached })
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn wait(mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    pub fn wait_with_output(mut self) -> io::Result<Output> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let out = self.child.stdout.take();
        let err = self.child.stderr.take();
        std::thread::scope(|s| {
            let reader = s.spawn(|| read_all(err, &mut stderr));
            read_all(out, &mut stdout);
            reader.join().ok();
        });
        let status = self.child.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Running {
    /// Stops the child (its group, where it leads one) and reaps it: what it computes is no
    /// longer wanted.
    pub fn stop(mut self) {
        send(self.child.id(), self.detached, libc::SIGTERM);
        self.child.wait().ok();
    }
}

fn read_all<R: io::Read>(pipe: Option<R>, into: &mut Vec<u8>) {
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(into).ok();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id();
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&(p, _)| p != pid);
    }
}

/// The standard streams of a child whose output flakem reads.
pub fn capturing(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Ends every ssh control master still serving a socket in `dir`, flakem's private directory.
/// `ssh -O exit` closes the ones with a socket; after Ctrl-C a master can be caught half
/// started, before its socket has its final name, and would linger for `ControlPersist`.
/// Found through `/proc` (Linux); elsewhere this does nothing.
pub fn end_masters(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("ssh") && cmdline.contains(&needle) {
            // SAFETY: kill(2) on an ssh process serving flakem's own private socket directory.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
