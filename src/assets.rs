//! Shell completions and man pages, all generated from the one clap tree of `options::tree`.
//!
//! Completion calls back into flakem (clap_complete's dynamic completion), so that host names
//! can come from the flake and the ssh config, which static scripts cannot know. Through a
//! link named after a command (`switch-push`), flakem completes and documents that command
//! alone, under the link's name.

use std::io::{self, Write};
use std::path::Path;

use clap_complete::env::{Bash, CompleteEnv, Elvish, EnvCompleter, Fish, Powershell, Shells, Zsh};

use crate::commands::Command;
use crate::options;

/// With `COMPLETE=<shell>` set, prints that shell's registration script for the name flakem
/// was started as, or answers its completion request, and exits; otherwise returns at once.
pub fn complete_from_env() {
    let called_as = std::env::args_os()
        .next()
        .and_then(|a| Command::called_as(&a));
    CompleteEnv::with_factory(|| tree_as(called_as))
        .shells(Shells(&[&Bash, &ZshAutoload, &Fish, &Elvish, &Powershell]))
        .complete();
}

/// The tree a user sees: `flakem` with its subcommands or, through a link, that command on
/// its own, named after the link and with flakem's global options.
fn tree_as(called_as: Option<Command>) -> clap::Command {
    let Some(command) = called_as else {
        return options::tree();
    };
    let mut tree = options::tree();
    // Building copies the global options into every subcommand.
    tree.build();
    tree.find_subcommand(command.name())
        .expect("every command is a subcommand of the tree")
        .clone()
        .bin_name(command.name())
        .display_name(command.name())
        .version(env!("CARGO_PKG_VERSION"))
}

/// Writes the man pages into `dir`: `flakem.1`, one `flakem-COMMAND.1` per command, and one
/// `COMMAND.1` per command for the name it answers to through a link.
pub fn generate(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(options::tree(), dir)?;
    for command in Command::ALL {
        clap_mangen::Man::new(tree_as(Some(command))).generate_to(dir)?;
    }
    Ok(())
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
