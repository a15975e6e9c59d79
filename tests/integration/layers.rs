//! The ladder of docs/ARCHITECTURE.md, kept: no file of `src/` imports a file above it, every
//! file stands on a rung, and no function grows past 80 lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The longest function the crate allows, in lines from `fn` to its closing brace.
const LONGEST_FUNCTION: usize = 80;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Each module of the ladder table, in order: a module may import those before it.
fn ladder() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
        .flat_map(|l| l.split('|').nth(2).unwrap_or_default().split(','))
        .map(|m| m.trim().to_owned())
        .collect()
}

/// Every source file with the module it belongs to: `src/plan/tests.rs` is `plan`'s.
fn sources() -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root().join("src")).unwrap();
                let first = relative.components().next().unwrap();
                let module = Path::new(first.as_os_str()).with_extension("");
                files.insert(path, module.to_string_lossy().into_owned());
            }
        }
    }
    files
}

/// The modules of the crate a source file names: `crate::x` anywhere, and in `main.rs` the
/// bare `use x::...` of the crate root.
fn imports(text: &str, root_file: bool) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let name: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    if root_file {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("use ")
                && let Some((name, _)) = rest.split_once("::")
                && !["std", "crate", "clap", "serde"].contains(&name)
            {
                found.push(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_ladder() {
    let ladder = ladder();
    assert!(
        ladder.len() > 20,
        "the table of docs/ARCHITECTURE.md: {ladder:?}"
    );
    let rung = |m: &str| ladder.iter().position(|l| l == m);
    let mut wrong = Vec::new();
    for (path, module) in sources() {
        let Some(own) = rung(&module) else {
            wrong.push(format!(
                "{module} is not in the ladder of docs/ARCHITECTURE.md"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for import in imports(&text, module == "main") {
            match rung(&import) {
                Some(r) if r < own || import == module => {}
                Some(_) => wrong.push(format!("{} imports {import}, above it", path.display())),
                None => wrong.push(format!(
                    "{} imports {import}, not on the ladder",
                    path.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The functions of `text` longer than `longest` lines, by name, from a line that starts a
/// function to the line that closes it at the same indentation.
fn long_functions(text: &str, longest: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = line.len() - code.len();
        let signature = ["fn ", "pub fn ", "pub(crate) fn "]
            .iter()
            .find_map(|p| code.strip_prefix(p));
        let Some(signature) = signature else { continue };
        let close = format!("{}}}", " ".repeat(indent));
        let end = lines[start..].iter().position(|l| *l == close);
        if let Some(length) = end.map(|e| e + 1).filter(|l| *l > longest) {
            let name = signature.split(['(', '<']).next().unwrap_or_default();
            long.push((name.to_owned(), length));
        }
    }
    long
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let sample = "fn short() {\n}\n\nfn long() {\n".to_owned() + &"    x();\n".repeat(80) + "}\n";
    assert_eq!(
        long_functions(&sample, LONGEST_FUNCTION),
        [("long".into(), 82)]
    );
    let mut long = Vec::new();
    for path in sources().keys() {
        let text = std::fs::read_to_string(path).unwrap();
        for (name, length) in long_functions(&text, LONGEST_FUNCTION) {
            long.push(format!("{}: {name} is {length} lines", path.display()));
        }
    }
    assert!(long.is_empty(), "split these up:\n{}", long.join("\n"));
}

#[test]
fn imports_are_found_in_every_form() {
    let text = "use crate::plan::{Plan, Step};\nlet x = crate::names::Host::parse(w);\n";
    assert_eq!(imports(text, false), ["plan", "names"]);
    assert_eq!(
        imports("use job::Job;\nuse std::path::Path;\n", true),
        ["job"]
    );
}
