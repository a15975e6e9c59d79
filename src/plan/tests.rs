//! Every command's plan, in both dialects, as the dry run prints it.

use std::path::PathBuf;

use super::*;
use crate::grammar::{self, Parsed};
use crate::job::Local;
use crate::options;
use crate::secret::{Decrypt, Secret};

/// The configurations of the flake these tests pretend to read.
const NAMES: [&str; 4] = ["bigmachine", "another-machine", "web1", "web2"];

pub(super) fn job(args: &[&str]) -> Job {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let Ok(Parsed::Run(inv)) = grammar::parse(None, &args) else {
        panic!("{args:?} does not parse");
    };
    let settings = options::settings(inv.command, &inv.options).expect("options");
    let local = Local {
        host: "laptop".into(),
        user: "me".into(),
    };
    Job::resolve(inv, settings, &local).expect("a valid job")
}

/// The key `ssh-deploy` finds in these tests.
fn secret() -> Secret {
    Secret {
        file: "/srv/infra/hosts/web1/web1.age.key".into(),
        decrypt: Decrypt::Age {
            identity: "/home/me/.config/sops/age/keys.txt".into(),
        },
    }
}

fn plans(dialect: Dialect, ssh: &Ssh, args: &[&str]) -> Vec<Plan> {
    let job = job(args);
    let mut machines = job.machines(&NAMES.map(String::from)).expect("machines");
    // The kind the flake would say: the tests' nix-darwin machine is `macbook`.
    for m in &mut machines {
        if m.target.as_ref().is_some_and(|t| t.as_str() == "macbook") {
            m.kind = Kind::Darwin;
        }
    }
    let summary = machines.len() > 1 || job.json;
    let secret = secret();
    machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cx = Context {
                dialect,
                ssh,
                control_dir: PathBuf::from(format!("/tmp/flakem-X/{i}")),
                users_master: None,
                summary,
                fleet: machines.len() > 1 || job.hosts.needs_names(),
                home_manager: false,
                secret: Some(&secret),
            };
            plan(&job, m, &cx)
        })
        .collect()
}

