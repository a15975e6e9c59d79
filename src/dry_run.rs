//! `--dry-run`: every host's plan on stdout, as resolve's offline world gives it, with
//! nothing started: no nix, no probe, no ssh.

use std::fmt::Write;

use crate::commands::Command;
use crate::console;
use crate::job::Job;
use crate::kind::Kind;
use crate::plan::Plans;
use crate::resolve::World;

/// Prints what the world was assumed to be, then the plan of every host. The evaluation of
/// derivations: with one host, between its checks and its steps; with several, on its own
/// before their sections, as it starts alongside their checks.
pub fn print(job: &Job, world: &World, plans: &Plans) {
    let mut out = String::new();
    for assumption in &world.assumptions {
        writeln!(out, "# {assumption}").ok();
    }
    let several = world.machines.len() > 1;
    let eval = plans.eval.as_ref().map(|eval| {
        let when = match several {
            true => " (alongside the checks; nothing is built unless every host passes)",
            false => "",
        };
        format!("+ {eval}\n# one evaluation gives each host's <drv>{when}\n")
    });
    if several && let Some(eval) = &eval {
        out.push_str(eval);
    }
    for (machine, plan) in world.machines.iter().zip(&plans.hosts) {
        if several {
            writeln!(out, "# [{}]", machine.host).ok();
        }
        if let Some(target) = machine
            .target
            .as_ref()
            .filter(|_| job.command != Command::SshDeploy && !job.command.day_two())
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
        for step in &plan.checks {
            writeln!(out, "{step}").ok();
        }
        if !several && let Some(eval) = &eval {
            out.push_str(eval);
        }
        plan.fmt_after_checks(&mut out).ok();
    }
    console::print_stdout(&out);
}
