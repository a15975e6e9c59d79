//! A checked invocation: the grammar's words turned into names flakem can act on. Everything
//! a user typed is validated here, before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use crate::commands::{Action, Command};
use crate::duration::{GcAge, Keep, Timeout};
use crate::error::Error;
use crate::grammar::{self, Invocation, Parsed};
use crate::kind::Kind;
use crate::names::{Host, HostList, Target};
use crate::options::{self, DialectChoice, GcOptions, PruneOptions, Settings};
use crate::sudo::Sudo;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub command: Command,
    pub action: Action,
    pub hosts: HostList,
    /// An explicit `FLAKE_TARGET` (one host only).
    pub target: Option<Target>,
    /// `NIX_OPTIONS`, or `ssh-wait`'s `CMD...`, verbatim.
    pub rest: Vec<String>,
    pub flake: String,
    pub dialect: DialectChoice,
    pub dry_run: bool,
    /// sudo on the target: none (`--no-sudo`), passwordless, or with the password asked once
    /// (`--ask-sudo-password`).
    pub sudo: Sudo,
    pub check: bool,
    pub timeout: Timeout,
    /// `--gc-older-than`, unless `--no-gc` or `--keep` (or the command collects nothing).
    pub gc_older_than: Option<GcAge>,
    /// Which old generations `gc` keeps, or a reset given `--keep N`.
    pub keep: Option<Keep>,
    /// `rollback --to N`: the generation to switch to.
    pub to: Option<u32>,
    pub build_host: Option<Host>,
    pub jobs: Option<usize>,
    /// `--canary`: how many hosts deploy before the others, who wait for them.
    pub canary: usize,
    /// `--keep-going`: a rolling run does not stop at a host that failed.
    pub keep_going: bool,
    pub json: bool,
    pub log_dir: Option<PathBuf>,
    /// Build and copy first, show what changes, then activate.
    pub diff: bool,
    /// Ask once, after the diffs, before activating anything.
    pub confirm: bool,
    /// The guard of a remote activation, unless `--no-rollback` (or the command has none).
    pub guard: Option<GuardSettings>,
    /// `--darwin` or `--nixos`: the kind of the target, whatever the flake says.
    pub kind: Option<Kind>,
    /// `ssh-deploy --identity`.
    pub identity: Option<PathBuf>,
    /// The user running flakem: the USER of a Home Manager configuration named without one.
    pub user: String,
}

/// How the guard of a remote activation confirms it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardSettings {
    /// How long the host waits for the confirmation after the activation ended.
    pub timeout: Duration,
    /// `--health-check`: commands run on the host, as the ssh user, before confirming.
    pub health_checks: Vec<String>,
}

/// One host of a job and the configuration it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub host: Host,
    /// `None` only for `ssh-wait`, which needs no flake.
    pub target: Option<Target>,
    /// What the target deploys; read from the flake for system configurations.
    pub kind: Kind,
}

/// Refuses a machine named twice: two entries with the same destination or the same
/// configuration (`web1,root@web1`, or an address that turns out to be web1's) would run
/// two deploys of it at once.
pub fn each_once(machines: Vec<Machine>) -> Result<Vec<Machine>, Error> {
    for (i, m) in machines.iter().enumerate() {
        let same = |o: &&Machine| o.host == m.host || (m.target.is_some() && o.target == m.target);
        if let Some(other) = machines[..i].iter().find(same) {
            let what = match &m.target {
                Some(target) if other.host != m.host => format!("the configuration {target}"),
                _ => m.host.to_string(),
            };
            return Err(Error::Usage(format!(
                "DEPLOY_HOST names {what} twice ({} and {}): give each machine once",
                other.host, m.host
            )));
        }
    }
    Ok(machines)
}

/// Who and where flakem runs: the defaults of the local commands (resolve finds them).
pub struct Local {
    /// This machine's short hostname.
    pub host: String,
    /// The user running flakem.
    pub user: String,
}

/// At most this many hosts at a time unless `--jobs` says otherwise.
const DEFAULT_JOBS: usize = 8;

