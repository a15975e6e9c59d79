//! Darwin (nix-darwin) and Home Manager targets end to end on the test bed: the kind read from
//! the flake's one evaluation, the Darwin steps (the system profile, then `activate`, both
//! under sudo) here, pushed, pulled and built there, the Darwin refusals; Home Manager's
//! activation package built here, pushed, pulled and switched, activated as its user.
//!
//! "Here" (`switch`, `hm-switch`) is run inside a test host, over ssh: the host sees this
//! machine's files (the flakem binary) but has its own `/nix`, `/run`, `/var/lib` and
//! `/home`, so nothing is ever activated on this machine. These prove flakem's steps on
//! Linux hosts; macOS itself is not exercised.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::e2e::run;
use crate::support::{Outcome, fixtures};
use crate::testbed::{Host, Kind, Sudo, TestBed, output_with_deadline, shell_quote};

const DARWIN: &str = "darwinConfigurations.macbook.system";
const PROFILE: &str = "/nix/var/nix/profiles/system";
const NIX_TIMEOUT: Duration = Duration::from_secs(120);

/// The attribute of a Home Manager configuration's activation package.
fn home(name: &str) -> String {
    format!("homeConfigurations.\"{name}\".activationPackage")
}

/// A generation no earlier run can have built, so that its store path is new to this
/// machine's store too (which outlives every bed).
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// The output path of `attribute` of the bed's flake, evaluated, not built.
fn out_path(bed: &TestBed, attribute: &str) -> String {
    let installable = format!("{}#{attribute}.outPath", bed.flake_dir().display());
    let mut nix = bed.command("nix");
    nix.args(["eval", "--raw", &installable]);
    let out = output_with_deadline(&mut nix, NIX_TIMEOUT);
    assert!(out.status.success(), "nix eval {installable}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether this machine's own store has `path`.
fn here_has(bed: &TestBed, path: &str) -> bool {
    let mut nix_store = bed.command("nix-store");
    nix_store.args(["--check-validity", path]);
    output_with_deadline(&mut nix_store, NIX_TIMEOUT)
        .status
        .success()
}

/// How many times flakem evaluated the flake's names (the `builtins.getFlake` expression).
fn name_evaluations(out: &Outcome) -> usize {
    out.started()
        .iter()
        .filter(|l| l.contains("builtins.getFlake") && l.contains("builtins.attrNames"))
        .count()
}

/// Whether flakem only looked things up: every process it started was an evaluation or an
/// `ssh -G` (which reads the ssh config and contacts nothing).
fn nothing_but_lookups(out: &Outcome) -> bool {
    out.started()
        .iter()
        .all(|l| l.contains(" eval ") || l.starts_with("+ ssh -G "))
}

/// Where `./result` in the bed's flake leads.
fn result_link(bed: &TestBed) -> String {
    std::fs::read_link(bed.flake_dir().join("result"))
        .expect("./result in the flake directory")
        .to_string_lossy()
        .into_owned()
}

/// The host's Darwin activation log: `activate STORE-PATH` per run of a system's `activate`.
fn darwin_activations(host: &Host) -> Vec<String> {
    std::fs::read_to_string(host.path("/var/lib/flakem-test/darwin-activations"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What a Home Manager activation left in `user`'s home on `host`: the generation its link
/// points at, its log, and the uid owning the log (the user it ran as).
struct HomeState {
    link: Option<String>,
    log: Vec<String>,
    log_owner: Option<u32>,
}

fn home_state(host: &Host, home_dir: &str) -> HomeState {
    let state = host.path(&format!("{home_dir}/.local/state/flakem-test"));
    HomeState {
        link: std::fs::read_link(state.join("home"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        log: std::fs::read_to_string(state.join("activations"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect(),
        log_owner: std::fs::metadata(state.join("activations"))
            .ok()
            .map(|m| m.uid()),
    }
}

/// The uid of a user added to `host` (the owner of its home).
fn uid_on(host: &Host, user: &str) -> u32 {
    std::fs::metadata(host.path(&format!("/home/{user}")))
        .unwrap()
        .uid()
}

/// Asserts that `path`'s Home Manager generation was activated last in `user`'s home, by
/// `user`, and that root's home saw no activation.
#[track_caller]
fn assert_home_activated(host: &Host, user: &str, path: &str, out: &Outcome) {
    let state = home_state(host, &format!("/home/{user}"));
    assert_eq!(
        state.link.as_deref(),
        Some(path),
        "{user}'s home generation\nstderr:\n{}",
        out.stderr
    );
    assert_eq!(
        state.log.last().map(String::as_str),
        Some(format!("activate {path}").as_str())
    );
    assert_eq!(
        state.log_owner,
        Some(uid_on(host, user)),
        "activate ran as {user}"
    );
    assert!(
        !host.path("/root/.local/state/flakem-test").exists(),
        "nothing was activated as root"
    );
}

/// This machine's short host name, as `hostname -s` gives it.
fn short_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    name.trim().split('.').next().unwrap().to_owned()
}

/// A copy of the bed's flake (with the generations set so far) in `user`'s home on `host`,
/// owned by the user, who can then write `./result` there; and an empty `~/tmp` for TMPDIR.
/// Returns the copy's path as the host sees it.
fn flake_in_home(bed: &TestBed, host: &Host, user: &str) -> String {
    let flake = format!("/home/{user}/flake");
    let tmp = format!("/home/{user}/tmp");
    host.run(&format!(
        "rm -rf {flake} {tmp} && cp -r {source} {flake} && mkdir {tmp} && chown -R {user}: {flake} {tmp}",
        source = shell_quote(&bed.flake_dir().to_string_lossy()),
    ));
    flake
}

/// flakem run "here" on `host`: logged in as `user` over ssh, in `dir`, with TMPDIR in the
/// user's home, after `setup` (shell words for the remote shell, e.g. `export X=Y;`); PATH,
/// NIX_CONF_DIR, USER and HOME are otherwise what the host's sshd gives a login.
fn inside(host: &Host, user: &str, dir: &str, setup: &str, args: &[&str]) -> Outcome {
    let mut line = format!(
        "cd {} && {setup} export TMPDIR=/home/{user}/tmp && exec",
        shell_quote(dir)
    );
    for word in std::iter::once(env!("CARGO_BIN_EXE_flakem")).chain(args.iter().copied()) {
        line.push(' ');
        line.push_str(&shell_quote(word));
    }
    Outcome::from(host.ssh_as(user, &line))
}

#[test]
fn darwin_build_builds_the_system_here_from_one_evaluation() {
    let mut bed = TestBed::new();
    bed.set_generation_of(Kind::Darwin, "macbook", "built");
    let system = bed.build(DARWIN);
    let out = run(&bed, &["build", "macbook"]);
    out.status(0);
    assert_eq!(result_link(&bed), system);
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);
    assert_eq!(
        out.started()
            .iter()
            .filter(|l| l.contains(" eval "))
            .count(),
        1,
        "the kind comes from the one evaluation of names: {}",
        out.stderr
    );
    assert!(
        out.started()
            .iter()
            .any(|l| l.contains(" build ") && l.contains("darwinConfigurations")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nixos-rebuild"), "{}", out.stderr);
}

#[test]
fn the_kind_can_be_overridden_and_unknown_names_are_refused() {
    let mut bed = TestBed::new();
    let darwin = bed.build(DARWIN);

    // Only a Darwin machine: --nixos makes flakem treat it as NixOS, which it is not.
    let out = run(&bed, &["build", "--nixos", "macbook"]);
    assert_ne!(out.status, Some(0), "{}", out.stderr);
    assert!(
        !out.started()
            .iter()
            .any(|l| !l.contains("builtins.getFlake") && l.contains("darwinConfigurations")),
        "--nixos builds no Darwin system: {}",
        out.stderr
    );

    // In both: NixOS unless told otherwise.
    bed.set_generation("macbook", "also-nixos");
    let nixos = bed.toplevel("macbook");
    run(&bed, &["build", "macbook"]).status(0);
    assert_eq!(result_link(&bed), nixos);
    let out = run(&bed, &["build", "--darwin", "macbook"]);
    out.status(0);
    assert_eq!(result_link(&bed), darwin);

    // In neither.
    for args in [
        &["build", "macbok"][..],
        &["switch-push", "--no-check", "macbok"],
    ] {
        let out = run(&bed, args);
        out.status(2);
        let message = out.messages().first().copied().unwrap_or_default();
        assert!(
            message.contains("`macbok` is not in") && message.contains("did you mean `macbook`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            nothing_but_lookups(&out),
            "nothing but the evaluation ran: {}",
            out.stderr
        );
    }
}

#[test]
fn darwin_switch_push_sets_the_profile_then_activates_under_sudo() {
    let mut bed = TestBed::with_hosts(&["macbook"]);
    let mac = bed.host("macbook");
    bed.set_generation_of(Kind::Darwin, "macbook", "1");
    let first = bed.build(DARWIN);
    let out = run(&bed, &["switch-push", "macbook"]);
    out.status(0);
    assert_eq!(mac.readlink(PROFILE).as_deref(), Some(first.as_str()));
    assert_eq!(
        mac.readlink("/run/current-system").as_deref(),
        Some(first.as_str())
    );
    assert_eq!(darwin_activations(&mac), vec![format!("activate {first}")]);
    assert!(
        mac.activations().is_empty(),
        "no NixOS switch-to-configuration ran"
    );
    let started = out.started();
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);
    assert!(
        started
            .iter()
            .any(|l| l.contains(" copy ") && l.contains("ssh-ng://macbook") && l.contains(&first)),
        "copied with ssh-ng: {}",
        out.stderr
    );
    let profile_step = started
        .iter()
        .position(|l| l.contains("nix-env") && l.contains(PROFILE) && l.contains(&first));
    let activate_step = started
        .iter()
        .position(|l| l.contains(&format!("{first}/activate")));
    assert!(
        matches!((profile_step, activate_step), (Some(p), Some(a)) if p < a),
        "the profile is set, then activate runs: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("nixos-rebuild"), "{}", out.stderr);
    let first_run = out;

    // As a user with sudo: activate refuses to run as anyone but root, and the user cannot
    // write the system profile, so both steps must go through sudo.
    mac.add_user("alice", Sudo::NoPassword);
    mac.trust_in_nix("alice");
    bed.set_generation_of(Kind::Darwin, "macbook", "2");
    let second = bed.build(DARWIN);
    let out = run(&bed, &["switch-push", "alice@macbook"]);
    out.status(0);
    assert_eq!(mac.readlink(PROFILE).as_deref(), Some(second.as_str()));
    assert_eq!(
        mac.readlink("/run/current-system").as_deref(),
        Some(second.as_str())
    );
    assert_eq!(
        darwin_activations(&mac).last().map(String::as_str),
        Some(format!("activate {second}").as_str())
    );

    // The host's nix has ssh-ng (`nix-daemon --stdio`) and trusts root: the first copy
    // works. (A system built here is unsigned; nix copy checks signatures on the
    // destination unless told not to, which a trusted user may.)
    assert!(
        !first_run
            .started()
            .iter()
            .any(|l| l.contains("ssh://macbook")),
        "no fallback to ssh:// where ssh-ng:// works: {}",
        first_run.stderr
    );
}

#[test]
fn darwin_switch_push_falls_back_to_ssh_where_ssh_ng_fails() {
    let mut bed = TestBed::with_hosts(&["macbook"]);
    let mac = bed.host("macbook");
    // A remote nix without `nix-daemon --stdio`, so ssh-ng:// cannot work there.
    mac.override_command(
        "nix-daemon",
        "echo 'nix-daemon: this nix has no --stdio' >&2\nexit 1\n",
    );
    bed.set_generation_of(Kind::Darwin, "macbook", "fallback");
    let system = bed.build(DARWIN);
    let out = run(&bed, &["switch-push", "macbook"]);
    out.status(0);
    let started = out.started();
    let ng = started
        .iter()
        .position(|l| l.contains(" copy ") && l.contains("ssh-ng://macbook"));
    let plain = started
        .iter()
        .position(|l| l.contains(" copy ") && l.contains("ssh://macbook"));
    assert!(
        matches!((ng, plain), (Some(n), Some(p)) if n < p),
        "ssh-ng:// first, then ssh://: {}",
        out.stderr
    );
    assert!(mac.store_has(&system));
    assert_eq!(mac.readlink(PROFILE), Some(system.clone()));
    assert_eq!(darwin_activations(&mac), vec![format!("activate {system}")]);
}

#[test]
fn darwin_switch_pull_and_build_there_build_on_the_host() {
    let mut bed = TestBed::with_hosts(&["macbook"]);
    let mac = bed.host("macbook");

    bed.set_generation_of(Kind::Darwin, "macbook", &unique("there"));
    let built_there = out_path(&bed, DARWIN);
    run(&bed, &["build-there", "macbook"]).status(0);
    assert!(mac.store_has(&built_there));
    assert!(
        !here_has(&bed, &built_there),
        "it was built on the host, not here"
    );
    assert_eq!(mac.readlink(PROFILE), None, "nothing activated");
    assert!(darwin_activations(&mac).is_empty());

    bed.set_generation_of(Kind::Darwin, "macbook", &unique("pulled"));
    let pulled = out_path(&bed, DARWIN);
    let out = run(&bed, &["switch-pull", "macbook"]);
    out.status(0);
    assert!(mac.store_has(&pulled));
    assert!(!here_has(&bed, &pulled), "it was built on the host");
    assert_eq!(mac.readlink(PROFILE).as_deref(), Some(pulled.as_str()));
    assert_eq!(
        mac.readlink("/run/current-system").as_deref(),
        Some(pulled.as_str())
    );
    assert_eq!(darwin_activations(&mac), vec![format!("activate {pulled}")]);
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("nixos-rebuild"), "{}", out.stderr);
}

#[test]
fn darwin_refuses_boot_test_dry_activate_and_the_resets_before_anything_runs() {
    let mut bed = TestBed::with_hosts(&["macbook"]);
    let mac = bed.host("macbook");
    bed.set_generation_of(Kind::Darwin, "macbook", "never-deployed");
    let boot_id = mac.boot_id();
    let cases: &[&[&str]] = &[
        &["switch-push", "boot", "macbook"],
        &["switch-push", "test", "macbook"],
        &["switch-push", "dry-activate", "macbook"],
        &["switch-pull", "boot", "macbook"],
        &["switch-pull", "test", "macbook"],
        &["switch-pull", "dry-activate", "macbook"],
        &["switch-push-reset", "macbook"],
        &["switch-pull-reset", "macbook"],
    ];
    for args in cases {
        let out = run(&bed, args);
        out.status(2);
        let messages = out.messages();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("macbook") && m.to_lowercase().contains("darwin")),
            "{args:?}: a line naming the target and Darwin: {}",
            out.stderr
        );
        assert!(
            nothing_but_lookups(&out),
            "{args:?}: nothing but the evaluation ran: {}",
            out.stderr
        );
    }
    assert_eq!(mac.boot_id(), boot_id, "never rebooted");
    assert_eq!(mac.readlink(PROFILE), None);
    assert!(darwin_activations(&mac).is_empty());
}

/// `switch` of a Darwin target on the machine flakem runs on: flakem started inside the host
/// by a user with sudo, who cannot set the system profile or activate without it.
#[test]
fn darwin_switch_here_sets_the_profile_and_activates_under_sudo() {
    let mut bed = TestBed::with_hosts(&["macbook"]);
    let mac = bed.host("macbook");
    mac.add_user("alice", Sudo::NoPassword);
    bed.set_generation_of(Kind::Darwin, "macbook", "here");
    let system = bed.build(DARWIN);
    let flake = flake_in_home(&bed, &mac, "alice");
    let out = inside(&mac, "alice", &flake, "", &["switch", "macbook"]);
    out.status(0);
    assert_eq!(mac.readlink(PROFILE).as_deref(), Some(system.as_str()));
    assert_eq!(
        mac.readlink("/run/current-system").as_deref(),
        Some(system.as_str())
    );
    assert_eq!(darwin_activations(&mac), vec![format!("activate {system}")]);
    let started = out.started();
    assert!(
        started.iter().any(|l| l.starts_with("+ sudo ")
            && l.contains("nix-env")
            && l.contains(PROFILE)
            && l.contains(&system)),
        "{}",
        out.stderr
    );
    assert!(
        started
            .iter()
            .any(|l| l.starts_with("+ sudo ") && l.contains(&format!("{system}/activate"))),
        "{}",
        out.stderr
    );
    assert!(
        !started.iter().any(|l| l.contains("ssh")),
        "a local switch goes nowhere: {}",
        out.stderr
    );
}

#[test]
fn hm_build_builds_the_activation_package_here() {
    let mut bed = TestBed::new();
    bed.set_generation_of(Kind::Home, "alice@bigmachine", "built");
    let alice_at_big = bed.build(&home("alice@bigmachine"));
    let out = run(&bed, &["hm-build", "alice@bigmachine", "--show-trace"]);
    out.status(0);
    assert_eq!(result_link(&bed), alice_at_big);
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);
    assert!(
        out.started().iter().any(|l| l.contains(" build ")
            && l.contains("activationPackage")
            && l.contains("--show-trace")),
        "the nix options reach the build: {}",
        out.stderr
    );

    // No `alice@web9`: home-manager's fallback, `alice`.
    let alice = bed.build(&home("alice"));
    run(&bed, &["hm-build", "alice@web9"]).status(0);
    assert_eq!(result_link(&bed), alice);

    // No argument: this user at this machine's short host name.
    let me_here = format!("root@{}", short_hostname());
    bed.set_generation_of(Kind::Home, &me_here, "default");
    let mine = bed.build(&home(&me_here));
    let tmp = crate::e2e::tmp_dir(&bed);
    let mut cmd = crate::e2e::flakem(&bed, &tmp, &["hm-build"]);
    cmd.env("USER", "root").env("LOGNAME", "root");
    let out = Outcome::from(output_with_deadline(&mut cmd, NIX_TIMEOUT));
    out.status(0);
    assert_eq!(result_link(&bed), mine, "{}", out.stderr);
}

#[test]
fn an_unknown_home_configuration_is_refused() {
    let bed = TestBed::new();
    for args in [
        &["hm-build", "alicia@bigmachine"][..],
        &["hm-push", "--no-check", "alicia@bigmachine"],
    ] {
        let out = run(&bed, args);
        out.status(2);
        let message = out.messages().first().copied().unwrap_or_default();
        assert!(
            message.contains("`alicia@bigmachine` is not in")
                && message.contains("did you mean")
                && message.contains("`alice@bigmachine`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            nothing_but_lookups(&out),
            "{args:?}: nothing but the evaluation ran: {}",
            out.stderr
        );
    }
}

#[test]
fn hm_push_activates_as_the_user_without_sudo() {
    let mut bed = TestBed::with_hosts(&["bigmachine", "web1"]);
    let big = bed.host("bigmachine");
    let web1 = bed.host("web1");
    for host in [&big, &web1] {
        host.add_user("alice", Sudo::No);
        host.trust_in_nix("alice");
    }

    bed.set_generation_of(Kind::Home, "alice@bigmachine", "pushed");
    let pushed = bed.build(&home("alice@bigmachine"));
    let out = run(&bed, &["hm-push", "alice@bigmachine"]);
    out.status(0);
    assert_home_activated(&big, "alice", &pushed, &out);
    assert!(
        out.started().iter().any(|l| l.contains(" copy ")
            && l.contains("ssh://alice@bigmachine")
            && l.contains(&pushed)),
        "{}",
        out.stderr
    );
    assert!(
        !out.started().iter().any(|l| l.contains("sudo")),
        "Home Manager activates as the user: {}",
        out.stderr
    );
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);

    // An address names no configuration: FLAKE_TARGET gives the host part.
    bed.set_generation_of(Kind::Home, "alice@bigmachine", "by-address");
    let by_address = bed.build(&home("alice@bigmachine"));
    let login = format!("alice@{}", big.address());
    let out = run(&bed, &["hm-push", &login, "bigmachine"]);
    out.status(0);
    assert_home_activated(&big, "alice", &by_address, &out);

    // No `alice@web1`: home-manager's fallback, `alice`.
    bed.set_generation_of(Kind::Home, "alice", "fallback");
    let fallback = bed.build(&home("alice"));
    let out = run(&bed, &["hm-push", "alice@web1"]);
    out.status(0);
    assert_home_activated(&web1, "alice", &fallback, &out);
    assert_eq!(
        home_state(&big, "/home/alice").link.as_deref(),
        Some(by_address.as_str()),
        "bigmachine untouched"
    );
}

#[test]
fn hm_push_to_a_user_nix_does_not_trust_fails_before_activating() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let big = bed.host("bigmachine");
    big.add_user("alice", Sudo::No);
    bed.set_generation_of(Kind::Home, "alice@bigmachine", &unique("untrusted"));
    let out = run(&bed, &["hm-push", "alice@bigmachine"]);
    assert!(
        !matches!(out.status, Some(0) | Some(2)),
        "the copy fails: {}",
        out.stderr
    );
    let state = home_state(&big, "/home/alice");
    assert_eq!(state.link, None, "nothing activated: {}", out.stderr);
    assert!(state.log.is_empty());
    // docs/NIXOS-REBUILD.md: copies by an untrusted user fail; flakem says so.
    assert!(
        out.messages().iter().any(|m| m.contains("trusted")),
        "a line saying alice must be a trusted user of the host's nix: {}",
        out.stderr
    );
}

#[test]
fn hm_pull_builds_and_activates_on_the_host() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let big = bed.host("bigmachine");
    big.add_user("alice", Sudo::No);
    big.trust_in_nix("alice");
    bed.set_generation_of(Kind::Home, "alice@bigmachine", &unique("pulled"));
    let pulled = out_path(&bed, &home("alice@bigmachine"));
    let out = run(&bed, &["hm-pull", "alice@bigmachine"]);
    out.status(0);
    assert!(big.store_has(&pulled));
    assert!(!here_has(&bed, &pulled), "built on the host, not here");
    assert_home_activated(&big, "alice", &pulled, &out);
    assert!(
        !out.started().iter().any(|l| l.contains("sudo")),
        "{}",
        out.stderr
    );
    assert_eq!(name_evaluations(&out), 1, "{}", out.stderr);
}

/// `hm-switch` on the machine flakem runs on, without home-manager: flakem started inside the
/// host by a user without sudo builds the activation package and runs its `activate`.
#[test]
fn hm_switch_here_without_home_manager_runs_activate_directly() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let big = bed.host("bigmachine");
    big.add_user("alice", Sudo::No);
    assert_ne!(
        big.ssh_as("alice", "command -v home-manager").status.code(),
        Some(0),
        "this test needs a machine without home-manager"
    );
    bed.set_generation_of(Kind::Home, "alice@bigmachine", "switched");
    let switched = bed.build(&home("alice@bigmachine"));
    let flake = flake_in_home(&bed, &big, "alice");
    let out = inside(
        &big,
        "alice",
        &flake,
        "",
        &["hm-switch", "alice@bigmachine"],
    );
    out.status(0);
    assert_home_activated(&big, "alice", &switched, &out);
    assert!(
        out.messages().iter().any(|m| m
            .starts_with("flakem: home-manager is not installed; running")
            && m.contains("activate directly")),
        "{}",
        out.stderr
    );
    assert!(
        out.started()
            .iter()
            .any(|l| l.contains(&format!("{switched}/activate"))),
        "{}",
        out.stderr
    );

    // No argument: alice at this machine's short host name, which the flake lacks, so `alice`.
    assert_ne!(
        short_hostname(),
        "bigmachine",
        "this test needs another name"
    );
    bed.set_generation_of(Kind::Home, "alice", "default");
    let default = bed.build(&home("alice"));
    let flake = flake_in_home(&bed, &big, "alice");
    let out = inside(&big, "alice", &flake, "", &["hm-switch"]);
    out.status(0);
    assert_home_activated(&big, "alice", &default, &out);
}

/// "This user" is whoever runs flakem, also where USER and LOGNAME are not set (cron, a
/// service, `env -i`): alice's configuration, never root's.
#[test]
fn hm_switch_here_defaults_to_the_user_running_it_without_user_variables() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let big = bed.host("bigmachine");
    big.add_user("alice", Sudo::No);
    bed.set_generation_of(Kind::Home, "alice", "no-user-variable");
    let default = bed.build(&home("alice"));
    let flake = flake_in_home(&bed, &big, "alice");
    let out = inside(&big, "alice", &flake, "unset USER LOGNAME;", &["hm-switch"]);
    out.status(0);
    assert_home_activated(&big, "alice", &default, &out);
}

/// With home-manager installed (a stand-in that records its arguments and builds and
/// activates with the real nix), `hm-switch` hands over to it.
#[test]
fn hm_switch_here_uses_home_manager_when_it_is_installed() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let big = bed.host("bigmachine");
    big.add_user("alice", Sudo::No);
    bed.set_generation_of(Kind::Home, "alice@bigmachine", "by-home-manager");
    let switched = bed.build(&home("alice@bigmachine"));
    let flake = flake_in_home(&bed, &big, "alice");
    let stand_in = fixtures().join("spy/hm");
    let log = "/home/alice/home-manager.log";
    let setup = format!(
        "export PATH={}:\"$PATH\" FLAKEM_SPY_LOG={log};",
        shell_quote(&stand_in.to_string_lossy())
    );
    let out = inside(
        &big,
        "alice",
        &flake,
        &setup,
        &["hm-switch", "alice@bigmachine"],
    );
    out.status(0);
    assert_home_activated(&big, "alice", &switched, &out);
    let calls = std::fs::read_to_string(big.path(log)).unwrap_or_default();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 1, "home-manager ran once: {calls:?}");
    let words: Vec<&str> = calls[0].split(' ').collect();
    assert_eq!(
        &words[..3],
        ["home-manager", "switch", "--flake"],
        "{calls:?}"
    );
    assert!(
        words[3].ends_with("#alice@bigmachine") || words[3].ends_with("\\#alice@bigmachine"),
        "{calls:?}"
    );
    assert!(
        !out.stderr.contains("home-manager is not installed"),
        "{}",
        out.stderr
    );
    assert!(Path::new(&switched).join("activate").is_file());
}
