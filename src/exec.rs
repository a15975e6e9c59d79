//! The executor: prints each step's processes (`+ ...` on stderr) and runs them, stopping at
//! the first failure with that step's status. It decides nothing the plan did not say.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::console::{Console, Stream};
use crate::error::Error;
use crate::names::Host;
use crate::options::Timeout;
use crate::plan::{Cmd, Plan, Step, Value};
use crate::signals::{self, Running};
use crate::ssh::{self, Ssh};

/// How often the ssh port is probed with a plain TCP connect while the host is down.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// At most two ssh tries a second, so a refused connection never spins.
const TRY_EVERY: Duration = Duration::from_millis(500);
/// Without a port to probe (a proxy in between), ssh is tried once a second.
const TRY_EVERY_UNPROBED: Duration = Duration::from_secs(1);
/// While the port stays closed, a line this often shows the wait is alive.
const SAY_CLOSED_EVERY: Duration = Duration::from_secs(5);

/// What the steps of a plan learn as they go.
#[derive(Default)]
struct Learnt {
    boot_id: Option<String>,
    system: Option<String>,
    new_boot_id: Option<String>,
    drv: Option<String>,
    /// Each checked host's /etc/machine-id, as its check printed it.
    machine_ids: Vec<(Host, String)>,
}

/// Runs one host's plan, printing through its console.
pub struct Executor<'a> {
    console: &'a Console,
    learnt: Learnt,
    started: Instant,
    /// Whether `finish` ran: it closes each master once.
    finished: bool,
}

/// The step a plan stopped at, and why.
#[derive(Debug)]
pub struct Failure {
    pub step: String,
    pub error: Error,
}

