//! Tests of the test bed itself: that its hosts are private, reachable, and reboot the way
//! each test asks.

use crate::testbed::{
    APT_LINE, COST_TRACE_OWN, COST_TRACE_SHARED, Kind, Reboot, Sudo, TestBed,
    missing_prerequisites, output_with_deadline, poll_until,
};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const NIX_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a rebooted host may take to be back in these tests.
const BACK_WITHIN: Duration = Duration::from_secs(20);

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// `nix copy --to ssh://DESTINATION PATH` with the bed's environment.
fn nix_copy(bed: &TestBed, destination: &str, path: &str) -> Output {
    let mut nix = bed.command("nix");
    nix.args(["copy", "--to", &format!("ssh://{destination}"), path]);
    output_with_deadline(&mut nix, NIX_TIMEOUT)
}

/// Puts `toplevel` in the host's store and makes it the host's system profile.
fn install_system(bed: &TestBed, host: &crate::testbed::Host, toplevel: &str) {
    assert_success("nix copy", &nix_copy(bed, host.name(), toplevel));
    host.run(&format!(
        "nix-env -p /nix/var/nix/profiles/system --set {toplevel}"
    ));
}

/// Asks the host to reboot (or power off) with `command`: the session is cut (ssh exits 255)
/// or the command returns.
fn request_reboot(host: &crate::testbed::Host, command: &str) {
    let output = host.ssh(command);
    assert!(
        matches!(output.status.code(), Some(255) | Some(0)),
        "`{command}` on {}: {output:?}",
        host.name()
    );
}

#[test]
fn host_is_private_and_runs_its_own_commands() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    assert_eq!(web1.run("cat /run/flakem-test-host"), "web1");
    let boot_id = web1.boot_id();
    assert_eq!(
        boot_id,
        std::fs::read_to_string(web1.dir().join("boot_id"))
            .unwrap()
            .trim()
    );
    assert_ne!(
        boot_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim(),
        "the host must not see this machine's boot id"
    );
    // Its store is its own: empty, though this machine's has paths in it.
    assert_eq!(web1.run("ls /nix/store | wc -l"), "0");
    // Its own sudo keeps PATH, so its own power commands come first even under sudo.
    let bin = web1.dir().join("bin");
    for (command, expected) in [
        ("command -v reboot", bin.join("reboot")),
        ("sudo sh -c 'command -v reboot'", bin.join("reboot")),
        (
            "sudo -u root sh -c 'command -v systemctl'",
            bin.join("systemctl"),
        ),
        ("command -v shutdown", bin.join("shutdown")),
        ("command -v systemd-run", bin.join("systemd-run")),
    ] {
        assert_eq!(
            web1.run(command),
            expected.display().to_string(),
            "{command}"
        );
    }
    assert_eq!(
        web1.run("echo $NIX_CONF_DIR; ls /root | wc -l"),
        "/etc/nix\n0"
    );
    assert!(
        web1.sshd_log()
            .contains(&format!("Server listening on {}", web1.address()))
    );
}

#[test]
fn nix_copy_lands_in_that_hosts_store_only() {
    let bed = TestBed::with_hosts(&["web1", "web2"]);
    let (web1, web2) = (bed.host("web1"), bed.host("web2"));
    let toplevel = bed.toplevel("web1");
    let started = Instant::now();
    assert_success("nix copy", &nix_copy(&bed, "web1", &toplevel));
    eprintln!("nix copy took {:?}", started.elapsed());
    assert!(web1.store_has(&toplevel));
    assert!(
        web1.path(&toplevel)
            .join("bin/switch-to-configuration")
            .is_file()
    );
    assert!(!web2.store_has(&toplevel), "web2's store is its own");

    // A path made on the host stays in the host's store, not this machine's.
    let made_there = web1.run(&format!(
        "echo {} > /root/unique && nix-store --add /root/unique",
        bed.dir().display()
    ));
    assert!(made_there.starts_with("/nix/store/"), "{made_there}");
    assert!(web1.store_has(&made_there));
    assert!(web1.path(&made_there).is_file());
    assert!(
        !Path::new(&made_there).exists(),
        "{made_there} leaked into this machine's /nix"
    );
}