/// The hosts and configuration an invocation names, refused where they do not fit its
/// command.
fn hosts_and_target(inv: &Invocation, local: &Local) -> Result<(HostList, Option<Target>), Error> {
    let command = inv.command;
    let default = match command.home() {
        true => format!("{}@{}", local.user, local.host),
        false => local.host.clone(),
    };
    let hosts = HostList::parse(inv.host.as_deref().unwrap_or(&default))?;
    if command == Command::SshDeploy && !inv.rest.is_empty() {
        return Err(Error::Usage(format!(
            "ssh-deploy takes SSH_LOGIN [HOSTNAME], not {:?}",
            inv.rest.join(" ")
        )));
    }
    if hosts.single().is_none() {
        if command.host_is_optional() {
            return Err(Error::Usage(format!(
                "{command} takes one host: several would share one ./result"
            )));
        }
        if let Some(t) = &inv.target {
            return Err(Error::Usage(format!(
                "FLAKE_TARGET {t:?} goes with one host, not {hosts}: each host deploys the \
                 configuration of its own name"
            )));
        }
    }
    let target = match (command, &inv.target) {
        (Command::SshWait, _) | (_, None) => None,
        (_, Some(t)) => Some(Target::parse(t)?),
    };
    Ok((hosts, target))
}

impl Job {
    /// The job the arguments (without the program name) ask for; `None` when they asked for
    /// help or the version, which clap printed. `called_as` is the command the program was
    /// started as, through a link of that name.
    pub fn from_args(
        called_as: Option<Command>,
        args: &[String],
        local: &Local,
    ) -> Result<Option<Job>, Error> {
        let invocation = match grammar::parse(called_as, args)? {
            Parsed::Run(invocation) => invocation,
            Parsed::OptionsOnly { command, options } => {
                return clap_error(options::answer(command, &options)).map(|()| None);
            }
        };
        match options::settings(invocation.command, &invocation.options) {
            Ok(settings) => Job::resolve(invocation, settings, local).map(Some),
            Err(e) => clap_error(e).map(|()| None),
        }
    }

    /// `local` gives the host of the local commands when none is given.
    pub fn resolve(inv: Invocation, settings: Settings, local: &Local) -> Result<Job, Error> {
        let command = inv.command;
        let (hosts, target) = hosts_and_target(&inv, local)?;
        let Settings {
            options,
            wait,
            gc,
            push,
            diff,
            guard,
            kind,
            secret,
            prune,
            rollback,
            sudo,
        } = settings;
        let (gc_older_than, keep) = collects(gc, prune);
        let confirm = diff.as_ref().is_some_and(|d| d.confirm);
        Ok(Job {
            command,
            action: inv.action.unwrap_or(command.default_action()),
            hosts,
            target,
            rest: inv.rest,
            flake: options.flake,
            dialect: options.dialect,
            dry_run: options.dry_run,
            sudo: match (options.no_sudo, sudo.is_some_and(|s| s.ask_sudo_password)) {
                (true, _) => Sudo::No,
                (false, true) => Sudo::Password,
                (false, false) => Sudo::Plain,
            },
            check: !options.no_check,
            timeout: wait.map_or(Timeout(None), |w| w.timeout),
            gc_older_than,
            keep,
            to: rollback.and_then(|r| r.to),
            build_host: push.and_then(|p| p.build_host),
            jobs: options.jobs.map(usize::from),
            canary: options.canary.map_or(0, usize::from),
            keep_going: options.keep_going,
            json: options.json,
            log_dir: options.log_dir,
            diff: confirm || diff.is_some_and(|d| d.diff),
            confirm,
            kind: kind.and_then(|k| match (k.darwin, k.nixos) {
                (true, _) => Some(Kind::Darwin),
                (_, true) => Some(Kind::Nixos),
                _ => None,
            }),
            identity: secret.and_then(|s| s.identity),
            guard: guard.filter(|g| !g.no_rollback).map(|g| GuardSettings {
                timeout: g.rollback_timeout.0.unwrap_or_default(),
                health_checks: g.health_check,
            }),
            user: local.user.clone(),
        })
    }

