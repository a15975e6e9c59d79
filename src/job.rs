//! A checked invocation: the grammar's words turned into names flakem can act on. Everything
//! a user typed is validated here, before anything runs.

use crate::commands::{Action, Command};
use crate::error::Error;
use crate::grammar::Invocation;
use crate::options::{DialectChoice, GcAge, Settings, Timeout};
use crate::target::{Host, Target};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub command: Command,
    pub action: Action,
    pub host: Host,
    /// The configuration name; `None` only for `ssh-wait`, which needs no flake.
    pub target: Option<Target>,
    /// `NIX_OPTIONS`, or `ssh-wait`'s `CMD...`, verbatim.
    pub rest: Vec<String>,
    pub flake: String,
    pub dialect: DialectChoice,
    pub dry_run: bool,
    pub sudo: bool,
    pub timeout: Timeout,
    /// `--gc-older-than`, unless `--no-gc` (or the command collects nothing).
    pub gc_older_than: Option<GcAge>,
}

impl Job {
    /// `local_host` is this machine's short hostname, the host of `build` and `switch`
    /// when none is given.
    pub fn resolve(inv: Invocation, settings: Settings, local_host: &str) -> Result<Job, Error> {
        let host = Host::parse(inv.host.as_deref().unwrap_or(local_host))?;
        let target = match (inv.command, &inv.target) {
            (Command::SshWait, _) => None,
            (_, Some(t)) => Some(Target::parse(t)?),
            (_, None) => Some(Target::parse(host.without_user())?),
        };
        let Settings { options, wait, gc } = settings;
        Ok(Job {
            command: inv.command,
            action: inv.action.unwrap_or(inv.command.default_action()),
            host,
            target,
            rest: inv.rest,
            flake: options.flake,
            dialect: options.dialect,
            dry_run: options.dry_run,
            sudo: !options.no_sudo,
            timeout: wait.map_or(Timeout(None), |w| w.timeout),
            gc_older_than: gc.filter(|g| !g.no_gc).map(|g| g.gc_older_than),
        })
    }

    /// `<flake>#<target>`, as nixos-rebuild takes it.
    pub fn flake_attr(&self) -> Option<String> {
        self.target.as_ref().map(|t| format!("{}#{t}", self.flake))
    }
}

/// This machine's short hostname: the default host of `build` and `switch`.
pub fn short_hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    name.split('.').next().unwrap_or_default().to_owned()
}
