//! Day two on the test bed (issue 14): `generations`, `rollback` and `gc` against hosts with
//! real system profiles, the real nix-env and nix-collect-garbage, over the real ssh.

use serde_json::Value;

use crate::e2e::{deployed_generation, run};
use crate::testbed::{Host, TestBed};

const PROFILE: &str = "/nix/var/nix/profiles/system";

/// A short confirmation deadline keeps the rollbacks quick.
const TIMEOUT: &str = "3s";

/// Deploys `generations` to `name` one after another with plain switches; returns their
/// systems, oldest first (the host's generations 1, 2, ...).
fn deploy(bed: &mut TestBed, name: &str, generations: &[&str]) -> Vec<String> {
    let mut systems = Vec::new();
    for generation in generations {
        systems.push(deployed_generation(bed, name, generation));
        run(bed, &["switch-push", "--no-rollback", name]).status(0);
    }
    systems
}

/// The numbers of the host's `system-N-link`s, read from outside, in order.
fn links(host: &Host) -> Vec<u32> {
    let dir = host.path("/nix/var/nix/profiles");
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("system-")?
                .strip_suffix("-link")?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort();
    numbers
}

/// The one host row of a `--json` summary.
fn json_row(stdout: &str) -> Value {
    let rows: Value = serde_json::from_str(stdout).expect("stdout is only JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    rows[0].clone()
}

#[test]
fn generations_lists_what_the_host_has_as_a_table_and_as_json() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let systems = deploy(&mut bed, "web1", &["one", "two", "three"]);
    let out = run(&bed, &["generations", "web1"]);
    out.status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header and three rows:\n{}",
        out.context()
    );
    assert!(lines[0].contains("GENERATION"), "{}", out.context());
    for (i, system) in systems.iter().enumerate() {
        let row = lines[i + 1];
        let number = row.split_whitespace().next();
        assert_eq!(number, Some((i + 1).to_string().as_str()), "{row}");
        assert!(row.ends_with(system.as_str()), "{row}");
        let version = format!("flakem-test-{}", ["one", "two", "three"][i]);
        assert!(row.contains(&version), "{row}");
    }
    assert!(lines[3].contains("running, profile"), "{}", lines[3]);
    assert!(!lines[1].contains("running"), "{}", lines[1]);
    // Read-only, and without the flake: no evaluation, no sudo.
    assert!(!out.stderr.contains(" eval "), "{}", out.context());
    assert!(!out.stderr.contains("sudo"), "{}", out.context());

    let out = run(&bed, &["generations", "--json", "web1"]);
    out.status(0);
    let row = json_row(&out.stdout);
    let generations = row["generations"].as_array().expect("a list");
    let numbers: Vec<u64> = generations
        .iter()
        .filter_map(|g| g["number"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2, 3], "{row}");
    assert_eq!(generations[2]["path"], systems[2].as_str());
    assert_eq!(generations[2]["running"], true);
    assert_eq!(generations[2]["profile"], true);
    assert_eq!(generations[0]["running"], false);
    assert_eq!(generations[0]["nixos_version"], "flakem-test-one");
    let date = generations[0]["date"].as_str().unwrap_or_default();
    assert!(date.ends_with('Z') && date.len() == 20, "{date}");
    assert!(generations[0]["created"].as_i64().unwrap_or(0) > 1_600_000_000);
}

#[test]
fn rollback_goes_to_the_previous_generation_or_to_n_and_refuses_one_there_is_not() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let systems = deploy(&mut bed, "web1", &["a", "b", "c"]);
    let web1 = bed.host("web1");
    let running = || web1.readlink("/run/current-system");
    let profile = || web1.readlink(PROFILE);

    let rollback = ["rollback", "--rollback-timeout", TIMEOUT, "web1"];
    let out = run(&bed, &rollback);
    out.status(0);
    assert_eq!(running().as_ref(), Some(&systems[1]), "{}", out.context());
    assert_eq!(profile().as_ref(), Some(&systems[1]), "the profile too");
    let said = "switching profile from version 3 to 2";
    assert!(
        out.stderr.contains(said),
        "nix-env's own line: {}",
        out.context()
    );
    assert!(out.stderr.contains("systemd-run --unit"), "guarded");
    assert!(web1.units().iter().all(|u| !u.contains("flakem-guard")));

    // Again: the one before the running one.
    run(&bed, &rollback).status(0);
    assert_eq!(running().as_ref(), Some(&systems[0]));

    let out = run(&bed, &[&rollback[..], &["--to", "3"]].concat());
    out.status(0);
    assert_eq!(running().as_ref(), Some(&systems[2]), "{}", out.context());
    assert_eq!(links(&web1), [1, 2, 3], "a rollback makes no generation");

    let activations = web1.activations().len();
    let out = run(&bed, &["rollback", "web1", "--to", "7"]);
    out.status(2);
    let last = out.messages().last().copied().unwrap_or_default();
    assert_eq!(
        last,
        "flakem: web1 has no system generation 7; it has 1, 2, 3 (running, profile)",
        "{}",
        out.context()
    );
    assert_eq!(web1.activations().len(), activations, "nothing activated");
    assert!(!out.stderr.contains("systemd-run"), "no guard armed");
    assert_eq!(running().as_ref(), Some(&systems[2]));
}

