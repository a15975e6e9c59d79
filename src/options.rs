//! flakem's own options, defined once with clap: the grammar asks this tree which words are
//! options, clap checks their values, and help and completions are rendered from it.

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, ValueEnum};

use crate::commands::Command;
use crate::duration::{GcAge, Keep, Timeout};

/// Options every command takes.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Print the plan on stdout and run nothing: no nix, no ssh, no probe
    #[arg(short = 'n', long, global = true)]
    pub dry_run: bool,

    /// The flake holding the configurations (a path or flake reference, without `#`)
    #[arg(long, env = "FLAKEM_FLAKE", default_value = ".", value_name = "REF",
          value_parser = parse_flake_ref, global = true)]
    pub flake: String,

    /// Which nixos-rebuild is installed: the Python rewrite (ng) or the shell script (legacy)
    #[arg(long, env = "FLAKEM_DIALECT", value_enum, default_value_t = DialectChoice::Auto,
          global = true)]
    pub dialect: DialectChoice,

    /// Leave out sudo on the target (for targets without sudo, or when logging in as root)
    #[arg(long, global = true)]
    pub no_sudo: bool,

    /// Skip the checks before the build (target in the flake is always checked; this skips
    /// ssh and sudo on each host)
    #[arg(long, global = true)]
    pub no_check: bool,

    /// How many hosts at a time [default: all, up to 8; resets: 1, rolling]
    #[arg(short = 'j', long, value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Several hosts: deploy these first (in the order given; @all and @pattern in name
    /// order), and the others only if every one of them came through
    #[arg(long, value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub canary: Option<u16>,

    /// A rolling run (resets, or --jobs 1) goes on after a host that failed or was rolled
    /// back, instead of stopping there
    #[arg(long, global = true)]
    pub keep_going: bool,

    /// Print the summary as JSON on stdout (children's output goes to stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// Also write each host's output to DIR/<host>.log
    #[arg(long, value_name = "DIR", global = true)]
    pub log_dir: Option<std::path::PathBuf>,
}

/// Options of the commands that activate on a remote host.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Before activating, show the package changes between what each host runs and what it
    /// is about to get (nix store diff-closures, run there)
    #[arg(long)]
    pub diff: bool,

    /// Like --diff, then ask once whether to go on (needs a terminal)
    #[arg(long)]
    pub confirm: bool,
}

/// Options of the commands that use sudo on a remote host.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SudoOptions {
    /// Ask for the sudo password of the hosts once, on the terminal, and give it to every
    /// sudo there on its stdin (never in an argument, a log or a file); needs nixos-rebuild ng
    #[arg(long, conflicts_with = "no_sudo")]
    pub ask_sudo_password: bool,
}

/// Options of the commands whose remote activation is guarded.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct GuardOptions {
    /// How long the host waits, after the activation ended, for a new ssh connection (and
    /// every --health-check) to confirm it, before it puts the system it ran back by itself
    /// (after a reset's reboot: how long each --health-check may take)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_rollback_timeout)]
    pub rollback_timeout: Timeout,

    /// A command run on the host as the ssh user after the activation (after a reset, once
    /// it booted the new system); it must succeed within the rollback timeout, or the host
    /// is rolled back (repeatable)
    #[arg(long, value_name = "CMD")]
    pub health_check: Vec<String>,

    /// Activate without the guard: a host the new system cuts off stays cut off
    #[arg(long)]
    pub no_rollback: bool,
}

/// A rollback timeout is a bound: 0 (forever) would never roll back.
fn parse_rollback_timeout(s: &str) -> Result<Timeout, String> {
    match Timeout::parse(s)? {
        Timeout(None) => Err("the host needs a deadline to roll back by: give more than 0".into()),
        timeout => Ok(timeout),
    }
}

/// Options of the commands whose configuration is a system: NixOS or nix-darwin.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KindOptions {
    /// Take FLAKE_TARGET from darwinConfigurations, whatever nixosConfigurations holds
    #[arg(long, conflicts_with = "nixos")]
    pub darwin: bool,

    /// Take FLAKE_TARGET from nixosConfigurations, whatever darwinConfigurations holds
    #[arg(long)]
    pub nixos: bool,
}

