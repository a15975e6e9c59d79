//! Safe activation on the test bed: the guard that puts back the system a host ran unless
//! a new connection confirms the new one (docs/PRODUCT.md, "Safe activation"). The test
//! flake's `lockout...` generations take the deploy user's keys away as they activate,
//! `failing...` ones switch and exit 4 (tests/fixtures/README.md).

use serde_json::Value;

use crate::e2e::{deployed_generation, run};
use crate::support::Outcome;
use crate::testbed::{Host, Reboot, TestBed};

/// A short confirmation deadline keeps the tests quick.
const TIMEOUT: &str = "3s";

/// A host running a good system of its own, and that system.
fn host_with_system(bed: &mut TestBed, name: &str) -> String {
    let system = deployed_generation(bed, name, "good");
    run(bed, &["switch-push", "--no-rollback", name]).status(0);
    system
}

/// Nothing of the guard is left: no unit, no directory, and a new login works.
fn assert_no_guard(host: &Host, out: &Outcome) {
    assert!(
        host.units().iter().all(|u| !u.contains("flakem-guard")),
        "{:?}\n{}",
        host.units(),
        out.context()
    );
    assert!(
        !host.path("/run/flakem-guard").exists(),
        "{}",
        out.context()
    );
    assert_eq!(host.run("echo in"), "in", "a new login");
}

#[test]
fn a_good_deploy_is_confirmed_and_leaves_no_guard() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    host_with_system(&mut bed, "web1");
    let new = deployed_generation(&mut bed, "web1", "better");
    let out = run(
        &bed,
        &["switch-push", "--rollback-timeout", TIMEOUT, "web1"],
    );
    out.status(0);
    let web1 = bed.host("web1");
    assert_eq!(web1.readlink("/run/current-system").as_ref(), Some(&new));
    assert!(
        out.stderr.contains("systemd-run --unit"),
        "{}",
        out.context()
    );
    assert!(
        out.stderr.contains("ControlPath=none"),
        "confirmed over a new connection"
    );
    assert_no_guard(&web1, &out);
}

/// Runs `args` against web1, which ran `old`, and checks that the host put it back: exit 6,
/// a last line that says `why`, web1 running `old`, nothing of the guard left.
fn assert_rolled_back(bed: &TestBed, args: &[&str], old: &str, why: &str) -> Outcome {
    let out = run(bed, args);
    out.status(6);
    let last = out.messages().last().copied().unwrap_or_default();
    let said = format!("flakem: web1 was rolled back to {old}: ");
    assert!(
        last.starts_with(&said) && last.contains(why),
        "{}",
        out.context()
    );
    let web1 = bed.host("web1");
    assert_eq!(web1.readlink("/run/current-system").as_deref(), Some(old));
    assert_no_guard(&web1, &out);
    out
}

/// What flakem says when it holds its tries until the host's deadline.
const HOLDS: &str = "cannot be told to roll back: it does by itself at its deadline";

#[test]
fn a_deploy_that_locks_the_user_out_is_rolled_back_by_the_host() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    deployed_generation(&mut bed, "web1", "lockout");
    let args = ["switch-push", "--rollback-timeout", TIMEOUT, "web1"];
    // ssh's own error says why.
    let out = assert_rolled_back(&bed, &args, &old, "Permission denied (publickey)");
    // A host that refuses us is not asked twice a second until its deadline.
    assert!(out.stderr.contains(HOLDS), "{}", out.context());
}

#[test]
fn a_failed_activation_is_rolled_back_at_once() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    deployed_generation(&mut bed, "web1", "failing");
    // A deadline the test would notice: the rollback must not wait for it.
    let args = ["switch-push", "--rollback-timeout", "10m", "web1"];
    let out = assert_rolled_back(
        &bed,
        &args,
        &old,
        "`nixos-rebuild` failed with exit status 4",
    );
    assert!(!out.stderr.contains(HOLDS), "{}", out.context());
}

