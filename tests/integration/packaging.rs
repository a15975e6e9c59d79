//! What of the Nix package can be tried without nixpkgs: the `.nix` files parse, the one list
//! of command names the Nix side reads is what the binary answers to, and the completions and
//! man pages the package installs work in real shells and a real `man`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program the tests need; missing, it fails the test with what to install.
fn program(name: &str, debian_package: &str) -> Command {
    let path = which::which(name).unwrap_or_else(|_| {
        panic!("`{name}` is not on PATH: apt-get install {debian_package} (test.sh does)")
    });
    Command::new(path)
}

fn succeeded(what: &str, out: Output) -> String {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The command names as the Nix side reads them (the flake imports this very file).
fn nix_command_names() -> Vec<String> {
    let out = program("nix-instantiate", "nix-bin")
        .args(["--eval", "--json", "--strict"])
        .arg(repo().join("nix/commands.nix"))
        .output()
        .unwrap();
    let names: Vec<String> = serde_json::from_str(&succeeded("nix/commands.nix", out)).unwrap();
    assert!(!names.is_empty());
    names
}

/// A directory holding `flakem` and a link per command name, as the package installs them.
fn installed(names: &[String]) -> TempDir {
    let bin = tempfile::Builder::new()
        .prefix("flakem-bin-")
        .tempdir()
        .unwrap();
    for name in std::iter::once("flakem").chain(names.iter().map(String::as_str)) {
        symlink(env!("CARGO_BIN_EXE_flakem"), bin.path().join(name)).unwrap();
    }
    bin
}

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if path.is_dir() && !matches!(name, "target" | ".git") {
            nix_files(&path, found);
        } else if name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(repo(), &mut files);
    for expected in [
        "flake.nix",
        "nix/package.nix",
        "nix/module.nix",
        "nix/commands.nix",
    ] {
        assert!(files.contains(&repo().join(expected)), "{expected}");
    }
    for file in files {
        let out = program("nix-instantiate", "nix-bin")
            .arg("--parse")
            .arg(&file)
            .output()
            .unwrap();
        succeeded(&file.display().to_string(), out);
    }
}

fn eval_json(expr: &str) -> String {
    let out = program("nix-instantiate", "nix-bin")
        .args(["--eval", "--json", "--strict", "--expr", expr])
        .output()
        .unwrap();
    succeeded(expr, out).trim().to_owned()
}

/// The README's "Nix" section.
fn readme_nix() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("\n## Nix\n")
        .expect("a Nix section in README.md");
    let section = &readme[start + 1..];
    let end = section.find("\n## ").unwrap_or(section.len());
    section[..end].to_owned()
}

/// The README's Nix examples parse, and its flake follows exactly the flake's inputs.
#[test]
fn the_readme_examples_parse_and_follow_the_flake_inputs() {
    let flake_inputs = eval_json(&format!(
        "builtins.attrNames (import {}/flake.nix).inputs",
        repo().display()
    ));
    assert_eq!(flake_inputs, r#"["flake-utils","nixpkgs"]"#);
    let dir = TempDir::new().unwrap();
    let section = readme_nix();
    let blocks: Vec<&str> = section
        .split("```nix\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 2, "{blocks:?}");
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("example-{i}.nix"));
        std::fs::write(&file, block).unwrap();
        let out = program("nix-instantiate", "nix-bin")
            .arg("--parse")
            .arg(&file)
            .output()
            .unwrap();
        succeeded(block, out);
        if block.contains("inputs =") {
            let followed = eval_json(&format!(
                "builtins.attrNames (import {}).inputs.flakem.inputs",
                file.display()
            ));
            assert_eq!(followed, flake_inputs);
        }
    }
}

#[test]
fn the_readme_shows_nix_run_for_every_command() {
    let section = readme_nix();
    for name in nix_command_names() {
        let line = format!("nix run <flakem>#{name} ");
        assert!(
            section.lines().any(|l| format!("{l} ").starts_with(&line)),
            "README: {line}"
        );
    }
}

