//! flakem: deploy NixOS machines declared in a flake. One binary, many names: started through
//! a link named after a command, it is that command. Parse, resolve, plan, then print or run;
//! docs/ARCHITECTURE.md draws the ladder the modules below stand on.

// Vocabulary: names and plain data, no I/O.
mod cmd;
mod commands;
mod dialect;
mod duration;
mod error;
mod flake;
mod kind;
mod names;
mod quote;
mod secret;
mod ssh;
mod sudo;
mod suggest;
// Processes.
mod cache;
mod console;
mod password;
mod process;
mod signals;
// Arguments.
mod grammar;
mod job;
mod options;
// Resolve, plan, verdicts.
mod advice;
mod day_two;
mod generations;
mod guard;
mod plan;
mod resolve;
mod verdict;
// Run.
mod dry_run;
mod exec;
mod fleet;
mod summary;
mod wait;
// Entry points besides `main`.
mod completion;
mod man;

use std::path::Path;
use std::process::ExitCode;

use commands::Command;
use console::Console;
use error::Error;
use job::Job;
use resolve::World;
use sudo::Sudo;

fn main() -> ExitCode {
    let result = run();
    password::forget();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flakem: {e}");
            e.exit_code()
        }
    }
}

fn run() -> Result<(), Error> {
    completion::complete_from_env();
    // For packaging: the man pages, generated from the same definitions as the binary.
    if let Some(dir) = std::env::var_os("FLAKEM_GENERATE_MAN") {
        return Ok(man::generate(Path::new(&dir))?);
    }
    let mut args = std::env::args_os();
    let called_as = args.next().as_deref().and_then(Command::called_as);
    let args = args
        .map(|a| {
            a.into_string()
                .map_err(|a| Error::Usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(job) = Job::from_args(called_as, &args, &resolve::local())? else {
        return Ok(());
    };
    if job.dry_run {
        let world = World::offline(&job)?;
        dry_run::print(&job, &world, &plan::plans(&job, &world));
        return Ok(());
    }
    signals::install()?;
    let world = World::online(&job, &Console::plain())?;
    // Asked once the invocation and the world are known good (a typo or a legacy
    // nixos-rebuild is refused first), and before any host is contacted.
    if job.sudo == Sudo::Password {
        password::hold(password::ask(&sudo_prompt(&world))?);
    }
    let result = fleet::run(&job, &world, &plan::plans(&job, &world));
    signals::end_masters(&world.control_dir);
    result
}

/// The one prompt of `--ask-sudo-password`, naming the hosts it is for.
fn sudo_prompt(world: &World) -> String {
    let hosts: Vec<String> = world.machines.iter().map(|m| m.host.to_string()).collect();
    let named = match hosts.len() {
        0..=3 => hosts.join(", "),
        n => format!("{}, ... ({n} hosts)", hosts[..3].join(", ")),
    };
    format!("flakem: sudo password for {named} (asked once for every host): ")
}
