//! The executor: prints each step's processes (`+ ...` on stderr) and runs them, stopping at
//! the first failure with that step's status. It decides nothing the plan did not say.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::options::Timeout;
use crate::plan::{Cmd, Plan, Step};
use crate::signals::{self, Running};
use crate::target::Host;

/// How often the ssh port is probed with a plain TCP connect while the host is down.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// At most two ssh tries a second, so a refused connection never spins.
const TRY_EVERY: Duration = Duration::from_millis(500);
/// Without a port to probe (a proxy in between), ssh is tried once a second.
const TRY_EVERY_UNPROBED: Duration = Duration::from_secs(1);
/// While the port stays closed, a line this often shows the wait is alive.
const SAY_CLOSED_EVERY: Duration = Duration::from_secs(5);

/// What the steps of a reset learn as they go.
#[derive(Default)]
struct Learnt {
    boot_id: Option<String>,
    system: Option<String>,
    new_boot_id: Option<String>,
}

pub fn run(plan: &Plan) -> Result<(), Error> {
    let started = Instant::now();
    let mut learnt = Learnt::default();
    let result = plan
        .steps
        .iter()
        .try_for_each(|step| run_step(step, &mut learnt, started));
    for step in &plan.finally {
        if let Step::CloseMaster { socket, cmd } = step
            && socket.exists()
        {
            // Not registered with the signal handler: after Ctrl-C, this must still run.
            trace(cmd);
            command(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .ok();
        }
    }
    result
}

fn run_step(step: &Step, learnt: &mut Learnt, started: Instant) -> Result<(), Error> {
    match step {
        Step::Run(cmd) => {
            trace(cmd);
            let status = spawn(cmd, &mut command(cmd))?.wait()?;
            check(cmd, status)
        }
        Step::ReadBootState(cmd) => {
            let out = traced_output(cmd)?;
            check(cmd, out.status)?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            learnt.boot_id = lines.next().map(str::to_owned);
            learnt.system = lines.next().map(str::to_owned);
            if learnt.system.is_none() {
                return Err(Error::Check(format!(
                    "could not read the boot id and system profile: {}",
                    text.trim()
                )));
            }
            Ok(())
        }
        Step::Reboot(cmd) => {
            trace(cmd);
            let status = spawn(cmd, &mut command(cmd))?.wait()?;
            match status.code() {
                Some(255) => Ok(()),
                _ => check(cmd, status),
            }
        }
        Step::CloseMaster { cmd, .. } => {
            trace(cmd);
            output(cmd).map(drop)
        }
        Step::WaitForNewBoot {
            host,
            resolve,
            attempt,
            close,
            timeout,
            ..
        } => {
            let old = learnt.boot_id.clone().unwrap_or_default();
            let mut wait = Wait::start(host, resolve, *timeout)?;
            trace(attempt);
            loop {
                wait.until_try()?;
                let out = output(attempt)?;
                let err = String::from_utf8_lossy(&out.stderr);
                match out.status.code() {
                    Some(0) => {
                        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                        if id != old {
                            learnt.new_boot_id = Some(id);
                            return Ok(());
                        }
                        wait.say(&format!("still on the old boot id {old}"));
                        trace(close);
                        output(close)?;
                    }
                    Some(255) if came_back_wrong(&err) => {
                        return Err(Error::CameBackWrong(format!(
                            "{host} came back but refuses us: {}",
                            last_line(&err)
                        )));
                    }
                    Some(255) => wait.say(last_line(&err)),
                    _ => return check(attempt, out.status),
                }
            }
        }
        Step::VerifyBooted(cmd) => {
            let out = traced_output(cmd)?;
            check(cmd, out.status)?;
            let text = String::from_utf8_lossy(&out.stdout);
            let paths: Vec<&str> = text.lines().map(str::trim).collect();
            let want = learnt.system.as_deref().unwrap_or_default();
            if paths.len() != 2 || paths.iter().any(|p| *p != want) {
                return Err(Error::CameBackWrong(format!(
                    "the host did not boot the deployed system {want}: booted-system is {}, \
                     current-system is {}; nothing was collected",
                    paths.first().unwrap_or(&"?"),
                    paths.get(1).unwrap_or(&"?"),
                )));
            }
            Ok(())
        }
        Step::WaitForSsh {
            host,
            resolve,
            attempt,
            timeout,
        } => {
            let mut wait = Wait::start(host, resolve, *timeout)?;
            trace(attempt);
            loop {
                wait.until_try()?;
                // The user's command talks to the terminal; only ssh's own failures are kept.
                let mut child = command(attempt);
                child.stderr(Stdio::piped());
                let mut running = spawn(attempt, &mut child)?;
                let stderr = running.child().stderr.take();
                let tail = forward_stderr(stderr);
                let status = running.wait()?;
                if signals::interrupted() {
                    return Err(Error::Interrupted);
                }
                match status.code() {
                    Some(255) => wait.say(&tail),
                    _ => return check(attempt, status),
                }
            }
        }
        Step::Report { host } => {
            eprintln!(
                "flakem: {host} rebooted from boot id {} to {}, running {}, in {:.1}s",
                learnt.boot_id.as_deref().unwrap_or("?"),
                learnt.new_boot_id.as_deref().unwrap_or("?"),
                learnt.system.as_deref().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// A bounded wait for a host: TCP probes of its ssh port, spaced ssh tries, a deadline.
struct Wait<'a> {
    host: &'a Host,
    timeout: Timeout,
    address: Option<SocketAddr>,
    deadline: Option<Instant>,
    last_try: Option<Instant>,
    tries: u32,
    said_closed: Option<Instant>,
}

impl<'a> Wait<'a> {
    fn start(host: &'a Host, resolve: &Cmd, timeout: Timeout) -> Result<Wait<'a>, Error> {
        let out = traced_output(resolve)?;
        check(resolve, out.status)?;
        Ok(Wait {
            host,
            timeout,
            address: probe_address(&String::from_utf8_lossy(&out.stdout)),
            deadline: timeout.0.map(|t| Instant::now() + t),
            last_try: None,
            tries: 0,
            said_closed: None,
        })
    }

    /// Returns when it is time for the next ssh try: the port accepts (or cannot be probed)
    /// and the last try is far enough behind.
    fn until_try(&mut self) -> Result<(), Error> {
        let spacing = if self.address.is_some() {
            TRY_EVERY
        } else {
            TRY_EVERY_UNPROBED
        };
        loop {
            if signals::interrupted() {
                return Err(Error::Interrupted);
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout(format!(
                    "{} did not answer as expected within {} ({} ssh tries)",
                    self.host, self.timeout, self.tries
                )));
            }
            let spaced = self.last_try.is_none_or(|t| now >= t + spacing);
            if spaced && self.address.is_none_or(port_open) {
                self.last_try = Some(now);
                self.tries += 1;
                return Ok(());
            }
            if !spaced {
                std::thread::sleep(PROBE_EVERY.min((self.last_try.unwrap() + spacing) - now));
                continue;
            }
            if self.said_closed.is_none_or(|t| now >= t + SAY_CLOSED_EVERY) {
                self.said_closed = Some(now);
                let addr = self.address.map(|a| a.to_string()).unwrap_or_default();
                self.say(&format!("{addr} does not accept connections yet"));
            }
            std::thread::sleep(PROBE_EVERY);
        }
    }

    fn say(&self, what: &str) {
        eprintln!("[{}] {}: try {}: {what}", clock(), self.host, self.tries);
    }
}

/// The address ssh would connect to, from `ssh -G`; none when a proxy stands in between.
fn probe_address(config: &str) -> Option<SocketAddr> {
    let value = |key: &str| {
        config.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().to_owned())
        })
    };
    let proxied = |key| value(key).is_some_and(|v| v != "none");
    if proxied("proxycommand") || proxied("proxyjump") {
        return None;
    }
    let port: u16 = value("port")?.parse().ok()?;
    (value("hostname")?, port).to_socket_addrs().ok()?.next()
}

fn port_open(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn came_back_wrong(stderr: &str) -> bool {
    [
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Too many authentication failures",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no answer")
        .trim()
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// Passes a child's stderr on as it comes, keeping its last line.
fn forward_stderr(pipe: Option<std::process::ChildStderr>) -> String {
    use std::io::BufRead;
    let mut last = String::new();
    if let Some(pipe) = pipe {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if !line.trim().is_empty() {
                last = line;
            }
        }
    }
    if last.is_empty() {
        "no answer".into()
    } else {
        last
    }
}

/// The `+ ` line of a process, on stderr, just before it starts.
pub fn trace(cmd: &Cmd) {
    let mut err = std::io::stderr().lock();
    writeln!(err, "+ {cmd}").ok();
}

fn command(cmd: &Cmd) -> Command {
    let mut c = Command::new(cmd.program());
    c.args(&cmd.argv[1..])
        .envs(cmd.env.iter().map(|(k, v)| (k, v)));
    c
}

fn spawn(cmd: &Cmd, command: &mut Command) -> Result<Running, Error> {
    Running::spawn(command).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(cmd.program()),
        _ => Error::Io(format!("cannot start `{}`: {e}", cmd.program())),
    })
}