#[test]
fn a_host_builds_in_its_own_store() {
    let mut bed = TestBed::with_hosts(&["bigmachine"]);
    let host = bed.host("bigmachine");
    // A generation nobody built here before: its output must appear on the host only.
    let generation = format!("built-there-{}", std::process::id());
    bed.set_generation("bigmachine", &generation);
    let mut eval = bed.command("nix");
    eval.args([
        "eval",
        "--raw",
        ".#nixosConfigurations.bigmachine.config.system.build.toplevel.drvPath",
    ]);
    let output = output_with_deadline(&mut eval, NIX_TIMEOUT);
    assert_success("nix eval", &output);
    let derivation = text(&output.stdout);
    let mut copy = bed.command("nix");
    copy.args([
        "copy",
        "--derivation",
        "--to",
        "ssh://bigmachine",
        &derivation,
    ]);
    assert_success(
        "nix copy --derivation",
        &output_with_deadline(&mut copy, NIX_TIMEOUT),
    );
    let built = host.run(&format!("nix-store --realise {derivation}"));
    assert!(built.ends_with(&format!("-gen-{generation}")), "{built}");
    assert!(host.store_has(&built));
    assert!(
        !Path::new(&built).exists(),
        "{built} was built in this machine's /nix"
    );
}

#[test]
fn reboot_boots_the_system_profile_with_a_new_boot_id() {
    let bed = TestBed::with_hosts(&["db"]);
    let db = bed.host("db");
    let toplevel = bed.toplevel("db");
    install_system(&bed, &db, &toplevel);
    // `boot` only records; the system profile is what the next boot starts.
    db.run(&format!("{toplevel}/bin/switch-to-configuration boot"));
    assert_eq!(db.activations(), vec![format!("boot {toplevel}")]);
    assert_eq!(db.readlink("/run/current-system"), None);

    db.set_reboot(Reboot::Down(Duration::from_secs(1)));
    let before = db.boot_id();
    request_reboot(&db, "reboot");
    assert!(
        !db.is_accepting(),
        "the host must be down right after reboot"
    );
    let after = poll_until(BACK_WITHIN, "db back with a new boot id", || {
        db.try_boot_id().filter(|id| *id != before)
    });
    assert_eq!(db.readlink("/run/booted-system").as_ref(), Some(&toplevel));
    assert_eq!(db.readlink("/run/current-system").as_ref(), Some(&toplevel));
    assert_eq!(
        db.activations(),
        vec![format!("boot {toplevel}")],
        "kept across reboots"
    );

    // The same through sudo and systemctl, and shutdown -r.
    db.set_reboot(Reboot::Down(millis(200)));
    let mut last = after;
    for command in ["sudo systemctl reboot", "shutdown -r now"] {
        request_reboot(&db, command);
        last = poll_until(BACK_WITHIN, "db back after a reboot", || {
            db.try_boot_id().filter(|id| *id != last)
        });
    }
}

#[test]
fn switch_to_configuration_acts_on_the_host_only() {
    let bed = TestBed::with_hosts(&["spare"]);
    let spare = bed.host("spare");
    let toplevel = bed.toplevel("spare");
    assert_success("nix copy", &nix_copy(&bed, "spare", &toplevel));
    spare.run(&format!("{toplevel}/bin/switch-to-configuration switch"));
    assert_eq!(
        spare.readlink("/run/current-system"),
        Some(toplevel.clone())
    );
    assert_eq!(spare.activations(), vec![format!("switch {toplevel}")]);

    // Here, on this machine, it refuses to touch anything.
    let mut here = std::process::Command::new(format!("{toplevel}/bin/switch-to-configuration"));
    here.arg("switch");
    let output = output_with_deadline(&mut here, Duration::from_secs(10));
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("not inside a flakem test host"),
        "{output:?}"
    );
}

#[test]
fn darwin_and_home_activations_act_on_the_host() {
    let bed = TestBed::with_hosts(&["bigmachine"]);
    let host = bed.host("bigmachine");
    let darwin = bed.build("darwinConfigurations.macbook.system");
    let home = bed.build("homeConfigurations.\"alice@bigmachine\".activationPackage");
    assert_success("nix copy", &nix_copy(&bed, "bigmachine", &darwin));
    assert_success("nix copy", &nix_copy(&bed, "bigmachine", &home));
    host.run(&format!("{darwin}/activate"));
    assert_eq!(host.readlink("/run/current-system"), Some(darwin.clone()));
    let log = std::fs::read_to_string(host.path("/var/lib/flakem-test/darwin-activations"));
    assert_eq!(log.unwrap(), format!("activate {darwin}\n"));

    host.add_user("alice", Sudo::No);
    let output = host.ssh_as("alice", &format!("{home}/activate"));
    assert_success("home activate", &output);
    let state = host.path("/home/alice/.local/state/flakem-test");
    assert_eq!(
        std::fs::read_link(state.join("home")).unwrap(),
        Path::new(&home)
    );
    let log = std::fs::read_to_string(state.join("activations")).unwrap();
    assert_eq!(log, format!("activate {home}\n"));
}

