//! flakem's own options, defined once with clap: the grammar asks this tree which words are
//! options, clap checks their values, and help and completions are rendered from it.

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::commands::{Action, Command};

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
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Timeout,
}

/// Options of the reset commands.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Delete generations older than this after the reboot (days, as nix takes it: 15d; 0d
    /// deletes every old generation)
    #[arg(long, default_value = "15d", value_name = "AGE", value_parser = parse_gc_age)]
    pub gc_older_than: GcAge,

    /// Keep old generations: collect no garbage after the reboot
    #[arg(long)]
    pub no_gc: bool,
}

/// A bound on one wait; `None` waits forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("no limit"),
            Some(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                    _ if s % 60 == 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

/// Everything clap resolved for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub options: Options,
    pub wait: Option<WaitOptions>,
    pub gc: Option<GcOptions>,
    pub push: Option<PushOptions>,
    pub diff: Option<DiffOptions>,
    pub kind: Option<KindOptions>,
    pub secret: Option<SecretOptions>,
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

fn parse_timeout(s: &str) -> Result<Timeout, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err("expected a number with s, m or h (90s, 10m, 1h)".into()),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a number with s, m or h (90s, 10m, 1h)".to_string())?;
    Ok(Timeout((n > 0).then(|| Duration::from_secs(n * scale))))
}

fn parse_gc_age(s: &str) -> Result<GcAge, String> {
    s.strip_suffix('d')
        .filter(|days| !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|days| days.parse().ok())
        .map(GcAge)
        .ok_or_else(|| "nix takes ages in days only, like 15d".into())
}

/// How old a generation must be to be deleted, in days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcAge(pub u32);

impl GcAge {
    /// nix-collect-garbage's arguments for this age. nix refuses `0d` ("invalid number of
    /// days"); deleting every old generation is `--delete-old`.
    pub fn nix_args(self) -> Vec<String> {
        match self.0 {
            0 => vec!["--delete-old".to_owned()],
            days => vec!["--delete-older-than".to_owned(), format!("{days}d")],
        }
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
3 a wait ran past its deadline; 4 a host came back wrong or refuses us; 5 a check failed; 127 a \
program is missing; 130 interrupted.";

fn subcommand(c: Command) -> clap::Command {
    let mut sub = clap::Command::new(c.name());
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
    if c.system_kinds() {
        sub = KindOptions::augment_args(sub);
    }
    if c == Command::SshDeploy {
        sub = SecretOptions::augment_args(sub);
    }
    // Positionals are parsed by the grammar (options may stand between them); they are
    // declared here so that help and completions show them.
    if c.takes_action() {
        sub = sub.arg(
            Arg::new("ACTION")
                .help("switch (default), boot, test or dry-activate")
                // Where the action may stand, so may the host.
                .add(ArgValueCandidates::new(|| {
                    let actions = Action::CHOSEN.map(|a| CompletionCandidate::new(a.name()));
                    actions
                        .into_iter()
                        .chain(crate::hosts::candidates())
                        .collect()
                })),
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
    sub = sub.arg(
        Arg::new("DEPLOY_HOST")
            .help(host_help)
            .add(ArgValueCandidates::new(crate::hosts::candidates)),
    );
    if c == Command::SshWait {
        return sub.arg(
            Arg::new("CMD")
                .help("A command for ssh to run there once it answers")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true),
        );
    }
    if c == Command::SshDeploy {
        return sub.arg(Arg::new("HOSTNAME").help(
            "Whose key: hosts/HOSTNAME/HOSTNAME.age.key (default: DEPLOY_HOST without user@)",
        ));
    }
    let target_help = if c.home() {
        "The HOST part of the configuration's name, USER@FLAKE_TARGET (default: DEPLOY_HOST's)"
    } else {
        "The name under nixosConfigurations or darwinConfigurations (default: DEPLOY_HOST \
         without user@)"
    };
    sub.arg(Arg::new("FLAKE_TARGET").help(target_help)).arg(
        Arg::new("NIX_OPTIONS")
            .help("Passed to nixos-rebuild (or nix) verbatim, in order")
            .num_args(0..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true),
    )
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
        kind: from_matches_if::<KindOptions>(command.system_kinds(), sub)?,
        secret: from_matches_if::<SecretOptions>(command == Command::SshDeploy, sub)?,
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
    fn timeouts() {
        let secs = |s| parse_timeout(s).map(|t| t.0.map(|d| d.as_secs()));
        assert_eq!(secs("90s"), Ok(Some(90)));
        assert_eq!(secs("10m"), Ok(Some(600)));
        assert_eq!(secs("1h"), Ok(Some(3600)));
        assert_eq!(secs("45"), Ok(Some(45)));
        assert_eq!(secs("0"), Ok(None));
        for bad in ["", "m", "10d", "1.5m", "-1", "10 m"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(Timeout(Some(Duration::from_secs(600))).to_string(), "10m");
        assert_eq!(Timeout(Some(Duration::from_secs(90))).to_string(), "90s");
    }

    #[test]
    fn gc_ages_are_days_only() {
        assert_eq!(parse_gc_age("15d"), Ok(GcAge(15)));
        assert_eq!(parse_gc_age("0d"), Ok(GcAge(0)));
        assert_eq!(GcAge(15).nix_args(), ["--delete-older-than", "15d"]);
        assert_eq!(GcAge(0).nix_args(), ["--delete-old"]);
        for bad in [
            "15",
            "d",
            "2w",
            "15 d",
            "-1d",
            "1.5d",
            "15D",
            "99999999999d",
        ] {
            assert!(parse_gc_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flake_refs_without_fragment() {
        assert!(parse_flake_ref(".").is_ok());
        assert!(parse_flake_ref("github:me/infra").is_ok());
        assert!(parse_flake_ref(".#x").is_err());
        assert!(parse_flake_ref("").is_err());
    }
}