impl<'a> Executor<'a> {
    pub fn new(console: &'a Console) -> Executor<'a> {
        Executor {
            console,
            learnt: Learnt::default(),
            started: Instant::now(),
            finished: false,
        }
    }

    /// The host's `<drv>`, from the one evaluation for all hosts.
    pub fn learn_drv(&mut self, drv: String) {
        self.learnt.drv = Some(drv);
    }

    /// Runs `steps` in order, stopping at the first that fails.
    pub fn run(&mut self, steps: &[Step]) -> Result<(), Failure> {
        steps.iter().try_for_each(|step| {
            self.step(step).map_err(|error| Failure {
                step: step.name(),
                error,
            })
        })
    }

    /// Closes the control masters a plan may have left open; after Ctrl-C too.
    pub fn finish(&mut self, plan: &Plan) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        for step in &plan.finally {
            if let Step::CloseMaster { socket, cmd } = step
                && socket.exists()
            {
                // Not registered with the signal handler: after Ctrl-C, this must still run.
                self.console.trace(cmd);
                command(cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .ok();
            }
        }
    }

    /// `host`'s machine id, once its check read it.
    pub fn machine_id(&self, host: &Host) -> Option<&str> {
        self.learnt
            .machine_ids
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, id)| id.as_str())
    }

    /// The system the host runs after the plan, when a step read it.
    pub fn system(&self) -> Option<&str> {
        self.learnt.system.as_deref()
    }

    /// `step` with the values learnt so far in place of their placeholders.
    fn resolved(&self, step: &Step) -> Step {
        let values = [
            (Value::Drv, &self.learnt.drv),
            (Value::System, &self.learnt.system),
        ];
        let fill = |cmd: &mut Cmd| {
            for (value, learnt) in values {
                if let Some(learnt) = learnt {
                    for word in &mut cmd.argv {
                        *word = word.replace(value.placeholder(), learnt);
                    }
                }
            }
        };
        let mut step = step.clone();
        match &mut step {
            Step::Run(cmd) | Step::Build(cmd) => fill(cmd),
            Step::Copy { cmd, fallback, .. } => {
                fill(cmd);
                fallback.iter_mut().for_each(fill);
            }
            _ => {}
        }
        step
    }

    fn step(&mut self, step: &Step) -> Result<(), Error> {
        let console = self.console;
        let step = &self.resolved(step);
        match step {
            Step::Build(cmd) => {
                console.trace(cmd);
                let mut child = command(cmd);
                self.console.attach(&mut child);
                child.stdout(Stdio::piped());
                let mut running = spawn(cmd, &mut child)?;
                let stdout = running.child().stdout.take();
                let stderr = running.child().stderr.take();
                let mut text = String::new();
                std::thread::scope(|s| {
                    s.spawn(|| console.pump(None::<std::process::ChildStdout>, stderr));
                    if let Some(mut out) = stdout {
                        std::io::Read::read_to_string(&mut out, &mut text).ok();
                    }
                });
                check(cmd, running.wait()?)?;
                let line = text.lines().rev().find(|l| !l.trim().is_empty());
                self.learnt.system = line.map(|l| l.trim().to_owned());
                match self.learnt.system {
                    Some(_) => Ok(()),
                    None => Err(Error::Check(format!("`{}` printed nothing", cmd.program()))),
                }
            }
            Step::Run(cmd) => {
                console.trace(cmd);
                let status = self.streamed(cmd)?;
                check(cmd, status)
            }
            Step::Copy {
                host,
                cmd,
                fallback,
            } => {
                console.trace(cmd);
                let mut status = self.streamed(cmd)?;
                if let (false, Some(fallback)) = (status.success(), fallback) {
                    console.say("that failed; trying the plain ssh:// store instead");
                    console.trace(fallback);
                    status = self.streamed(fallback)?;
                }
                check(cmd, status).map_err(|e| match e {
                    Error::StepFailed { status, .. } => Error::CopyFailed {
                        host: host.to_string(),
                        status,
                    },
                    e => e,
                })
            }
            Step::Pipe { from, to } => {
                console.line(Stream::Err, &format!("+ {from} | {to}"));
                // Held in memory until it is known to be whole: a failed decryption must
                // not replace the host's key with nothing.
                let mut producer = command(from);
                producer.stdin(Stdio::null()).stdout(Stdio::piped());
                let mut running = spawn(from, &mut producer)?;
                let mut secret = Vec::new();
                if let Some(mut out) = running.child().stdout.take() {
                    std::io::Read::read_to_end(&mut out, &mut secret)?;
                }
                let decrypted = check(from, running.wait()?);
                let result = decrypted.and_then(|()| match secret.is_empty() {
                    true => Err(Error::Check(format!(
                        "`{}` gave an empty key",
                        from.program()
                    ))),
                    false => self.feed(to, &secret),
                });
                secret.fill(0);
                result
            }
            Step::Note(note) => {
                console.say(note);
                Ok(())
            }
            Step::CheckHost {
                host,
                sudo,
                reboots,
                cmd,
                ssh,
            } => {
                let out = self.captured(cmd)?;
                let err = String::from_utf8_lossy(&out.stderr);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let id = stdout
                    .lines()
                    .next()
                    .map(str::trim)
                    .filter(|id| !id.is_empty());
                if let (true, Some(id)) = (out.status.success(), id) {
                    self.learnt.machine_ids.push((host.clone(), id.to_owned()));
                }
                match out.status.code() {
                    Some(0) if *reboots => refuse_this_machine(host, id),
                    Some(0) => Ok(()),
                    Some(255) => Err(Error::Check(format!(
                        "ssh to {host} failed: {}; {}",
                        last_line(&err),
                        ssh.advice(host, &err)
                    ))),
                    // The script's last command is sudo: 127 is the shell's "not found".
                    Some(127) if *sudo => Err(Error::Check(format!(
                        "there is no sudo on {host} ({}): log in as root (root@{}), or pass \
                         --no-sudo",
                        last_line(&err),
                        host.without_user()
                    ))),
                    _ if *sudo => Err(Error::Check(format!(
                        "sudo on {host} wants a password ({}): allow this login passwordless \
                         sudo, log in as root (root@{}), or pass --no-sudo",
                        last_line(&err),
                        host.without_user()
                    ))),
                    _ => check(cmd, out.status),
                }
            }
            Step::ReadBootState(cmd) => {
                let out = self.captured(cmd)?;
                check(cmd, out.status)?;
                let text = String::from_utf8_lossy(&out.stdout);
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                self.learnt.boot_id = lines.next().map(str::to_owned);
                self.learnt.system = lines.next().map(str::to_owned);
                if self.learnt.system.is_none() {
                    return Err(Error::Check(format!(
                        "could not read the boot id and system profile: {}",
                        text.trim()
                    )));
                }
                let host = cmd
                    .argv
                    .iter()
                    .rev()
                    .nth(1)
                    .map_or("the host", String::as_str);
                refuse_this_machine(host, lines.next())
            }
            Step::ReadSystem(cmd) => {
                let out = self.captured(cmd)?;
                check(cmd, out.status)?;
                let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                self.learnt.system = Some(text).filter(|t| !t.is_empty());
                Ok(())
            }
            Step::Reboot(cmd) => {
                console.trace(cmd);
                let status = self.streamed(cmd)?;
                match status.code() {
                    Some(255) => Ok(()),
                    _ => check(cmd, status),
                }
            }
            Step::CloseMaster { cmd, .. } => {
                console.trace(cmd);
                output(cmd).map(drop)
            }
            Step::WaitForNewBoot {
                host,
                resolve,
                attempt,
                close,
                timeout,
                ssh,
                ..
            } => {
                let old = self.learnt.boot_id.clone().unwrap_or_default();
                let mut wait = Wait::start(self, host, resolve, *timeout)?;
                console.trace(attempt);
                loop {
                    wait.until_try()?;
                    let out = output(attempt)?;
                    let err = String::from_utf8_lossy(&out.stderr);
                    match out.status.code() {
                        Some(0) => {
                            let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                            if id != old {
                                self.learnt.new_boot_id = Some(id);
                                return Ok(());
                            }
                            wait.say(&format!("still on the old boot id {old}"));
                            console.trace(close);
                            output(close)?;
                        }
                        Some(255) if came_back_wrong(&err) => {
                            return Err(refuses_us(host, "came back", ssh, &err));
                        }
                        Some(255) => wait.say(last_line(&err)),
                        _ => return check(attempt, out.status),
                    }
                }
            }
            Step::VerifyBooted(cmd) => {
                let out = self.captured(cmd)?;
                check(cmd, out.status)?;
                let text = String::from_utf8_lossy(&out.stdout);
                let paths: Vec<&str> = text.lines().map(str::trim).collect();
                let want = self.learnt.system.as_deref().unwrap_or_default();
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
                ssh,
            } => {
                let mut wait = Wait::start(self, host, resolve, *timeout)?;
                console.trace(attempt);
                loop {
                    wait.until_try()?;
                    // The user's command talks to the terminal; ssh's own failures are kept.
                    let mut child = command(attempt);
                    console.attach(&mut child);
                    child.stderr(Stdio::piped());
                    let mut running = spawn(attempt, &mut child)?;
                    let stdout = running.child().stdout.take();
                    let stderr = running.child().stderr.take();
                    let err = console.pump(stdout, stderr);
                    let status = running.wait()?;
                    if signals::interrupted() {
                        return Err(Error::Interrupted);
                    }
                    match status.code() {
                        // Waiting does not change a key: say so now, not at the deadline.
                        Some(255) if came_back_wrong(&err) => {
                            return Err(refuses_us(host, "answers", ssh, &err));
                        }
                        Some(255) if err.trim().is_empty() => wait.say("no answer"),
                        Some(255) => wait.say(last_line(&err)),
                        _ => return check(attempt, status),
                    }
                }
            }
            Step::Report { host } => {
                console.say(&format!(
                    "{host} rebooted from boot id {} to {}, running {}, in {:.1}s",
                    self.learnt.boot_id.as_deref().unwrap_or("?"),
                    self.learnt.new_boot_id.as_deref().unwrap_or("?"),
                    self.learnt.system.as_deref().unwrap_or("?"),
                    self.started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
        }
    }

    /// Runs `cmd` with `input` on its stdin.
    fn feed(&self, cmd: &Cmd, input: &[u8]) -> Result<(), Error> {
        let mut consumer = command(cmd);
        consumer.stdin(Stdio::piped());
        let mut running = spawn(cmd, &mut consumer)?;
        if let Some(mut stdin) = running.child().stdin.take() {
            std::io::Write::write_all(&mut stdin, input)?;
        }
        check(cmd, running.wait()?)
    }

    /// Runs `cmd` with its output shown through the console.
    fn streamed(&self, cmd: &Cmd) -> Result<ExitStatus, Error> {
        let mut child = command(cmd);
        self.console.attach(&mut child);
        if cmd.program() == "ssh" {
            // flakem's own remote commands read nothing, and must not eat what the user types.
            child.stdin(Stdio::null());
        }
        let mut running = spawn(cmd, &mut child)?;
        let stdout = running.child().stdout.take();
        let stderr = running.child().stderr.take();
        self.console.pump(stdout, stderr);
        Ok(running.wait()?)
    }

    /// [`output`] after its `+ ` line, with the child's stderr shown.
    pub fn captured(&self, cmd: &Cmd) -> Result<Output, Error> {
        self.console.trace(cmd);
        let out = output(cmd)?;
        self.console.pass(Stream::Err, &out.stderr);
        Ok(out)
    }
}

/// Refuses to go on when `machine_id` is this machine's: flakem never reboots the machine
/// it runs on.
fn refuse_this_machine(
    host: impl std::fmt::Display,
    machine_id: Option<&str>,
) -> Result<(), Error> {
    let here = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    match machine_id {
        Some(id) if id == here.trim() => Err(Error::Check(format!(
            "{host} is this machine (same /etc/machine-id): flakem does not reboot the \
             machine it runs on"
        ))),
        _ => Ok(()),
    }
}

/// A bounded wait for a host: TCP probes of its ssh port, spaced ssh tries, a deadline.
struct Wait<'a> {
    console: &'a Console,
    host: &'a Host,
    timeout: Timeout,
    address: Option<SocketAddr>,
    deadline: Option<Instant>,
    last_try: Option<Instant>,
    tries: u32,
    said_closed: Option<Instant>,
}

impl<'a> Wait<'a> {
    fn start(
        executor: &Executor<'a>,
        host: &'a Host,
        resolve: &Cmd,
        timeout: Timeout,
    ) -> Result<Wait<'a>, Error> {
        let out = executor.captured(resolve)?;
        check(resolve, out.status)?;
        Ok(Wait {
            console: executor.console,
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
        let line = format!("[{}] {}: try {}: {what}", clock(), self.host, self.tries);
        self.console.line(Stream::Err, &line);
    }
}

/// The address ssh would connect to, from `ssh -G`; none when a proxy stands in between.
fn probe_address(config: &str) -> Option<SocketAddr> {
    let value = |key| ssh::config_value(config, key);
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

/// A host that answers but turns us away (`came_back_wrong`): what ssh said, and what to do.
fn refuses_us(host: &Host, how: &str, ssh: &Ssh, stderr: &str) -> Error {
    Error::CameBackWrong(format!(
        "{host} {how} but refuses us: {}; {}",
        last_line(stderr),
        ssh.advice(host, stderr)
    ))
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