#[test]
fn never_back_stays_refused() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    web1.set_reboot(Reboot::Never);
    request_reboot(&web1, "sudo reboot");
    // Longer than any other behaviour's down time in these tests.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            !web1.is_accepting(),
            "a host that never comes back accepted"
        );
        std::thread::sleep(millis(100));
    }
    let output = web1.ssh("true");
    assert_eq!(output.status.code(), Some(255));
    assert!(
        text(&output.stderr).contains("Connection refused"),
        "{output:?}"
    );
    // Until the test starts it again.
    web1.start();
    web1.boot_id();
}

#[test]
fn same_boot_id_comes_back_unchanged() {
    let bed = TestBed::with_hosts(&["web2"]);
    let web2 = bed.host("web2");
    web2.set_reboot(Reboot::SameBootId(Duration::from_secs(1)));
    web2.run("touch /run/still-here");
    let before = web2.boot_id();
    request_reboot(&web2, "reboot");
    assert!(
        !web2.is_accepting(),
        "the host must be down right after reboot"
    );
    let after = poll_until(BACK_WITHIN, "web2 back", || web2.try_boot_id());
    assert_eq!(after, before);
    assert_eq!(web2.run("ls /run/still-here"), "/run/still-here");
}

/// Reboots a host that comes back `how` says, and checks that ssh then fails, saying `why`.
fn comes_back_refusing_ssh(how: Reboot, why: &str) {
    let bed = TestBed::with_hosts(&["another-machine"]);
    let host = bed.host("another-machine");
    host.set_reboot(how);
    request_reboot(&host, "reboot");
    poll_until(BACK_WITHIN, "sshd accepting again", || {
        host.is_accepting().then_some(())
    });
    let output = host.ssh("true");
    assert_eq!(output.status.code(), Some(255));
    assert!(text(&output.stderr).contains(why), "{output:?}");
}

#[test]
fn refuse_key_comes_back_refusing_the_client_key() {
    comes_back_refusing_ssh(Reboot::RefuseKey(millis(300)), "Permission denied");
}

#[test]
fn new_host_key_comes_back_with_another_host_key() {
    comes_back_refusing_ssh(
        Reboot::NewHostKey(millis(300)),
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
    );
}

#[test]
fn slow_shutdown_answers_on_the_old_boot_id_for_a_while() {
    let bed = TestBed::with_hosts(&["bigmachine"]);
    let host = bed.host("bigmachine");
    host.set_reboot(Reboot::SlowShutdown {
        accept_for: millis(2500),
        down: millis(500),
    });
    let before = host.boot_id();
    let asked = Instant::now();
    request_reboot(&host, "reboot");
    // Sessions have ended, but new connections still get the old boot.
    assert_eq!(host.try_boot_id().as_ref(), Some(&before));
    assert!(
        asked.elapsed() < millis(2500),
        "the check above came too late"
    );
    let mut old_answers = 0;
    let after = poll_until(
        BACK_WITHIN,
        "bigmachine back with a new boot id",
        || match host.try_boot_id() {
            Some(id) if id == before => {
                old_answers += 1;
                None
            }
            other => other,
        },
    );
    assert_ne!(after, before);
    assert!(
        asked.elapsed() >= millis(2500),
        "back after {:?}, before the slow shutdown ended",
        asked.elapsed()
    );
    eprintln!("old boot id seen {old_answers} more times while shutting down");
}

#[test]
fn poweroff_stays_down_until_started() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    let before = web1.boot_id();
    request_reboot(&web1, "poweroff");
    assert!(!web1.is_accepting());
    assert!(web1.pids().is_empty());
    web1.start();
    assert_ne!(web1.boot_id(), before);
    web1.stop();
    assert!(!web1.is_accepting());
}