pub(super) fn render(dialect: Dialect, ssh: &Ssh, args: &[&str]) -> String {
    let plans: Vec<String> = plans(dialect, ssh, args)
        .iter()
        .map(Plan::to_string)
        .collect();
    format!(
        "$ flakem {}\n{}",
        args.join(" "),
        plans.join("# next host\n")
    )
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
    &[
        "switch-push",
        "--no-check",
        "--build-host",
        "big",
        "web1,root@web2",
    ],
    &["switch-push", "--json", "--no-sudo", "@web*"],
    &["switch-push", "--diff", "web1", "--show-trace"],
    &["switch-pull", "--confirm", "boot", "me@web2"],
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
    &["build", "macbook"],
    &["switch", "macbook"],
    &["switch-push", "--diff", "macbook"],
    &["switch-pull", "me@macbook", "macbook"],
    &["build-there", "macbook"],
    &["hm-build"],
    &["hm-switch", "alice@web1"],
    &["hm-push", "alice@10.0.0.5", "web1"],
    &["hm-pull", "alice@web1", "-L"],
    &["ssh-deploy", "root@10.0.0.5", "web1"],
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

/// The dry-run form of each of `cases`, one after another: what a snapshot holds.
pub(super) fn all(dialect: Dialect, cases: &[&[&str]]) -> String {
    let ssh = Ssh::default();
    cases
        .iter()
        .map(|args| render(dialect, &ssh, args))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_command_ng() {
    insta::assert_snapshot!(all(Dialect::Ng, CASES));
}

#[test]
fn every_command_legacy() {
    insta::assert_snapshot!(all(Dialect::Legacy, CASES));
}

pub(super) fn steps(args: &[&str]) -> Vec<Step> {
    let mut plans = plans(Dialect::Ng, &Ssh::default(), args);
    assert_eq!(plans.len(), 1);
    plans.remove(0).steps
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
    let steps = steps(&args);
    let Some(Step::Run(cmd)) = steps.iter().find(|s| matches!(s, Step::Run(_))) else {
        panic!("no nixos-rebuild in {steps:?}")
    };
    let last: Vec<String> = cmd.argv[cmd.argv.len() - tricky.len()..]
        .iter()
        .map(crate::cmd::Word::shown)
        .collect();
    assert_eq!(last, tricky);
}

#[test]
fn the_reset_collects_only_after_proving_the_boot() {
    let steps = steps(&["switch-push-reset", "h"]);
    let position = |pred: &dyn Fn(&Step) -> bool| steps.iter().position(pred).unwrap();
    let rebuild = position(&|s| matches!(s, Step::Run(c) if c.program() == "nixos-rebuild"));
    let read = position(&|s| matches!(s, Step::ReadBootState { .. }));
    let reboot = position(&|s| matches!(s, Step::Reboot(_)));
    let wait = position(&|s| matches!(s, Step::WaitForNewBoot { .. }));
    let verify = position(&|s| matches!(s, Step::VerifyBooted(_)));
    let gc = position(&|s| s.name() == "nix-collect-garbage");
    assert!(rebuild < read && read < reboot && reboot < wait && wait < verify && verify < gc);
    let record = position(&|s| matches!(s, Step::RecordSystem { .. }));
    assert!(
        record < rebuild,
        "what the host ran is read before it changes"
    );
}

/// With a `--health-check`, a reset confirms its new boot before it collects anything;
/// should the check fail, the host boots back into what it ran, proven like any reboot.
#[test]
fn a_reset_confirms_its_new_boot_before_collecting() {
    let reset = steps(&[
        "switch-push-reset",
        "--health-check",
        "curl -f localhost",
        "h",
    ]);
    let confirm = reset
        .iter()
        .position(|s| matches!(s, Step::ConfirmBoot { .. }))
        .expect("a confirmation");
    let verify = reset
        .iter()
        .position(|s| matches!(s, Step::VerifyBooted(_)));
    let gc = reset.iter().position(|s| s.name() == "nix-collect-garbage");
    assert!(verify < Some(confirm) && Some(confirm) < gc);
    let Step::ConfirmBoot {
        health_checks,
        boot_back,
        ..
    } = &reset[confirm]
    else {
        unreachable!()
    };
    assert!(health_checks[0].to_string().contains("ControlPath=none"));
    let names: Vec<String> = boot_back.iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "sh",
            "read boot id",
            "reboot",
            "close ssh",
            "wait for new boot",
            "verify boot",
            "report"
        ]
    );
    let shown = boot_back[0].to_string();
    let args = r#"sh '\''<recorded>'\'' '\''<recorded-link>'\'''"#;
    assert!(shown.ends_with(args), "{shown}");
    assert!(
        shown.contains(r#"switch-to-configuration" boot"#),
        "{shown}"
    );
    // Without a check, the connection that proved the new boot confirms it; and without
    // the guard, nothing does.
    for args in [
        &["switch-push-reset", "h"][..],
        &[
            "switch-push-reset",
            "--no-rollback",
            "--health-check",
            "true",
            "h",
        ],
    ] {
        assert!(
            !steps(args)
                .iter()
                .any(|s| matches!(s, Step::ConfirmBoot { .. }))
        );
    }
}

#[test]
fn checks_come_before_anything_and_can_be_skipped() {
    let plan = &plans(Dialect::Ng, &Ssh::default(), &["switch-pull", "me@h"])[0];
    assert_eq!(plan.checks.len(), 1);
    assert!(plan.checks[0].to_string().contains("sudo -n true"));
    let build_there = &plans(Dialect::Ng, &Ssh::default(), &["build-there", "me@h"])[0];
    assert!(
        !build_there.checks[0].to_string().contains("sudo"),
        "nothing is activated"
    );
    let builder = &plans(
        Dialect::Ng,
        &Ssh::default(),
        &["switch-push", "--build-host", "b", "h"],
    )[0];
    assert_eq!(builder.checks.len(), 2, "the build host is checked too");
    let unchecked = &plans(
        Dialect::Ng,
        &Ssh::default(),
        &["switch-pull", "--no-check", "h"],
    )[0];
    assert!(unchecked.checks.is_empty());
    assert!(
        plans(Dialect::Ng, &Ssh::default(), &["switch"])[0]
            .checks
            .is_empty()
    );
}

#[test]
fn step_names_for_the_summary() {
    let names: Vec<String> = steps(&["switch-push-reset", "h"])
        .iter()
        .map(Step::name)
        .collect();
    assert_eq!(
        names,
        [
            "record system",
            "nixos-rebuild",
            "read boot id",
            "reboot",
            "close ssh",
            "wait for new boot",
            "verify boot",
            "nix-collect-garbage",
            "switch-to-configuration",
            "close ssh",
            "report"
        ]
    );
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

/// ssh takes an option's first value: the connect timeout of a call that may start a master
/// comes after `NIX_SSHOPTS`, so the user's own wins; the waits' short one stays flakem's.
#[test]
fn the_users_connect_timeout_wins_over_the_checks() {
    let ssh = Ssh::from_nix_sshopts(Some("-o ConnectTimeout=60")).unwrap();
    let text = render(Dialect::Ng, &ssh, &["switch-push-reset", "h"]);
    let check = text.lines().find(|l| l.contains("machine-id")).unwrap();
    let (user, ours) = (
        check.find("ConnectTimeout=60").unwrap(),
        check.find("ConnectTimeout=15").unwrap(),
    );
    assert!(user < ours, "{check}");
    let wait = text
        .lines()
        .find(|l| l.contains("ControlMaster=yes"))
        .unwrap();
    assert!(
        wait.find("ConnectTimeout=5").unwrap() < wait.find("ConnectTimeout=60").unwrap(),
        "{wait}"
    );
}

#[test]
fn quoted_remote_programs_are_named_without_their_quotes() {
    let names: Vec<String> = steps(&["switch-push", "macbook"])
        .iter()
        .map(Step::name)
        .collect();
    // nix-darwin has no guard, and the plan says so.
    assert_eq!(names, ["build", "nix copy", "nix-env", "activate", "note"]);
}

/// A fleet's systems come from one evaluation, unless `NIX_OPTIONS` (maybe nixos-rebuild's
/// own) or a third build host keep each host's plain `nixos-rebuild`.
#[test]
fn a_fleet_builds_from_one_evaluation_unless_told_otherwise() {
    let ssh = Ssh::default();
    let rebuilds_with_flake = |args: &[&str]| {
        plans(Dialect::Ng, &ssh, args).iter().all(|p| {
            p.steps.iter().any(|s| {
                s.to_string().contains("nixos-rebuild switch") && s.to_string().contains("--flake")
            })
        })
    };
    let fleet = plans(Dialect::Ng, &ssh, &["switch-push", "web1,web2"]);
    assert!(
        fleet
            .iter()
            .all(|p| p.drv_of.is_some() && p.prepare.is_empty())
    );
    assert!(!rebuilds_with_flake(&["switch-push", "web1,web2"]));
    assert!(rebuilds_with_flake(&["switch-push", "web1"]));
    assert!(rebuilds_with_flake(&[
        "switch-push",
        "web1,web2",
        "--install-bootloader"
    ]));
    assert!(rebuilds_with_flake(&[
        "switch-push",
        "--build-host",
        "big",
        "web1,web2"
    ]));
}

/// A remote NixOS `switch` or `test` is guarded; `boot`, nix-darwin and `--no-rollback` are
/// not, and the guard is armed just before the activation.
#[test]
fn remote_activations_are_guarded() {
    let ssh = Ssh::default();
    let guarded = |args: &[&str]| plans(Dialect::Ng, &ssh, args)[0].guard.is_some();
    assert!(guarded(&["switch-push", "web1"]));
    assert!(guarded(&["switch-pull", "test", "web1"]));
    assert!(guarded(&["switch-push", "web1,web2"]));
    assert!(!guarded(&["switch-push", "boot", "web1"]));
    assert!(!guarded(&["switch-push", "--no-rollback", "web1"]));
    assert!(!guarded(&["switch-push", "macbook"]));
    assert!(!guarded(&["switch-push-reset", "web1"]));
    let plan = &plans(Dialect::Ng, &ssh, &["switch-push", "--diff", "web1"])[0];
    let names: Vec<String> = plan.steps.iter().map(Step::name).collect();
    assert_eq!(names[..2], ["arm guard", "nixos-rebuild"], "{names:?}");
    let checks = [
        "--health-check",
        "systemctl is-active nginx",
        "--health-check",
        "true",
    ];
    let args = [&["switch-push"][..], &checks, &["web1"]].concat();
    let guard = plans(Dialect::Ng, &ssh, &args)[0].guard.clone().unwrap();
    assert_eq!(guard.health_checks.len(), 2);
    assert!(
        guard.health_checks[0]
            .to_string()
            .ends_with("-- web1 'timeout 30 sh -c '\\''systemctl is-active nginx'\\'''"),
        "{}",
        guard.health_checks[0]
    );
    // Activations nothing guards say so in one line.
    for (args, what) in [
        (&["switch-push", "macbook"][..], "nix-darwin"),
        (&["hm-push", "me@web1"], "Home Manager"),
    ] {
        let said = format!("{what} activations have no guard");
        let notes = plans(Dialect::Ng, &ssh, args)[0]
            .steps
            .iter()
            .filter(|step| matches!(step, Step::Note(note) if note.starts_with(&said)))
            .count();
        assert_eq!(notes, 1, "{args:?}");
    }
}

/// A host whose ssh configuration (or NIX_SSHOPTS) gives it a ControlPath of the user's
/// own: every step that shares a connection shares theirs, nixos-rebuild included, and flakem
/// leaves it open for them.
#[test]
fn a_users_own_control_path_is_the_shared_connection() {
    let job = job(&["switch-push", "web1"]);
    let machines = job.machines(&[]).unwrap();
    let theirs = PathBuf::from("/home/me/.ssh/cm-root@web1:22");
    let ssh = Ssh::default();
    let cx = Context {
        users_master: Some(theirs.clone()),
        ..one_host(&ssh)
    };
    let plan = plan(&job, &machines[0], &cx);
    let shown = plan.to_string();
    assert!(!shown.contains("/tmp/flakem-X/0/before"), "{shown}");
    let path = format!("ControlPath={}", theirs.display());
    let rebuild = plan
        .steps
        .iter()
        .find(|s| s.name() == "nixos-rebuild")
        .unwrap();
    assert!(rebuild.to_string().contains(&path), "{rebuild}");
    assert!(plan.checks[0].to_string().contains(&path));
    let closes: Vec<String> = plan.finally.iter().map(Step::to_string).collect();
    assert!(closes.iter().all(|c| !c.contains(&path)), "{closes:?}");
}

/// The context of a plan for one host of a job, with nothing known of the world.
pub(super) fn one_host(ssh: &Ssh) -> Context<'_> {
    Context {
        dialect: Dialect::Ng,
        ssh,
        control_dir: PathBuf::from("/tmp/flakem-X/0"),
        users_master: None,
        summary: false,
        fleet: false,
        home_manager: false,
        secret: None,
    }
}

/// `--ask-sudo-password`: the plans that feed the password, as the dry run prints them.
const PASSWORD_CASES: &[&[&str]] = &[
    &["switch-push", "--ask-sudo-password", "alice@web1"],
    &["switch-pull", "--ask-sudo-password", "boot", "alice@web1"],
    &[
        "switch-push-reset",
        "--ask-sudo-password",
        "--health-check",
        "true",
        "alice@web1",
    ],
    &[
        "switch-push",
        "--ask-sudo-password",
        "alice@web1,alice@web2",
    ],
    &["switch-push", "--ask-sudo-password", "alice@macbook"],
    &["rollback", "--ask-sudo-password", "alice@web1"],
    &["gc", "--ask-sudo-password", "--keep", "2", "alice@web1"],
    &["ssh-deploy", "--ask-sudo-password", "alice@web1"],
];

#[test]
fn password_sudo_ng() {
    insta::assert_snapshot!(all(Dialect::Ng, PASSWORD_CASES));
}

/// Every command of a plan, nested ones included.
fn commands(plan: &Plan) -> Vec<Cmd> {
    fn of(step: &Step, into: &mut Vec<Cmd>) {
        match step {
            Step::Run(c) | Step::Build(c) | Step::ReadSystem(c) | Step::Reboot(c) => {
                into.push(c.clone())
            }
            Step::VerifyBooted(c)
            | Step::CheckHost { cmd: c, .. }
            | Step::ReadBootState { cmd: c, .. }
            | Step::CloseMaster { cmd: c, .. }
            | Step::ArmGuard { cmd: c, .. }
            | Step::RecordSystem { cmd: c, .. } => into.push(c.clone()),
            Step::Copy { cmd, fallback, .. } => into.extend(
                [Some(cmd), fallback.as_ref()]
                    .into_iter()
                    .flatten()
                    .cloned(),
            ),
            Step::Pipe { from, to } => into.extend([from.clone(), to.clone()]),
            Step::WaitForNewBoot { attempt, close, .. } => {
                into.extend([attempt.clone(), close.clone()])
            }
            Step::WaitForSsh { attempt, .. } => into.push(attempt.clone()),
            Step::ConfirmBoot {
                health_checks,
                boot_back,
                ..
            } => {
                into.extend(health_checks.iter().cloned());
                boot_back.iter().for_each(|s| of(s, into));
            }
            Step::DayTwo(act) => into.extend(act.cmd().cloned()),
            Step::Note(_) | Step::Report { .. } => {}
        }
    }
    let mut all = Vec::new();
    for step in plan
        .checks
        .iter()
        .chain(&plan.prepare)
        .chain(&plan.steps)
        .chain(&plan.finally)
    {
        of(step, &mut all);
    }
    if let Some(g) = &plan.guard {
        all.extend(g.health_checks.iter().cloned());
        all.extend([&g.confirm, &g.roll_back, &g.state, &g.remove].map(Cmd::clone));
    }
    all
}

/// With `--ask-sudo-password`, each command that runs sudo on a host, and only those, is fed
/// the password, and runs exactly one sudo (which reads the one line); nixos-rebuild is fed
/// it and asked to read it. Without the option, nothing is fed.
#[test]
fn the_password_goes_to_each_sudo_and_nowhere_else() {
    let ssh = Ssh::default();
    for args in PASSWORD_CASES {
        for plan in plans(Dialect::Ng, &ssh, args) {
            for cmd in commands(&plan) {
                let text = cmd
                    .argv
                    .iter()
                    .map(Word::shown)
                    .collect::<Vec<_>>()
                    .join(" ");
                let sudos = text.matches("sudo --stdin --prompt=").count();
                let rebuild = cmd.program() == "nixos-rebuild";
                assert_eq!(cmd.sudo_password, sudos > 0 || rebuild, "{args:?}: {cmd}");
                assert!(sudos <= 1, "{args:?}: two sudos read one password: {cmd}");
                if rebuild {
                    assert!(text.contains("--sudo --ask-sudo-password"), "{cmd}");
                }
                // No sudo of another spelling.
                let plain = shell_words::split(&text)
                    .unwrap_or_default()
                    .iter()
                    .any(|w| w.contains("sudo ") && !w.contains("sudo --stdin --prompt="));
                assert!(!plain, "{args:?}: {cmd}");
            }
        }
        let without: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a != "--ask-sudo-password")
            .collect();
        for plan in plans(Dialect::Ng, &ssh, &without) {
            assert!(
                commands(&plan).iter().all(|c| !c.sudo_password),
                "{without:?}"
            );
        }
    }
    // The summary names a remote step by its program, past sudo's own words.
    let names: Vec<String> = steps(&["switch-push-reset", "--ask-sudo-password", "h"])
        .iter()
        .map(Step::name)
        .collect();
    assert!(
        names.contains(&"nix-collect-garbage".to_owned()),
        "{names:?}"
    );
}
