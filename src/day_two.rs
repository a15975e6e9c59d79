//! Day two (issue 14): the plans of `generations`, `rollback` and `gc`, and the garbage
//! collection a reset does with `--keep N`. Plain data, as the rest of the plan: the scripts
//! these commands run on a host (every value an argument, never text of a script) and the
//! steps around them. What the host's generations are, and what to do with them, the
//! verdicts read (`generations.rs`); `plan.rs` puts these steps in its `Step`.

use std::fmt;
use std::time::Duration;

use crate::cmd::{Cmd, Value, Word};
use crate::commands::Command;
use crate::duration::Keep;
use crate::guard::{self, Guard};
use crate::job::Job;
use crate::names::Host;
use crate::ssh::{self, Connection, Ssh};
use crate::sudo::Sudo;

const PROFILE: &str = "/nix/var/nix/profiles/system";

/// Prints the host's system generations, one `generation N SECONDS PATH VERSION` line each
/// (SECONDS: the link's own modification time, its creation as nix-env reads it), then the
/// generation the profile points at, the running and booted systems and the host's clock.
/// Needs no root: the links and `/run` are readable by any user.
const READ: &str = "for link in /nix/var/nix/profiles/system-*-link; do \
     [ -L \"$link\" ] || continue; n=${link##*/system-}; n=${n%-link}; \
     path=$(readlink -f \"$link\"); \
     printf 'generation %s %s %s %s\\n' \"$n\" \"$(stat -c %Y \"$link\")\" \"$path\" \
     \"$(cat \"$path/nixos-version\" 2>/dev/null)\"; done; \
     printf 'profile %s\\n' \"$(readlink /nix/var/nix/profiles/system)\"; \
     printf 'running %s\\n' \"$(readlink -e /run/current-system)\"; \
     printf 'booted %s\\n' \"$(readlink -e /run/booted-system)\"; \
     printf 'now %s\\n' \"$(date +%s)\"";

/// Deletes the generations in `$2` (flakem's list of numbers, split on purpose) of the
/// profile `$1`; nothing when the list is empty.
const DELETE: &str = "[ -z \"$2\" ] || nix-env -p \"$1\" --delete-generations $2";

/// A step of a day-two plan that is not a plain process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// Prints the host's generations (`READ`): the later steps choose from them.
    Read { host: Host, cmd: Cmd },
    /// Prints the generations read, as a table (on stdout, which `--json` keeps for the
    /// summary: then on stderr).
    Show { host: Host },
    /// Chooses the generation a rollback switches to: `to`, or the one before the running
    /// one; it becomes `<generation>`, its system `<system>`. One that does not exist stops
    /// the plan (exit 2) with the list of those that do.
    Choose { host: Host, to: Option<u32> },
    /// Chooses the generations a garbage collection deletes: all but those `keep` keeps
    /// and the running, booted and profile's ones; they become `<generations>`.
    Select { host: Host, keep: Keep },
    /// A process (a plain step of the plan).
    Run(Cmd),
    /// `nix-collect-garbage`: its output is shown, and what it freed is kept for the report.
    Collect(Cmd),
    /// Arms the guard of the switch that follows (the plan's guard step).
    Arm {
        host: Host,
        cmd: Cmd,
        timeout: Duration,
    },
    /// Prints where `/run/current-system` leads: it must be `<system>`.
    Verify { host: Host, cmd: Cmd },
    /// The closing line of a garbage collection, from the generations read after it.
    Remain { host: Host },
}

/// How a day-two plan reaches the host: flakem's connection, and sudo or not.
pub struct On<'a> {
    pub ssh: &'a Ssh,
    pub conn: Connection<'a>,
    pub host: &'a Host,
    pub sudo: Sudo,
}

