//! What flakem asks of a flake, as plain data: the evaluation that lists every configuration
//! name (one per run), the one that gives every host's derivation, and the lookups in the
//! names with their "did you mean".
//!
//! It goes through `builtins.getFlake` rather than the installable `<flake>#nixosConfigurations`,
//! which would first search `packages.<system>` and `legacyPackages.<system>`: seconds on a
//! flake that re-exports nixpkgs.

use serde::Deserialize;

use crate::cmd::{Cmd, Word, nix};
use crate::error::Error;
use crate::kind::Kind;
use crate::names::Target;
use crate::suggest;

/// The configuration names of a flake.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Names {
    pub nixos: Vec<String>,
    pub darwin: Vec<String>,
    pub home: Vec<String>,
}

/// `nix eval --json` of `body`, in which `f` is the flake. `flake` is as `getFlake` takes
/// it: a local path made absolute (resolve's `flake_ref`).
fn eval(flake: &str, body: &str, rest: &[String]) -> Cmd {
    let expr = format!("let f = builtins.getFlake {}; in {body}", nix_string(flake));
    let mut argv = nix(["eval", "--json", "--impure", "--expr", &expr]);
    argv.extend(rest.iter().map(Word::from));
    Cmd::new(argv)
}

/// The evaluation of every configuration name.
pub fn eval_names(flake: &str) -> Cmd {
    let body = "let names = a: builtins.attrNames (f.${a} or { }); in \
                { nixos = names \"nixosConfigurations\"; darwin = names \"darwinConfigurations\"; \
                home = names \"homeConfigurations\"; }";
    eval(flake, body, &[])
}

/// One evaluation of the derivations of `attributes`, for every host whose plan builds by
/// hand (`--diff`, nix-darwin, Home Manager): a list, in order.
pub fn eval_drvs(flake: &str, attributes: &[String], rest: &[String]) -> Cmd {
    let items: Vec<String> = attributes
        .iter()
        .map(|a| format!("f.{a}.drvPath"))
        .collect();
    eval(flake, &format!("[ {} ]", items.join(" ")), rest)
}

/// The evaluation of derivations' answer: one per attribute asked for.
pub fn parse_drvs(json: &[u8], count: usize) -> Result<Vec<String>, Error> {
    let drvs: Vec<String> = serde_json::from_slice(json)
        .map_err(|e| Error::Check(format!("cannot read nix eval's derivations: {e}")))?;
    match drvs.len() == count {
        true => Ok(drvs),
        false => Err(Error::Check(format!(
            "nix eval gave {} derivations for {count}",
            drvs.len()
        ))),
    }
}

/// The names evaluation's answer.
pub fn parse_names(json: &str) -> Result<Names, Error> {
    serde_json::from_str(json)
        .map_err(|e| Error::Check(format!("cannot read nix eval's answer ({e}): {json}")))
}

impl Names {
    pub fn of(&self, kind: Kind) -> &[String] {
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

pub fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
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
    fn the_flake_is_a_nix_string() {
        let cmd = eval_names("github:me/infra");
        assert!(
            cmd.argv
                .last()
                .unwrap()
                .shown()
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
