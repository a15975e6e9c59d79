//! A checked invocation: the grammar's words turned into names flakem can act on. Everything
//! a user typed is validated here, before anything runs.

use std::path::PathBuf;

use crate::commands::{Action, Command};
use crate::error::Error;
use crate::flake::Kind;
use crate::grammar::Invocation;
use crate::names::{Host, HostList, Target};
use crate::options::{DialectChoice, GcAge, Settings, Timeout};

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
    pub sudo: bool,
    pub check: bool,
    pub timeout: Timeout,
    /// `--gc-older-than`, unless `--no-gc` (or the command collects nothing).
    pub gc_older_than: Option<GcAge>,
    pub build_host: Option<Host>,
    pub jobs: Option<usize>,
    pub json: bool,
    pub log_dir: Option<PathBuf>,
    /// Build and copy first, show what changes, then activate.
    pub diff: bool,
    /// Ask once, after the diffs, before activating anything.
    pub confirm: bool,
    /// `--darwin` or `--nixos`: the kind of the target, whatever the flake says.
    pub kind: Option<Kind>,
    /// `ssh-deploy --identity`.
    pub identity: Option<PathBuf>,
    /// The user running flakem: the USER of a Home Manager configuration named without one.
    pub user: String,
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

/// Who and where flakem runs: the defaults of the local commands.
pub struct Local {
    /// This machine's short hostname.
    pub host: String,
    /// The user running flakem.
    pub user: String,
}

impl Local {
    pub fn here() -> Local {
        let name = gethostname::gethostname().to_string_lossy().into_owned();
        let user = ["USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|u| !u.is_empty())
            .unwrap_or_else(user_of_uid);
        Local {
            host: name.split('.').next().unwrap_or_default().to_owned(),
            user,
        }
    }
}

/// The name of the user running flakem, from the password database, for when the
/// environment does not say.
fn user_of_uid() -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes it is given; `name`
    // is read only when it reports a match.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let uid = libc::getuid();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        uid.to_string()
    }
}

/// At most this many hosts at a time unless `--jobs` says otherwise.
const DEFAULT_JOBS: usize = 8;

impl Job {
    /// `local` gives the host of the local commands when none is given.
    pub fn resolve(inv: Invocation, settings: Settings, local: &Local) -> Result<Job, Error> {
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
                    "FLAKE_TARGET {t:?} goes with one host, not {hosts}: each host deploys \
                     the configuration of its own name"
                )));
            }
        }
        let target = match (command, &inv.target) {
            (Command::SshWait, _) | (_, None) => None,
            (_, Some(t)) => Some(Target::parse(t)?),
        };
        let Settings {
            options,
            wait,
            gc,
            push,
            diff,
            kind,
            secret,
        } = settings;
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
            sudo: !options.no_sudo,
            check: !options.no_check,
            timeout: wait.map_or(Timeout(None), |w| w.timeout),
            gc_older_than: gc.filter(|g| !g.no_gc).map(|g| g.gc_older_than),
            build_host: push.and_then(|p| p.build_host),
            jobs: options.jobs.map(usize::from),
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

    /// `<flake>#<target>`, as nixos-rebuild takes it.
    pub fn flake_attr(&self, target: &Target) -> String {
        format!("{}#{target}", self.flake)
    }
}