/// Options of `ssh-deploy`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SecretOptions {
    /// The age identity that decrypts an age-encrypted key [default: $SOPS_AGE_KEY_FILE,
    /// else ~/.config/sops/age/keys.txt]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

/// Options of the commands that build here and deploy elsewhere.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// Build on this host instead of here (nixos-rebuild's --build-host), for small targets
    #[arg(long, value_name = "HOST", value_parser = parse_build_host)]
    pub build_host: Option<crate::names::Host>,
}

fn parse_build_host(s: &str) -> Result<crate::names::Host, String> {
    crate::names::Host::parse(s).map_err(|e| e.to_string())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialectChoice {
    /// Ask the installed nixos-rebuild (a probe with a bogus flag, no side effects)
    Auto,
    /// The Python rewrite (NixOS 25.11 and later)
    Ng,
    /// The shell script (NixOS 25.05 and earlier)
    Legacy,
}

/// Options of the commands that wait for a host.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct WaitOptions {
    /// How long each wait for the host may last: 90s, 10m, 1h, or seconds; 0 waits forever
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = Timeout::parse)]
    pub timeout: Timeout,
}

/// Options of the reset commands.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Delete generations older than this after the reboot (days, as nix takes it: 15d; 0d
    /// deletes every old generation)
    #[arg(long, default_value = "15d", value_name = "AGE", value_parser = GcAge::parse)]
    pub gc_older_than: GcAge,

    /// Keep old generations: collect no garbage after the reboot
    #[arg(long)]
    pub no_gc: bool,

    /// Instead of --gc-older-than: keep the newest N system generations (and the running and
    /// booted ones), delete the others
    #[arg(long, value_name = "N", conflicts_with_all = ["gc_older_than", "no_gc"])]
    pub keep: Option<u32>,
}

/// Options of `gc`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep the newest N system generations, and always the running and booted ones
    /// [default: 5]
    #[arg(long, value_name = "N", conflicts_with = "older_than")]
    pub keep: Option<u32>,

    /// Instead of --keep: delete the generations older than this (days, as nix takes it:
    /// 30d), never the running or booted one
    #[arg(long, value_name = "AGE", value_parser = GcAge::parse)]
    pub older_than: Option<GcAge>,
}

impl PruneOptions {
    pub fn keep(&self) -> Keep {
        match (self.keep, self.older_than) {
            (Some(n), _) => Keep::Newest(n),
            (None, Some(age)) => Keep::NewerThan(age),
            (None, None) => Keep::DEFAULT,
        }
    }
}

/// Options of `rollback`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RollbackOptions {
    /// The system generation to switch to [default: the one before the running one]
    #[arg(long, value_name = "N")]
    pub to: Option<u32>,
}

/// Everything clap resolved for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub options: Options,
    pub wait: Option<WaitOptions>,
    pub gc: Option<GcOptions>,
    pub push: Option<PushOptions>,
    pub diff: Option<DiffOptions>,
    pub guard: Option<GuardOptions>,
    pub kind: Option<KindOptions>,
    pub secret: Option<SecretOptions>,
    pub prune: Option<PruneOptions>,
    pub rollback: Option<RollbackOptions>,
    pub sudo: Option<SudoOptions>,
}

fn parse_flake_ref(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the flake reference is empty".into())
    } else if s.contains('#') {
        Err("give the flake without `#`: flakem adds `#<target>` itself".into())
    } else {
        Ok(s.to_owned())
    }
}

/// The whole command tree: `flakem` with one subcommand per entry of [`Command::ALL`].
pub fn tree() -> clap::Command {
    // `about` after `augment_args`: the derive would put the structs' docs there instead.
    let root = Options::augment_args(clap::Command::new("flakem"))
        .version(env!("CARGO_PKG_VERSION"))
        .about("Deploy NixOS machines declared in a flake, printing every command it runs")
        .subcommand_required(true)
        .disable_help_subcommand(true)
        .propagate_version(true)
        .after_help(EXIT_CODES);
    Command::ALL.into_iter().fold(root, |root, c| {
        root.subcommand(subcommand(c).about(c.about()))
    })
}