#[test]
fn users_exist_only_on_their_host_with_the_sudo_they_were_given() {
    let bed = TestBed::with_hosts(&["bigmachine"]);
    let host = bed.host("bigmachine");
    host.add_user("alice", Sudo::NoPassword);
    host.add_user("bob", Sudo::No);
    host.add_user("carol", Sudo::WithPassword);
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("flakem test user")
    );
    let alice = host.ssh_as("alice", "id -un; echo $HOME; sudo -n id -un");
    assert_success("alice", &alice);
    assert_eq!(text(&alice.stdout), "alice\n/home/alice\nroot");
    for user in ["bob", "carol"] {
        let output = host.ssh_as(user, "sudo -n true");
        assert_eq!(output.status.code(), Some(1), "{user}: {output:?}");
    }
    // As a user, nix goes through the host's daemon; copies need a trusted user.
    let toplevel = bed.toplevel("bigmachine");
    let refused = nix_copy(&bed, "bob@bigmachine", &toplevel);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("lacks a valid signature"),
        "{refused:?}"
    );
    host.trust_in_nix("alice");
    assert_success(
        "nix copy as alice",
        &nix_copy(&bed, "alice@bigmachine", &toplevel),
    );
    assert!(host.store_has(&toplevel));
}

#[test]
fn generations_and_kinds_of_the_test_flake() {
    let mut bed = TestBed::new();
    assert!(bed.flake_dir().join("flake.nix").is_file());
    assert!(
        !bed.flake_dir().join(".git").exists(),
        "a git flake sees only tracked files"
    );
    let env = bed.env();
    let sshopts = env
        .iter()
        .find(|(k, _)| k == "NIX_SSHOPTS")
        .expect("NIX_SSHOPTS");
    assert_eq!(sshopts.1, format!("-F {}", bed.ssh_config().display()));
    let first = bed.toplevel("web1");
    bed.set_generation("web1", "2");
    let second = bed.toplevel("web1");
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read_to_string(Path::new(&second).join("generation")).unwrap(),
        "2\n"
    );
    assert_eq!(
        bed.toplevel("web2"),
        bed.toplevel("web2"),
        "others unchanged"
    );
    bed.set_generation("brand-new", "7");
    assert!(
        bed.toplevel("brand-new")
            .ends_with("-nixos-system-brand-new-gen-7")
    );
    let darwin = bed.build("darwinConfigurations.macbook.system");
    assert!(Path::new(&darwin).join("activate").is_file());
    bed.set_generation_of(Kind::Home, "alice@bigmachine", "3");
    let home = bed.build("homeConfigurations.\"alice@bigmachine\".activationPackage");
    assert!(home.ends_with("-gen-3"), "{home}");
    assert!(Path::new(&home).join("activate").is_file());
}

/// `nix eval` (with the bed's environment, in its flake) of `args`: stdout and the
/// cost model's trace lines on stderr: (shared part, own parts' configuration names).
fn nix_eval_cost(bed: &TestBed, args: &[&str]) -> (String, usize, Vec<String>) {
    let mut nix = bed.command("nix");
    nix.arg("eval").args(args);
    let output = output_with_deadline(&mut nix, NIX_TIMEOUT);
    assert_success(&format!("nix eval {args:?}"), &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shared = stderr
        .lines()
        .filter(|l| l.starts_with(COST_TRACE_SHARED))
        .count();
    let mut own: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(COST_TRACE_OWN))
        .map(|rest| rest.split(' ').next().unwrap_or_default().to_string())
        .collect();
    own.sort();
    (text(&output.stdout), shared, own)
}

