//! The built binary, run as a user would: grammar, dry runs, dialects, the flake check, bad
//! input and exit statuses. The stand-in nixos-rebuild only records here (made-up hosts are
//! never contacted); the test bed tests do the real thing.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Installed, Run, words};

const NG: &str = "--no-reexec --sudo --use-substitutes";
const LEGACY: &str = "--fast --use-remote-sudo --use-substitutes";
/// What a dry run hands down to nixos-rebuild: its ssh goes through flakem's connection.
const SSHOPTS: &str =
    "NIX_SSHOPTS='-o ControlMaster=auto -o ControlPath=<tmp>/0/before -o ControlPersist=60'";

/// The "done when" lines, printed by a dry run on a machine with no nix, no ssh and
/// no nixos-rebuild at all.
#[test]
fn dry_runs_print_the_exact_plan_and_start_nothing() {
    let cases = [
        (
            &["switch-pull", "myname@bigmachine", "--show-trace"][..],
            "nixos-rebuild switch {} --build-host myname@bigmachine --target-host myname@bigmachine --flake .#bigmachine --show-trace",
        ),
        (
            &["switch-push", "boot", "bigmachine"],
            "nixos-rebuild boot {} --target-host bigmachine --flake .#bigmachine",
        ),
        (
            &["build-there", "root@10.3.2.1", "another-machine", "-L"],
            "nixos-rebuild build {} --build-host root@10.3.2.1 --target-host root@10.3.2.1 --flake .#another-machine -L",
        ),
    ];
    for (dialect, flags) in [("ng", NG), ("legacy", LEGACY)] {
        for (args, line) in cases {
            let run = Run::new(Installed::Nothing).without_system_path();
            let args = [&["--dry-run", "--dialect", dialect], args].concat();
            let out = run.run(&args);
            out.status(0);
            // nixos-rebuild's ssh goes through flakem's connection to the host.
            let handed_down = match dialect {
                "ng" => format!("{SSHOPTS} NIXOS_REBUILD_SSH_DEFAULT_OPTS='' "),
                _ => format!("{SSHOPTS} "),
            };
            let want = format!("+ {handed_down}{}", line.replace("{}", flags));
            assert!(
                out.stdout.lines().any(|l| l == want),
                "{want}\n{}",
                out.stdout
            );
            assert!(
                out.stdout
                    .contains(&format!("# dialect: {dialect} (given)"))
            );
            assert_eq!(out.stderr, "", "a dry run starts nothing");
        }
    }
}

#[test]
fn a_dry_run_assumes_ng_or_what_the_environment_says() {
    let run = Run::new(Installed::Legacy);
    let out = run.run(&["-n", "switch-push", "bigmachine"]);
    out.status(0);
    assert!(out.stdout.contains("# dialect: ng (assumed"));
    assert!(out.stdout.contains(NG));
    let out = Run::new(Installed::Nothing)
        .env("FLAKEM_DIALECT", "legacy")
        .run(&["-n", "switch-push", "bigmachine"]);
    assert!(out.stdout.contains(LEGACY), "{}", out.stdout);
    assert!(run.calls().is_empty(), "a dry run never probes");
}

#[test]
fn the_reset_dry_run_plans_reboot_wait_verify_and_gc_on_the_host() {
    let out = Run::new(Installed::Nothing).without_system_path().run(&[
        "-n",
        "switch-pull-reset",
        "root@10.3.2.1",
        "another-machine",
    ]);
    out.status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in\n{}", out.stdout))
    };
    let rebuild = find(&format!(
        "nixos-rebuild boot {NG} --build-host root@10.3.2.1 --target-host root@10.3.2.1 --flake .#another-machine"
    ));
    let check = find("# check: root@10.3.2.1 answers ssh without a prompt");
    let read = find(
        "'cat /proc/sys/kernel/random/boot_id && readlink -f /nix/var/nix/profiles/system && cat /etc/machine-id'",
    );
    let reboot = find("'sudo reboot'");
    let wait = find("# wait (10m) until root@10.3.2.1 answers with a boot id other than <boot-id>");
    let verify = find("'readlink -f /run/booted-system /run/current-system'");
    let gc = find("'sudo nix-collect-garbage --delete-older-than 15d'");
    let prune = find("'sudo /run/current-system/bin/switch-to-configuration boot'");
    assert!(check < rebuild && rebuild < read && read < reboot && reboot < wait && wait < verify);
    assert!(verify < gc && gc < prune);
    for i in [read, reboot, verify, gc, prune] {
        assert!(lines[i].contains("-- root@10.3.2.1 "), "{}", lines[i]);
    }
    assert_eq!(out.stderr, "");
}

