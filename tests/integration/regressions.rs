//! Bugs found while reading the code (issue 11), each reproduced with the built binary, real
//! nix and real ssh against hosts of the test bed. Each test names its bug and asserts the
//! behaviour a fix must have; they fail until the bug is fixed.

use std::fs::File;
use std::time::Duration;

use serde_json::Value;

use crate::e2e::{Started, assert_no_leftovers, flakem, run, tmp_dir};
use crate::support::{Installed, Outcome, Run};
use crate::testbed::TestBed;

/// How long the stuck host's check has been running when Ctrl-C comes: the summary must show
/// at least that (the issue saw 0.0 s for a host that had waited 2 s).
const STUCK_FOR: Duration = Duration::from_millis(1500);

/// Starts `args` on a bed whose host `mute` takes TCP connections and never speaks ssh, waits
/// until mute's check has started (its `+ ssh` line), lets it hang for [`STUCK_FOR`], then
/// sends SIGINT. Returns the exit status, stderr and stdout.
fn interrupt_while_mute_is_checked(bed: &TestBed, args: &[&str]) -> (Option<i32>, String, String) {
    let tmp = tmp_dir(bed);
    let stdout_path = bed.dir().join("stdout");
    let mut cmd = flakem(bed, &tmp, args);
    cmd.stdout(File::create(&stdout_path).unwrap());
    // flakem prints a step's `+ ` line before it starts it: from here on, mute's ssh hangs
    // (its connect timeout is 15 s, far more than what follows).
    let started = Started::until(&mut cmd, "[mute] + ssh ");
    // Not a synchronisation (the line above is): this is the wait the summary must report.
    std::thread::sleep(STUCK_FOR);
    started.interrupt();
    let (status, stderr) = started.finish();
    assert_no_leftovers(&tmp, &stderr);
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    (status, stderr, stdout)
}

/// Bug: Ctrl-C while the checks of several hosts are running exits 5 ("checks failed for 1 of
/// 2 hosts; nothing was built") instead of 130; the summary says "failed at check (exit 130)"
/// and shows 0.0 s for a host that waited 2 s.
///
/// One host of the fleet is a normal bed host, the other takes TCP connections and never
/// speaks ssh, so its check hangs until SIGINT. flakem must exit 130 having built nothing,
/// call the stuck host interrupted (not failed with 130), and count the time it waited.
#[test]
fn ctrl_c_during_the_checks_of_a_fleet_is_an_interruption() {
    let mut bed = TestBed::with_hosts(&["web1"]);
    bed.add_mute_host("mute");

    // The JSON summary: what each host's row says.
    let (status, stderr, stdout) =
        interrupt_while_mute_is_checked(&bed, &["switch-push", "--json", "web1,mute"]);
    let context = format!("status {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(status, Some(130), "{context}");
    assert!(
        !stderr.contains("+ nixos-rebuild"),
        "nothing was built: {context}"
    );
    assert!(!stderr.contains("checks failed"), "{context}");
    assert!(stderr.contains("flakem: interrupted"), "{context}");
    let rows: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {context}"));
    let rows = rows.as_array().unwrap_or_else(|| panic!("{context}"));
    assert_eq!(rows.len(), 2, "{context}");
    let row = |host: &str| {
        rows.iter()
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no row for {host}: {context}"))
    };
    let mute = row("mute");
    assert_eq!(mute["result"], "interrupted", "{context}");
    assert_ne!(mute["result"], "failed", "{context}");
    let seconds = mute["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{context}"));
    assert!(
        seconds >= 1.0,
        "mute's check hung for at least {STUCK_FOR:?}, the summary says {seconds} s: {context}"
    );
    // web1 passed its check and never got further: not a failure either.
    assert_ne!(row("web1")["result"], "failed", "{context}");
    for row in rows {
        assert_ne!(
            row["exit_code"], 130,
            "an interruption is no failure: {context}"
        );
    }

    // The table says the same.
    let (status, stderr, table) =
        interrupt_while_mute_is_checked(&bed, &["switch-push", "web1,mute"]);
    let context = format!("status {status:?}\nstdout:\n{table}\nstderr:\n{stderr}");
    assert_eq!(status, Some(130), "{context}");
    assert!(!table.contains("failed at check"), "{context}");
    let line = table
        .lines()
        .find(|l| l.starts_with("mute "))
        .unwrap_or_else(|| panic!("no row for mute: {context}"));
    assert!(line.contains("interrupted"), "{context}");
    assert!(!line.contains(" 0.0s"), "{context}");
}

/// Bug: `--timeout 10000000000000000h` is accepted and wraps to another duration in release
/// builds (`n * 3600` overflows a u64; it panics in debug builds). A timeout too large to
/// hold must be refused like any bad timeout: exit 2, one `flakem: ` line naming the timeout,
/// nothing started. `5124095576030432h` wraps to 3584 s and `307445734561825861m` to 44 s.
#[test]
fn a_timeout_too_large_is_refused_not_wrapped() {
    for timeout in [
        "10000000000000000h",
        "5124095576030432h",
        "307445734561825861m",
        // Does not fit a u64 at all.
        "99999999999999999999s",
    ] {
        for args in [
            &["ssh-wait", "--timeout", timeout, "nowhere", "true"][..],
            &[
                "--dry-run",
                "switch-push-reset",
                "--timeout",
                timeout,
                "nowhere",
            ],
        ] {
            let run = Run::new(Installed::Nothing);
            let out = run.run(args);
            refused(&out, args);
            assert_eq!(out.stdout, "", "{args:?}: a refused dry run prints no plan");
        }
    }
}