#[test]
fn evaluation_cost_model_is_shared_once_per_nix_process() {
    let mut bed = TestBed::new();
    let names: Vec<String> = (1..=8).map(|i| format!("node{i}")).collect();
    for name in &names {
        bed.set_generation(name, "a");
    }
    let drv_attr =
        |name: &str| format!(".#nixosConfigurations.{name}.config.system.build.toplevel.drvPath");
    // Off (a new bed): evaluating costs nothing and says nothing.
    let (off, shared, own) = nix_eval_cost(&bed, &["--raw", &drv_attr("node1")]);
    assert_eq!((shared, own.len()), (0, 0), "the model is off by default");

    bed.set_evaluation_cost(true);
    // One process per configuration, as one nixos-rebuild per host: each pays the shared part.
    let mut shared_total = 0;
    let mut own_total = Vec::new();
    let mut on = String::new();
    for name in &names {
        let (drv, shared, own) = nix_eval_cost(&bed, &["--raw", &drv_attr(name)]);
        assert_eq!(own, vec![name.clone()], "{name}'s own part, once");
        shared_total += shared;
        own_total.extend(own);
        if name == "node1" {
            on = drv;
        }
    }
    assert_eq!(shared_total, 8, "8 processes: the shared part 8 times");
    assert_eq!(own_total.len(), 8);
    // The model's results are in the derivation: another store path, with its attribute.
    assert_ne!(off, on, "the cost model feeds node1's derivation");
    let mut show = bed.command("nix");
    show.args(["show-derivation", &on]);
    let shown = output_with_deadline(&mut show, NIX_TIMEOUT);
    assert_success("nix show-derivation", &shown);
    assert!(
        text(&shown.stdout).contains("\"evaluationCost\""),
        "{}",
        text(&shown.stdout)
    );

    // All 8 in one nix process (as flakem's fleet evaluation): the shared part once. New
    // generations, so that nix's evaluation cache has seen none of this flake's content.
    for name in &names {
        bed.set_generation(name, "b");
    }
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let apply = format!(
        "cs: map (n: cs.${{n}}.config.system.build.toplevel.drvPath) [ {} ]",
        list.join(" ")
    );
    let (json, shared, own) = nix_eval_cost(
        &bed,
        &["--json", ".#nixosConfigurations", "--apply", &apply],
    );
    assert_eq!(json.matches(".drv\"").count(), 8, "{json}");
    assert_eq!(shared, 1, "one process: the shared part once");
    assert_eq!(own, names, "each configuration's own part, once each");

    // Off again: nothing paid, the same derivation as before the model.
    bed.set_generation("node1", "a");
    bed.set_evaluation_cost(false);
    let (again, shared, own) = nix_eval_cost(&bed, &["--raw", &drv_attr("node1")]);
    assert_eq!((shared, own.len()), (0, 0));
    assert_eq!(again, off);
}

#[test]
fn ssh_config_reaches_only_the_beds_hosts() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let mut ssh = bed.command("ssh");
    ssh.args(["-F", &bed.ssh_config().display().to_string()])
        .args(["-o", "BatchMode=yes", "10.3.2.1", "true"]);
    let output = output_with_deadline(&mut ssh, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(255));
    assert!(
        text(&output.stderr).contains("is not a test host"),
        "{output:?}"
    );

    bed.forget_host_keys();
    let output = bed.host("web1").ssh("true");
    assert_eq!(output.status.code(), Some(255));
    assert!(
        text(&output.stderr).contains("Host key verification failed"),
        "{output:?}"
    );
}

#[test]
fn dropping_the_bed_ends_every_host() {
    let bed = TestBed::with_hosts(&["web1", "web2"]);
    let web1 = bed.host("web1");
    // A process that would outlive a careless cleanup.
    web1.run("nohup sleep 600 > /dev/null 2>&1 &");
    let mut pids: Vec<u32> = ["web1", "web2"]
        .iter()
        .flat_map(|name| bed.host(name).pids())
        .collect();
    assert_eq!(pids.len(), 4);
    let in_web1 = processes_in_pid_namespace_of(web1.pids()[1]);
    assert!(in_web1.len() >= 3, "sshd, nix-daemon, sleep: {in_web1:?}");
    pids.extend(in_web1);
    let dir = bed.dir().to_path_buf();
    drop(bed);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left running"
        );
    }
    assert!(!dir.exists());
    assert!(!web1.is_accepting());
}

#[test]
fn missing_prerequisites_are_named() {
    let missing = missing_prerequisites(OsStr::new("/nonexistent"), 1000);
    let message = missing.join(", ");
    for what in [
        "root",
        "`nix`",
        "`ssh`",
        "`unshare`",
        "`sudo`",
        "`ssh-keygen`",
    ] {
        assert!(message.contains(what), "{what} not in: {message}");
    }
    assert!(APT_LINE.contains("nix-bin openssh-server openssh-client sudo"));
    assert!(
        missing_prerequisites(&std::env::var_os("PATH").unwrap(), 0).is_empty(),
        "this machine should have everything the bed needs"
    );
}

/// The pids (as seen here) of every process in the pid namespace that `pid` is in.
fn processes_in_pid_namespace_of(pid: u32) -> Vec<u32> {
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let wanted = namespace(&pid.to_string()).expect("pid namespace");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| namespace(&pid.to_string()).as_ref() == Some(&wanted))
        .collect()
}