#[test]
fn the_binary_answers_to_exactly_the_names_nix_installs() {
    let names = nix_command_names();
    let bin = installed(&names);
    // ssh-deploy refuses to plan without the host's (encrypted) key in the flake.
    let flake = TempDir::new().unwrap();
    let keys = flake.path().join("hosts/example-host");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("example-host.age.key"), "age-encryption.org/v1\n").unwrap();
    for name in &names {
        let out = Command::new(bin.path().join(name))
            .args(["--dry-run", "example-host"])
            .current_dir(flake.path())
            .env_remove("FLAKEM_DIALECT")
            .output()
            .unwrap();
        let plan = succeeded(name, out);
        assert!(plan.contains("example-host"), "{name}:\n{plan}");
    }
    // A name that is no command is no link target: the host word is then read as a command.
    symlink(
        env!("CARGO_BIN_EXE_flakem"),
        bin.path().join("not-a-command"),
    )
    .unwrap();
    let out = Command::new(bin.path().join("not-a-command"))
        .args(["--dry-run", "example-host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The other way round: every command the binary has is in the list (one man page each).
    let man = TempDir::new().unwrap();
    generate_man(man.path());
    let mut pages = page_names(man.path())
        .into_iter()
        .filter_map(|p| p.strip_prefix("flakem-").map(str::to_owned))
        .collect::<Vec<_>>();
    pages.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(pages, sorted);
}

fn generate_man(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_flakem"))
        .env("FLAKEM_GENERATE_MAN", dir)
        .output()
        .unwrap();
    succeeded("FLAKEM_GENERATE_MAN", out);
}

fn page_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|f| {
            f.strip_suffix(".1")
                .expect("section 1 pages only")
                .to_owned()
        })
        .collect()
}

/// Each line a completion call prints, per call, for the calls of [`COMPLETE_IN_BASH`].
fn bash_completions(bin: &Path, calls: &[&str]) -> Vec<Vec<String>> {
    // Elsewhere, with the links off PATH: the scripts must call back the path they were made by.
    let elsewhere = TempDir::new().unwrap();
    let out = program("bash", "bash")
        .args(["--norc", "--noprofile", "-c", COMPLETE_IN_BASH, "bash"])
        .arg(bin)
        .args(calls)
        .current_dir(elsewhere.path())
        .env("PATH", "/usr/bin:/bin")
        .env_remove("COMPLETE")
        .output()
        .unwrap();
    succeeded("bash completion", out)
        .split("--\n")
        .skip(1)
        .map(|reply| reply.lines().map(str::to_owned).collect())
        .collect()
}