/// Runs `cmd` with its output read by flakem; stderr is kept for messages.
pub fn output(cmd: &Cmd) -> Result<Output, Error> {
    let out = spawn(cmd, signals::capturing(&mut command(cmd)))?.wait_with_output()?;
    if signals::interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(out)
}

/// [`output`] after its `+ ` line, with the child's stderr passed on.
pub fn traced_output(cmd: &Cmd) -> Result<Output, Error> {
    trace(cmd);
    let out = output(cmd)?;
    std::io::stderr().write_all(&out.stderr).ok();
    Ok(out)
}

/// A step's status: success, or the error that stops the plan with that status.
pub fn check(cmd: &Cmd, status: ExitStatus) -> Result<(), Error> {
    use std::os::unix::process::ExitStatusExt;
    if signals::interrupted() {
        return Err(Error::Interrupted);
    }
    let program = cmd.program().to_owned();
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Error::StepFailed {
            program,
            status: code as u8,
        }),
        (None, Some(signal)) => Err(Error::StepKilled { program, signal }),
        (None, None) => Err(Error::StepFailed { program, status: 1 }),
    }
}

pub fn missing(program: &str) -> Error {
    let hint = match program {
        "nixos-rebuild" => {
            "it comes with NixOS; elsewhere try `nix shell nixpkgs#nixos-rebuild-ng`, or use the flakem package, which carries its own"
        }
        "nix" => "install Nix (on Debian: apt-get install nix-bin)",
        "ssh" => "install the OpenSSH client (on Debian: apt-get install openssh-client)",
        _ => "install it, or put it on PATH",
    };
    Error::MissingProgram {
        program: program.to_owned(),
        hint,
    }
}