/// `keep_only`: the bed's flake has just these configurations, for a demo whose `@all`
/// means its own hosts.
#[test]
fn a_flake_of_its_own_has_only_its_configurations() {
    let mut bed = TestBed::new();
    bed.keep_only(&["demo1", "demo2"]);
    let names = |output: &str| {
        let mut nix = bed.command("nix");
        let installable = format!(".#{output}");
        nix.args([
            "eval",
            "--json",
            &installable,
            "--apply",
            "builtins.attrNames",
        ]);
        let out = output_with_deadline(&mut nix, Duration::from_secs(60));
        assert_success("nix eval", &out);
        text(&out.stdout)
    };
    assert_eq!(names("nixosConfigurations").trim(), r#"["demo1","demo2"]"#);
    assert_eq!(names("darwinConfigurations").trim(), "[]");
}

/// `ssh -tt HOST COMMAND` (a terminal, so the session's end hangs up everything in it) with
/// the bed's config.
fn ssh_with_terminal(bed: &TestBed, host: &str, command: &str) -> Output {
    let mut ssh = bed.command("ssh");
    ssh.args(["-F", &bed.ssh_config().display().to_string()])
        .args(["-tt", "-o", "BatchMode=yes", "-o", "ControlPath=none"])
        .args([host, command]);
    output_with_deadline(&mut ssh, Duration::from_secs(30))
}

/// `systemctl is-active UNIT` on the host: what it printed and its exit status.
fn is_active(host: &crate::testbed::Host, unit: &str) -> (String, Option<i32>) {
    let output = host.ssh(&format!("systemctl is-active {unit}"));
    (text(&output.stdout), output.status.code())
}

#[test]
fn a_transient_unit_outlives_its_session_but_not_a_reboot() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    // Started from a session with a terminal, which hangs up its processes when it ends.
    let started = ssh_with_terminal(
        &bed,
        "web1",
        "systemd-run --unit flakem-test-sleeper --collect --quiet --no-ask-password \
         -p RuntimeMaxSec=600 --property=Type=exec sleep 600 && echo started",
    );
    assert_success("systemd-run", &started);
    assert_eq!(text(&started.stdout), "started", "--quiet: {started:?}");
    assert_eq!(
        is_active(&web1, "flakem-test-sleeper"),
        ("active".to_string(), Some(0))
    );
    assert_eq!(web1.units(), vec!["flakem-test-sleeper.service active"]);
    // Its main process runs in the host, in a session of its own, as `sleep 600`.
    let main = web1.run("cat /run/flakem-test-units/flakem-test-sleeper.service/main-pid");
    assert_eq!(
        web1.run(&format!("ps -o sid=,args= -p {main}")),
        format!("{main} /usr/bin/sleep 600")
    );
    // A name in use is refused, as systemd refuses it.
    let again = web1.ssh("systemd-run --unit flakem-test-sleeper.service true");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        text(&again.stderr).contains("was already loaded"),
        "{again:?}"
    );

    let before = web1.boot_id();
    request_reboot(&web1, "reboot");
    poll_until(BACK_WITHIN, "web1 back with a new boot id", || {
        web1.try_boot_id().filter(|id| *id != before)
    });
    assert_eq!(
        is_active(&web1, "flakem-test-sleeper"),
        ("inactive".to_string(), Some(3))
    );
    assert!(web1.units().is_empty(), "{:?}", web1.units());
    assert_eq!(web1.ssh("pgrep -x sleep").status.code(), Some(1));
}