#[test]
fn the_link_name_is_the_command() {
    let run = Run::new(Installed::Nothing);
    let direct = run.run(&["-n", "switch-push", "boot", "bigmachine", "-L"]);
    let linked = run.run_as("switch-push", &["-n", "boot", "bigmachine", "-L"]);
    direct.status(0);
    linked.status(0);
    assert_eq!(direct.stdout, linked.stdout);
    let linked = run.run_as("ssh-wait", &["--dry-run", "bigmachine", "uptime"]);
    linked.status(0);
    assert!(
        linked.stdout.contains("-- bigmachine uptime"),
        "{}",
        linked.stdout
    );
}

#[test]
fn it_checks_the_target_then_runs_the_rebuild_with_the_house_flags() {
    for (installed, flags) in [(Installed::Ng, NG), (Installed::Legacy, LEGACY)] {
        let run = Run::new(installed);
        let out = run.run(&[
            "switch-pull",
            "--no-check",
            "--no-rollback",
            "myname@bigmachine",
            "--show-trace",
        ]);
        out.status(0);
        let started = out.started();
        assert!(started[0].starts_with("+ nix --extra-experimental-features 'nix-command flakes' eval --json --impure --expr"), "{started:?}");
        assert_eq!(
            started[1],
            "+ MANPAGER=cat PAGER=cat nixos-rebuild --no-reexec --flakem-probe build"
        );
        let want = format!(
            "switch {flags} --build-host myname@bigmachine --target-host myname@bigmachine --flake .#bigmachine --show-trace"
        );
        // The host's ssh configuration: whether it has a ControlPath of its own.
        assert_eq!(started[2], "+ ssh -G -- myname@bigmachine");
        assert!(started[3].starts_with("+ NIX_SSHOPTS='-o ControlMaster=auto -o ControlPath=/"));
        assert!(
            started[3].ends_with(&format!(" nixos-rebuild {want}")),
            "{started:?}"
        );
        assert_eq!(started.len(), 4);
        let calls = run.calls();
        assert_eq!(calls.len(), 2, "the probe, then the rebuild: {calls:?}");
        assert_eq!(calls[0], words(&["--no-reexec", "--flakem-probe", "build"]));
        assert_eq!(calls[1].join(" "), want);
    }
}

#[test]
fn a_given_dialect_is_not_probed_and_the_flag_wins_over_the_environment() {
    let run = Run::new(Installed::Legacy).env("FLAKEM_DIALECT", "ng");
    let out = run.run(&[
        "switch-push",
        "--no-check",
        "--no-rollback",
        "--dialect",
        "legacy",
        "bigmachine",
    ]);
    out.status(0);
    let want = "switch --fast --use-remote-sudo --use-substitutes --target-host bigmachine --flake .#bigmachine";
    assert_eq!(run.calls(), [words(&want.split(' ').collect::<Vec<_>>())]);
}

#[test]
fn a_typo_in_the_target_stops_before_nixos_rebuild() {
    let run = Run::new(Installed::Ng);
    let out = run.run(&["switch-push", "--no-check", "--no-rollback", "bigmachin"]);
    out.status(2);
    assert_eq!(
        out.messages(),
        [
            "flakem: `bigmachin` is not in .#nixosConfigurations or .#darwinConfigurations; \
             did you mean `bigmachine`?"
        ]
    );
    // Only the evaluation, and ssh -G looking for a configuration with that host name.
    let started = out.started();
    assert!(started[0].starts_with("+ nix "), "{}", out.stderr);
    assert!(
        started[1..].iter().all(|l| l.starts_with("+ ssh -G -- ")),
        "{}",
        out.stderr
    );
    assert!(run.calls().is_empty(), "no probe, no rebuild");
}

#[test]
fn the_flake_comes_from_the_flag_or_the_environment() {
    let run = Run::new(Installed::Ng);
    let flake = run.cwd.display().to_string();
    let mut elsewhere = Run::new(Installed::Ng);
    elsewhere.cwd = elsewhere.dir.path().to_owned();
    let elsewhere = elsewhere.env("FLAKEM_FLAKE", &flake);
    elsewhere
        .run(&[
            "switch-push",
            "--no-check",
            "--no-rollback",
            "--dialect=ng",
            "another-machine",
        ])
        .status(0);
    assert_eq!(
        elsewhere.calls()[0].last().unwrap(),
        &format!("{flake}#another-machine")
    );
    let out = elsewhere.run(&[
        "--flake",
        "/nonexistent",
        "switch-push",
        "--no-check",
        "--no-rollback",
        "another-machine",
    ]);
    out.status(5);
    assert!(
        out.messages()[0].contains("cannot read the flake /nonexistent"),
        "{}",
        out.stderr
    );
    assert_eq!(
        elsewhere.calls().len(),
        1,
        "nothing ran after the failed check"
    );
}

