//! The plans of `generations`, `rollback` and `gc`, and of a reset given `--keep`, as the dry
//! run prints them.

use super::tests::{render, steps};
use super::*;

const CASES: &[&[&str]] = &[
    &["generations", "web1"],
    &["generations", "--json", "web1,root@10.0.0.5"],
    &["rollback", "web1"],
    &[
        "rollback",
        "--no-rollback",
        "--no-sudo",
        "root@web1",
        "--to",
        "3",
    ],
    &["gc", "web1"],
    &["gc", "web1", "--older-than", "30d"],
    &["switch-push-reset", "--keep", "3", "bigmachine"],
];

#[test]
fn day_two_plans() {
    insta::assert_snapshot!(super::tests::all(Dialect::Ng, CASES));
}

#[test]
fn generations_needs_no_sudo_and_rollback_and_gc_do() {
    let checks = |args: &[&str]| {
        let job = super::tests::job(args);
        let machine = &job.machines(&[]).unwrap()[0];
        let ssh = Ssh::default();
        plan(&job, machine, &super::tests::one_host(&ssh)).checks
    };
    let sudo = |args: &[&str]| match checks(args).as_slice() {
        [Step::CheckHost { sudo, .. }] => sudo.used(),
        other => panic!("{args:?}: {other:?}"),
    };
    assert!(!sudo(&["generations", "web1"]));
    assert!(sudo(&["rollback", "web1"]));
    assert!(sudo(&["gc", "web1"]));
    assert!(checks(&["gc", "--no-check", "web1"]).is_empty());
}

#[test]
fn a_rollback_is_guarded_and_verified_after_its_switch() {
    let guarded = steps(&["rollback", "web1", "--to", "2"]);
    let names: Vec<String> = guarded.iter().map(Step::name).collect();
    assert_eq!(
        names,
        [
            "read generations",
            "choose generation",
            "arm guard",
            "nix-env",
            "verify running",
        ]
    );
    let without = steps(&["rollback", "--no-rollback", "web1"]);
    assert!(!without.iter().any(|s| matches!(s, Step::ArmGuard { .. })));
}

#[test]
fn a_reset_with_keep_collects_no_garbage_by_age() {
    let plan = render(
        Dialect::Ng,
        &Ssh::default(),
        &["switch-push-reset", "--keep", "2", "h"],
    );
    assert!(!plan.contains("--delete-older-than"), "{plan}");
    assert!(plan.contains("--delete-generations"), "{plan}");
    let plan = render(Dialect::Ng, &Ssh::default(), &["switch-push-reset", "h"]);
    assert!(plan.contains("--delete-older-than 15d"), "{plan}");
    assert!(!plan.contains("--delete-generations"), "{plan}");
}
