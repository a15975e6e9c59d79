//! Reading the flake: one evaluation per run lists every configuration name flakem needs.
//!
//! It goes through `builtins.getFlake` rather than the installable `<flake>#nixosConfigurations`,
//! which would first search `packages.<system>` and `legacyPackages.<system>`: seconds on a
//! flake that re-exports nixpkgs.

use std::path::Path;

use serde::Deserialize;

use crate::commands::Action;
use crate::console::{Console, Stream};
use crate::error::Error;
use crate::exec;
use crate::job::{Job, Machine};
use crate::names::{Host, Target};
use crate::plan::Cmd;
use crate::ssh::{self, Ssh};
use crate::suggest;

/// The configuration names of a flake.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Names {
    pub nixos: Vec<String>,
    pub darwin: Vec<String>,
    pub home: Vec<String>,
}

/// The flake as `getFlake` takes it: a local path made absolute.
fn reference(flake: &str, cwd: &Path) -> String {
    if flake.starts_with('.') || flake.starts_with('/') {
        cwd.join(flake)
            .canonicalize()
            .unwrap_or_else(|_| cwd.join(flake))
            .display()
            .to_string()
    } else {
        flake.to_owned()
    }
}

/// `nix eval --json` of `body`, in which `f` is the flake.
fn eval(flake: &str, cwd: &Path, body: &str, rest: &[String]) -> Cmd {
    let expr = format!(
        "let f = builtins.getFlake {}; in {body}",
        nix_string(&reference(flake, cwd))
    );
    let mut argv = nix(&["eval", "--json", "--impure", "--expr", &expr]);
    argv.extend(rest.iter().cloned());
    Cmd::new(argv)
}

/// `nix --extra-experimental-features 'nix-command flakes' WORDS...`
pub fn nix(words: &[&str]) -> Vec<String> {
    ["nix", "--extra-experimental-features", "nix-command flakes"]
        .iter()
        .chain(words)
        .map(|w| w.to_string())
        .collect()
}

/// The evaluation of every configuration name: `flake` as the user gave it, `cwd` to make a
/// local path absolute (`getFlake` takes no relative paths).
pub fn eval_names(flake: &str, cwd: &Path) -> Cmd {
    let body = "let names = a: builtins.attrNames (f.${a} or { }); in \
                { nixos = names \"nixosConfigurations\"; darwin = names \"darwinConfigurations\"; \
                home = names \"homeConfigurations\"; }";
    eval(flake, cwd, body, &[])
}

/// One evaluation of the derivations of `attributes`, for every host whose plan builds by
/// hand (`--diff`, nix-darwin, Home Manager): a list, in order.
pub fn eval_drvs(flake: &str, cwd: &Path, attributes: &[String], rest: &[String]) -> Cmd {
    let items: Vec<String> = attributes
        .iter()
        .map(|a| format!("f.{a}.drvPath"))
        .collect();
    eval(flake, cwd, &format!("[ {} ]", items.join(" ")), rest)
}

/// Runs [`eval_drvs`] and reads its answer.
pub fn read_drvs(cmd: &Cmd, console: &Console, count: usize) -> Result<Vec<String>, Error> {
    console.trace(cmd);
    let out = exec::output(cmd)?;
    console.pass(Stream::Err, &out.stderr);
    exec::check(cmd, out.status)?;
    let drvs: Vec<String> = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Check(format!("cannot read nix eval's derivations: {e}")))?;
    match drvs.len() == count {
        true => Ok(drvs),
        false => Err(Error::Check(format!(
            "nix eval gave {} derivations for {count}",
            drvs.len()
        ))),
    }
}

/// Runs the evaluation and reads its answer.
pub fn read_names(flake: &str, console: &Console) -> Result<Names, Error> {
    let eval = eval_names(flake, &std::env::current_dir()?);
    console.trace(&eval);
    let out = exec::output(&eval)?;
    console.pass(Stream::Err, &out.stderr);
    if !out.status.success() {
        return Err(Error::Check(format!(
            "cannot read the flake {flake} (nix eval exited with {}; its message is above)",
            out.status
        )));
    }
    parse_names(&String::from_utf8_lossy(&out.stdout))
}

fn parse_names(json: &str) -> Result<Names, Error> {
    serde_json::from_str(json)
        .map_err(|e| Error::Check(format!("cannot read nix eval's answer ({e}): {json}")))
}

/// What a configuration deploys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nixos,
    Darwin,
    Home,
}