const EXIT_CODES: &str = "Exit status: 0 success; a failed step's own status; 2 refused invocation; \
3 a wait ran past its deadline; 4 a host came back wrong or refuses us; 5 a check failed; 6 the \
host was rolled back to the system it ran before; 127 a program is missing; 130 interrupted.";

/// `c`'s own options, besides the global ones.
fn options_of(c: Command, mut sub: clap::Command) -> clap::Command {
    if c.waits() {
        sub = WaitOptions::augment_args(sub);
    }
    if c.resets() {
        sub = GcOptions::augment_args(sub);
    }
    if c.pushes() {
        sub = PushOptions::augment_args(sub);
    }
    if c.activates_remotely() {
        sub = DiffOptions::augment_args(sub);
    }
    if c.guards() {
        sub = GuardOptions::augment_args(sub);
    }
    if c.sudo_password() {
        sub = SudoOptions::augment_args(sub);
    }
    if c.system_kinds() {
        sub = KindOptions::augment_args(sub);
    }
    if c == Command::SshDeploy {
        sub = SecretOptions::augment_args(sub);
    }
    if c == Command::Gc {
        sub = PruneOptions::augment_args(sub);
    }
    if c == Command::Rollback {
        sub = RollbackOptions::augment_args(sub);
    }
    sub
}

fn subcommand(c: Command) -> clap::Command {
    let mut sub = options_of(c, clap::Command::new(c.name()));
    let mut index = 0;
    // Positionals are parsed by the grammar (options may stand between them); they are
    // declared here so that help and completions show them.
    if c.takes_action() {
        sub = sub.arg(
            positional("ACTION", &mut index).help("switch (default), boot, test or dry-activate"),
        );
    }
    let host_help = match c {
        _ if c.home() && c.host_is_optional() => {
            "USER@HOST of the configuration (default: this user at this machine's short hostname)"
        }
        _ if c.home() => "What ssh is given: USER@HOST; the configuration is USER@HOST too",
        Command::SshDeploy => "What ssh is given: host, user@host or an ssh config alias",
        _ if c.host_is_optional() => {
            "The machine: host or user@host (default: this machine's short hostname)"
        }
        _ => {
            "What ssh is given: host, user@host or an ssh config alias; several as a,b,c; \
             @all or @pattern for the flake's configurations"
        }
    };
    sub = sub.arg(positional("DEPLOY_HOST", &mut index).help(host_help));
    if c.day_two() {
        // The host's generations, whatever the flake says: no configuration, no nix options.
        return sub;
    }
    if c == Command::SshWait {
        return sub.arg(
            positional("CMD", &mut index)
                .help("A command for ssh to run there once it answers")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true),
        );
    }
    if c == Command::SshDeploy {
        return sub.arg(positional("HOSTNAME", &mut index).help(
            "Whose key: hosts/HOSTNAME/HOSTNAME.age.key (default: DEPLOY_HOST without user@)",
        ));
    }
    let target_help = if c.home() {
        "The HOST part of the configuration's name, USER@FLAKE_TARGET (default: DEPLOY_HOST's)"
    } else {
        "The name under nixosConfigurations or darwinConfigurations (default: DEPLOY_HOST \
         without user@)"
    };
    let target = positional("FLAKE_TARGET", &mut index).help(target_help);
    sub.arg(target).arg(
        positional("NIX_OPTIONS", &mut index)
            .help("Passed to nixos-rebuild (or nix) verbatim, in order")
            .num_args(0..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true),
    )
}