/// `gc --keep 2` on a host that runs generation 3 and booted generation 2 of 6: the newest
/// two stay, and so do the running and the booted ones; boot entries are pruned.
#[test]
fn gc_keeps_the_newest_and_never_the_running_or_booted_one() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let systems = deploy(&mut bed, "web1", &["g1", "g2"]);
    let web1 = bed.host("web1");
    // A boot of generation 2, then four more deploys, then back to generation 3.
    web1.stop();
    web1.start();
    let more = deploy(&mut bed, "web1", &["g3", "g4", "g5", "g6"]);
    web1.run(&format!(
        "nix-env -p {PROFILE} --switch-generation 3 && {PROFILE}/bin/switch-to-configuration switch"
    ));
    assert_eq!(
        web1.readlink("/run/booted-system").as_ref(),
        Some(&systems[1])
    );
    assert_eq!(
        web1.readlink("/run/current-system").as_ref(),
        Some(&more[0])
    );
    assert_eq!(links(&web1), [1, 2, 3, 4, 5, 6]);

    let out = run(&bed, &["gc", "web1", "--keep", "2"]);
    out.status(0);
    assert_eq!(links(&web1), [2, 3, 5, 6], "{}", out.context());
    assert!(
        !web1.store_has(&systems[0]),
        "generation 1's system collected"
    );
    assert!(!web1.store_has(&more[1]), "generation 4's too");
    assert!(web1.store_has(&systems[1]) && web1.store_has(&more[0]));
    let pruned = format!("boot {}", more[0]);
    assert_eq!(
        web1.activations().last(),
        Some(&pruned),
        "boot entries pruned"
    );
    let said = "flakem: web1: deleted generations 1, 4; 4 generations remain: 2 (booted), \
                3 (running, profile), 5, 6; ";
    assert!(
        out.messages()
            .iter()
            .any(|m| m.starts_with(said) && m.ends_with(" freed")),
        "{}",
        out.context()
    );
}

#[test]
fn gc_older_than_deletes_by_age() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    deploy(&mut bed, "web1", &["old1", "old2", "new"]);
    let web1 = bed.host("web1");
    for n in [1, 2] {
        web1.run(&format!("touch -h -d '20 days ago' {PROFILE}-{n}-link"));
    }
    run(&bed, &["gc", "web1", "--older-than", "30d"]).status(0);
    assert_eq!(links(&web1), [1, 2, 3]);
    let out = run(&bed, &["gc", "--json", "web1", "--older-than", "10d"]);
    out.status(0);
    assert_eq!(links(&web1), [3], "{}", out.context());
    let row = json_row(&out.stdout);
    assert_eq!(
        row["generations"].as_array().map(Vec::len),
        Some(1),
        "{row}"
    );
}

#[test]
fn a_fleet_gc_of_all() {
    let hosts = ["web1", "web2"];
    let mut bed = TestBed::with_hosts(&hosts);
    bed.keep_only(&hosts);
    for host in hosts {
        deploy(&mut bed, host, &["f1", "f2", "f3"]);
    }
    let out = run(&bed, &["gc", "--json", "@all", "--keep", "1"]);
    out.status(0);
    let rows: Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(rows[i]["host"], *host, "{rows}");
        assert_eq!(rows[i]["result"], "ok", "{rows}");
        assert_eq!(rows[i]["generations"][0]["number"], 3, "{rows}");
        assert_eq!(links(&bed.host(host)), [3], "{}", out.context());
    }
    assert!(out.stderr.contains("[web2] + ssh"), "{}", out.context());
}

#[test]
fn a_reset_keeps_the_newest_n() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    deploy(&mut bed, "web1", &["r1", "r2", "r3"]);
    deployed_generation(&mut bed, "web1", "r4");
    let web1 = bed.host("web1");
    web1.set_reboot(crate::testbed::Reboot::Down(
        std::time::Duration::from_millis(300),
    ));
    let out = run(&bed, &["switch-push-reset", "--keep", "2", "web1"]);
    out.status(0);
    assert_eq!(links(&web1), [3, 4], "{}", out.context());
    assert!(
        !out.stderr.contains("--delete-older-than"),
        "{}",
        out.context()
    );
}

/// A rollback to a generation that takes the deploy user's keys away: no new connection can
/// confirm it, so the host puts back the system it ran, and its profile.
#[test]
fn a_rollback_that_locks_the_user_out_is_put_back_by_the_host() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    let keys = web1.authorized_keys("root");
    deploy(&mut bed, "web1", &["lockout"]);
    // Let the bed in again from outside, and deploy a good generation over it.
    std::fs::write(web1.dir().join("keys/root"), keys).unwrap();
    let good = deploy(&mut bed, "web1", &["good"]);
    let args = [
        "rollback",
        "--rollback-timeout",
        TIMEOUT,
        "web1",
        "--to",
        "1",
    ];
    let out = run(&bed, &args);
    out.status(6);
    let last = out.messages().last().copied().unwrap_or_default();
    let said = format!("flakem: web1 was rolled back to {}: ", good[0]);
    assert!(
        last.starts_with(&said) && last.contains("Permission denied"),
        "{}",
        out.context()
    );
    assert_eq!(
        web1.readlink("/run/current-system").as_ref(),
        Some(&good[0])
    );
    assert_eq!(
        web1.readlink(PROFILE).as_ref(),
        Some(&good[0]),
        "the profile too"
    );
    assert_eq!(links(&web1), [1, 2]);
    assert!(web1.units().iter().all(|u| !u.contains("flakem-guard")));
}