impl Kind {
    /// The flake output holding configurations of this kind.
    pub fn output(self) -> &'static str {
        match self {
            Kind::Nixos => "nixosConfigurations",
            Kind::Darwin => "darwinConfigurations",
            Kind::Home => "homeConfigurations",
        }
    }

    /// The attribute that builds `target`: `nixosConfigurations."T".config.system.build.toplevel`.
    pub fn attribute(self, target: &Target) -> String {
        let inner = match self {
            Kind::Nixos => "config.system.build.toplevel",
            Kind::Darwin => "system",
            Kind::Home => "activationPackage",
        };
        format!("{}.\"{target}\".{inner}", self.output())
    }
}

impl Names {
    fn of(&self, kind: Kind) -> &[String] {
        match kind {
            Kind::Nixos => &self.nixos,
            Kind::Darwin => &self.darwin,
            Kind::Home => &self.home,
        }
    }

    fn has(&self, kind: Kind, name: &str) -> bool {
        self.of(kind).iter().any(|n| n == name)
    }

    /// The kind of a system configuration (`forced` by `--nixos` or `--darwin`), read from the
    /// flake; a name that is not there is refused with the closest names.
    pub fn system_kind(
        &self,
        target: &Target,
        forced: Option<Kind>,
        flake: &str,
    ) -> Result<Kind, Error> {
        let kinds = forced.map_or(vec![Kind::Nixos, Kind::Darwin], |k| vec![k]);
        match kinds.iter().find(|k| self.has(**k, target.as_str())) {
            Some(kind) => Ok(*kind),
            None => Err(self.unknown(target, &kinds, flake)),
        }
    }

    /// The Home Manager configuration of `user@host`: that name, else the user's alone, as
    /// home-manager does.
    pub fn home_target(&self, target: &Target, flake: &str) -> Result<Target, Error> {
        if self.has(Kind::Home, target.as_str()) {
            return Ok(target.clone());
        }
        match target.as_str().split_once('@') {
            Some((user, _)) if self.has(Kind::Home, user) => Target::parse(user),
            _ => Err(self.unknown(target, &[Kind::Home], flake)),
        }
    }

    /// The error for a name found under none of `kinds`, with the closest names.
    fn unknown(&self, target: &Target, kinds: &[Kind], flake: &str) -> Error {
        let names: Vec<&str> = kinds
            .iter()
            .flat_map(|k| self.of(*k))
            .map(String::as_str)
            .collect();
        let outputs: Vec<String> = kinds
            .iter()
            .map(|k| format!("{flake}#{}", k.output()))
            .collect();
        let close = suggest::closest_few(target.as_str(), names.iter().copied());
        let hint = if !close.is_empty() {
            format!("; did you mean {}?", backticked(&close))
        } else if names.is_empty() {
            "; it has none".to_owned()
        } else if names.len() <= 12 {
            format!("; it has {}", backticked(&names))
        } else {
            format!("; it has {} others", names.len())
        };
        Error::Usage(format!(
            "`{target}` is not in {}{hint}",
            outputs.join(" or ")
        ))
    }
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a host that names no configuration (an address, say): the one configuration whose
/// ssh-resolved hostname is the host's own. `None` when none matches; an error when several do.
pub fn find_by_hostname(
    host: &Host,
    names: &[String],
    ssh: &Ssh,
    console: &Console,
) -> Result<Option<Target>, Error> {
    let resolve = |name: &Host| -> Result<Option<String>, Error> {
        let cmd = ssh.resolve(name);
        console.trace(&cmd);
        let out = exec::output(&cmd)?;
        Ok(out
            .status
            .success()
            .then(|| ssh::config_value(&String::from_utf8_lossy(&out.stdout), "hostname"))
            .flatten())
    };
    let Some(wanted) = resolve(host)? else {
        return Ok(None);
    };
    let mut matching = Vec::new();
    for name in names {
        if let Ok(candidate) = Host::parse(name)
            && resolve(&candidate)?.as_deref() == Some(wanted.as_str())
        {
            matching.push(name.as_str());
        }
    }
    match matching.as_slice() {
        [] => Ok(None),
        [one] => {
            console.say(&format!("{host} is `{one}`: ssh resolves both to {wanted}"));
            Target::parse(one).map(Some)
        }
        several => Err(Error::Usage(format!(
            "{host} ({wanted}) could be any of {}: name the configuration after the host",
            backticked(several)
        ))),
    }
}

/// Sets a machine's configuration and kind from the flake's names, and refuses what its
/// kind cannot do.
pub fn locate(
    job: &Job,
    machine: &mut Machine,
    names: &Names,
    ssh: &Ssh,
    console: &Console,
) -> Result<(), Error> {
    let Some(target) = machine.target.clone() else {
        return Ok(());
    };
    if job.command.home() {
        machine.target = Some(names.home_target(&target, &job.flake)?);
        return Ok(());
    }
    match names.system_kind(&target, job.kind, &job.flake) {
        Ok(kind) => machine.kind = kind,
        Err(unknown) => {
            // An address (or another name) for a host: the configuration ssh resolves alike.
            let kinds = job
                .kind
                .map_or(vec![Kind::Nixos, Kind::Darwin], |k| vec![k]);
            let systems: Vec<String> = kinds.iter().flat_map(|k| names.of(*k)).cloned().collect();
            let found = match job.target {
                None => find_by_hostname(&machine.host, &systems, ssh, console)?,
                Some(_) => None,
            };
            let found = found.ok_or(unknown)?;
            machine.kind = names.system_kind(&found, job.kind, &job.flake)?;
            machine.target = Some(found);
        }
    }
    let target = machine.target.as_ref().unwrap_or(&target);
    if machine.kind == Kind::Darwin {
        if job.command.resets() {
            return Err(Error::Usage(format!(
                "`{target}` is a nix-darwin machine: the reset commands are NixOS-only (macOS \
                 has no boot id or booted-system to prove a reboot by)"
            )));
        }
        if matches!(
            job.action,
            Action::Boot | Action::Test | Action::DryActivate
        ) {
            return Err(Error::Usage(format!(
                "`{target}` is a nix-darwin machine: it has no `{}`; switch activates it",
                job.action.name()
            )));
        }
    }
    Ok(())
}

/// A Nix string literal holding `s` verbatim.
fn nix_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_flakes_become_absolute() {
        let cmd = eval_names(".", Path::new("/nonexistent/infra"));
        let expr = cmd.argv.last().unwrap();
        assert!(
            expr.contains("builtins.getFlake \"/nonexistent/infra/.\""),
            "{expr}"
        );
        let cmd = eval_names("github:me/infra", Path::new("/x"));
        assert!(
            cmd.argv
                .last()
                .unwrap()
                .contains("getFlake \"github:me/infra\"")
        );
    }

