//! Every command's plan, in both dialects, as the dry run prints it.

use std::path::PathBuf;

use super::*;
use crate::grammar::{self, Parsed};
use crate::options;

fn job(args: &[&str]) -> Job {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let Ok(Parsed::Run(inv)) = grammar::parse(None, &args) else {
        panic!("{args:?} does not parse");
    };
    let settings = options::settings(inv.command, &inv.options).expect("options");
    Job::resolve(inv, settings, "laptop").expect("a valid job")
}

fn render(dialect: Dialect, ssh: &Ssh, args: &[&str]) -> String {
    let cx = Context {
        dialect,
        ssh,
        control_dir: PathBuf::from("/tmp/flakem-X"),
    };
    format!("$ flakem {}\n{}", args.join(" "), plan(&job(args), &cx))
}

const CASES: &[&[&str]] = &[
    &["build"],
    &["build", "--show-trace"],
    &["build", "laptop", "-L"],
    &["build-there", "root@10.3.2.1", "another-machine", "-L"],
    &["switch"],
    &["switch", "--no-sudo", "laptop"],
    &["switch-pull", "myname@bigmachine", "--show-trace"],
    &[
        "switch-pull",
        "test",
        "bigmachine",
        "--option",
        "cores",
        "0",
    ],
    &["switch-push", "boot", "bigmachine"],
    &[
        "switch-push",
        "--flake",
        "/srv/infra",
        "dry-activate",
        "me@10.0.0.1",
        "big",
    ],
    &["switch-pull-reset", "root@10.3.2.1", "another-machine"],
    &[
        "switch-push-reset",
        "--no-gc",
        "--timeout",
        "90s",
        "bigmachine",
    ],
    &[
        "switch-push-reset",
        "--no-sudo",
        "--gc-older-than",
        "0d",
        "root@big",
    ],
    &["ssh-wait", "bigmachine"],
    &[
        "ssh-wait",
        "--timeout",
        "0",
        "me@big",
        "systemctl",
        "is-system-running",
        "--wait",
    ],
];

fn all(dialect: Dialect) -> String {
    let ssh = Ssh::default();
    CASES
        .iter()
        .map(|args| render(dialect, &ssh, args))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_command_ng() {
    insta::assert_snapshot!(all(Dialect::Ng));
}

#[test]
fn every_command_legacy() {
    insta::assert_snapshot!(all(Dialect::Legacy));
}

#[test]
fn nix_options_pass_verbatim_and_last() {
    let tricky = [
        "--option",
        "substituters",
        "",
        "--arg",
        "x",
        "a b",
        "--",
        "it's",
    ];
    let args = [&["switch-push", "h", "t"][..], &tricky].concat();
    let cx = Context {
        dialect: Dialect::Ng,
        ssh: &Ssh::default(),
        control_dir: PathBuf::new(),
    };
    let Step::Run(cmd) = &plan(&job(&args), &cx).steps[0] else {
        panic!()
    };
    assert_eq!(cmd.argv[cmd.argv.len() - tricky.len()..], tricky);
}

#[test]
fn the_reset_collects_only_after_proving_the_boot() {
    let cx = Context {
        dialect: Dialect::Ng,
        ssh: &Ssh::default(),
        control_dir: PathBuf::new(),
    };
    let steps = plan(&job(&["switch-push-reset", "h"]), &cx).steps;
    let position = |pred: &dyn Fn(&Step) -> bool| steps.iter().position(pred).unwrap();
    let rebuild = position(&|s| matches!(s, Step::Run(c) if c.program() == "nixos-rebuild"));
    let read = position(&|s| matches!(s, Step::ReadBootState(_)));
    let reboot = position(&|s| matches!(s, Step::Reboot(_)));
    let wait = position(&|s| matches!(s, Step::WaitForNewBoot { .. }));
    let verify = position(&|s| matches!(s, Step::VerifyBooted(_)));
    let gc =
        position(&|s| matches!(s, Step::Run(c) if c.to_string().contains("nix-collect-garbage")));
    assert!(rebuild < read && read < reboot && reboot < wait && wait < verify && verify < gc);
}

#[test]
fn nix_sshopts_reach_every_ssh_call() {
    let ssh = Ssh::from_nix_sshopts(Some("-F '/my dir/config' -o Port=2222")).unwrap();
    let text = render(Dialect::Ng, &ssh, &["switch-push-reset", "h"]);
    let ssh_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("+ ssh")).collect();
    assert!(ssh_lines.len() >= 6);
    for line in ssh_lines {
        assert!(
            line.contains(" -F '/my dir/config' -o Port=2222 "),
            "{line}"
        );
    }
}
