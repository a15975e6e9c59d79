//! The supervisor of one test host: a thread that boots the host, ends it, and boots it again
//! when the host asks for a reboot, the way the test chose (`Reboot`).
//!
//! A host is `unshare --mount --pid --fork ... start`: the process unshare forks (the host's
//! "init", pid 1 inside, sshd once `start` has exec'd it) holds the host's namespaces, so
//! killing it from outside ends every process of the host at once, like a power cut. It is
//! found from outside as the child of unshare; its own pid file would say 1.
//!
//! Requests reach the supervisor as lines on the host's `power-requests` pipe (written by the
//! host's `reboot`, `poweroff`, ...) and as `Control` messages from the test's `Host`.

use super::host::{HostState, Reboot};
use super::process::{output_with_deadline, wait_with_deadline};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a host may take from `unshare` to sshd accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long unshare may take to exit once its child is killed.
const HALT_TIMEOUT: Duration = Duration::from_secs(10);
/// The PATH the host's init starts with (its ssh sessions get theirs from sshd_config).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) enum Control {
    /// From the host's pipe: a power command run during start number `instance`.
    Power {
        power: Power,
        instance: u64,
    },
    /// Boot the host if it is down; the reply says whether it came up.
    Start(Sender<Result<(), String>>),
    /// End the host now; it stays down.
    Stop(Sender<()>),
    Quit,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Power {
    Reboot,
    Poweroff,
}

/// The supervisor's threads; dropping it ends the host and joins them.
pub(super) struct Supervisor {
    control: Sender<Control>,
    pipe: std::path::PathBuf,
    threads: Vec<JoinHandle<()>>,
}

impl Supervisor {
    pub(super) fn spawn(state: Arc<HostState>) -> Supervisor {
        let pipe = state.dir.join("power-requests");
        make_fifo(&pipe);
        // Opened here, before any thread, so that `drop` always finds a reader to wake.
        let requests = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pipe)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", pipe.display()));
        let (control, messages) = mpsc::channel();
        let listener = {
            let control = control.clone();
            thread::Builder::new()
                .name(format!("{}-power-requests", state.name))
                .spawn(move || listen(requests, control))
                .expect("spawn listener thread")
        };
        let supervisor = thread::Builder::new()
            .name(format!("{}-supervisor", state.name))
            .spawn(move || Machine::new(state).supervise(messages))
            .expect("spawn supervisor thread");
        Supervisor {
            control,
            pipe,
            threads: vec![listener, supervisor],
        }
    }

    pub(super) fn control(&self) -> Sender<Control> {
        self.control.clone()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Quit);
        // Wakes the listener, blocked reading the pipe (non-blocking: if it is gone, no reader
        // is left and there is nothing to wake).
        if let Ok(mut pipe) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.pipe)
        {
            let _ = pipe.write_all(b"quit\n");
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: c_path is a valid NUL-terminated string.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        panic!("mkfifo {}: {}", path.display(), io::Error::last_os_error());
    }
}

/// Forwards the lines of the host's pipe (`reboot 3`, `poweroff 3`) until `quit`.
fn listen(pipe: File, control: Sender<Control>) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let power = match words.next() {
            Some("reboot") => Power::Reboot,
            Some("poweroff") => Power::Poweroff,
            Some("quit") => break,
            _ => continue,
        };
        let instance = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        if control.send(Control::Power { power, instance }).is_err() {
            break;
        }
    }
}

/// One running start of the host.
struct Running {
    unshare: Child,
    /// The host's init as seen from outside: unshare's child.
    init: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Boot {
    /// A fresh boot: empty /run, new boot id, booted-system from the system profile.
    New,
    /// Back as it was: same /run, same boot id.
    Same,
}

/// What cut a reboot short.
enum Interrupt {
    Quit,
    Stop(Sender<()>),
    Start(Sender<Result<(), String>>),
}

struct Machine {
    state: Arc<HostState>,
    running: Option<Running>,
    /// Numbers the starts; power requests name the start they were made in.
    instance: u64,
}

impl Drop for Machine {
    /// Also when the supervisor thread panics: the host never outlives its supervisor.
    fn drop(&mut self) {
        self.halt("supervisor ended");
    }
}

impl Machine {
    fn new(state: Arc<HostState>) -> Machine {
        Machine {
            state,
            running: None,
            instance: 0,
        }
    }