/// A refusal of a bad `--timeout`: exit 2, one `flakem: ` line about the timeout, nothing
/// started.
#[track_caller]
fn refused(out: &Outcome, args: &[&str]) {
    let context = format!("{args:?}: {}", out.context());
    assert_eq!(out.status, Some(2), "{context}");
    assert_eq!(out.stderr.lines().count(), 1, "{context}");
    assert_eq!(out.messages().len(), 1, "{context}");
    assert!(out.messages()[0].contains("timeout"), "{context}");
    assert!(out.started().is_empty(), "nothing started: {context}");
}

/// The other side of the timeout bug: large timeouts a person might give still work, on a
/// host that answers, with each unit the grammar takes (s, m, h, bare seconds). The largest
/// number of seconds a u64 holds cannot be a deadline: it is refused as above or works, but
/// never panics.
#[test]
fn the_largest_reasonable_timeouts_still_work() {
    let bed = TestBed::with_hosts(&["web1"]);
    // A hundred years, in each unit.
    for timeout in ["876000h", "52560000m", "3153600000s", "3153600000"] {
        let out = run(&bed, &["ssh-wait", "--timeout", timeout, "web1", "true"]);
        out.status(0);
    }
    let args = [
        "ssh-wait",
        "--timeout",
        "18446744073709551615s",
        "web1",
        "true",
    ];
    let out = run(&bed, &args);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    match out.status {
        Some(0) => {}
        _ => refused(&out, &args),
    }
}

/// Makes `nixosConfigurations.<name>`'s toplevel throw when evaluated, in the bed's copy of
/// the test flake; its name still lists (the names evaluation and the checks pass).
fn make_unevaluable(bed: &TestBed, name: &str) {
    let file = bed.flake_dir().join("flake.nix");
    let text = std::fs::read_to_string(&file).unwrap();
    let from = "in { config.system.build.toplevel = toplevel; }) settings.nixos;";
    assert_eq!(
        text.matches(from).count(),
        1,
        "the test flake changed: {from}"
    );
    let to = format!(
        "in {{ config.system.build.toplevel = if name == \"{name}\" then \
         throw \"flakem test: {name} does not evaluate\" else toplevel; }}) settings.nixos;"
    );
    std::fs::write(&file, text.replace(from, &to)).unwrap();
}

/// Bug: an evaluation that fails in a fleet becomes a check error for every host and loses
/// its own status. The one `nix eval` of every host's derivation (`--diff`, and the plans
/// that build by hand) runs after the checks; when it fails, each host is marked failed with
/// `Error::Check` (exit 5) and the message of nix's exit status is flattened into it.
///
/// Expected: the evaluation's own status (nix exits 1 on an evaluation error), shown as
/// such: a single host exits 1 (not 5) with a `flakem: ` line naming the evaluation and
/// status 1; in a fleet each host's row says step `evaluate`, exit code 1, and the run ends
/// with a `flakem: ` line naming the evaluation, exit 1. Never "checks failed", and nothing
/// is built. nix's own message reaches stderr.
#[test]
fn a_failed_evaluation_keeps_its_own_status() {
    let bed = TestBed::with_hosts(&["web1", "web2"]);
    make_unevaluable(&bed, "web2");

    let out = run(&bed, &["switch-push", "--diff", "web2"]);
    let context = out.context();
    assert!(
        out.stderr.contains("flakem test: web2 does not evaluate"),
        "nix's message: {context}"
    );
    assert_eq!(out.status, Some(1), "nix eval's status: {context}");
    let last = out.messages().last().copied().unwrap_or_default();
    assert!(
        last.contains("eval") && last.contains("exit status 1"),
        "the message names the evaluation and its status: {context}"
    );
    assert!(!out.stderr.contains("checks failed"), "{context}");
    assert!(!out.stderr.contains("+ nix-store --realise"), "{context}");

    let out = run(&bed, &["switch-push", "--diff", "--json", "web1,web2"]);
    let context = out.context();
    assert!(
        out.stderr.contains("flakem test: web2 does not evaluate"),
        "nix's message: {context}"
    );
    assert_eq!(out.status, Some(1), "{context}");
    assert!(!out.stderr.contains("checks failed"), "{context}");
    assert!(!out.stderr.contains("+ nix-store --realise"), "{context}");
    let rows: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {context}"));
    let rows = rows.as_array().unwrap_or_else(|| panic!("{context}"));
    assert_eq!(rows.len(), 2, "{context}");
    for row in rows {
        assert_eq!(row["result"], "failed", "{context}");
        assert_eq!(row["step"], "evaluate", "{context}");
        assert_eq!(
            row["exit_code"], 1,
            "nix eval's status, not a check's 5: {context}"
        );
    }
    let last = out.messages().last().copied().unwrap_or_default();
    assert!(
        last.contains("eval") && last.contains("exit status 1"),
        "the run ends saying the evaluation failed: {context}"
    );
}
