//! The plan of each command: plain data computed without side effects. The executor runs it;
//! `--dry-run` prints it. Most tests check plans.

use std::fmt;
use std::path::PathBuf;

use crate::commands::{Command, Hosts};
use crate::dialect::Dialect;
use crate::job::Job;
use crate::options::Timeout;
use crate::quote;
use crate::ssh::{Connection, Sockets, Ssh};
use crate::target::Host;

/// One process: its environment additions and its argument list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
}

impl Cmd {
    pub fn new(argv: Vec<String>) -> Cmd {
        Cmd {
            env: Vec::new(),
            argv,
        }
    }

    pub fn program(&self) -> &str {
        &self.argv[0]
    }
}

/// Pasteable into a POSIX shell: `K=V program args...`, every word quoted as needed.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={} ", quote::quote(v))?;
        }
        f.write_str(&quote::join(&self.argv))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A process; a non-zero status stops the plan with that status.
    Run(Cmd),
    /// Prints the host's boot id and the system its profile points at, remembered as
    /// `<boot-id>` and `<system>`.
    ReadBootState(Cmd),
    /// Asks for a reboot; the connection dying under it (ssh's 255) is success.
    Reboot(Cmd),
    /// Closes a control master; harmless when there is none.
    CloseMaster { socket: PathBuf, cmd: Cmd },
    /// Retries `attempt` (fresh connections, TCP probes in between) until the host answers
    /// with a boot id other than `<boot-id>`. The answering connection stays as the master
    /// at `socket`; one that answers with the old boot id is closed with `close`.
    WaitForNewBoot {
        host: Host,
        resolve: Cmd,
        attempt: Cmd,
        socket: PathBuf,
        close: Cmd,
        timeout: Timeout,
    },
    /// Prints where `/run/booted-system` and `/run/current-system` lead; both must be
    /// `<system>`.
    VerifyBooted(Cmd),
    /// `ssh-wait`: retries `attempt` until ssh connects, then ends with the remote status.
    WaitForSsh {
        host: Host,
        resolve: Cmd,
        attempt: Cmd,
        timeout: Timeout,
    },
    /// The closing line of a reset: host, boot ids, deployed system, time taken.
    Report { host: Host },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Run on every way out, success, failure or Ctrl-C: a `ControlPersist` master would
    /// otherwise outlive flakem.
    pub finally: Vec<Step>,
}

/// What a plan depends on besides the job.
pub struct Context<'a> {
    pub dialect: Dialect,
    pub ssh: &'a Ssh,
    /// A private directory for control sockets (`<tmp>` in a dry run).
    pub control_dir: PathBuf,
}

pub fn plan(job: &Job, cx: &Context) -> Plan {
    let mut steps = Vec::new();
    let mut finally = Vec::new();
    if let Some(hosts) = job.command.hosts() {
        steps.push(Step::Run(rebuild(job, hosts, cx.dialect)));
    }
    if job.command == Command::SshWait {
        steps.push(Step::WaitForSsh {
            host: job.host.clone(),
            resolve: cx.ssh.resolve(&job.host),
            attempt: cx.ssh.raw(Connection::Fresh, &job.host, &job.rest),
            timeout: job.timeout,
        });
    }
    if job.command.resets() {
        let sockets = Sockets::in_dir(&cx.control_dir);
        steps.extend(reset(job, cx.ssh, &sockets));
        finally = [&sockets.before, &sockets.after]
            .map(|s| close(cx.ssh, s, &job.host))
            .to_vec();
    }
    Plan { steps, finally }
}