/// nixos-rebuild failing before anything was activated (the build): the guard is disarmed,
/// the status is nixos-rebuild's, and the host runs what it ran.
#[test]
fn a_build_that_fails_before_the_activation_keeps_its_own_status() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    bed.set_generation("web1", "unbuildable");
    let out = run(
        &bed,
        &["switch-push", "--rollback-timeout", TIMEOUT, "web1"],
    );
    out.status(1);
    assert!(
        out.stderr.contains("systemd-run --unit"),
        "the guard was armed: {}",
        out.context()
    );
    let last = out.messages().last().copied().unwrap_or_default();
    assert!(last.contains("`nixos-rebuild` failed"), "{}", out.context());
    let web1 = bed.host("web1");
    assert_eq!(web1.readlink("/run/current-system").as_ref(), Some(&old));
    assert_no_guard(&web1, &out);
}

#[test]
fn a_failing_health_check_rolls_back_and_says_why() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    deployed_generation(&mut bed, "web1", "unhealthy");
    let check = "echo the service is down >&2; exit 3";
    let args = [
        "switch-push",
        "--health-check",
        "true",
        "--health-check",
        check,
        "web1",
    ];
    let why = "--health-check it failed (exit 3): the service is down";
    assert_rolled_back(&bed, &args, &old, why);
}

#[test]
fn without_the_guard_a_lockout_stays() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    host_with_system(&mut bed, "web1");
    let lockout = deployed_generation(&mut bed, "web1", "lockout");
    let out = run(&bed, &["switch-push", "--no-rollback", "web1"]);
    out.status(0);
    assert!(!out.stderr.contains("flakem-guard"), "{}", out.context());
    let web1 = bed.host("web1");
    // Read from outside: the host lets nobody in now.
    let running = std::fs::read_link(web1.path("/run/current-system")).unwrap();
    assert_eq!(running.to_string_lossy(), lockout);
    assert_eq!(web1.authorized_keys("root"), "", "locked out");
}

#[test]
fn a_fleet_with_one_lockout_confirms_the_others() {
    let hosts = ["web1", "web2", "db"];
    let mut bed = TestBed::with_hosts(&hosts);
    let mut old = Vec::new();
    for host in hosts {
        old.push(host_with_system(&mut bed, host));
    }
    let web1 = deployed_generation(&mut bed, "web1", "next");
    let web2 = deployed_generation(&mut bed, "web2", "next");
    deployed_generation(&mut bed, "db", "lockout");
    let out = run(
        &bed,
        &[
            "switch-push",
            "--json",
            "--rollback-timeout",
            TIMEOUT,
            "web1,web2,db",
        ],
    );
    out.status(1);
    let rows: Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    assert_eq!(rows[0]["result"], "ok", "{rows}");
    assert_eq!(rows[1]["result"], "ok", "{rows}");
    assert_eq!(rows[2]["result"], "rolled-back", "{rows}");
    assert_eq!(rows[2]["exit_code"], 6, "{rows}");
    assert_eq!(bed.host("web1").readlink("/run/current-system"), Some(web1));
    assert_eq!(bed.host("web2").readlink("/run/current-system"), Some(web2));
    assert_eq!(
        bed.host("db").readlink("/run/current-system").as_ref(),
        Some(&old[2])
    );
    for host in hosts {
        assert_no_guard(&bed.host(host), &out);
    }
}

