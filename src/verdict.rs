//! Verdicts: what the result of a step means. Each is a pure function of what a child
//! printed and how it ended, so that every judgement the executor makes (a host that
//! refuses us, sudo that wants a password, the machine flakem runs on, a reboot that did or
//! did not happen, the system a host booted) is tested with real outputs, without a host.

use std::process::{ExitStatus, Output};

use crate::advice::advice;
use crate::error::Error;
use crate::names::Host;
use crate::ssh::{self, Ssh};
use crate::sudo::Sudo;

/// ssh's own status when it could not connect, or the connection died.
const SSH_FAILED: i32 = 255;

/// A child's status: success, or the error that stops the plan with that status.
pub fn status(program: &str, end: ExitStatus) -> Result<(), Error> {
    Error::of_status(program, end)
}

/// The check before the build: the host answered ssh (and sudo, when used: without a
/// prompt, or taking the password given), and when the plan `reboots` it, it is not `here`
/// (this machine's id). Its machine id, when it printed one.
pub fn host_check(
    host: &Host,
    sudo: Sudo,
    reboots: bool,
    out: &Output,
    ssh: &Ssh,
    here: &str,
) -> Result<Option<String>, Error> {
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .next()
        .map(str::trim)
        .filter(|id| !id.is_empty());
    let login = host.without_user();
    match out.status.code() {
        Some(0) if reboots => not_here(host, id, here).map(|()| id.map(str::to_owned)),
        Some(0) => Ok(id.map(str::to_owned)),
        Some(SSH_FAILED) => Err(Error::Check(format!(
            "ssh to {host} failed: {}; {}",
            last_line(&err),
            advice(ssh, host, &err)
        ))),
        // The script's last command is sudo: 127 is the shell's "not found".
        Some(127) if sudo.used() => Err(Error::Check(format!(
            "there is no sudo on {host} ({}): log in as root (root@{login}), or pass --no-sudo",
            last_line(&err),
        ))),
        _ => match sudo {
            Sudo::No => status("ssh", out.status).map(|()| None),
            Sudo::Plain => Err(Error::Check(format!(
                "sudo on {host} wants a password ({}): pass --ask-sudo-password to give it once \
                 for every host, allow this login passwordless sudo, log in as root \
                 (root@{login}), or pass --no-sudo",
                last_line(&err),
            ))),
            Sudo::Password => Err(Error::Check(format!(
                "sudo on {host} did not take the password given with --ask-sudo-password ({}): \
                 check it is this login's password there",
                sudo_refusal(&err),
            ))),
        },
    }
}

/// What sudo said when it refused the password: its count of incorrect attempts, rather
/// than its last line ("no password was provided" once it read all there was).
fn sudo_refusal(err: &str) -> &str {
    err.lines()
        .map(str::trim)
        .find(|l| l.contains("incorrect password"))
        .unwrap_or_else(|| last_line(err))
}

/// Refuses to go on when `machine_id` is `here`: flakem never reboots the machine it runs on.
pub fn not_here(host: &Host, machine_id: Option<&str>, here: &str) -> Result<(), Error> {
    match machine_id {
        Some(id) if id == here.trim() => Err(Error::Check(format!(
            "{host} is this machine (same /etc/machine-id): flakem does not reboot the \
             machine it runs on"
        ))),
        _ => Ok(()),
    }
}

/// What a host said before its reboot.
#[derive(Debug, PartialEq, Eq)]
pub struct BootState {
    pub boot_id: String,
    /// The system its profile points at: what it boots next.
    pub system: String,
}

/// Reads `cat boot_id; readlink -f profile; cat /etc/machine-id`, refusing this machine.
pub fn boot_state(host: &Host, stdout: &str, here: &str) -> Result<BootState, Error> {
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    let (Some(boot_id), Some(system)) = (lines.next(), lines.next()) else {
        return Err(Error::Check(format!(
            "could not read the boot id and system profile: {}",
            stdout.trim()
        )));
    };
    not_here(host, lines.next(), here)?;
    Ok(BootState {
        boot_id: boot_id.to_owned(),
        system: system.to_owned(),
    })
}

/// The system a build printed: its last line.
pub fn built_system(program: &str, stdout: &str) -> Result<String, Error> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::Check(format!("`{program}` printed nothing")))
}