#[test]
fn nix_options_reach_nixos_rebuild_verbatim() {
    let run = Run::new(Installed::Ng);
    // Valid for nixos-rebuild (the stand-in rejects what the real one rejects), yet tricky.
    let tricky = [
        "--option",
        "substituters",
        "",
        "-L",
        "--option",
        "x",
        "a b",
        "--option",
        "y",
        "it's \"q\"",
    ];
    let args = [
        &[
            "switch-push",
            "--no-check",
            "--no-rollback",
            "--dialect",
            "ng",
            "boot",
            "bigmachine",
        ][..],
        &tricky,
    ]
    .concat();
    run.run(&args).status(0);
    let call = &run.calls()[0];
    assert_eq!(call[call.len() - tricky.len()..], tricky);
}

#[test]
fn a_host_named_like_an_action() {
    let run = Run::new(Installed::Ng);
    let out = run.run(&["switch-push", "boot"]);
    out.status(2);
    assert!(
        out.messages()[0].contains("missing DEPLOY_HOST after `boot`"),
        "{}",
        out.stderr
    );
    run.run(&[
        "switch-push",
        "--no-check",
        "--no-rollback",
        "--dialect",
        "ng",
        "switch",
        "boot",
    ])
    .status(0);
    assert_eq!(run.calls()[0][..1], words(&["switch"]));
    assert!(run.calls()[0].ends_with(&words(&["--target-host", "boot", "--flake", ".#boot"])));
}

#[test]
fn a_failing_step_stops_with_its_status() {
    let run = Run::new(Installed::Ng).env("FAKE_NIXOS_REBUILD_EXIT", "4");
    let out = run.run(&[
        "switch-push",
        "--no-check",
        "--no-rollback",
        "--dialect",
        "ng",
        "bigmachine",
    ]);
    out.status(4);
    assert_eq!(
        out.messages(),
        ["flakem: `nixos-rebuild` failed with exit status 4"]
    );
}