    /// The machines of this job. `names` are the flake's NixOS configurations, needed for
    /// `@all` and `@pattern`.
    pub fn machines(&self, names: &[String]) -> Result<Vec<Machine>, Error> {
        let hosts = self.hosts.expand(names)?;
        let kind = if self.command.home() {
            Kind::Home
        } else {
            Kind::Nixos
        };
        hosts
            .into_iter()
            .map(|host| {
                let target = match (&self.target, self.command) {
                    (_, Command::SshWait) => None,
                    // Home Manager names its configurations USER@HOST.
                    (t, _) if self.command.home() => {
                        let user = host
                            .as_str()
                            .split_once('@')
                            .map_or(&*self.user, |(u, _)| u);
                        let name = t.as_ref().map_or(host.without_user(), Target::as_str);
                        Some(Target::parse(&format!("{user}@{name}"))?)
                    }
                    (Some(t), _) => Some(t.clone()),
                    (None, _) => Some(Target::parse(host.without_user())?),
                };
                Ok(Machine { host, target, kind })
            })
            .collect::<Result<Vec<_>, Error>>()
            .and_then(each_once)
    }

    /// How many hosts run at once: resets roll one at a time unless told otherwise, since
    /// rebooting a whole fleet at once is rarely meant.
    pub fn parallel(&self, hosts: usize) -> usize {
        let default = if self.command.resets() {
            1
        } else {
            DEFAULT_JOBS
        };
        self.jobs.unwrap_or(default).clamp(1, hosts.max(1))
    }

    /// Refuses what the kind of `machine`'s configuration cannot do.
    pub fn refuse_kind(&self, machine: &Machine) -> Result<(), Error> {
        let (Kind::Darwin, Some(target)) = (machine.kind, &machine.target) else {
            return Ok(());
        };
        if self.command.resets() {
            return Err(Error::Usage(format!(
                "`{target}` is a nix-darwin machine: the reset commands are NixOS-only (macOS \
                 has no boot id or booted-system to prove a reboot by)"
            )));
        }
        if matches!(
            self.action,
            Action::Boot | Action::Test | Action::DryActivate
        ) {
            return Err(Error::Usage(format!(
                "`{target}` is a nix-darwin machine: it has no `{}`; switch activates it",
                self.action.name()
            )));
        }
        Ok(())
    }

    /// Whether a run of `hosts` at a time stops at the first host that failed or was
    /// rolled back: a rolling one (one at a time), unless `--keep-going`.
    pub fn halts(&self, at_a_time: usize) -> bool {
        at_a_time == 1 && !self.keep_going
    }

    /// `<flake>#<target>`, as nixos-rebuild takes it.
    pub fn flake_attr(&self, target: &Target) -> String {
        format!("{}#{target}", self.flake)
    }
}

/// What a reset (`--gc-older-than`, or `--keep`) or `gc` (`--keep`, `--older-than`) deletes.
fn collects(gc: Option<GcOptions>, prune: Option<PruneOptions>) -> (Option<GcAge>, Option<Keep>) {
    let Some(gc) = gc.filter(|g| !g.no_gc) else {
        return (None, prune.map(|p| p.keep()));
    };
    match gc.keep {
        Some(n) => (None, Some(Keep::Newest(n))),
        None => (Some(gc.gc_older_than), None),
    }
}

/// Help and version requests print and succeed; any other clap error becomes one line.
fn clap_error(e: clap::Error) -> Result<(), Error> {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // A reader that went away (`| head`) is no error worth reporting.
            e.print().ok();
            Ok(())
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Err(Error::Usage(format!(
                "missing command; one of: {}",
                Command::ALL.map(Command::name).join(", ")
            )))
        }
        _ => {
            let text = e.to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .collect::<Vec<_>>()
                .join(" ");
            Err(Error::Usage(line.trim_start_matches("error: ").to_owned()))
        }
    }
}