impl<'a> On<'a> {
    pub fn new(ssh: &'a Ssh, conn: Connection<'a>, host: &'a Host, sudo: Sudo) -> On<'a> {
        On {
            ssh,
            conn,
            host,
            sudo,
        }
    }

    fn read(&self) -> Act {
        Act::Read {
            host: self.host.clone(),
            cmd: self.ssh.raw(self.conn, self.host, vec![READ.into()]),
        }
    }

    /// `[sudo] WORDS...` on the host, each word quoted. A sudo that reads the password
    /// reads it once: then one sudo runs all the commands.
    fn as_root(&self, commands: &[Vec<Word>]) -> Cmd {
        if self.sudo == Sudo::Password {
            let lines: Vec<Word> = commands
                .iter()
                .map(|words| ssh::shell_line(words))
                .collect();
            let words = self.sudo.shell(Word::join(&lines, " && "), &[]);
            return self
                .sudo
                .feeds(self.ssh.script_of(self.conn, self.host, &[words]));
        }
        let commands: Vec<Vec<Word>> = commands
            .iter()
            .map(|words| [self.sudo.words(), words.clone()].concat())
            .collect();
        self.ssh.script_of(self.conn, self.host, &commands)
    }
}

/// The steps of a day-two command on one host, and whether the guard protects them (the
/// plan arms and confirms it: `rollback` activates).
pub fn steps(job: &Job, on: &On) -> Vec<Act> {
    match job.command {
        Command::Generations => vec![
            on.read(),
            Act::Show {
                host: on.host.clone(),
            },
        ],
        Command::Rollback => rollback(job, on),
        Command::Gc => gc(job.keep.unwrap_or(Keep::DEFAULT), on),
        _ => Vec::new(),
    }
}

/// The guard of a rollback, unless `--no-rollback`: it confirms over new connections.
pub fn guard(job: &Job, on: &On) -> Option<Guard> {
    let settings = job.guard.as_ref()?;
    (job.command == Command::Rollback).then(|| {
        let checks = &settings.health_checks;
        guard::guard(on.ssh, on.host, on.sudo, settings.timeout, checks)
    })
}

/// Reads the generations, chooses one, arms the guard, switches the profile to it and
/// activates its system, then proves the host runs that system.
fn rollback(job: &Job, on: &On) -> Vec<Act> {
    let host = on.host.clone();
    let mut acts = vec![
        on.read(),
        Act::Choose {
            host: host.clone(),
            to: job.to,
        },
    ];
    if let Some(settings) = &job.guard {
        acts.push(Act::Arm {
            host: host.clone(),
            cmd: guard::arm(
                on.ssh,
                on.conn,
                on.host,
                on.sudo,
                settings.timeout,
                "switch",
            ),
            timeout: settings.timeout,
        });
    }
    let switch = ["nix-env", "-p", PROFILE, "--switch-generation"].map(Word::from);
    let generation = Word::value(Value::Generation);
    let activate = Word::value(Value::System).and("/bin/switch-to-configuration");
    acts.push(Act::Run(on.as_root(&[
        [switch.to_vec(), vec![generation]].concat(),
        vec![activate, "switch".into()],
    ])));
    let read = on.ssh.script(
        on.conn,
        on.host,
        &[&["readlink", "-f", "/run/current-system"]],
    );
    acts.push(Act::Verify { host, cmd: read });
    acts
}

/// Reads the generations, deletes those `keep` does not keep (never the running, booted or
/// profile's one), collects garbage, prunes the boot entries of what went
/// (`switch-to-configuration boot` of the profile's system: the running one, unless a
/// deploy waits for the next boot, which stays the default), and reads what remains.
pub fn gc(keep: Keep, on: &On) -> Vec<Act> {
    let host = on.host.clone();
    let delete = ["sh", "-c", DELETE, "sh", PROFILE].map(Word::from);
    let generations = Word::value(Value::Generations);
    let collect: Vec<Word> = vec!["nix-collect-garbage".into()];
    let prune = [
        format!("{PROFILE}/bin/switch-to-configuration"),
        "boot".into(),
    ];
    vec![
        on.read(),
        Act::Select {
            host: host.clone(),
            keep,
        },
        Act::Run(on.as_root(&[[delete.to_vec(), vec![generations]].concat()])),
        Act::Collect(on.as_root(&[collect])),
        Act::Run(on.as_root(&[prune.map(Word::from).to_vec()])),
        on.read(),
        Act::Remain { host },
    ]
}

impl Act {
    /// The process it runs, if any.
    pub fn cmd(&self) -> Option<&Cmd> {
        match self {
            Act::Read { cmd, .. }
            | Act::Run(cmd)
            | Act::Collect(cmd)
            | Act::Arm { cmd, .. }
            | Act::Verify { cmd, .. } => Some(cmd),
            Act::Show { .. } | Act::Choose { .. } | Act::Select { .. } | Act::Remain { .. } => None,
        }
    }

    /// Puts `learnt` where the step holds the placeholder of `value`.
    pub fn fill(&mut self, value: Value, learnt: &str) {
        if let Act::Run(cmd) | Act::Collect(cmd) = self {
            cmd.fill(value, learnt);
        }
    }

    /// What the summary calls it when a host fails at it.
    pub fn name(&self) -> String {
        match self {
            Act::Read { .. } => "read generations",
            Act::Show { .. } => "show generations",
            Act::Choose { .. } => "choose generation",
            Act::Select { .. } => "select generations",
            Act::Run(_) => "run",
            Act::Collect(_) => "nix-collect-garbage",
            Act::Arm { .. } => "arm guard",
            Act::Verify { .. } => "verify running",
            Act::Remain { .. } => "report",
        }
        .to_owned()
    }
}

/// The dry-run form: `+ ` for every process, `# ` for what flakem checks or decides.
impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Act::Read { host, cmd } => write!(
                f,
                "+ {cmd}\n# {host}'s system generations: number, date, store path, NixOS \
                 version; the profile's, the running and booted systems, the host's clock"
            ),
            Act::Show { host } => write!(
                f,
                "# print {host}'s generations as a table (on stderr with --json, whose summary \
                 holds them)"
            ),
            Act::Choose { host, to: Some(to) } => write!(
                f,
                "# <generation> is {to}, which must be one of {host}'s generations, else stop \
                 (exit 2) with the list of those there are; <system> is its system"
            ),
            Act::Choose { host, to: None } => write!(
                f,
                "# <generation> is {host}'s newest generation before the running one that is \
                 another system, else stop (exit 2); <system> is its system"
            ),
            Act::Select { host, keep } => write!(
                f,
                "# <generations> are {host}'s generations but {keep} and the running, booted \
                 and profile's ones (possibly none)"
            ),
            // `plan` makes `Run` and `Arm` steps of its own, which say more.
            Act::Run(cmd) | Act::Collect(cmd) | Act::Arm { cmd, .. } => write!(f, "+ {cmd}"),
            Act::Verify { cmd, .. } => write!(
                f,
                "+ {cmd}\n# check that it is <system>, else stop (exit 4)"
            ),
            Act::Remain { host } => write!(
                f,
                "# report: the generations deleted and those {host} has left, and what nix freed"
            ),
        }
    }
}