/// flakem killed (no chance to clean up) once the activation ran: the host puts the system
/// back by itself, and the next deploy arms a guard again.
#[test]
fn a_host_whose_flakem_was_killed_reverts_by_itself() {
    use std::time::Duration;

    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    let lockout = deployed_generation(&mut bed, "web1", "lockout");
    // A directory of its own: the killed flakem's control master outlives it.
    let tmp = bed.dir().join("killed");
    std::fs::create_dir(&tmp).unwrap();
    let args = ["switch-push", "--rollback-timeout", "2s", "web1"];
    let mut flakem = crate::e2e::flakem(&bed, &tmp, &args).spawn().unwrap();
    // The host's own log of its activations, read from outside: it lets nobody in now.
    let activations = bed.host("web1").path("/var/lib/flakem-test/activations");
    crate::testbed::poll_until(Duration::from_secs(60), "the lockout's activation", || {
        let log = std::fs::read_to_string(&activations).ok()?;
        log.contains(&format!("switch {lockout}")).then_some(())
    });
    flakem.kill().unwrap();
    flakem.wait().unwrap();
    let web1 = bed.host("web1");
    let running = || std::fs::read_link(web1.path("/run/current-system")).ok();
    let reverted = || {
        // The guard keeps its result a while for flakem, then removes itself.
        let guard_gone = web1.units().iter().all(|u| !u.contains("flakem-guard"))
            && !web1.path("/run/flakem-guard").exists();
        (running()?.to_string_lossy() == old && guard_gone).then_some(())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while reverted().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "web1 did not revert: runs {:?}, units {:?}, guard's journal:\n{}\nactivations: {:?}",
            running(),
            web1.units(),
            web1.journal("flakem-guard.service"),
            std::fs::read_to_string(web1.path("/var/lib/flakem-test/activations")),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(web1.run("echo in"), "in", "a new login");
    let master = std::process::Command::new("pkill")
        .args(["-f", &tmp.to_string_lossy()])
        .status();
    assert!(master.is_ok());
    let new = deployed_generation(&mut bed, "web1", "after");
    let out = run(&bed, &["switch-push", "web1"]);
    out.status(0);
    assert_eq!(web1.readlink("/run/current-system").as_ref(), Some(&new));
    assert_no_guard(&web1, &out);
}

/// A reset whose new boot fails its health check: flakem boots the host back into the
/// system it ran, proves it like any reboot, collects nothing, and exits 6.
#[test]
fn a_reset_whose_new_boot_fails_its_health_check_boots_back() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    let web1 = bed.host("web1");
    web1.set_reboot(Reboot::Down(std::time::Duration::from_millis(300)));
    let new = deployed_generation(&mut bed, "web1", "better");
    // Passes on the old system only.
    let check = format!("test \"$(readlink -f /run/current-system)\" != {new}");
    let boot = web1.boot_id();
    let args = [
        "switch-push-reset",
        "--gc-older-than",
        "0d",
        "--health-check",
        &check,
        "web1",
    ];
    let out = run(&bed, &args);
    out.status(6);
    let last = out.messages().last().copied().unwrap_or_default();
    let said = format!("flakem: web1 was rolled back to {old}: --health-check it failed (exit 1)");
    assert!(last.starts_with(&said), "{}", out.context());
    for link in ["/run/current-system", "/run/booted-system"] {
        assert_eq!(web1.readlink(link).as_ref(), Some(&old), "{link}");
    }
    let profile = web1.run("readlink -f /nix/var/nix/profiles/system");
    assert_eq!(
        profile, old,
        "the recorded system is the boot default again"
    );
    assert_ne!(web1.boot_id(), boot);
    let reboots = out.stderr.matches("reboot'").count();
    assert_eq!(reboots, 2, "{}", out.context());
    assert!(
        !out.stderr.contains("nix-collect-garbage"),
        "{}",
        out.context()
    );
    // A check that passes on the new boot confirms it.
    let newer = deployed_generation(&mut bed, "web1", "newer");
    let out = run(
        &bed,
        &["switch-push-reset", "--health-check", "true", "web1"],
    );
    out.status(0);
    assert_eq!(web1.readlink("/run/booted-system").as_ref(), Some(&newer));
}

