//! Man pages, generated from the one clap tree of `options::tree`, for packaging.

use std::io;
use std::path::Path;

use crate::commands::Command;
use crate::options;

/// Writes the man pages into `dir`: `flakem.1`, one `flakem-COMMAND.1` per command, and one
/// `COMMAND.1` per command for the name it answers to through a link.
pub fn generate(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(options::tree(), dir)?;
    for command in Command::ALL {
        clap_mangen::Man::new(options::tree_as(options::tree(), Some(command))).generate_to(dir)?;
    }
    Ok(())
}