/// The system a deploy left, as `readlink -f` printed it; nothing when it printed nothing.
pub fn read_system(stdout: &str) -> Option<String> {
    Some(stdout.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A reboot's status: the connection dying under it (ssh's 255) is success.
pub fn reboot(program: &str, end: ExitStatus) -> Result<(), Error> {
    match end.code() {
        Some(SSH_FAILED) => Ok(()),
        _ => status(program, end),
    }
}

/// After the reboot, `/run/booted-system` and `/run/current-system` must both be `want`.
pub fn booted(stdout: &str, want: &str) -> Result<(), Error> {
    let paths: Vec<&str> = stdout.lines().map(str::trim).collect();
    if paths.len() == 2 && paths.iter().all(|p| *p == want) {
        return Ok(());
    }
    Err(Error::CameBackWrong(format!(
        "the host did not boot the deployed system {want}: booted-system is {}, \
         current-system is {}; nothing was collected",
        paths.first().unwrap_or(&"?"),
        paths.get(1).unwrap_or(&"?"),
    )))
}

/// One try of a wait for a host.
#[derive(Debug, PartialEq, Eq)]
pub enum Try {
    /// It answered as hoped; for a reboot, with this new boot id.
    Done(Option<String>),
    /// It answered with the boot id it had before the reboot: not back yet.
    OldBoot,
    /// Not yet, and why (ssh's last line).
    NotYet(String),
}

/// A try of the wait for a new boot: `cat boot_id` over a fresh connection.
pub fn new_boot(host: &Host, out: &Output, old: &str, ssh: &Ssh) -> Result<Try, Error> {
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Ok(match id == old {
                true => Try::OldBoot,
                false => Try::Done(Some(id)),
            })
        }
        Some(SSH_FAILED) => refused_or_not_yet(host, "came back", ssh, &err),
        _ => status("ssh", out.status).map(|()| Try::Done(None)),
    }
}

/// A try of `ssh-wait`: ssh ran the user's command (its status is the wait's), or did not
/// connect. Waiting does not change a key: a host that refuses us is said at once.
pub fn ssh_wait(host: &Host, end: ExitStatus, stderr: &str, ssh: &Ssh) -> Result<Try, Error> {
    match end.code() {
        Some(SSH_FAILED) if stderr.trim().is_empty() => Ok(Try::NotYet("no answer".into())),
        Some(SSH_FAILED) => refused_or_not_yet(host, "answers", ssh, stderr),
        _ => status("ssh", end).map(|()| Try::Done(None)),
    }
}

fn refused_or_not_yet(host: &Host, how: &str, ssh: &Ssh, stderr: &str) -> Result<Try, Error> {
    match refuses_us(stderr) {
        true => Err(Error::CameBackWrong(format!(
            "{host} {how} but refuses us: {}; {}",
            last_line(stderr),
            advice(ssh, host, stderr)
        ))),
        false => Ok(Try::NotYet(last_line(stderr).to_owned())),
    }
}

/// A host that answers but turns us away: waiting longer changes nothing.
fn refuses_us(stderr: &str) -> bool {
    [
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Too many authentication failures",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// A copy's status: a failure names the usual cause, a login nix does not trust.
pub fn copy(host: &Host, program: &str, end: ExitStatus) -> Result<(), Error> {
    status(program, end).map_err(|e| match e {
        Error::StepFailed { status, .. } => Error::CopyFailed {
            host: host.to_string(),
            status,
        },
        e => e,
    })
}

/// Where ssh would connect, from `ssh -G`, for cheap TCP probes: `(hostname, port)`, or
/// none when a proxy stands in between.
pub fn probe_target(config: &str) -> Option<(String, u16)> {
    let value = |key| ssh::config_value(config, key);
    let proxied = |key| value(key).is_some_and(|v| v != "none");
    if proxied("proxycommand") || proxied("proxyjump") {
        return None;
    }
    Some((value("hostname")?, value("port")?.parse().ok()?))
}

/// The system a host ran before a deploy, which a guard or a reset's boot back puts back,
/// and its profile generation (`system-N-link`; empty when the profile is not one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub system: String,
    pub generation: String,
}

impl Recorded {
    /// The generation's number, as a boot menu lists it.
    pub fn number(&self) -> Option<u64> {
        let n = self
            .generation
            .strip_prefix("system-")?
            .strip_suffix("-link")?;
        n.parse().ok()
    }
}

/// What a recording printed: the running system, then the profile's generation.
pub fn recorded(host: &Host, stdout: &str) -> Result<Recorded, Error> {
    let mut lines = stdout.lines().map(str::trim);
    match lines.next().filter(|l| l.starts_with('/')) {
        Some(system) => Ok(Recorded {
            system: system.to_owned(),
            generation: lines.next().unwrap_or_default().to_owned(),
        }),
        None => Err(Error::Check(format!(
            "could not read the system {host} runs: {}",
            stdout.trim()
        ))),
    }
}

/// A wait for a host that never came back: the message names what to boot by hand.
pub fn never_came_back(error: Error, recorded: Option<&Recorded>) -> Error {
    match (error, recorded) {
        (Error::Timeout(e), Some(recorded)) => {
            let pick = match recorded.number() {
                Some(n) => format!("generation {n} in its boot menu"),
                None => format!("{} in its boot menu", recorded.system),
            };
            Error::Timeout(format!(
                "{e}; to boot the system it ran before, pick {pick}"
            ))
        }
        (error, _) => error,
    }
}

/// The guard's arming printed what it records.
pub fn armed(host: &Host, out: &Output) -> Result<Recorded, Error> {
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return recorded(host, &String::from_utf8_lossy(&out.stdout));
    }
    let why = match out.status.code() == Some(17) {
        true => "a guard is armed there already (/run/flakem-guard): is another deploy running? \
                 If none is, remove it as root with `systemctl stop flakem-guard; rm -rf \
                 /run/flakem-guard`"
            .to_owned(),
        false => format!("{}; --no-rollback deploys without it", last_line(&err)),
    };
    Err(Error::Check(format!(
        "cannot arm the guard on {host}: {why}"
    )))
}

