//! The two nixos-rebuild dialects (NIXOS-REBUILD.md): their spelling of the house options,
//! and the side-effect-free probe that tells which one is installed.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::console::Console;
use crate::error::Error;
use crate::exec;
use crate::plan::Cmd;

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
    /// the target, let the target use its substituters.
    pub fn house_flags(self, sudo: bool) -> Vec<&'static str> {
        let (no_reexec, sudo_flag) = match self {
            Dialect::Ng => ("--no-reexec", "--sudo"),
            Dialect::Legacy => ("--fast", "--use-remote-sudo"),
        };
        let mut flags = vec![no_reexec];
        if sudo {
            flags.push(sudo_flag);
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

/// The probe's arguments: `--no-reexec` is known only to ng, `--flakem-probe` to neither.
pub const PROBE_ARGS: [&str; 3] = ["--no-reexec", "--flakem-probe", "build"];
/// Its environment: should a version ever open the manual, it must not wait in a pager.
pub const PROBE_ENV: [(&str, &str); 2] = [("MANPAGER", "cat"), ("PAGER", "cat")];

/// Finds out which nixos-rebuild is on PATH: from its store path when that tells, else from
/// the answer cached for that very file, else by the probe. Called once per run.
pub fn detect(console: &Console) -> Result<Dialect, Error> {
    let found = which::which("nixos-rebuild").map_err(|_| exec::missing("nixos-rebuild"))?;
    let resolved = found.canonicalize().unwrap_or(found);
    if let Some(d) = Dialect::from_store_path(&resolved.to_string_lossy()) {
        return Ok(d);
    }
    let cache = cache_file(&resolved);
    let cached = cache.as_ref().and_then(|c| std::fs::read_to_string(c).ok());
    match cached.as_deref().map(str::trim) {
        Some("ng") => return Ok(Dialect::Ng),
        Some("legacy") => return Ok(Dialect::Legacy),
        _ => {}
    }
    let env = PROBE_ENV
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
    let argv = std::iter::once("nixos-rebuild").chain(PROBE_ARGS);
    let probe = Cmd {
        env,
        argv: argv.map(str::to_owned).collect(),
    };
    console.trace(&probe);
    let out = exec::output(&probe)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dialect = Dialect::from_probe(out.status.code(), &stderr).ok_or_else(|| {
        Error::Check(format!(
            "cannot tell which nixos-rebuild {} is (the probe exited with {}: {}); \
             say it with --dialect ng or --dialect legacy",
            resolved.display(),
            out.status,
            stderr.trim().lines().last().unwrap_or("no message"),
        ))
    })?;
    if let Some(cache) = cache {
        std::fs::create_dir_all(cache.parent().unwrap_or(Path::new("."))).ok();
        std::fs::write(cache, dialect.to_string()).ok();
    }
    Ok(dialect)
}

/// Where the probe's answer for this file is kept: keyed by its path, size and modification
/// time, so an upgrade (a new store path, or a file replaced in place) is probed again.
fn cache_file(resolved: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(resolved).ok()?;
    let mut hasher = DefaultHasher::new();
    (resolved, meta.len(), meta.modified().ok()).hash(&mut hasher);
    Some(crate::hosts::cache_dir()?.join(format!("dialect-{:016x}", hasher.finish())))
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
            Dialect::Ng.house_flags(true),
            ["--no-reexec", "--sudo", "--use-substitutes"]
        );
        assert_eq!(
            Dialect::Legacy.house_flags(true),
            ["--fast", "--use-remote-sudo", "--use-substitutes"]
        );
        assert_eq!(
            Dialect::Ng.house_flags(false),
            ["--no-reexec", "--use-substitutes"]
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
