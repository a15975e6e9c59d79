//! Shell completion. flakem answers completion requests itself (clap_complete's dynamic
//! completion), so that host names can come from the flake's configurations and the ssh
//! config's `Host` aliases, which static scripts cannot know. The flake's names are cached,
//! keyed by what they depend on, so that only the first Tab after a change pays for an
//! evaluation. Through a link named after a command (`switch-push`), flakem completes that
//! command alone, under the link's name.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, CompleteEnv, Elvish, EnvCompleter, Fish, Powershell, Shells, Zsh};

use crate::cache;
use crate::commands::{Action, Command};
use crate::flake::{self, Names};
use crate::options;
use crate::process;
use crate::resolve;

/// With `COMPLETE=<shell>` set, prints that shell's registration script for the name flakem
/// was started as, or answers its completion request, and exits; otherwise returns at once.
pub fn complete_from_env() {
    let called_as = std::env::args_os()
        .next()
        .and_then(|a| Command::called_as(&a));
    CompleteEnv::with_factory(move || options::tree_as(tree(), called_as))
        .shells(Shells(&[&Bash, &ZshAutoload, &Fish, &Elvish, &Powershell]))
        .complete();
}

/// The command tree with its completers: hosts for `DEPLOY_HOST`, and where the action may
/// stand, actions and hosts.
fn tree() -> clap::Command {
    Command::ALL.into_iter().fold(options::tree(), |tree, c| {
        tree.mut_subcommand(c.name(), |sub| {
            let sub = sub.mut_arg("DEPLOY_HOST", |a| {
                a.add(ArgValueCandidates::new(candidates))
            });
            match c.takes_action() {
                true => sub.mut_arg("ACTION", |a| {
                    a.add(ArgValueCandidates::new(|| {
                        let actions = Action::CHOSEN.map(|a| CompletionCandidate::new(a.name()));
                        actions.into_iter().chain(candidates()).collect()
                    }))
                }),
                false => sub,
            }
        })
    })
}

/// What `DEPLOY_HOST` may be: configuration names, ssh aliases, and `@all`.
fn candidates() -> Vec<CompletionCandidate> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let flake_names = flake_names()
        .nixos
        .into_iter()
        .map(|n| (n, "configuration"));
    let aliases = ssh_aliases().into_iter().map(|n| (n, "ssh host"));
    let all = std::iter::once(("@all".to_owned(), "every configuration"));
    for (name, kind) in flake_names.chain(aliases).chain(all) {
        if !seen.contains(&name) {
            out.push(CompletionCandidate::new(&name).help(Some(kind.into())));
            seen.push(name);
        }
    }
    out
}

/// The flake of `FLAKEM_FLAKE`, or `.`: a completion has no other options to go by.
fn flake_names() -> Names {
    let flake = std::env::var("FLAKEM_FLAKE").unwrap_or_else(|_| ".".into());
    let (Ok(cwd), Ok(flake_ref)) = (std::env::current_dir(), resolve::flake_ref(&flake)) else {
        return Names::default();
    };
    let key = format!("names-{:016x}.json", cache_key(&flake, &cwd));
    if let Some(Ok(names)) = cache::read(&key).map(|text| serde_json::from_str(&text)) {
        return names;
    }
    let Ok(out) = process::output(&flake::eval_names(&flake_ref)) else {
        return Names::default();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Ok(names) = serde_json::from_str::<Names>(&text) else {
        return Names::default();
    };
    if out.status.success() {
        cache::write(&key, &text);
    }
    names
}

/// What the names depend on. A local flake: its lock and every file's path, size and
/// modification time (a commit, a checkout or an edit all change one). Any other flake
/// reference: the reference, for an hour.
fn cache_key(flake: &str, cwd: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    flake.hash(&mut hasher);
    if flake.starts_with('.') || flake.starts_with('/') {
        let dir = cwd.join(flake);
        dir.canonicalize().unwrap_or(dir.clone()).hash(&mut hasher);
        std::fs::read(dir.join("flake.lock")).ok().hash(&mut hasher);
        hash_tree(&dir, &mut hasher);
    } else {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        now.map(|d| d.as_secs() / 3600).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// Paths, sizes and modification times below `dir`, leaving out `.git` and links (`result`).
fn hash_tree(dir: &Path, hasher: &mut DefaultHasher) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if entry.file_name() == ".git" || meta.file_type().is_symlink() {
            continue;
        }
        entry.file_name().hash(hasher);
        if meta.is_dir() {
            hash_tree(&entry.path(), hasher);
        } else {
            meta.len().hash(hasher);
            meta.modified().ok().hash(hasher);
        }
    }
}

/// The `Host` aliases of the ssh config flakem's ssh uses: the `-F` file of `NIX_SSHOPTS`,
/// else `~/.ssh/config`. Patterns (`*`, `?`, `!`) are not hosts.
fn ssh_aliases() -> Vec<String> {
    let sshopts = std::env::var("NIX_SSHOPTS").unwrap_or_default();
    let words = shell_words::split(&sshopts).unwrap_or_default();
    let config = words
        .iter()
        .position(|w| w == "-F")
        .and_then(|i| words.get(i + 1).map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/config")));
    let text = config
        .and_then(|c| std::fs::read_to_string(c).ok())
        .unwrap_or_default();
    aliases_in(&text)
}

fn aliases_in(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let (key, rest) = l.split_once(|c: char| c.is_whitespace() || c == '=')?;
            key.eq_ignore_ascii_case("host").then_some(rest)
        })
        .flat_map(str::split_whitespace)
        .filter(|h| !h.contains(['*', '?', '!']))
        .map(str::to_owned)
        .collect()
}

/// zsh's registration, made to work also when installed as an autoloaded `_COMMAND` file
/// (as packages install it): zsh then runs the file on the first Tab, which only registers
/// the completer, so on that first load the file also calls it.
struct ZshAutoload;

impl EnvCompleter for ZshAutoload {
    fn name(&self) -> &'static str {
        Zsh.name()
    }

    fn is(&self, name: &str) -> bool {
        Zsh.is(name)
    }

    fn write_registration(
        &self,
        var: &str,
        name: &str,
        bin: &str,
        completer: &str,
        buf: &mut dyn Write,
    ) -> io::Result<()> {
        Zsh.write_registration(var, name, bin, completer, buf)?;
        writeln!(
            buf,
            "[[ ${{zsh_eval_context[-1]}} == loadautofunc ]] && _clap_dynamic_completer_{} \"$@\"",
            name.replace('-', "_")
        )
    }

    fn write_complete(
        &self,
        cmd: &mut clap::Command,
        args: Vec<std::ffi::OsString>,
        current_dir: Option<&Path>,
        buf: &mut dyn Write,
    ) -> io::Result<()> {
        Zsh.write_complete(cmd, args, current_dir, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_of_an_ssh_config() {
        let config = "Host web1 web2\n  HostName x\nhost=db\nHost *.lan !bad\nMatch all\n";
        assert_eq!(aliases_in(config), ["web1", "web2", "db"]);
    }

    #[test]
    fn the_cache_key_follows_the_flake() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ }").unwrap();
        let key = || cache_key(".", dir.path());
        let first = key();
        assert_eq!(key(), first);
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: { }; }").unwrap();
        assert_ne!(key(), first, "an edit");
        let edited = key();
        std::fs::write(dir.path().join("flake.lock"), "{}").unwrap();
        assert_ne!(key(), edited, "a lock");
    }
}