#[test]
fn systemctl_stops_units_and_tells_how_they_ended() {
    let bed = TestBed::with_hosts(&["web2"]);
    let web2 = bed.host("web2");
    web2.run("systemd-run --unit=a -q sleep 600");
    assert_eq!(
        web2.run("systemctl show -p ActiveState,MainPID a.service | cut -d= -f1"),
        "ActiveState\nMainPID"
    );
    web2.run("systemctl stop a");
    assert_eq!(is_active(&web2, "a"), ("inactive".to_string(), Some(3)));
    assert_eq!(
        web2.run("systemctl show --value -p LoadState -p ActiveState a"),
        "not-found\ninactive"
    );
    let stopped_again = web2.ssh("systemctl stop a");
    assert_eq!(stopped_again.status.code(), Some(5), "{stopped_again:?}");
    assert!(text(&stopped_again.stderr).contains("Unit a.service not loaded"));

    // Without --collect a failed unit stays, failed, until reset-failed.
    web2.run("systemd-run --unit failed-once --quiet sh -c 'echo oops; exit 3'");
    poll_until(BACK_WITHIN, "failed-once to fail", || {
        (is_active(&web2, "failed-once") == ("failed".to_string(), Some(3))).then_some(())
    });
    assert_eq!(
        web2.run("systemctl show --value -p Result failed-once"),
        "exit-code"
    );
    assert!(web2.journal("failed-once.service").starts_with("oops\n"));
    assert_eq!(
        web2.ssh("systemd-run --unit failed-once true")
            .status
            .code(),
        Some(1)
    );
    web2.run("systemctl reset-failed failed-once");
    assert!(web2.units().is_empty(), "{:?}", web2.units());
    // With --collect it is gone at once.
    web2.run("systemd-run --unit collected --collect --quiet false");
    poll_until(BACK_WITHIN, "collected to be gone", || {
        web2.journal("collected.service")
            .contains("result exit-code")
            .then_some(())
    });
    assert_eq!(is_active(&web2, "collected").1, Some(3));
    assert!(web2.units().is_empty(), "{:?}", web2.units());

    // RuntimeMaxSec ends it and fails it with `timeout`.
    let started = Instant::now();
    web2.run("systemd-run --unit bounded --quiet -p RuntimeMaxSec=1s sleep 600");
    poll_until(BACK_WITHIN, "bounded to time out", || {
        (web2.run("systemctl show --value -p ActiveState -p Result bounded") == "failed\ntimeout")
            .then_some(())
    });
    assert!(started.elapsed() >= Duration::from_secs(1));

    // It runs in /, with the host's environment, not the caller's.
    web2.run("FOO=caller systemd-run --unit env --quiet sh -c 'pwd; echo \"[$FOO]\"; echo $PATH'");
    let journal = poll_until(BACK_WITHIN, "env to end", || {
        let journal = web2.journal("env.service");
        journal.contains("main process exited").then_some(journal)
    });
    let bin = web2.dir().join("bin");
    assert!(
        journal.starts_with(&format!("/\n[]\n{}:", bin.display())),
        "{journal}"
    );
}

#[test]
fn units_refuse_what_they_do_not_emulate() {
    let bed = TestBed::with_hosts(&["db"]);
    let db = bed.host("db");
    for (command, message) in [
        ("systemd-run --wait true", "option '--wait'"),
        ("systemd-run --pipe true", "option '--pipe'"),
        ("systemd-run -E A=b true", "option '-E'"),
        ("systemd-run -p MemoryMax=1G true", "property 'MemoryMax'"),
        ("systemd-run -p Type=oneshot true", "Type=oneshot"),
        ("systemd-run --unit x", "Command line to execute required"),
        ("systemd-run no-such-program", "Failed to find executable"),
        ("systemctl restart x", "verb 'restart'"),
        ("systemctl --all is-active x", "option '--all'"),
        ("systemctl show x", "show without -p"),
        ("systemctl show -p Names x", "property 'Names'"),
        ("systemctl is-active 'x*'", "unit name"),
    ] {
        let output = db.ssh(command);
        assert_eq!(output.status.code(), Some(1), "{command}: {output:?}");
        assert!(
            text(&output.stderr).contains(message),
            "{command}: {output:?}"
        );
    }
    assert!(db.units().is_empty(), "{:?}", db.units());
    // Starting and stopping need root; looking does not.
    db.add_user("alice", Sudo::NoPassword);
    let refused = db.ssh_as("alice", "systemd-run --quiet true");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(text(&refused.stderr).contains("Interactive authentication required"));
    let output = db.ssh_as(
        "alice",
        "sudo systemd-run --unit s sleep 600 && systemctl is-active s",
    );
    assert_success("sudo systemd-run", &output);
    assert_eq!(text(&output.stdout), "active");
    assert!(
        text(&output.stderr).contains("Running as unit: s.service"),
        "{output:?}"
    );
    assert_eq!(
        db.ssh_as("alice", "systemctl stop s").status.code(),
        Some(1)
    );
    assert_success(
        "sudo systemctl stop",
        &db.ssh_as("alice", "sudo systemctl stop s"),
    );
    assert_eq!(db.run("systemctl is-system-running --wait"), "running");
}

