//! Shell completions and man pages, all generated from the one clap tree of `options::tree`.
//!
//! Completion calls back into flakem (clap_complete's dynamic completion), so that host names
//! can come from the flake and the ssh config, which static scripts cannot know.

use std::io;
use std::path::Path;

use clap_complete::env::CompleteEnv;

use crate::options;

/// With `COMPLETE=<shell>` set, prints that shell's registration script, or answers its
/// completion request, and exits; otherwise returns at once.
pub fn complete_from_env() {
    CompleteEnv::with_factory(options::tree).complete();
}

/// Writes the man pages into `dir`: `flakem.1` and one `flakem-COMMAND.1` per command.
pub fn generate(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(options::tree(), dir)
}
