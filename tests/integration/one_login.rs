//! One login per host: flakem's check connection is the control master every later step of
//! the host goes through, nixos-rebuild's ssh included (docs/NIXOS-REBUILD.md: how ng orders
//! its ssh options, and NIXOS_REBUILD_SSH_DEFAULT_OPTS). Counted in the host's sshd log.

use crate::e2e::{deployed_generation, flakem, tmp_dir};
use crate::support::Outcome;
use crate::testbed::{TestBed, output_with_deadline};

use std::time::Duration;

/// Logins the host accepted so far.
fn logins(bed: &TestBed, host: &str) -> usize {
    bed.host(host)
        .sshd_log()
        .matches("Accepted publickey")
        .count()
}

/// `switch-push [OPTIONS] web1` with `env` added, and the logins it cost web1.
fn push(
    bed: &mut TestBed,
    generation: &str,
    options: &[&str],
    env: &[(&str, &str)],
) -> (Outcome, usize) {
    let system = deployed_generation(bed, "web1", generation);
    let before = logins(bed, "web1");
    let tmp = tmp_dir(bed);
    let args = [&["switch-push"], options, &["web1"]].concat();
    let mut cmd = flakem(bed, &tmp, &args);
    cmd.envs(env.iter().copied());
    let out = Outcome::from(output_with_deadline(&mut cmd, Duration::from_secs(120)));
    out.status(0);
    // Counted before the test's own look at the host, which logs in too.
    let logins = logins(bed, "web1") - before;
    assert_eq!(
        bed.host("web1").readlink("/run/current-system"),
        Some(system),
        "{}",
        out.context()
    );
    (out, logins)
}

#[test]
fn a_push_logs_into_its_host_once() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let (out, n) = push(&mut bed, "once", &["--no-rollback"], &[]);
    assert_eq!(n, 1, "{}", out.context());
    // The guard's confirmation must come over a new connection: one login more.
    let (out, n) = push(&mut bed, "guarded", &[], &[]);
    assert_eq!(n, 2, "{}", out.context());
    // An ng from before NIXOS_REBUILD_SSH_DEFAULT_OPTS puts its own ControlPath first on
    // its copies: they log in once more. Its direct calls still use flakem's connection.
    let older = [("FAKE_NIXOS_REBUILD_NG_IGNORES_DEFAULT_OPTS", "1")];
    let (out, n) = push(&mut bed, "older", &["--no-rollback"], &older);
    assert_eq!(n, 2, "{}", out.context());
}

#[test]
fn a_control_path_of_the_users_own_is_kept() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let mine = bed.dir().join("mine");
    let config = bed.ssh_config().display().to_string();
    let sshopts = format!(
        "-F {config} -o ControlMaster=auto -o ControlPath={} -o ControlPersist=30",
        mine.display()
    );
    let (out, _) = push(&mut bed, "mine", &[], &[("NIX_SSHOPTS", sshopts.as_str())]);
    // nixos-rebuild's ssh went through the user's master, which outlives the run.
    let handed = out
        .started()
        .into_iter()
        .find(|l| l.contains(" nixos-rebuild switch "))
        .unwrap_or_default()
        .to_owned();
    let theirs = handed.find(&format!("ControlPath={}", mine.display()));
    let ours = handed.find("/0/before");
    assert!(
        theirs.is_some() && theirs < ours,
        "the user's first: {handed}"
    );
    assert!(mine.exists(), "the user's master: {}", out.context());
    let mut exit = bed.command("ssh");
    exit.args(["-F", &config, "-o"])
        .arg(format!("ControlPath={}", mine.display()))
        .args(["-O", "exit", "web1"]);
    output_with_deadline(&mut exit, Duration::from_secs(10));
}