/// Loads the registration of each command that is completed, as bash-completion would from the
/// installed files, then completes each command line the way bash calls the completion
/// function (the last word is the one being completed).
const COMPLETE_IN_BASH: &str = r#"
set -eu
bin=$1; shift
for line in "$@"; do
  read -ra COMP_WORDS <<<"$line"
  [[ $line == *' ' ]] && COMP_WORDS+=("")
  command=${COMP_WORDS[0]}
  complete -p "$command" >/dev/null 2>&1 || source <(COMPLETE=bash "$bin/$command")
  function=$(complete -p "$command" | sed -E 's/.* -F ([^ ]+) .*/\1/')
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMP_LINE=$line COMP_POINT=${#line} COMP_TYPE=9
  COMPREPLY=()
  "$function" "$command" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  echo --
  printf '%s\n' "${COMPREPLY[@]}"
done
"#;

#[test]
fn bash_completes_commands_and_options_through_flakem_and_the_links() {
    let names = nix_command_names();
    let bin = installed(&names);
    let replies = bash_completions(
        bin.path(),
        &[
            "flakem swi",
            "flakem switch-push --dr",
            "switch-push ",
            "switch-push --dr",
            "switch-pull-reset --ti",
            "ssh-wait --dialect ",
        ],
    );
    let want: [&[&str]; 6] = [
        &[
            "switch",
            "switch-pull",
            "switch-push",
            "switch-pull-reset",
            "switch-push-reset",
        ],
        &["--dry-run"],
        &[
            "switch",
            "boot",
            "test",
            "dry-activate",
            "--dry-run",
            "--flake",
        ],
        &["--dry-run"],
        &["--timeout"],
        &["auto", "ng", "legacy"],
    ];
    assert_eq!(replies.len(), want.len(), "{replies:?}");
    for (reply, want) in replies.iter().zip(want) {
        for word in want {
            assert!(reply.iter().any(|r| r == word), "{word} in {reply:?}");
        }
    }
    assert!(
        !replies[0].contains(&"build".to_owned()),
        "{:?}",
        replies[0]
    );
}

/// zsh loads an installed `_switch-push` on the first Tab; that first Tab must complete too.
#[test]
fn zsh_completes_on_the_first_tab_from_an_installed_file() {
    let names = nix_command_names();
    let bin = installed(&names);
    let site_functions = TempDir::new().unwrap();
    for name in ["flakem", "switch-push"] {
        let out = Command::new(bin.path().join(name))
            .env("COMPLETE", "zsh")
            .output()
            .unwrap();
        let script = succeeded("COMPLETE=zsh", out);
        std::fs::write(site_functions.path().join(format!("_{name}")), script).unwrap();
    }
    // Outside a real Tab, `_describe` (what the completer hands its matches to) prints them.
    let script = r#"
fpath=("$1" $fpath)
autoload -Uz compinit && compinit -u -D
_describe() { local name=${@[-1]}; print -rl -- "${(@P)name}"; }
words=(switch-push --dr); CURRENT=2; _switch-push
print -- --
words=(flakem switch-p); CURRENT=2; _flakem
"#;
    let elsewhere = TempDir::new().unwrap();
    let out = program("zsh", "zsh")
        .args(["-f", "-c", script, "zsh"])
        .arg(site_functions.path())
        .current_dir(elsewhere.path())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = succeeded("zsh completion", out);
    let (link, flakem) = out.split_once("--\n").unwrap();
    assert!(link.starts_with("--dry-run:"), "{out}");
    let flakem: Vec<&str> = flakem
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        flakem,
        [
            "switch-pull",
            "switch-push",
            "switch-pull-reset",
            "switch-push-reset"
        ]
    );
}

#[test]
fn fish_completes_through_a_link() {
    let names = nix_command_names();
    let bin = installed(&names);
    let script = r#"
COMPLETE=fish $argv[1]/switch-push | source
complete --do-complete 'switch-push --dr'
"#;
    let elsewhere = TempDir::new().unwrap();
    let out = program("fish", "fish")
        .args(["--no-config", "-c", script])
        .arg(bin.path())
        .current_dir(elsewhere.path())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = succeeded("fish completion", out);
    assert!(out.starts_with("--dry-run\t"), "{out}");
}

#[test]
fn man_renders_a_page_for_flakem_and_every_name() {
    let names = nix_command_names();
    let dir = TempDir::new().unwrap();
    generate_man(dir.path());
    let mut pages = page_names(dir.path());
    pages.sort();
    let mut want: Vec<String> = names
        .iter()
        .flat_map(|n| [n.clone(), format!("flakem-{n}")])
        .chain(["flakem".to_owned()])
        .collect();
    want.sort();
    assert_eq!(pages, want);
    for page in pages {
        let out = program("man", "man-db")
            .args(["--warnings", "-l"])
            .arg(dir.path().join(format!("{page}.1")))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{page}: warnings");
        let text = succeeded(&page, out);
        // The page's name, and a synopsis under the name a user types.
        let typed = page.replacen("flakem-", "flakem ", 1);
        let typed: Vec<&str> = typed.split(' ').collect();
        // man justifies lines: compare words, not spaces.
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains(&format!("{page} - ")), "{page}:\n{text}");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().starts_with(&typed)),
            "{typed:?}:\n{text}"
        );
    }
}
