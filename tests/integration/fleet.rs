//! Many hosts at once on the test bed: parallel deploys with one failing, @all and @pattern,
//! the checks before any build, a build host, Ctrl-C across a fleet.

use crate::e2e::{
    OnTerminal, Started, assert_no_leftovers, deployed_generation, flakem, run, tmp_dir,
};
use crate::support::{Outcome, fixtures};
use crate::testbed::{Reboot, Sudo, TestBed};

/// Makes the host's activation fail: its activation log's directory is a file now.
fn break_activation(bed: &TestBed, host: &str) {
    let dir = bed.host(host).path("/var/lib/flakem-test");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::write(&dir, "not a directory").unwrap();
}

#[test]
fn four_hosts_at_once_one_fails_the_others_succeed() {
    let hosts = ["web1", "web2", "db", "spare"];
    let mut bed = TestBed::with_hosts(&hosts);
    let systems: Vec<String> = hosts
        .iter()
        .map(|h| deployed_generation(&mut bed, h, "fleet"))
        .collect();
    break_activation(&bed, "db");
    let logs = bed.dir().join("logs");
    let logs_arg = logs.to_string_lossy().into_owned();
    let out = run(
        &bed,
        &[
            "switch-push",
            "--json",
            "--log-dir",
            &logs_arg,
            "web1,web2,db,spare",
        ],
    );
    out.status(1);
    // Each host's output also in a file of its own, unprefixed.
    for host in hosts {
        let log = std::fs::read_to_string(logs.join(format!("{host}.log"))).unwrap();
        assert!(log.contains(" nixos-rebuild switch "), "{host}: {log}");
        let prefix = format!("[{host}] ");
        assert!(
            !log.lines().any(|l| l.starts_with(&prefix)),
            "{host}: {log}"
        );
    }
    let db_log = std::fs::read_to_string(logs.join("db.log")).unwrap();
    assert!(
        db_log.contains("flakem: `nixos-rebuild` failed"),
        "{db_log}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    let rows = summary.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (row, (host, system)) in rows.iter().zip(hosts.iter().zip(&systems)) {
        assert_eq!(row["host"], *host);
        assert_eq!(row["target"], *host);
        if *host == "db" {
            assert_eq!(row["result"], "failed");
            assert_eq!(row["step"], "nixos-rebuild");
            assert_eq!(row["exit_code"], 1);
            assert!(row["system"].is_null());
        } else {
            assert_eq!(row["result"], "ok", "{row}");
            assert_eq!(row["system"], *system);
            assert_eq!(
                bed.host(host).readlink("/run/current-system").as_deref(),
                Some(system.as_str())
            );
        }
        assert!(row["seconds"].as_f64().unwrap() >= 0.0);
    }
    // Each host's lines are whole and prefixed. flakem's own are its messages and these
    // processes: the names evaluation, the probe, each host's `ssh -G` (a ControlPath of
    // the user's own?), and one evaluation of every host's derivation (a fleet's systems
    // come from it).
    let own: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !hosts.iter().any(|h| l.starts_with(&format!("[{h}] "))))
        .filter(|l| !l.starts_with("flakem: "))
        .collect();
    assert_eq!(own.len(), 3 + hosts.len(), "{own:#?}");
    assert!(
        own[0].contains(" eval ") && own[0].contains("builtins.attrNames"),
        "{own:#?}"
    );
    assert!(own[1].contains("--flakem-probe"), "{own:#?}");
    for (host, line) in hosts.iter().zip(&own[2..]) {
        assert!(line.contains("ssh -G ") && line.ends_with(host), "{own:#?}");
    }
    let eval = own[2 + hosts.len()];
    assert!(
        eval.contains(" eval ") && eval.contains(".drvPath"),
        "{own:#?}"
    );
    assert!(
        out.messages()
            .last()
            .unwrap()
            .contains("1 of 4 hosts failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn at_all_and_at_pattern_come_from_the_flake() {
    let all = [
        "bigmachine",
        "another-machine",
        "web1",
        "web2",
        "db",
        "spare",
    ];
    let mut bed = TestBed::with_hosts(&all);
    let out = run(&bed, &["ssh-wait", "@all", "true"]);
    out.status(0);
    for host in all {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(host) && l.contains(" ok ")),
            "{host}: {}",
            out.stdout
        );
    }
    let web1 = deployed_generation(&mut bed, "web1", "p");
    let web2 = deployed_generation(&mut bed, "web2", "p");
    let out = run(&bed, &["switch-push", "@web*"]);
    out.status(0);
    assert_eq!(
        bed.host("web1").readlink("/run/current-system"),
        Some(web1.clone())
    );
    assert_eq!(
        bed.host("web2").readlink("/run/current-system"),
        Some(web2.clone())
    );
    assert!(
        out.stdout.contains(&web1) && out.stdout.contains(&web2),
        "the summary shows the systems: {}",
        out.stdout
    );
    assert_eq!(
        bed.host("db").activations(),
        Vec::<String>::new(),
        "@web* left db alone"
    );
    let out = run(&bed, &["switch-push", "@nothing*"]);
    out.status(2);
    assert!(out.messages()[0].contains("no configuration matches @nothing*"));
}