    fn supervise(mut self, messages: Receiver<Control>) {
        while let Ok(message) = messages.recv() {
            match message {
                Control::Quit => break,
                Control::Start(reply) => {
                    let result = if self.running.is_some() {
                        Ok(())
                    } else {
                        self.boot(Boot::New)
                    };
                    let _ = reply.send(result);
                }
                Control::Stop(reply) => {
                    self.halt("stopped by the test");
                    let _ = reply.send(());
                }
                Control::Power { power, instance } => {
                    if self.running.is_none() || instance != self.instance {
                        self.log(&format!("ignored {power:?} from start {instance}"));
                        continue;
                    }
                    match power {
                        Power::Poweroff => self.halt("powered off"),
                        Power::Reboot => match self.reboot(&messages) {
                            Ok(()) => {}
                            Err(Interrupt::Quit) => break,
                            Err(Interrupt::Stop(reply)) => {
                                self.halt("stopped by the test");
                                let _ = reply.send(());
                            }
                            Err(Interrupt::Start(reply)) => {
                                let _ = reply.send(self.boot(Boot::New));
                            }
                        },
                    }
                }
            }
        }
        self.halt("test bed dropped");
    }

    fn reboot(&mut self, messages: &Receiver<Control>) -> Result<(), Interrupt> {
        let how = self.state.reboot.lock().expect("reboot lock").clone();
        self.log(&format!("reboot requested: {how:?}"));
        if let Reboot::SlowShutdown { accept_for, .. } = how {
            self.end_sessions();
            self.pause(accept_for, messages)?;
        }
        self.halt("rebooting");
        let down = match how {
            Reboot::Never => {
                self.log("stays down (Reboot::Never)");
                return Ok(());
            }
            Reboot::Down(down)
            | Reboot::SameBootId(down)
            | Reboot::RefuseKey(down)
            | Reboot::NewHostKey(down) => down,
            Reboot::SlowShutdown { down, .. } => down,
        };
        self.pause(down, messages)?;
        match how {
            Reboot::RefuseKey(_) => self.state.refuse_keys(),
            Reboot::NewHostKey(_) => self.state.new_host_key(),
            _ => {}
        }
        let boot = match how {
            Reboot::SameBootId(_) => Boot::Same,
            _ => Boot::New,
        };
        if let Err(error) = self.boot(boot) {
            self.log(&error);
            eprintln!("{error}");
        }
        Ok(())
    }