    #[test]
    fn nix_strings_are_literal() {
        assert_eq!(nix_string(r#"a"b\c${d}"#), r#""a\"b\\c\${d}""#);
    }

    #[test]
    fn unknown_targets_get_suggestions() {
        let names = Names {
            nixos: vec!["bigmachine".into(), "another-machine".into()],
            ..Names::default()
        };
        let t = |s| Target::parse(s).unwrap();
        let nixos = Some(Kind::Nixos);
        assert_eq!(
            names.system_kind(&t("bigmachine"), None, ".").unwrap(),
            Kind::Nixos
        );
        let e = names.system_kind(&t("bigmachin"), nixos, ".").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`bigmachin` is not in .#nixosConfigurations; did you mean `bigmachine`?"
        );
        assert_eq!(e.status(), 2);
        let e = names
            .system_kind(&t("zzz"), nixos, ".")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("it has `bigmachine`, `another-machine`"), "{e}");
        let e = Names::default()
            .system_kind(&t("zzz"), None, ".")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`zzz` is not in .#nixosConfigurations or .#darwinConfigurations; it has none"
        );
    }

    #[test]
    fn kinds_come_from_the_flake() {
        let names = Names {
            nixos: vec!["web1".into()],
            darwin: vec!["macbook".into()],
            home: vec!["alice@web1".into(), "bob".into()],
        };
        let t = |s| Target::parse(s).unwrap();
        assert_eq!(
            names.system_kind(&t("macbook"), None, ".").unwrap(),
            Kind::Darwin
        );
        assert!(
            names
                .system_kind(&t("macbook"), Some(Kind::Nixos), ".")
                .is_err()
        );
        assert_eq!(
            names.home_target(&t("alice@web1"), ".").unwrap(),
            t("alice@web1")
        );
        assert_eq!(names.home_target(&t("bob@web1"), ".").unwrap(), t("bob"));
        let e = names
            .home_target(&t("carol@web1"), ".")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not in .#homeConfigurations"), "{e}");
        assert_eq!(
            Kind::Darwin.attribute(&t("macbook")),
            "darwinConfigurations.\"macbook\".system"
        );
    }

    #[test]
    fn names_from_json() {
        let n = parse_names(r#"{"darwin":[],"home":["me@x"],"nixos":["a","b"]}"#).unwrap();
        assert_eq!(n.nixos, ["a", "b"]);
        assert_eq!(n.home, ["me@x"]);
        assert!(parse_names("nope").is_err());
    }
}