/// `nixos-rebuild ACTION <house flags> [--build-host H] [--target-host H] --flake F#T ...`.
fn rebuild(job: &Job, hosts: Hosts, dialect: Dialect) -> Cmd {
    let mut argv = vec!["nixos-rebuild".to_owned(), job.action.name().to_owned()];
    argv.extend(dialect.house_flags(job.sudo).into_iter().map(str::to_owned));
    let host = job.host.to_string();
    if hosts == Hosts::Pull {
        argv.extend(["--build-host".to_owned(), host.clone()]);
    }
    if hosts != Hosts::Local {
        argv.extend(["--target-host".to_owned(), host]);
    }
    argv.push("--flake".to_owned());
    argv.extend(job.flake_attr());
    argv.extend(job.rest.iter().cloned());
    Cmd::new(argv)
}

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// After `nixos-rebuild boot`: prove the reboot happened and that the host booted what was
/// deployed, and only then collect garbage.
fn reset(job: &Job, ssh: &Ssh, sockets: &Sockets) -> Vec<Step> {
    let host = &job.host;
    let before = Connection::Shared(&sockets.before);
    let after = Connection::Shared(&sockets.after);
    let sudo: &[&str] = if job.sudo { &["sudo"] } else { &[] };
    let as_root = |words: &[&'static str]| [sudo, words].concat();

    let mut steps = vec![
        Step::ReadBootState(ssh.script(
            before,
            host,
            &[
                &["cat", BOOT_ID],
                &["readlink", "-f", "/nix/var/nix/profiles/system"],
            ],
        )),
        Step::Reboot(ssh.script(before, host, &[&as_root(&["reboot"])])),
        close(ssh, &sockets.before, host),
        Step::WaitForNewBoot {
            host: host.clone(),
            resolve: ssh.resolve(host),
            attempt: ssh.script(
                Connection::NewMaster(&sockets.after),
                host,
                &[&["cat", BOOT_ID]],
            ),
            socket: sockets.after.clone(),
            close: ssh.exit_master(&sockets.after, host),
            timeout: job.timeout,
        },
        Step::VerifyBooted(ssh.script(
            after,
            host,
            &[&[
                "readlink",
                "-f",
                "/run/booted-system",
                "/run/current-system",
            ]],
        )),
    ];
    if let Some(age) = job.gc_older_than {
        let age_args = age.nix_args();
        let gc: Vec<&str> = [sudo, &["nix-collect-garbage"]]
            .concat()
            .into_iter()
            .chain(age_args.iter().map(String::as_str))
            .collect();
        let prune = as_root(&["/run/current-system/bin/switch-to-configuration", "boot"]);
        steps.push(Step::Run(ssh.script(after, host, &[&gc])));
        steps.push(Step::Run(ssh.script(after, host, &[&prune])));
    }
    steps.push(close(ssh, &sockets.after, host));
    steps.push(Step::Report { host: host.clone() });
    steps
}

fn close(ssh: &Ssh, socket: &std::path::Path, host: &Host) -> Step {
    Step::CloseMaster {
        socket: socket.to_owned(),
        cmd: ssh.exit_master(socket, host),
    }
}

/// The dry-run form of a step: `+ ` for every process, `# ` for what the executor checks.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(cmd) | Step::CloseMaster { cmd, .. } => write!(f, "+ {cmd}"),
            Step::ReadBootState(cmd) => {
                write!(
                    f,
                    "+ {cmd}\n# remember its answer as <boot-id> and <system>"
                )
            }
            Step::Reboot(cmd) => write!(
                f,
                "+ {cmd}\n# ssh's exit 255, the connection dying with the reboot, counts as success"
            ),
            Step::WaitForNewBoot {
                host,
                resolve,
                attempt,
                close,
                timeout,
                ..
            } => write!(
                f,
                "+ {resolve}\n# wait ({timeout}) until {host} answers with a boot id other than \
                 <boot-id>, probing its ssh port in between; each try:\n+ {attempt}\n\
                 # after a try that answers with <boot-id>:\n+ {close}"
            ),
            Step::VerifyBooted(cmd) => write!(
                f,
                "+ {cmd}\n# check that both are <system>, else stop (exit 4) and collect nothing"
            ),
            Step::WaitForSsh {
                host,
                resolve,
                attempt,
                timeout,
            } => write!(
                f,
                "+ {resolve}\n# wait ({timeout}) until ssh reaches {host}, probing its ssh port \
                 in between; each try:\n+ {attempt}"
            ),
            Step::Report { host } => write!(
                f,
                "# report: {host} rebooted from <boot-id> to <new-boot-id>, running <system>"
            ),
        }
    }
}

/// The dry-run form of the whole plan.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        if !self.finally.is_empty() {
            writeln!(
                f,
                "# on any way out, a control master still open is closed as above"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