    /// Waits `duration` while the host is going down or is down; the test may stop or start
    /// it meanwhile, and power requests are stale.
    fn pause(&mut self, duration: Duration, messages: &Receiver<Control>) -> Result<(), Interrupt> {
        let until = Instant::now() + duration;
        loop {
            match messages.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) | Ok(Control::Quit) => {
                    return Err(Interrupt::Quit);
                }
                Ok(Control::Power { power, instance }) => {
                    self.log(&format!(
                        "ignored {power:?} from start {instance}: going down"
                    ));
                }
                Ok(Control::Stop(reply)) => return Err(Interrupt::Stop(reply)),
                Ok(Control::Start(reply)) => return Err(Interrupt::Start(reply)),
            }
        }
    }

    fn boot(&mut self, boot: Boot) -> Result<(), String> {
        self.instance += 1;
        let state = Arc::clone(&self.state);
        if boot == Boot::New {
            let boot_id = fs::read_to_string("/proc/sys/kernel/random/uuid")
                .map_err(|e| format!("cannot make a boot id: {e}"))?;
            fs::write(state.dir.join("boot_id"), boot_id).map_err(|e| e.to_string())?;
            // /run is a tmpfs on a real host.
            let run = state.dir.join("run");
            let _ = fs::remove_dir_all(&run);
            fs::create_dir(&run).map_err(|e| format!("{}: {e}", run.display()))?;
        }
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.dir.join("console.log"))
            .map_err(|e| e.to_string())?;
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--pid", "--fork", "--kill-child=SIGKILL"])
            .args(["--propagation", "private", "--mount-proc", "/bin/sh"])
            .arg(state.dir.join("start"))
            .arg(&state.dir)
            .arg(&state.name)
            .arg(if boot == Boot::New { "new" } else { "same" })
            .arg(self.instance.to_string())
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null())
            .stdout(console.try_clone().map_err(|e| e.to_string())?)
            .stderr(console);
        // SAFETY: prctl is async-signal-safe. The host dies with this (long-lived) thread,
        // so not even a killed test process leaves hosts behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut unshare = command
            .spawn()
            .map_err(|e| format!("host {}: cannot start unshare: {e}", state.name))?;
        let init = loop {
            if let Some(pid) = first_child(unshare.id()) {
                break pid;
            }
            if let Ok(Some(status)) = unshare.try_wait() {
                return Err(self.failure(&format!("unshare exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = unshare.kill();
                let _ = unshare.wait();
                return Err(self.failure("unshare did not fork within 10 s"));
            }
            thread::sleep(Duration::from_millis(2));
        };
        self.state.set_pids(vec![unshare.id(), init]);
        self.running = Some(Running { unshare, init });
        let address = SocketAddr::from((state.address, 22));
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(250)).is_ok() {
                break;
            }
            let running = self.running.as_mut().expect("running");
            if let Ok(Some(status)) = running.unshare.try_wait() {
                self.running = None;
                return Err(self.failure(&format!("the host exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                self.halt("did not start");
                return Err(self.failure(&format!("sshd did not accept on {address} within 10 s")));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let boot_id = fs::read_to_string(state.dir.join("boot_id")).unwrap_or_default();
        self.log(&format!(
            "start {} up in {} ms ({}), init pid {init}, boot id {}",
            self.instance,
            started.elapsed().as_millis(),
            if boot == Boot::New {
                "new boot"
            } else {
                "same boot"
            },
            boot_id.trim()
        ));
        Ok(())
    }

    /// Ends the running host, if any: kills its init (which ends every process in its pid
    /// namespace) and reaps unshare.
    fn halt(&mut self, reason: &str) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        self.state.set_pids(Vec::new());
        // Only ever the child of our unshare: never pid 1, never a recycled pid.
        if running.init > 1 && parent_of(running.init) == Some(running.unshare.id()) {
            // SAFETY: plain kill(2) of a process we started.
            unsafe { libc::kill(running.init as libc::pid_t, libc::SIGKILL) };
        }
        if wait_with_deadline(&mut running.unshare, HALT_TIMEOUT).is_none() {
            self.log("unshare still there 10 s after its child was killed; killed it");
        }
        self.log(&format!("down: {reason}"));
    }

    /// A slow shutdown's first step: every session ends, sshd's listener (pid 1) stays.
    fn end_sessions(&mut self) {
        let Some(running) = &self.running else { return };
        // kill -1 inside the host's pid namespace reaches all of the host but its pid 1.
        let mut kill = Command::new("nsenter");
        kill.args(["--target", &running.init.to_string(), "--pid", "--"])
            .args(["/bin/kill", "-KILL", "-1"]);
        output_with_deadline(&mut kill, Duration::from_secs(10));
        self.log("sessions ended; sshd still accepting");
    }

    fn failure(&self, what: &str) -> String {
        let state = &self.state;
        format!(
            "test host {} ({}): {what}\n--- console.log ---\n{}\n--- sshd.log ---\n{}",
            state.name,
            state.address,
            fs::read_to_string(state.dir.join("console.log")).unwrap_or_default(),
            fs::read_to_string(state.dir.join("sshd.log")).unwrap_or_default(),
        )
    }

    fn log(&self, line: &str) {
        self.state.log(line);
    }
}

/// The first child of a single-threaded process.
fn first_child(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}
