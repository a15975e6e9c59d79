//! One login per host: flakem's check connection is the control master every later step of
//! the host goes through, nixos-rebuild's ssh included (docs/NIXOS-REBUILD.md: how ng orders
//! its ssh options, and NIXOS_REBUILD_SSH_DEFAULT_OPTS). Counted in the host's sshd log.

use crate::e2e::{deployed_generation, flakem, tmp_dir};
use crate::support::Outcome;
use crate::testbed::{TestBed, output_with_deadline};

use std::path::Path;
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

/// A ControlPath of the user's own, from NIX_SSHOPTS or from the ssh config: flakem's
/// connection to the host is theirs, so the host is still logged into once, nixos-rebuild's
/// ssh included, and their master outlives the run.
#[test]
fn a_control_path_of_the_users_own_is_kept() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let config = bed.ssh_config().display().to_string();
    let mine = bed.dir().join("mine");
    let sshopts = format!(
        "-F {config} -o ControlMaster=auto -o ControlPath={} -o ControlPersist=30",
        mine.display()
    );
    let env = [("NIX_SSHOPTS", sshopts.as_str())];
    let (out, n) = push(&mut bed, "mine", &["--no-rollback"], &env);
    assert_theirs(&bed, &out, n, &mine, &config);

    let sockets = bed.dir().join("cm");
    std::fs::create_dir(&sockets).unwrap();
    let own = bed.dir().join("ssh_config_own");
    let text = format!(
        "Host web1\n  ControlMaster auto\n  ControlPath {}/%r@%h:%p\n  ControlPersist 30\n{}",
        sockets.display(),
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&own, text).unwrap();
    let sshopts = format!("-F {}", own.display());
    let env = [("NIX_SSHOPTS", sshopts.as_str())];
    let (out, n) = push(&mut bed, "config", &["--no-rollback"], &env);
    let socket = std::fs::read_dir(&sockets).unwrap().next();
    let socket = socket.map(|e| e.unwrap().path()).unwrap_or_default();
    assert_theirs(&bed, &out, n, &socket, &own.display().to_string());
}

/// One login, through the user's master at `socket`, which is still there (and then
/// closed with the ssh `config`).
fn assert_theirs(bed: &TestBed, out: &Outcome, logins: usize, socket: &Path, config: &str) {
    assert_eq!(logins, 1, "{}", out.context());
    assert!(
        !out.stderr.contains("/0/before"),
        "flakem's own socket is unused: {}",
        out.context()
    );
    let path = format!("ControlPath={}", socket.display());
    let rebuild = out
        .started()
        .into_iter()
        .find(|l| l.contains(" nixos-rebuild switch "));
    assert!(
        rebuild.is_some_and(|l| l.contains(&path)),
        "{}",
        out.context()
    );
    assert!(socket.exists(), "the user's master: {}", out.context());
    let mut exit = bed.command("ssh");
    exit.args(["-F", config, "-o"])
        .arg(path)
        .args(["-O", "exit", "web1"]);
    output_with_deadline(&mut exit, Duration::from_secs(10));
}