/// What the guard says: its result (`waiting`, `rolling-back`, `confirmed`, `unchanged`,
/// `rolled-back`, or `gone` once it removed itself), and the running system.
#[derive(Debug, PartialEq, Eq)]
pub struct GuardState {
    pub result: String,
    pub running: String,
}

/// A try of the wait for the guard's end: its state once it has a result; `Err` with why
/// not yet (ssh refused, as it is while the new system locks us out, or still waiting).
pub fn guard_ended(out: &Output) -> Result<GuardState, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    match (out.status.success(), lines.as_slice()) {
        (true, [result, running, ..])
            if ["confirmed", "unchanged", "rolled-back", "gone"].contains(result) =>
        {
            Ok(GuardState {
                result: result.to_string(),
                running: running.to_string(),
            })
        }
        (true, [result, ..]) => Err(format!("the guard is {result}")),
        _ => Err(last_line(&String::from_utf8_lossy(&out.stderr)).to_owned()),
    }
}

/// What flakem reports once the guard ended: exactly what the host did. A guard that
/// removed itself before flakem read it (flakem was away longer than the guard keeps its
/// result) is read from the running system alone.
pub fn put_back(
    host: &Host,
    state: &GuardState,
    recorded: &str,
    why: &str,
    failure: Option<Error>,
) -> Result<(), Error> {
    match state.result.as_str() {
        "unchanged" => failure.map_or(Ok(()), Err),
        "rolled-back" | "gone" if state.running == recorded => Err(Error::RolledBack {
            host: host.to_string(),
            why: why.to_owned(),
            running: state.running.clone(),
        }),
        "confirmed" => Ok(()),
        _ => Err(Error::CameBackWrong(format!(
            "{host} was to put back {recorded}, but it runs {} ({}): {why}",
            state.running, state.result
        ))),
    }
}

/// The confirmation's answer: confirmed, or the host's deadline came first (`Ok(false)`);
/// `Err` with why when it could not be given (ssh refused: the new system cut us off).
pub fn confirmation(out: &Output) -> Result<bool, String> {
    match out.status.code() {
        Some(0) => Ok(true),
        Some(6) => Ok(false),
        _ => Err(not_confirmed(out)),
    }
}

/// A health check or confirmation that failed, in one line: ssh's own error, or the
/// check's status and its last lines.
pub fn not_confirmed(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(SSH_FAILED) => format!("a new ssh connection failed: {}", last_line(&err)),
        code => {
            let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
            let tail: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
            let code = code.map_or("a signal".to_owned(), |c| format!("exit {c}"));
            format!("it failed ({code}): {tail}")
        }
    }
}

/// After the guard was removed: its unit must be gone.
pub fn removed(host: &Host, out: &Output) -> Result<(), Error> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), last_line(&stdout)) {
        (true, "inactive" | "unknown") => Ok(()),
        (_, said) => Err(Error::CameBackWrong(format!(
            "the guard on {host} is not gone ({said}): remove it as root with `systemctl stop \
             flakem-guard; rm -rf /run/flakem-guard`"
        ))),
    }
}

/// The last line that says something, for one-line messages.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no answer")
        .trim()
}

#[cfg(test)]
mod tests;
