//! flakem: deploy NixOS machines declared in a flake. One binary, many names: started through
//! a link named after a command, it is that command.

mod assets;
mod commands;
mod console;
mod dialect;
mod dry_run;
mod error;
mod exec;
mod flake;
mod fleet;
mod grammar;
mod hosts;
mod job;
mod names;
mod options;
mod plan;
mod quote;
mod secret;
mod signals;
mod ssh;
mod suggest;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use commands::Command;
use console::Console;
use dialect::Dialect;
use error::Error;
use flake::Kind;
use flake::Names;
use fleet::Part;
use grammar::Parsed;
use job::Job;
use job::Local;
use options::DialectChoice;
use plan::Context;
use secret::Secret;
use ssh::Ssh;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flakem: {e}");
            e.exit_code()
        }
    }
}

fn run() -> Result<(), Error> {
    assets::complete_from_env();
    // For packaging: the man pages, generated from the same definitions as the binary.
    if let Some(dir) = std::env::var_os("FLAKEM_GENERATE_MAN") {
        return Ok(assets::generate(Path::new(&dir))?);
    }
    let mut args = std::env::args_os();
    let called_as = args.next().as_deref().and_then(Command::called_as);
    let args = args
        .map(|a| {
            a.into_string()
                .map_err(|a| Error::Usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let invocation = match grammar::parse(called_as, &args)? {
        Parsed::Run(invocation) => invocation,
        Parsed::OptionsOnly { command, options } => {
            return clap_error(options::answer(command, &options));
        }
    };
    let settings = match options::settings(invocation.command, &invocation.options) {
        Ok(settings) => settings,
        Err(e) => return clap_error(e),
    };
    let job = Job::resolve(invocation, settings, &Local::here())?;
    let ssh = Ssh::from_nix_sshopts(std::env::var("NIX_SSHOPTS").ok().as_deref())
        .map_err(Error::Usage)?;
    let home_manager = job.command == Command::HmSwitch && which::which("home-manager").is_ok();
    if job.dry_run {
        return dry_run::print(&job, &ssh, home_manager);
    }
    if job.confirm && !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "--confirm asks on the terminal, and stdin is not one; --diff shows the changes \
             without asking"
                .into(),
        ));
    }
    signals::install()?;
    let console = Console::plain();
    // One evaluation for every host: their targets and kinds, and the names behind @all
    // and @pattern.
    let evaluates = !matches!(job.command, Command::SshWait | Command::SshDeploy);
    // Hosts named outright are known (and each checked to come once) before anything runs.
    let named = match job.hosts.needs_names() {
        true => None,
        false => Some(job.machines(&[])?),
    };
    let names = if evaluates || named.is_none() {
        flake::read_names(&job.flake, &console)?
    } else {
        Names::default()
    };
    let mut machines = match named {
        Some(machines) => machines,
        None => job.machines(&names.nixos)?,
    };
    if evaluates {
        for machine in &mut machines {
            flake::locate(&job, machine, &names, &ssh, &console)?;
        }
        // An address may have turned out to be a configuration named already.
        machines = job::each_once(machines)?;
    }
    let secret = Secret::of_job(&job, &machines)?;
    let rebuilds = machines.iter().any(|m| m.kind == Kind::Nixos) && job.command.system_kinds();
    let dialect = match job.dialect {
        DialectChoice::Ng => Dialect::Ng,
        DialectChoice::Legacy => Dialect::Legacy,
        DialectChoice::Auto if rebuilds => dialect::detect(&console)?,
        DialectChoice::Auto => Dialect::Ng,
    };
    let control_dir = private_dir()?;
    let several = machines.len() > 1;
    let parts = machines
        .into_iter()
        .enumerate()
        .map(|(i, machine)| {
            let cx = Context {
                dialect,
                ssh: &ssh,
                control_dir: control_dir.path().join(i.to_string()),
                summary: several || job.json,
                home_manager,
                secret: secret.as_ref(),
            };
            std::fs::create_dir(&cx.control_dir)?;
            let console = Console::new(&machine.host, several, job.json, job.log_dir.as_deref())?;
            let plan = plan::plan(&job, &machine, &cx);
            Ok(Part {
                machine,
                plan,
                console,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // The plans that build by hand get their derivations from one evaluation for all.
    let attributes: Vec<String> = parts.iter().filter_map(|p| p.plan.drv_of.clone()).collect();
    let cwd = std::env::current_dir()?;
    let eval = (!attributes.is_empty())
        .then(|| flake::eval_drvs(&job.flake, &cwd, &attributes, &job.rest));
    let result = fleet::run(&job, &parts, eval.as_ref());
    signals::end_masters(control_dir.path());
    result
}

/// A private directory for control sockets, short enough for a socket path.
fn private_dir() -> Result<tempfile::TempDir, Error> {
    let short = std::env::temp_dir().as_os_str().len() < 60;
    let dir = if short {
        std::env::temp_dir()
    } else {
        PathBuf::from("/tmp")
    };
    Ok(tempfile::Builder::new().prefix("flakem-").tempdir_in(dir)?)
}

/// Help and version requests print and succeed; any other clap error becomes one line.
fn clap_error(e: clap::Error) -> Result<(), Error> {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // A reader that went away (`| head`) is no error worth reporting.
            e.print().ok();
            Ok(())
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Err(Error::Usage(format!(
                "missing command; one of: {}",
                Command::ALL.map(Command::name).join(", ")
            )))
        }
        _ => {
            let text = e.to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .collect::<Vec<_>>()
                .join(" ");
            Err(Error::Usage(line.trim_start_matches("error: ").to_owned()))
        }
    }
}