/// The tree a user sees: `tree` itself, or through a link, that command on its own, named
/// after the link and with flakem's global options.
pub fn tree_as(tree: clap::Command, called_as: Option<Command>) -> clap::Command {
    let Some(command) = called_as else {
        return tree;
    };
    let mut tree = tree;
    // Building copies the global options into every subcommand.
    tree.build();
    tree.find_subcommand(command.name())
        .expect("every command is a subcommand of the tree")
        .clone()
        .bin_name(command.name())
        .display_name(command.name())
        .version(env!("CARGO_PKG_VERSION"))
}

/// A positional argument numbered in order, so that completion can add to it later without
/// moving it (`Command::mut_arg` puts the argument last).
fn positional(name: &'static str, index: &mut usize) -> Arg {
    *index += 1;
    Arg::new(name).index(*index)
}

/// One option as the grammar needs to know it.
pub struct OptionName {
    pub long: Option<String>,
    pub short: Option<char>,
    pub takes_value: bool,
}

/// Every option name of the whole tree, so that an option is recognised wherever it stands.
pub fn names() -> Vec<OptionName> {
    let mut tree = tree();
    tree.build();
    let mut all: Vec<OptionName> = Vec::new();
    let commands = std::iter::once(&tree).chain(tree.get_subcommands());
    for arg in commands.flat_map(|c| c.get_arguments()) {
        if arg.is_positional() || all.iter().any(|o| o.long.as_deref() == arg.get_long()) {
            continue;
        }
        all.push(OptionName {
            long: arg.get_long().map(str::to_owned),
            short: arg.get_short(),
            takes_value: matches!(arg.get_action(), ArgAction::Set | ArgAction::Append),
        });
    }
    all
}

/// Lets clap check and resolve the option words the grammar collected (values, defaults,
/// environment variables). Help and version requests come back as clap errors to print.
pub fn settings(command: Command, words: &[String]) -> Result<Settings, clap::Error> {
    let argv = ["flakem", command.name()]
        .into_iter()
        .map(str::to_owned)
        .chain(words.iter().cloned());
    let matches = tree().try_get_matches_from(argv)?;
    let sub = matches
        .subcommand_matches(command.name())
        .expect("clap returns the subcommand it was given");
    Ok(Settings {
        options: Options::from_arg_matches(sub)?,
        wait: from_matches_if::<WaitOptions>(command.waits(), sub)?,
        gc: from_matches_if::<GcOptions>(command.resets(), sub)?,
        push: from_matches_if::<PushOptions>(command.pushes(), sub)?,
        diff: from_matches_if::<DiffOptions>(command.activates_remotely(), sub)?,
        guard: from_matches_if::<GuardOptions>(command.guards(), sub)?,
        kind: from_matches_if::<KindOptions>(command.system_kinds(), sub)?,
        secret: from_matches_if::<SecretOptions>(command == Command::SshDeploy, sub)?,
        prune: from_matches_if::<PruneOptions>(command == Command::Gc, sub)?,
        rollback: from_matches_if::<RollbackOptions>(command == Command::Rollback, sub)?,
        sudo: from_matches_if::<SudoOptions>(command.sudo_password(), sub)?,
    })
}

/// clap's answer to options alone: help, version, or "missing command".
pub fn answer(command: Option<Command>, words: &[String]) -> clap::Error {
    let argv = std::iter::once("flakem")
        .chain(command.map(Command::name))
        .map(str::to_owned)
        .chain(words.iter().cloned());
    match tree().try_get_matches_from(argv) {
        Err(e) => e,
        Ok(_) => tree().error(clap::error::ErrorKind::MissingSubcommand, "missing command"),
    }
}

fn from_matches_if<T: FromArgMatches>(
    present: bool,
    matches: &ArgMatches,
) -> Result<Option<T>, clap::Error> {
    present.then(|| T::from_arg_matches(matches)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_consistent() {
        tree().debug_assert();
    }

    #[test]
    fn flake_refs_without_fragment() {
        assert!(parse_flake_ref(".").is_ok());
        assert!(parse_flake_ref("github:me/infra").is_ok());
        assert!(parse_flake_ref(".#x").is_err());
        assert!(parse_flake_ref("").is_err());
    }
}
