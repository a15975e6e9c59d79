//! One process as data: its environment additions and its argument list. Plans are made of
//! these; the trace line of each is its `Display`, pasteable into a POSIX shell.

use std::fmt;

use crate::quote;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
}

impl Cmd {
    pub fn new(argv: Vec<String>) -> Cmd {
        Cmd {
            env: Vec::new(),
            argv,
        }
    }

    pub fn program(&self) -> &str {
        &self.argv[0]
    }
}

/// Pasteable into a POSIX shell: `K=V program args...`, every word quoted as needed.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={} ", quote::quote(v))?;
        }
        f.write_str(&quote::join(&self.argv))
    }
}

/// `nix --extra-experimental-features 'nix-command flakes' WORDS...`
pub fn nix(words: &[&str]) -> Vec<String> {
    ["nix", "--extra-experimental-features", "nix-command flakes"]
        .iter()
        .chain(words)
        .map(|w| w.to_string())
        .collect()
}