/// `ssh -S MASTER HOST COMMAND`: through the master at `master`, without a new login.
fn through_master(bed: &TestBed, master: &Path, command: &str) -> Output {
    let mut ssh = bed.command("ssh");
    ssh.args(["-F", &bed.ssh_config().display().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "ControlMaster=no"])
        .arg("-o")
        .arg(format!("ControlPath={}", master.display()))
        .args(["web1", command]);
    output_with_deadline(&mut ssh, Duration::from_secs(30))
}

#[test]
fn a_lockout_generation_refuses_new_logins_but_not_an_open_master_and_a_rollback_lets_them_in() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    web1.add_user("alice", Sudo::NoPassword);
    let client_key = web1.authorized_keys("root");
    assert!(client_key.starts_with("ssh-ed25519 "), "{client_key}");
    let good = bed.toplevel("web1");
    bed.set_generation("web1", "lockout");
    let lockout = bed.toplevel("web1");
    for toplevel in [&good, &lockout] {
        assert_success("nix copy", &nix_copy(&bed, "web1", toplevel));
    }
    // A good generation declares the bed's key: nothing changes.
    web1.run(&format!("{good}/bin/switch-to-configuration switch"));
    assert_eq!(web1.authorized_keys("root"), client_key);
    assert_eq!(web1.authorized_keys("alice"), client_key);

    let master = bed.dir().join("master");
    let mut open = bed.command("sh");
    open.arg("-c").arg(format!(
        "exec ssh -F {} -o BatchMode=yes -o ControlMaster=yes -o ControlPath={} \
         -o ControlPersist=60 -f -N web1 < /dev/null > /dev/null 2> {}.log",
        bed.ssh_config().display(),
        master.display(),
        master.display()
    ));
    assert_success(
        "ssh master",
        &output_with_deadline(&mut open, Duration::from_secs(30)),
    );

    let switched = through_master(
        &bed,
        &master,
        &format!("{lockout}/bin/switch-to-configuration switch"),
    );
    assert_success("switch to the lockout", &switched);
    assert_eq!(web1.authorized_keys("root"), "");
    assert_eq!(web1.authorized_keys("alice"), "");
    for user in ["root", "alice"] {
        let refused = web1.ssh_as(user, "true");
        assert_eq!(refused.status.code(), Some(255), "{user}: {refused:?}");
        assert!(
            text(&refused.stderr).contains("Permission denied"),
            "{refused:?}"
        );
    }
    // The master opened before still works.
    let still = through_master(&bed, &master, "readlink /run/current-system");
    assert_success("through the master", &still);
    assert_eq!(text(&still.stdout), lockout);

    // The rollback: the good generation's activation puts its keys back.
    assert_success(
        "switch back",
        &through_master(
            &bed,
            &master,
            &format!("{good}/bin/switch-to-configuration switch"),
        ),
    );
    assert_eq!(web1.readlink("/run/current-system"), Some(good.clone()));
    assert_eq!(
        text(&web1.ssh_as("alice", "id -un").stdout),
        "alice",
        "alice back in"
    );
    let mut close = bed.command("ssh");
    close
        .args(["-F", &bed.ssh_config().display().to_string()])
        .arg("-o")
        .arg(format!("ControlPath={}", master.display()))
        .args(["-O", "exit", "web1"]);
    assert_success(
        "ssh -O exit",
        &output_with_deadline(&mut close, Duration::from_secs(30)),
    );
}

#[test]
fn a_failing_generation_switches_then_exits_4() {
    let mut bed = TestBed::with_hosts(&["spare"]);
    let spare = bed.host("spare");
    bed.set_generation("spare", "failing");
    let failing = bed.toplevel("spare");
    assert_success("nix copy", &nix_copy(&bed, "spare", &failing));
    for action in ["switch", "test"] {
        let output = spare.ssh(&format!("{failing}/bin/switch-to-configuration {action}"));
        assert_eq!(output.status.code(), Some(4), "{action}: {output:?}");
        assert!(
            text(&output.stderr).contains("the following units failed"),
            "{output:?}"
        );
    }
    assert_eq!(spare.readlink("/run/current-system"), Some(failing.clone()));
    // `boot` starts no units: nothing fails.
    spare.run(&format!("{failing}/bin/switch-to-configuration boot"));
    assert_eq!(
        spare.activations(),
        ["switch", "test", "boot"].map(|a| format!("{a} {failing}"))
    );
    // Not a lockout: its keys are the bed's.
    assert_eq!(spare.run("id -un"), "root");
}
