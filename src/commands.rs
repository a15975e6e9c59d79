//! The one list of flakem's commands. The subcommands, the names the binary answers to
//! through links, the help text and the completions all come from [`Command::ALL`]; the Nix
//! package reads the same names from `commands.json`, and a test keeps the two equal.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Build,
    BuildThere,
    Switch,
    SwitchPull,
    SwitchPush,
    SwitchPullReset,
    SwitchPushReset,
    SshWait,
    HmBuild,
    HmSwitch,
    HmPush,
    HmPull,
    SshDeploy,
    Generations,
    Rollback,
    Gc,
}

/// Where a command builds and where it activates, relative to `DEPLOY_HOST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Build and activate on this machine; the host only names the configuration.
    Local,
    /// Build on the host and activate there (`--build-host H --target-host H`).
    Pull,
    /// Build here, activate on the host (`--target-host H`).
    Push,
}

impl Command {
    pub const ALL: [Command; 16] = [
        Command::Build,
        Command::BuildThere,
        Command::Switch,
        Command::SwitchPull,
        Command::SwitchPush,
        Command::SwitchPullReset,
        Command::SwitchPushReset,
        Command::SshWait,
        Command::HmBuild,
        Command::HmSwitch,
        Command::HmPush,
        Command::HmPull,
        Command::SshDeploy,
        Command::Generations,
        Command::Rollback,
        Command::Gc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Command::Build => "build",
            Command::BuildThere => "build-there",
            Command::Switch => "switch",
            Command::SwitchPull => "switch-pull",
            Command::SwitchPush => "switch-push",
            Command::SwitchPullReset => "switch-pull-reset",
            Command::SwitchPushReset => "switch-push-reset",
            Command::SshWait => "ssh-wait",
            Command::HmBuild => "hm-build",
            Command::HmSwitch => "hm-switch",
            Command::HmPush => "hm-push",
            Command::HmPull => "hm-pull",
            Command::SshDeploy => "ssh-deploy",
            Command::Generations => "generations",
            Command::Rollback => "rollback",
            Command::Gc => "gc",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Command::Build => "Build a configuration here (nixos-rebuild build)",
            Command::BuildThere => {
                "Build a configuration on HOST (nixos-rebuild build --build-host HOST)"
            }
            Command::Switch => "Build and switch this machine (nixos-rebuild switch)",
            Command::SwitchPull => "Build on HOST and activate there",
            Command::SwitchPush => "Build here and activate on HOST",
            Command::SwitchPullReset => {
                "Build on HOST, deploy as next boot, reboot, verify, collect garbage"
            }
            Command::SwitchPushReset => {
                "Build here, deploy to HOST as next boot, reboot, verify, collect garbage"
            }
            Command::SshWait => "Retry ssh until HOST answers, then run CMD there",
            Command::HmBuild => "Build a Home Manager configuration here",
            Command::HmSwitch => "Build a Home Manager configuration here and activate it",
            Command::HmPush => "Build a Home Manager configuration here, activate it on HOST",
            Command::HmPull => "Build a Home Manager configuration on HOST and activate it there",
            Command::SshDeploy => {
                "Install a host's age key (hosts/NAME/NAME.age.key) for sops-nix on HOST"
            }
            Command::Generations => {
                "List HOST's system generations: date, store path, NixOS version, running, booted"
            }
            Command::Rollback => {
                "Switch HOST to its previous system generation (or --to N), guarded and verified"
            }
            Command::Gc => {
                "Delete HOST's old system generations (never the running or booted one), collect \
                 garbage, prune boot entries"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The command a program path names, when flakem was started through a link named
    /// after one.
    pub fn called_as(program: &OsStr) -> Option<Command> {
        Path::new(program)
            .file_name()?
            .to_str()
            .and_then(Command::from_name)
    }

    /// Where this command builds and activates; `None` for `ssh-wait`, `ssh-deploy` and the
    /// day-two commands, which run no rebuild.
    pub fn placement(self) -> Option<Placement> {
        match self {
            Command::Build | Command::Switch | Command::HmBuild | Command::HmSwitch => {
                Some(Placement::Local)
            }
            Command::BuildThere
            | Command::SwitchPull
            | Command::SwitchPullReset
            | Command::HmPull => Some(Placement::Pull),
            Command::SwitchPush | Command::SwitchPushReset | Command::HmPush => {
                Some(Placement::Push)
            }
            Command::SshWait | Command::SshDeploy => None,
            Command::Generations | Command::Rollback | Command::Gc => None,
        }
    }

    /// The `hm-*` commands deploy Home Manager configurations; the others, the system's.
    pub fn home(self) -> bool {
        matches!(
            self,
            Command::HmBuild | Command::HmSwitch | Command::HmPush | Command::HmPull
        )
    }

    /// Local commands act on this machine, so their host may be left out.
    pub fn host_is_optional(self) -> bool {
        self.placement() == Some(Placement::Local)
    }

    /// Only `switch-push` and `switch-pull` take an `ACTION` word.
    pub fn takes_action(self) -> bool {
        matches!(self, Command::SwitchPull | Command::SwitchPush)
    }

    /// The reset commands reboot the host and collect garbage after it came back.
    pub fn resets(self) -> bool {
        matches!(self, Command::SwitchPullReset | Command::SwitchPushReset)
    }

    /// System deploys that build here and activate elsewhere: they may build on a third host.
    pub fn pushes(self) -> bool {
        self.placement() == Some(Placement::Push) && !self.home()
    }

    /// Commands whose steps log into `DEPLOY_HOST` through one shared connection (a
    /// build, activation or key install there).
    pub fn logs_in(self) -> bool {
        self.placement().is_some_and(|p| p != Placement::Local)
            || self == Command::SshDeploy
            || self.day_two()
    }

    /// System deploys that activate on a remote host.
    pub fn activates_remotely(self) -> bool {
        matches!(self.placement(), Some(Placement::Pull | Placement::Push))
            && self != Command::BuildThere
            && !self.home()
    }

    /// Commands whose activation on a remote host must be confirmed: a `switch` or `test`
    /// by a new connection, or the host reverts by itself; a reset's new boot by its
    /// health checks, or flakem boots the host back into what it ran.
    pub fn guards(self) -> bool {
        self.takes_action() || self.resets() || self == Command::Rollback
    }

    /// Day two: commands that work on a host's system generations rather than on a
    /// configuration of the flake, which only names the hosts of `@all` and `@pattern`.
    pub fn day_two(self) -> bool {
        matches!(self, Command::Generations | Command::Rollback | Command::Gc)
    }

    /// Commands that use sudo on a remote host, and so can be given its password once
    /// (`--ask-sudo-password`).
    pub fn sudo_password(self) -> bool {
        self.activates_remotely()
            || matches!(self, Command::Rollback | Command::Gc | Command::SshDeploy)
    }

    /// Commands that wait for a host, and so take `--timeout`.
    pub fn waits(self) -> bool {
        self.resets() || self == Command::SshWait
    }

    /// Commands whose configuration may be NixOS or nix-darwin, read from the flake.
    pub fn system_kinds(self) -> bool {
        self.placement().is_some() && !self.home()
    }

    /// The action a command runs when the user gives none.
    pub fn default_action(self) -> Action {
        match self {
            Command::Build | Command::BuildThere | Command::HmBuild => Action::Build,
            Command::SwitchPullReset | Command::SwitchPushReset => Action::Boot,
            _ => Action::Switch,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `nixos-rebuild` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Switch,
    Boot,
    Test,
    DryActivate,
    Build,
}

impl Action {
    /// The actions a user may give to `switch-push` and `switch-pull`.
    pub const CHOSEN: [Action; 4] = [
        Action::Switch,
        Action::Boot,
        Action::Test,
        Action::DryActivate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Boot => "boot",
            Action::Test => "test",
            Action::DryActivate => "dry-activate",
            Action::Build => "build",
        }
    }

    pub fn chosen_from(word: &str) -> Option<Action> {
        Action::CHOSEN.into_iter().find(|a| a.name() == word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `commands.json` is the list the Nix package reads (links, packages, overlay, modules).
    #[test]
    fn the_names_are_those_of_commands_json() {
        let listed: Vec<String> = serde_json::from_str(include_str!("../commands.json")).unwrap();
        assert_eq!(listed, Command::ALL.map(Command::name));
    }

    #[test]
    fn links_name_their_command() {
        let called = |p: &str| Command::called_as(OsStr::new(p));
        assert_eq!(
            called("/nix/store/x-flakem/bin/switch-push"),
            Some(Command::SwitchPush)
        );
        assert_eq!(called("ssh-wait"), Some(Command::SshWait));
        assert_eq!(called("/usr/bin/flakem"), None);
    }
}