/// Ctrl-C during the build, before anything was activated: the guard the deploy armed
/// protects nothing, and the next deploy replaces it at once instead of being refused
/// (while the first deploy went on, its guard refused a second one).
#[test]
fn a_deploy_interrupted_before_its_activation_does_not_block_the_next() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    let blocked = format!("blocked-{}", std::process::id());
    bed.set_generation("web1", &blocked);
    let release = std::path::PathBuf::from(format!("/tmp/flakem-test-release-{blocked}"));
    // A directory of its own: the second deploy checks its own for leftovers.
    let tmp = bed.dir().join("interrupted");
    std::fs::create_dir(&tmp).unwrap();
    let mut cmd = crate::e2e::flakem(&bed, &tmp, &["switch-push", "web1"]);
    // The stand-in's build, which waits for the release: the guard is armed by then.
    let flakem = crate::e2e::Started::until(&mut cmd, "$ nix ");
    let web1 = bed.host("web1");
    assert!(web1.path("/run/flakem-guard/recorded").exists());
    // While that deploy goes on, its guard stops another one.
    let second = run(&bed, &["switch-push", "web1"]);
    second.status(5);
    assert!(
        second.stderr.contains("a guard is armed there already"),
        "{}",
        second.context()
    );
    flakem.interrupt();
    let (status, stderr) = flakem.finish();
    std::fs::write(&release, "").unwrap();
    assert_eq!(status, Some(130), "{stderr}");
    crate::e2e::assert_no_leftovers(&tmp, &stderr);
    assert_eq!(web1.readlink("/run/current-system").as_ref(), Some(&old));
    let new = deployed_generation(&mut bed, "web1", "after-interrupt");
    let out = run(
        &bed,
        &["switch-push", "--rollback-timeout", TIMEOUT, "web1"],
    );
    std::fs::remove_file(&release).ok();
    out.status(0);
    assert_eq!(web1.readlink("/run/current-system").as_ref(), Some(&new));
    assert_no_guard(&web1, &out);
}

/// `switch-push --json` of `hosts` with `options`, which must end with exit 1 (a host was
/// rolled back): each host's `result`, in order.
fn results(bed: &TestBed, options: &[&str], hosts: &str) -> Vec<String> {
    let base = ["switch-push", "--json", "--rollback-timeout", TIMEOUT];
    let out = run(bed, &[&base[..], options, &[hosts]].concat());
    out.status(1);
    let rows: Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    let rows = rows.as_array().expect("a list of hosts").iter();
    rows.map(|r| r["result"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Three hosts, the first of which gets a configuration that locks the user out.
fn first_locks_out() -> TestBed {
    let mut bed = TestBed::with_hosts(&["web1", "web2", "db"]);
    for host in ["web1", "web2", "db"] {
        host_with_system(&mut bed, host);
    }
    deployed_generation(&mut bed, "web1", "lockout");
    deployed_generation(&mut bed, "web2", "next");
    deployed_generation(&mut bed, "db", "next");
    bed
}

#[test]
fn a_rolling_run_stops_at_the_first_host_rolled_back_unless_told_to_go_on() {
    let bed = first_locks_out();
    let rolling = ["--jobs", "1"];
    let results_of = |more: &[&str]| results(&bed, &[&rolling[..], more].concat(), "web1,web2,db");
    assert_eq!(results_of(&[]), ["rolled-back", "skipped", "skipped"]);
    assert_eq!(results_of(&["--keep-going"]), ["rolled-back", "ok", "ok"]);
}

#[test]
fn the_others_wait_for_the_canaries() {
    let bed = first_locks_out();
    let canary = ["--canary", "1"];
    assert_eq!(
        results(&bed, &canary, "web1,web2,db"),
        ["rolled-back", "skipped", "skipped"]
    );
    // A canary that comes through lets the others go.
    assert_eq!(
        results(&bed, &canary, "web2,db,web1"),
        ["ok", "ok", "rolled-back"]
    );
}

/// Health checks that pass, but take longer together than the host's deadline: the host's
/// decision came first (one lock decides), so the confirmation is too late and the host put
/// the old system back.
#[test]
fn a_confirmation_after_the_hosts_deadline_is_too_late() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let old = host_with_system(&mut bed, "web1");
    deployed_generation(&mut bed, "web1", "slow-to-confirm");
    let slow = ["--health-check", "sleep 0.9"];
    let args = [
        &["switch-push", "--rollback-timeout", "1s"][..],
        &slow,
        &slow,
        &slow,
        &["web1"],
    ]
    .concat();
    let why = "its deadline came before the confirmation";
    assert_rolled_back(&bed, &args, &old, why);
}
