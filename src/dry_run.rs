//! `--dry-run`: every host's plan on stdout, with nothing started: no nix, no probe, no ssh.

use std::fmt::Write;
use std::path::PathBuf;

use crate::commands::Command;
use crate::console;
use crate::dialect::Dialect;
use crate::error::Error;
use crate::flake::{self, Kind};
use crate::job::{Job, Machine};
use crate::names::{Host, Target};
use crate::options::DialectChoice;
use crate::plan::{self, Context};
use crate::secret::Secret;
use crate::ssh::Ssh;

/// Prints the plan of every host on stdout; starts nothing.
pub fn print(job: &Job, ssh: &Ssh, home_manager: bool) -> Result<(), Error> {
    let mut out = String::new();
    let (dialect, why) = match job.dialect {
        DialectChoice::Ng => (Dialect::Ng, "given"),
        DialectChoice::Legacy => (Dialect::Legacy, "given"),
        DialectChoice::Auto => (
            Dialect::Ng,
            "assumed; --dialect or FLAKEM_DIALECT would say otherwise",
        ),
    };
    if job.command.system_kinds() && job.kind != Some(Kind::Darwin) {
        writeln!(out, "# dialect: {dialect} ({why})").ok();
    }
    // Without an evaluation, @all and @pattern stand for hosts known only at run time.
    let mut machines = if job.hosts.needs_names() {
        writeln!(
            out,
            "# hosts: {}, from {}#nixosConfigurations (one nix eval); each as <host>:",
            job.hosts, job.flake
        )
        .ok();
        vec![Machine {
            host: Host::placeholder(),
            target: (job.command != Command::SshWait).then(Target::placeholder),
            kind: Kind::Nixos,
        }]
    } else {
        job.machines(&[])?
    };
    let secret = Secret::of_job(job, &machines)?;
    let several = machines.len() > 1;
    let mut sections = Vec::new();
    for (i, machine) in machines.iter_mut().enumerate() {
        let mut section = String::new();
        if several {
            writeln!(section, "# [{}]", machine.host).ok();
        }
        if job.kind == Some(Kind::Darwin) {
            machine.kind = Kind::Darwin;
        }
        if let Some(target) = machine
            .target
            .as_ref()
            .filter(|_| job.command != Command::SshDeploy)
        {
            let kind = match (machine.kind, job.kind) {
                (Kind::Nixos, None) => format!(
                    "{flake}#nixosConfigurations (or #darwinConfigurations: one nix eval)",
                    flake = job.flake
                ),
                (kind, _) => format!("{}#{}", job.flake, kind.output()),
            };
            writeln!(section, "# check: `{target}` is in {kind}").ok();
        }
        let cx = Context {
            dialect,
            ssh,
            control_dir: PathBuf::from(format!("<tmp>/{i}")),
            summary: several || job.json,
            home_manager,
            secret: secret.as_ref(),
        };
        let plan = plan::plan(job, machine, &cx);
        write!(section, "{plan}").ok();
        sections.push((plan.drv_of, section));
    }
    let attributes: Vec<String> = sections.iter().filter_map(|(a, _)| a.clone()).collect();
    if !attributes.is_empty() {
        let cwd = std::env::current_dir()?;
        let eval = flake::eval_drvs(&job.flake, &cwd, &attributes, &job.rest);
        writeln!(out, "+ {eval}\n# one evaluation gives each host's <drv>").ok();
    }
    for (_, section) in sections {
        out.push_str(&section);
    }
    console::print_stdout(&out);
    Ok(())
}
