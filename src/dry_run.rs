//! `--dry-run`: every host's plan on stdout, as resolve's offline world gives it, with
//! nothing started: no nix, no probe, no ssh.

use std::fmt::Write;

use crate::commands::Command;
use crate::console;
use crate::job::Job;
use crate::kind::Kind;
use crate::plan::Plans;
use crate::resolve::World;

/// Prints what the world was assumed to be, then the plan of every host.
pub fn print(job: &Job, world: &World, plans: &Plans) {
    let mut out = String::new();
    for assumption in &world.assumptions {
        writeln!(out, "# {assumption}").ok();
    }
    if let Some(eval) = &plans.eval {
        writeln!(out, "+ {eval}\n# one evaluation gives each host's <drv>").ok();
    }
    let several = world.machines.len() > 1;
    for (machine, plan) in world.machines.iter().zip(&plans.hosts) {
        if several {
            writeln!(out, "# [{}]", machine.host).ok();
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
            writeln!(out, "# check: `{target}` is in {kind}").ok();
        }
        write!(out, "{plan}").ok();
    }
    console::print_stdout(&out);
}