#[test]
fn bad_input_is_one_line_and_nothing_runs() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["switch-push", "a;reboot"],
            "DEPLOY_HOST \"a;reboot\" holds the shell character `;`",
        ),
        (&["switch-push", "big machine"], "holds whitespace"),
        (&["switch-push", "web*"], "glob character"),
        (
            &["switch-push", "h", "$(x)"],
            "FLAKE_TARGET \"$(x)\" holds the shell character `$`",
        ),
        (&["switch-push", "h", "a#b"], "holds `#`"),
        (&["switch-push", ""], "DEPLOY_HOST \"\" is empty"),
        (
            &["switch-push", "--", "-oProxyCommand=x"],
            "starts with `-`",
        ),
        (
            &["switch-pull", "--show-trace", "h"],
            "nix options go after the host",
        ),
        (&["ssh-wait", "a|b"], "holds the shell character `|`"),
        (&["switch-push", "web1,web2,web1"], "names web1 twice"),
        (&["ssh-wait", "a,b,a"], "names a twice"),
        (&["switch-push"], "missing DEPLOY_HOST"),
        (
            &["swich-push", "h"],
            "unknown command `swich-push`; did you mean `switch-push`?",
        ),
        (&[], "missing command"),
        (&["--flake", ".#x", "switch-push", "h"], "without `#`"),
        (
            &["--dialect", "new", "switch-push", "h"],
            "invalid value 'new' for '--dialect",
        ),
        (
            &["switch-push-reset", "--gc-older-than", "2w", "h"],
            "nix takes ages in days only",
        ),
        (
            &["switch-push-reset", "--timeout", "soon", "h"],
            "expected a number with s, m or h",
        ),
        (
            &["build", "--timeout", "5m"],
            "unexpected argument '--timeout'",
        ),
    ];
    for (args, why) in cases {
        let run = Run::new(Installed::Ng);
        let out = run.run(args);
        out.status(2);
        let messages = out.messages();
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(messages[0].contains(why), "{args:?}: {}", out.stderr);
        assert!(run.calls().is_empty());
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn missing_programs_get_one_line_each() {
    let nothing = Run::new(Installed::Nothing);
    let out = nothing.run(&[
        "switch-push",
        "--no-check",
        "--no-rollback",
        "--dialect",
        "ng",
        "bigmachine",
    ]);
    out.status(127);
    assert_eq!(out.messages().len(), 1);
    assert!(
        out.messages()[0].starts_with("flakem: `nixos-rebuild` not found on PATH"),
        "{}",
        out.stderr
    );
    let out = nothing.run(&["switch-push", "--no-check", "--no-rollback", "bigmachine"]);
    out.status(127);
    assert!(
        out.messages()[0].starts_with("flakem: `nixos-rebuild` not found"),
        "{}",
        out.stderr
    );

    let no_nix = Run::new(Installed::Ng).without_system_path();
    let out = no_nix.run(&["switch-push", "--no-check", "--no-rollback", "bigmachine"]);
    out.status(127);
    assert_eq!(
        out.messages(),
        ["flakem: `nix` not found on PATH: install Nix (on Debian: apt-get install nix-bin)"]
    );
    let out = no_nix.run(&["ssh-wait", "bigmachine"]);
    out.status(127);
    assert!(
        out.messages()[0].starts_with("flakem: `ssh` not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn help_lists_every_command_and_option() {
    let run = Run::new(Installed::Nothing);
    let out = run.run(&["--help"]);
    out.status(0);
    for name in [
        "build",
        "build-there",
        "switch",
        "switch-pull",
        "switch-push",
        "switch-pull-reset",
        "switch-push-reset",
        "ssh-wait",
    ] {
        assert!(
            out.stdout.contains(&format!("  {name} ")),
            "{name}: {}",
            out.stdout
        );
    }
    for option in [
        "--dry-run",
        "--flake",
        "--dialect",
        "--no-sudo",
        "[env: FLAKEM_FLAKE=]",
        "[env: FLAKEM_DIALECT=]",
    ] {
        assert!(out.stdout.contains(option), "{option}");
    }
    let out = run.run_as("switch-push-reset", &["-h"]);
    out.status(0);
    for option in [
        "--timeout",
        "--gc-older-than",
        "--no-gc",
        "DEPLOY_HOST",
        "NIX_OPTIONS",
    ] {
        assert!(out.stdout.contains(option), "{option}: {}", out.stdout);
    }
    run.run(&["--version"]).status(0);
}

/// A port on the loopback that nobody listens on, and an ssh config that sends `nowhere`
/// there: ssh-wait is tried against the real ssh without leaving this machine.
fn closed_port_config(run: &Run) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = run.dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!("Host nowhere\n  HostName 127.0.0.1\n  Port {port}\n  User nobody\n  UserKnownHostsFile /dev/null\n"),
    )
    .unwrap();
    format!("-F {}", config.display())
}

#[test]
fn ssh_wait_gives_up_at_its_deadline() {
    let run = Run::new(Installed::Nothing);
    let opts = closed_port_config(&run);
    let run = run.env("NIX_SSHOPTS", &opts);
    let out = run.run(&["ssh-wait", "--timeout", "2s", "nowhere", "true"]);
    out.status(3);
    let last = out.messages();
    assert!(
        last[0].contains("nowhere did not answer as expected within 2s"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("does not accept connections yet"),
        "{}",
        out.stderr
    );
}

#[test]
fn ctrl_c_stops_a_wait_with_status_130() {
    let run = Run::new(Installed::Nothing);
    let opts = closed_port_config(&run);
    let run = run.env("NIX_SSHOPTS", &opts);
    let mut child = run
        .command(&["ssh-wait", "--timeout", "0", "nowhere"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("does not accept connections yet") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "flakem ended before waiting"
        );
        assert!(Instant::now() < deadline);
    }
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("flakem: interrupted"), "{rest}");
}

/// Completion of DEPLOY_HOST calls back into flakem: the flake's configurations (evaluated
/// once, then cached) and the ssh config's aliases.
#[test]
fn hosts_complete_from_the_flake_and_the_ssh_config() {
    let run = Run::new(Installed::Nothing);
    let config = run.dir.path().join("ssh_config");
    std::fs::write(
        &config,
        "Host edge-router\n  HostName 127.0.0.1\nHost *.lan\n",
    )
    .unwrap();
    let run = run.env("NIX_SSHOPTS", &format!("-F {}", config.display()));
    let complete = |line: &str| {
        let script = format!(
            "COMPLETE=fish {} | source; complete --do-complete '{line}'",
            env!("CARGO_BIN_EXE_flakem")
        );
        let mut fish = run.command_as(
            std::path::Path::new("fish"),
            &["--no-config", "-c", &script],
        );
        let out = fish.output().expect("fish (apt-get install fish)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = complete("flakem build-there ");
    for want in [
        "bigmachine\tconfiguration",
        "another-machine\tconfiguration",
        "edge-router\tssh host",
        "@all\t",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let cache = run.dir.path().join(".cache/flakem");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "the names are cached"
    );
    // Where an action may stand, so may a host.
    let out = complete("flakem switch-push b");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["boot", "bigmachine\tconfiguration"]
    );
}

#[test]
fn the_dialect_is_probed_once_per_nixos_rebuild() {
    let run = Run::new(Installed::Legacy);
    let first = run.run(&["switch-push", "--no-check", "--no-rollback", "bigmachine"]);
    first.status(0);
    assert!(first.stderr.contains("--flakem-probe"), "{}", first.stderr);
    let again = run.run(&["switch-push", "--no-check", "--no-rollback", "bigmachine"]);
    again.status(0);
    assert!(!again.stderr.contains("--flakem-probe"), "{}", again.stderr);
    let calls = run.calls();
    assert_eq!(calls.len(), 3, "probe, rebuild, rebuild: {calls:?}");
    assert_eq!(calls[2][1], "--fast", "still legacy, from the cache");
}

#[test]
fn a_dry_run_of_a_pattern_plans_each_host_as_a_placeholder() {
    let out =
        Run::new(Installed::Nothing)
            .without_system_path()
            .run(&["-n", "switch-push", "@web*"]);
    out.status(0);
    assert!(
        out.stdout
            .contains("# hosts: @web*, from .#nixosConfigurations"),
        "{}",
        out.stdout
    );
    // A fleet's plan: one evaluation for all, then each host activates its prebuilt system.
    assert!(
        out.stdout
            .contains("nixosConfigurations.\"<host>\".config.system.build.toplevel.drvPath"),
        "{}",
        out.stdout
    );
    let rebuild =
        format!("+ nixos-rebuild switch {NG} --store-path '<system>' --target-host '<host>'");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("+ NIX_SSHOPTS=") && l.ends_with(&rebuild[2..])),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("'readlink -f /run/current-system'"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr, "", "nothing evaluated");
}

/// `--ask-sudo-password` is refused with one line before anything runs: with the legacy
/// nixos-rebuild (no way to give it a password, in a dry run too), with `--no-sudo`, on a
/// command that uses no sudo on a host, and without a terminal to ask on.
#[test]
fn ask_sudo_password_is_refused_where_it_cannot_work() {
    let run = Run::new(Installed::Ng);
    for args in [
        &[
            "--dialect",
            "legacy",
            "switch-push",
            "--ask-sudo-password",
            "bigmachine",
        ][..],
        &[
            "--dry-run",
            "--dialect",
            "legacy",
            "switch-push",
            "--ask-sudo-password",
            "bigmachine",
        ],
        &[
            "switch-push",
            "--no-sudo",
            "--ask-sudo-password",
            "bigmachine",
        ],
        &["build", "--ask-sudo-password", "bigmachine"],
        &["ssh-deploy", "--ask-sudo-password", "bigmachine"],
    ] {
        let out = run.run(args);
        out.status(2);
        assert_eq!(out.messages().len(), 1, "{args:?}: {}", out.stderr);
        assert!(out.started().is_empty(), "{args:?}: {}", out.stderr);
    }
    let out = run.run(&[
        "--dialect",
        "legacy",
        "switch-pull",
        "--ask-sudo-password",
        "bigmachine",
    ]);
    assert!(
        out.stderr
            .contains("--ask-sudo-password needs nixos-rebuild ng"),
        "{}",
        out.stderr
    );
    // Without a controlling terminal (a session of its own), there is nowhere to ask.
    let mut cmd = run.command(&["switch-push", "--ask-sudo-password", "bigmachine"]);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = crate::support::Outcome::from(cmd.output().unwrap());
    out.status(2);
    assert!(
        out.stderr
            .contains("asks on the terminal, and there is none"),
        "{}",
        out.stderr
    );
    assert!(out.started().is_empty(), "{}", out.stderr);
    assert!(run.calls().is_empty());
}
