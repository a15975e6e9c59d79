//! The two nixos-rebuild dialects (docs/NIXOS-REBUILD.md): their spelling of the house options,
//! and the side-effect-free probe that tells which one is installed.

use std::fmt;

use crate::cmd::{Cmd, Word};
use crate::sudo::Sudo;

/// Which `nixos-rebuild` flakem is talking to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The Python rewrite, default since NixOS 25.11.
    Ng,
    /// The shell script of NixOS 25.05 and earlier.
    Legacy,
}

impl Dialect {
    /// Turn re-exec off (a re-exec'd nixos-rebuild may be the other dialect), use sudo on
    /// the target, let the target use its substituters. ng asked for the sudo password reads
    /// it from its stdin (it has no terminal then) and feeds every sudo on the target; legacy
    /// has no way to be given one (flakem refuses `--ask-sudo-password` with it).
    pub fn house_flags(self, sudo: Sudo) -> Vec<&'static str> {
        let (no_reexec, sudo_flag) = match self {
            Dialect::Ng => ("--no-reexec", "--sudo"),
            Dialect::Legacy => ("--fast", "--use-remote-sudo"),
        };
        let mut flags = vec![no_reexec];
        if sudo.used() {
            flags.push(sudo_flag);
        }
        if (self, sudo) == (Dialect::Ng, Sudo::Password) {
            flags.push("--ask-sudo-password");
        }
        flags.push("--use-substitutes");
        flags
    }

    /// Reads the probe's answer: both dialects parse every flag before doing anything, and
    /// reject an unknown one each in its own way.
    pub fn from_probe(status: Option<i32>, stderr: &str) -> Option<Dialect> {
        if status == Some(2) && stderr.contains("unrecognized arguments") {
            Some(Dialect::Ng)
        } else if status == Some(1) && stderr.contains("unknown option `--no-reexec'") {
            Some(Dialect::Legacy)
        } else {
            None
        }
    }

    /// A store path named `*-nixos-rebuild-ng-*` is the rewrite, no probe needed.
    pub fn from_store_path(resolved: &str) -> Option<Dialect> {
        resolved
            .contains("-nixos-rebuild-ng-")
            .then_some(Dialect::Ng)
    }
}

/// The probe: `--no-reexec` is known only to ng, `--flakem-probe` to neither. Should a
/// version ever open the manual, it must not wait in a pager.
pub fn probe() -> Cmd {
    Cmd {
        env: [("MANPAGER", "cat"), ("PAGER", "cat")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
        argv: ["nixos-rebuild", "--no-reexec", "--flakem-probe", "build"]
            .map(Word::from)
            .to_vec(),
        sudo_password: false,
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Ng => "ng",
            Dialect::Legacy => "legacy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers() {
        let ng = "usage: nixos-rebuild [-h] ...\nnixos-rebuild: error: unrecognized arguments: --flakem-probe\n";
        assert_eq!(Dialect::from_probe(Some(2), ng), Some(Dialect::Ng));
        let legacy = "error: unknown option `--no-reexec'\n";
        assert_eq!(Dialect::from_probe(Some(1), legacy), Some(Dialect::Legacy));
        assert_eq!(Dialect::from_probe(Some(0), ""), None);
        assert_eq!(Dialect::from_probe(None, ng), None);
    }

    #[test]
    fn house_flags() {
        assert_eq!(
            Dialect::Ng.house_flags(Sudo::Plain),
            ["--no-reexec", "--sudo", "--use-substitutes"]
        );
        assert_eq!(
            Dialect::Legacy.house_flags(Sudo::Plain),
            ["--fast", "--use-remote-sudo", "--use-substitutes"]
        );
        assert_eq!(
            Dialect::Ng.house_flags(Sudo::No),
            ["--no-reexec", "--use-substitutes"]
        );
        assert_eq!(
            Dialect::Ng.house_flags(Sudo::Password),
            [
                "--no-reexec",
                "--sudo",
                "--ask-sudo-password",
                "--use-substitutes"
            ]
        );
    }

    #[test]
    fn store_path_hint() {
        let p = "/nix/store/abc-nixos-rebuild-ng-25.11/bin/nixos-rebuild";
        assert_eq!(Dialect::from_store_path(p), Some(Dialect::Ng));
        assert_eq!(
            Dialect::from_store_path("/run/current-system/sw/bin/nixos-rebuild"),
            None
        );
    }
}