/// Each check stops flakem before anything is built, with exit 5 and a line that says why.
#[test]
fn the_checks_catch_problems_before_any_build() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    bed.host("web2").add_user("carol", Sudo::No);
    let cases: &[(&[&str], &str)] = &[
        (&["switch-push", "ghost@web1", "web1"], "it refused our key"),
        (
            &["switch-push", "carol@web2", "web2"],
            "sudo on carol@web2 wants a password",
        ),
        (&["switch-push", "web1,carol@web2"], "pass --no-sudo"),
    ];
    for (args, why) in cases {
        let out = run(&bed, args);
        out.status(5);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("+ nixos-rebuild"),
            "nothing was built: {}",
            out.stderr
        );
    }
    // A host whose sshd is down: refused at once, with exit 5 like the others.
    bed.host("web2").stop();
    let out = run(&bed, &["switch-push", "web1,web2"]);
    out.status(5);
    assert!(
        out.stderr
            .contains("[web2] flakem: ssh to web2 failed: ssh: connect to host")
            && out
                .stderr
                .contains("web2 refused the connection to its ssh port"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("+ nixos-rebuild"), "{}", out.stderr);
    let out = run(&bed, &["switch-push", "web1", "webb1"]);
    out.status(2);
    assert!(
        out.messages()[0].contains("did you mean `web1`"),
        "{}",
        out.stderr
    );

    bed.forget_host_keys();
    let out = run(&bed, &["switch-push", "web1"]);
    out.status(5);
    assert!(
        out.stderr.contains("its host key is not known"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("+ nixos-rebuild"));
    run(&bed, &["switch-push", "--no-check", "--dry-run", "web1"]).status(0);
}

/// A login that is not root on a host without sudo (NixOS with `security.sudo.enable =
/// false`, say) fails its check saying that, not that sudo wants a password.
#[test]
fn a_host_without_sudo_fails_the_check_saying_so() {
    let bed = TestBed::with_hosts(&["web1"]);
    let web1 = bed.host("web1");
    web1.add_user("dave", Sudo::NoPassword);
    // What the host's shell says when there is no sudo to run.
    web1.override_command(
        "sudo",
        "echo 'bash: line 1: sudo: command not found' >&2\nexit 127\n",
    );
    let out = run(&bed, &["switch-push", "dave@web1", "web1"]);
    out.status(5);
    assert!(
        out.messages()[0].contains("there is no sudo on dave@web1")
            && out.messages()[0].contains("pass --no-sudo"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("+ nixos-rebuild"), "{}", out.stderr);
}

/// A host whose key is not the one known_hosts has (reinstalled with new host keys, or
/// someone in between) fails its check with the key it sent and how to drop the old one;
/// doing what the message says lets the next deploy through.
#[test]
fn a_changed_host_key_fails_the_check_with_advice_that_works() {
    let bed = TestBed::with_hosts(&["web1"]);
    bed.record_wrong_host_key("web1");
    let out = run(&bed, &["switch-push", "web1"]);
    out.status(5);
    assert!(!out.stderr.contains("+ nixos-rebuild"), "{}", out.stderr);
    let said = out.messages()[0];
    assert!(
        said.contains("its host key changed: it sent SHA256:"),
        "{said}"
    );
    let command = said
        .split_once("remove the old one with `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(command, _)| command)
        .unwrap_or_else(|| panic!("no command to run in: {said}"));
    let words = shell_words::split(command).unwrap();
    assert_eq!(words[..2], ["ssh-keygen", "-R"], "{said}");
    let mut keygen = bed.command(&words[0]);
    keygen.args(&words[1..]);
    let removed =
        crate::testbed::output_with_deadline(&mut keygen, std::time::Duration::from_secs(30));
    assert!(removed.status.success(), "{command}: {removed:?}");
    // The bed's ssh config accepts a new key (accept-new), as a first connection does.
    run(&bed, &["switch-push", "web1"]).status(0);
}

/// A host that takes the connection and never says a word (a firewall that drops, a hung
/// sshd) fails its check with exit 5 once ssh's connect timeout runs out, instead of holding
/// the run: without it, ssh would wait for the greeting past this test's deadline.
#[test]
fn a_host_that_never_answers_fails_its_check() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    bed.add_mute_host("mute");
    let out = run(&bed, &["switch-push", "web1,mute"]);
    out.status(5);
    let said = out
        .stderr
        .lines()
        .find(|l| l.starts_with("[mute] flakem: ssh to mute failed: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(said.contains("timed out"), "{said}");
    assert!(
        said.contains("NIX_SSHOPTS='-o ConnectTimeout=60'"),
        "{said}"
    );
    assert!(!out.stderr.contains("+ nixos-rebuild"), "{}", out.stderr);
}

/// One machine named twice would get two deploys at once: refused before anything runs
/// when the names say so, and by the checks when only the machine id does.
#[test]
fn a_machine_named_twice_is_deployed_once_or_not_at_all() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    let address = bed.host("web1").address().to_string();
    for list in ["web1,root@web1", &format!("web1,{address}")] {
        let out = run(&bed, &["switch-push", list]);
        out.status(2);
        assert!(
            out.stderr
                .contains("flakem: DEPLOY_HOST names the configuration web1 twice"),
            "{list}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("+ ssh -o Control"), "{}", out.stderr);
    }
    bed.add_alias("twin", "web1");
    let out = run(&bed, &["switch-push", "web1,web2,twin"]);
    out.status(5);
    for (host, twin) in [("web1", "twin"), ("twin", "web1")] {
        assert!(
            out.stderr.contains(&format!(
                "[{host}] flakem: {host} is the same machine as {twin} (same /etc/machine-id)"
            )),
            "{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("+ nixos-rebuild"), "{}", out.stderr);
    // Building only, on each host, races nothing.
    run(&bed, &["build-there", "web1,twin"]).status(0);
}

#[test]
fn an_address_deploys_the_configuration_ssh_resolves_to_it() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    let system = deployed_generation(&mut bed, "web2", "by-address");
    let address = bed.host("web2").address().to_string();
    let out = run(&bed, &["switch-push", &address]);
    out.status(0);
    assert!(
        out.stderr.contains(&format!("flakem: {address} is `web2`")),
        "{}",
        out.stderr
    );
    assert_eq!(
        bed.host("web2").readlink("/run/current-system"),
        Some(system)
    );
}

#[test]
fn diff_shows_what_changes_before_activating() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    deployed_generation(&mut bed, "web1", "1");
    deployed_generation(&mut bed, "web2", "1");
    run(&bed, &["switch-push", "web1,web2"]).status(0);
    let web1 = deployed_generation(&mut bed, "web1", "2");
    let web2 = deployed_generation(&mut bed, "web2", "2");
    // Push with ng's --store-path, pull with legacy's activation steps over ssh.
    for (args, host, system) in [
        (&["switch-push", "--diff", "web1"][..], "web1", &web1),
        (
            &["switch-pull", "--diff", "--dialect", "legacy", "web2"],
            "web2",
            &web2,
        ),
    ] {
        let out = run(&bed, args);
        out.status(0);
        let changed = format!("nixos-system-{host}-gen: 1 → 2");
        let diff = out
            .stderr
            .find(&changed)
            .or_else(|| out.stdout.find(&changed));
        assert!(
            diff.is_some(),
            "{args:?}: no `{changed}` in {}{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(
            bed.host(host).readlink("/run/current-system").as_ref(),
            Some(system)
        );
    }
}

/// `--confirm` through a real pseudo-terminal (util-linux `script`), answered each way.
#[test]
fn confirm_asks_once_on_the_terminal() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    let h = bed.host("web1");
    let system = deployed_generation(&mut bed, "web1", "confirmed");
    let tmp = tmp_dir(&bed);
    let on_a_terminal = |answer: &str| {
        let mut terminal =
            OnTerminal::start(&bed, &tmp, &["switch-push", "--confirm", "web1"], &[]);
        // Answer only once asked, as a person would.
        terminal.until("[y/N] ");
        terminal.type_keys(answer.as_bytes());
        terminal.finish()
    };
    let (status, text) = on_a_terminal("n\n");
    assert_eq!(status, Some(1), "{text}");
    assert!(
        text.contains("activate on web1? [y/N]") && text.contains("the answer was no"),
        "{text}"
    );
    assert_ne!(h.readlink("/run/current-system").as_ref(), Some(&system));
    let (status, text) = on_a_terminal("y\n");
    assert_eq!(status, Some(0), "{text}");
    assert_eq!(h.readlink("/run/current-system"), Some(system));
    // Without a terminal it refuses before anything runs.
    let out = run(&bed, &["switch-push", "--confirm", "web1"]);
    out.status(2);
    assert!(
        out.messages()[0].contains("stdin is not one"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_reset_never_reboots_this_machine() {
    let bed = TestBed::with_hosts(&["web1"]);
    let here = std::fs::read_to_string("/etc/machine-id").unwrap();
    assert!(
        !here.trim().is_empty(),
        "this machine has no /etc/machine-id to test with"
    );
    let h = bed.host("web1");
    h.set_machine_id(here.trim());
    let boot = h.boot_id();
    let out = run(&bed, &["switch-push-reset", "web1"]);
    out.status(5);
    assert!(
        out.stderr
            .contains("is this machine (same /etc/machine-id)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("+ nixos-rebuild"));
    assert_eq!(h.boot_id(), boot);
}

#[test]
fn a_build_host_builds_for_the_target() {
    let mut bed = TestBed::with_hosts(&["web1", "bigmachine"]);
    let system = deployed_generation(&mut bed, "web1", "built-elsewhere");
    run(&bed, &["switch-push", "--build-host", "bigmachine", "web1"]).status(0);
    assert_eq!(
        bed.host("web1").readlink("/run/current-system"),
        Some(system.clone())
    );
    assert!(
        bed.host("bigmachine").store_has(&system),
        "it was built on bigmachine"
    );
    assert_eq!(bed.host("bigmachine").activations(), Vec::<String>::new());
}

#[test]
fn ctrl_c_stops_a_whole_fleet() {
    let mut bed = TestBed::with_hosts(&["web1", "web2", "db"]);
    for host in ["web1", "web2", "db"] {
        bed.host(host).set_reboot(Reboot::Never);
        deployed_generation(&mut bed, host, "c");
    }
    let tmp = tmp_dir(&bed);
    let mut cmd = flakem(
        &bed,
        &tmp,
        &["switch-push-reset", "--jobs", "2", "web1,web2,db"],
    );
    let flakem = Started::until(&mut cmd, "does not accept connections yet");
    flakem.interrupt();
    let (status, stderr) = flakem.finish();
    assert_eq!(status, Some(130), "{stderr}");
    assert_no_leftovers(&tmp, &stderr);
    // db never started: two jobs at a time, and both were waiting for a host that is gone.
    assert!(bed.host("db").activations().is_empty());
}

/// A fleet's systems come from one evaluation of flakem's own: no nixos-rebuild evaluates
/// (it gets `--store-path` with ng; legacy's activation runs by hand), and each host still
/// gets its own system, built here for a push and on the host for a pull.
#[test]
fn a_fleet_is_evaluated_once_and_each_host_gets_its_own_system() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    let cases = [
        ("switch-push", "ng"),
        ("switch-pull", "ng"),
        ("switch-push", "legacy"),
        ("switch-pull", "legacy"),
    ];
    for (round, (command, dialect)) in cases.into_iter().enumerate() {
        let generation = format!("once-{round}");
        let web1 = deployed_generation(&mut bed, "web1", &generation);
        let web2 = deployed_generation(&mut bed, "web2", &generation);
        let out = run(&bed, &[command, "--dialect", dialect, "web1,web2"]);
        let context = format!("{command} {dialect}: {}", out.context());
        out.status(0);
        for (host, system) in [("web1", &web1), ("web2", &web2)] {
            assert_eq!(
                bed.host(host).readlink("/run/current-system").as_ref(),
                Some(system),
                "{host}: {context}"
            );
        }
        let evaluations: Vec<&str> = out
            .started()
            .into_iter()
            .filter(|l| l.contains(" eval ") && l.contains(".drvPath"))
            .collect();
        assert_eq!(evaluations.len(), 1, "{context}");
        assert!(evaluations[0].contains("web1") && evaluations[0].contains("web2"));
        // The stand-in shows each nix it runs as `$ nix ...`: it builds and evaluates nothing.
        let by_rebuild = out
            .stderr
            .lines()
            .filter(|l| l.contains("] $ nix ") && (l.contains(" build ") || l.contains(" eval ")));
        assert_eq!(by_rebuild.count(), 0, "{context}");
        let realised_on = |host: &str| {
            out.stderr.lines().any(|l| {
                l.starts_with(&format!("[{host}] + ssh")) && l.contains("nix-store --realise")
            })
        };
        assert_eq!(realised_on("web1"), command == "switch-pull", "{context}");
    }
}

/// A host of a fleet whose system does not build fails alone: the others build from the
/// same evaluation and are deployed.
#[test]
fn a_host_whose_build_fails_does_not_stop_the_others() {
    let mut bed = TestBed::with_hosts(&["web1", "web2"]);
    let web1 = deployed_generation(&mut bed, "web1", "builds");
    bed.set_generation("web2", "unbuildable");
    let out = run(&bed, &["switch-push", "--json", "web1,web2"]);
    out.status(1);
    assert!(
        out.stderr
            .contains("flakem test: nixos-system-web2-gen-unbuildable does not build"),
        "{}",
        out.context()
    );
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    assert_eq!(rows[0]["result"], "ok", "{rows}");
    assert_eq!(rows[0]["system"], web1.as_str());
    assert_eq!(rows[1]["result"], "failed", "{rows}");
    assert_eq!(rows[1]["step"], "build", "{rows}");
    assert_eq!(bed.host("web1").readlink("/run/current-system"), Some(web1));
}

/// With the test flake's evaluation cost model on (configurations that evaluate like NixOS
/// ones, tests/fixtures/flake/cost.nix), a fleet runs one evaluating nix process of
/// flakem's own and none in nixos-rebuild. The spy in front of `nix` logs every nix started
/// here, by flakem or by the stand-in, whatever either prints.
#[test]
fn a_fleet_that_evaluates_like_nixos_runs_one_evaluating_nix() {
    let hosts = ["web1", "web2", "web3"];
    let mut bed = TestBed::with_hosts(&hosts);
    bed.set_evaluation_cost(true);
    let systems: Vec<String> = hosts
        .iter()
        .map(|h| deployed_generation(&mut bed, h, "costly"))
        .collect();
    let log = bed.dir().join("spy-nix.log");
    std::fs::write(&log, "").unwrap();
    let tmp = tmp_dir(&bed);
    let mut flakem = flakem(&bed, &tmp, &["switch-push", "web1,web2,web3"]);
    let path = flakem
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(ToOwned::to_owned))
        .unwrap();
    let spied = [fixtures().join("spy")]
        .into_iter()
        .chain(std::env::split_paths(&path));
    flakem
        .env("PATH", std::env::join_paths(spied).unwrap())
        .env("FLAKEM_SPY_LOG", &log);
    let out = Outcome::from(crate::testbed::output_with_deadline(
        &mut flakem,
        crate::e2e::RUN_DEADLINE,
    ));
    out.status(0);
    for (host, system) in hosts.iter().zip(&systems) {
        let running = bed.host(host).readlink("/run/current-system");
        assert_eq!(running.as_ref(), Some(system), "{host}: {}", out.context());
    }
    let spied = std::fs::read_to_string(&log).unwrap();
    let nix: Vec<&str> = spied.lines().filter(|l| l.starts_with("nix ")).collect();
    // An evaluation of a system: a drvPath of flakem's, or a build of a flake's attribute
    // (what nixos-rebuild runs when it evaluates).
    let evaluating: Vec<&&str> = nix
        .iter()
        .filter(|l| l.contains("toplevel") && (l.contains(" eval ") || l.contains(" build ")))
        .collect();
    assert_eq!(evaluating.len(), 1, "{spied}");
    assert!(evaluating[0].contains(" eval ") && evaluating[0].contains("drvPath"));
    for host in hosts {
        assert!(evaluating[0].contains(host), "{host}: {}", evaluating[0]);
    }
}
