//! flakem: deploy NixOS machines declared in a flake. One binary, many names: started through
//! a link named after a command, it is that command.

mod assets;
mod commands;
mod dialect;
mod error;
mod exec;
mod flake;
mod grammar;
mod job;
mod options;
mod plan;
mod quote;
mod signals;
mod ssh;
mod suggest;
mod target;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use commands::Command;
use dialect::Dialect;
use error::Error;
use grammar::Parsed;
use job::Job;
use options::DialectChoice;
use plan::Context;
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
    let called_as = args.next().as_deref().and_then(|a| {
        Path::new(a)
            .file_name()?
            .to_str()
            .and_then(Command::from_name)
    });
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
    let job = Job::resolve(invocation, settings, &job::short_hostname())?;
    let ssh = Ssh::from_nix_sshopts(std::env::var("NIX_SSHOPTS").ok().as_deref())
        .map_err(Error::Usage)?;
    if job.dry_run {
        return dry_run(&job, &ssh);
    }
    signals::install()?;
    if let Some(target) = &job.target {
        let eval = flake::eval_names(&job.flake, &std::env::current_dir()?);
        let out = exec::traced_output(&eval)?;
        if !out.status.success() {
            return Err(Error::Check(format!(
                "cannot read the flake {} (nix eval exited with {}; its message is above)",
                job.flake, out.status
            )));
        }
        let names = flake::parse_names(&String::from_utf8_lossy(&out.stdout))?;
        flake::check_target(&names, target, &job.flake)?;
    }
    let dialect = match job.dialect {
        DialectChoice::Ng => Dialect::Ng,
        DialectChoice::Legacy => Dialect::Legacy,
        DialectChoice::Auto if job.command.hosts().is_some() => dialect::detect()?,
        DialectChoice::Auto => Dialect::Ng,
    };
    let control_dir = private_dir()?;
    let plan = plan::plan(
        &job,
        &Context {
            dialect,
            ssh: &ssh,
            control_dir: control_dir.path().to_owned(),
        },
    );
    exec::run(&plan)
}

/// Prints the plan on stdout; starts nothing.
fn dry_run(job: &Job, ssh: &Ssh) -> Result<(), Error> {
    let (dialect, why) = match job.dialect {
        DialectChoice::Ng => (Dialect::Ng, "given"),
        DialectChoice::Legacy => (Dialect::Legacy, "given"),
        DialectChoice::Auto => (
            Dialect::Ng,
            "assumed; --dialect or FLAKEM_DIALECT would say otherwise",
        ),
    };
    let cx = Context {
        dialect,
        ssh,
        control_dir: PathBuf::from("<tmp>"),
    };
    let plan = plan::plan(job, &cx);
    if job.command.hosts().is_some() {
        println!("# dialect: {dialect} ({why})");
    }
    if let Some(target) = &job.target {
        println!(
            "# check: `{target}` is in {}#nixosConfigurations (one nix eval)",
            job.flake
        );
    }
    print!("{plan}");
    Ok(())
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
            e.print()?;
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
