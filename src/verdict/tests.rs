//! Each verdict against outputs captured from real programs (OpenSSH 9.2, coreutils, the
//! test bed's hosts).

use std::os::unix::process::ExitStatusExt;

use super::*;
use crate::sudo::Sudo;

fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: exited(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

fn web1() -> Host {
    Host::parse("root@web1").unwrap()
}

const HERE: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4\n";
const THERE: &str = "9f0c2a1e5b7d4c3e8a6f1b2d3c4e5f60";
const REFUSED: &str = "ssh: connect to host 127.0.0.1 port 1: Connection refused\n";
const DENIED: &str = "root@127.0.5.1: Permission denied (publickey,password).\n";
const SUDO_PASSWORD: &str = "sudo: a password is required\n";
/// `sudo --stdin --prompt=` given a wrong password, then end of file (sudo 1.9.13).
const WRONG_PASSWORD: &str =
    "Sorry, try again.\nsudo: no password was provided\nsudo: 1 incorrect password attempt\n";
const NO_SUDO: &str = "bash: line 1: sudo: command not found\n";

#[test]
fn a_host_that_answers_gives_its_machine_id() {
    let ssh = Ssh::default();
    let ok = output(0, &format!("{THERE}\n"), "");
    assert_eq!(
        host_check(&web1(), Sudo::Plain, true, &ok, &ssh, HERE).unwrap(),
        Some(THERE.to_owned())
    );
    // A host without /etc/machine-id still passes.
    let none = output(0, "", "");
    assert_eq!(
        host_check(&web1(), Sudo::Plain, true, &none, &ssh, HERE).unwrap(),
        None
    );
}

#[test]
fn a_check_says_what_failed_and_what_to_do() {
    let ssh = Ssh::default();
    let check = |out: &Output, sudo: Sudo| {
        let e = host_check(&web1(), sudo, false, out, &ssh, HERE).unwrap_err();
        assert_eq!(e.status(), 5, "{e}");
        e.to_string()
    };
    let e = check(&output(255, "", REFUSED), Sudo::Plain);
    assert!(
        e.starts_with("ssh to root@web1 failed: ssh: connect to host 127.0.0.1 port 1: Connection refused; web1 refused the connection"),
        "{e}"
    );
    let e = check(&output(255, "", DENIED), Sudo::Plain);
    assert!(e.contains("it refused our key"), "{e}");
    // sudo's 1 with its message, and the shell's 127 when there is no sudo at all.
    let e = check(&output(1, THERE, SUDO_PASSWORD), Sudo::Plain);
    assert!(
        e.starts_with("sudo on root@web1 wants a password (sudo: a password is required)"),
        "{e}"
    );
    assert!(
        e.contains("pass --ask-sudo-password to give it once"),
        "{e}"
    );
    // Given a password it does not take: what sudo said, and which host.
    let e = check(&output(1, THERE, WRONG_PASSWORD), Sudo::Password);
    assert_eq!(
        e,
        "sudo on root@web1 did not take the password given with --ask-sudo-password \
         (sudo: 1 incorrect password attempt): check it is this login's password there"
    );
    let e = check(&output(127, THERE, NO_SUDO), Sudo::Password);
    assert!(e.starts_with("there is no sudo on root@web1"), "{e}");
    let e = check(&output(127, THERE, NO_SUDO), Sudo::Plain);
    assert!(e.starts_with("there is no sudo on root@web1"), "{e}");
    assert!(e.contains("log in as root (root@web1)"), "{e}");
    // Without sudo in the script, another status is the remote shell's own.
    let e = host_check(&web1(), Sudo::No, false, &output(3, "", ""), &ssh, HERE).unwrap_err();
    assert_eq!(e.status(), 3);
}

#[test]
fn the_machine_flakem_runs_on_is_never_rebooted() {
    let ssh = Ssh::default();
    let same = output(0, HERE, "");
    let e = host_check(&web1(), Sudo::Plain, true, &same, &ssh, HERE).unwrap_err();
    assert!(e.to_string().contains("is this machine"), "{e}");
    // Deploying to it without a reboot is fine.
    assert!(host_check(&web1(), Sudo::Plain, false, &same, &ssh, HERE).is_ok());
    let state =
        format!("4acf599f-7a75-4ca8-8514-92ea74d84dfc\n/nix/store/abc-nixos-system-web1\n{HERE}");
    assert!(boot_state(&web1(), &state, HERE).is_err());
}

#[test]
fn boot_state_before_a_reboot() {
    let state = format!(
        "4acf599f-7a75-4ca8-8514-92ea74d84dfc\n/nix/store/abc-nixos-system-web1\n{THERE}\n"
    );
    assert_eq!(
        boot_state(&web1(), &state, HERE).unwrap(),
        BootState {
            boot_id: "4acf599f-7a75-4ca8-8514-92ea74d84dfc".into(),
            system: "/nix/store/abc-nixos-system-web1".into(),
        }
    );
    let e = boot_state(&web1(), "4acf599f\n", HERE).unwrap_err();
    assert!(
        e.to_string().starts_with("could not read the boot id"),
        "{e}"
    );
}

#[test]
fn a_build_gives_its_last_line() {
    let out = "these derivations will be built:\n/nix/store/x-web1\n\n";
    assert_eq!(built_system("nix-store", out).unwrap(), "/nix/store/x-web1");
    let e = built_system("nix-store", "\n").unwrap_err();
    assert_eq!(e.to_string(), "`nix-store` printed nothing");
    assert_eq!(
        read_system(" /nix/store/x \n").as_deref(),
        Some("/nix/store/x")
    );
    assert_eq!(read_system("\n"), None);
}

#[test]
fn a_reboot_may_cut_its_own_connection() {
    assert!(reboot("ssh", exited(255)).is_ok());
    assert!(reboot("ssh", exited(0)).is_ok());
    assert_eq!(reboot("ssh", exited(1)).unwrap_err().status(), 1);
}

#[test]
fn the_host_must_boot_what_was_deployed() {
    let want = "/nix/store/new-system";
    assert!(booted(&format!("{want}\n{want}\n"), want).is_ok());
    let e = booted(&format!("/nix/store/old-system\n{want}\n"), want).unwrap_err();
    assert_eq!(e.status(), 4);
    assert!(
        e.to_string()
            .contains("booted-system is /nix/store/old-system"),
        "{e}"
    );
    assert!(booted(want, want).is_err());
}

#[test]
fn a_new_boot_is_a_boot_id_that_differs() {
    let ssh = Ssh::default();
    let old = "4acf599f-7a75-4ca8-8514-92ea74d84dfc";
    let same = output(0, &format!("{old}\n"), "");
    assert_eq!(new_boot(&web1(), &same, old, &ssh).unwrap(), Try::OldBoot);
    let new = output(0, "e2b1c9d0-0000-4000-8000-000000000001\n", "");
    assert_eq!(
        new_boot(&web1(), &new, old, &ssh).unwrap(),
        Try::Done(Some("e2b1c9d0-0000-4000-8000-000000000001".into()))
    );
    let down = output(255, "", REFUSED);
    assert_eq!(
        new_boot(&web1(), &down, old, &ssh).unwrap(),
        Try::NotYet("ssh: connect to host 127.0.0.1 port 1: Connection refused".into())
    );
    // Back, but with a key we do not have: waiting longer changes nothing.
    let e = new_boot(&web1(), &output(255, "", DENIED), old, &ssh).unwrap_err();
    assert_eq!(e.status(), 4);
    assert!(
        e.to_string()
            .starts_with("root@web1 came back but refuses us"),
        "{e}"
    );
}

#[test]
fn ssh_wait_ends_with_the_remote_status() {
    let ssh = Ssh::default();
    assert_eq!(
        ssh_wait(&web1(), exited(0), "", &ssh).unwrap(),
        Try::Done(None)
    );
    assert_eq!(
        ssh_wait(&web1(), exited(7), "", &ssh).unwrap_err().status(),
        7
    );
    assert_eq!(
        ssh_wait(&web1(), exited(255), "", &ssh).unwrap(),
        Try::NotYet("no answer".into())
    );
    let e = ssh_wait(
        &web1(),
        exited(255),
        "Host key verification failed.\n",
        &ssh,
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("answers but refuses us")
    );
}

#[test]
fn a_failed_copy_names_the_trusted_users() {
    let e = copy(&web1(), "nix", exited(1)).unwrap_err();
    assert!(e.to_string().contains("trusted-users"), "{e}");
    assert_eq!(e.status(), 1);
    assert!(copy(&web1(), "nix", exited(0)).is_ok());
}

#[test]
fn probes_go_where_ssh_would_connect_unless_proxied() {
    // `ssh -G web1` (OpenSSH 9.2), abridged.
    let plain = "user root\nhostname 127.0.5.1\nport 22\naddressfamily any\nproxyusefdpass no\n";
    assert_eq!(probe_target(plain), Some(("127.0.5.1".into(), 22)));
    let jump = format!("{plain}proxyjump bastion\n");
    assert_eq!(probe_target(&jump), None);
    let command = format!("{plain}proxycommand nc %h %p\n");
    assert_eq!(probe_target(&command), None);
}

// The guard's answers, as its scripts print them (src/guard.rs).

#[test]
fn arming_the_guard_gives_the_system_it_would_put_back() {
    let armed = output(0, "/nix/store/abc-nixos-system-web1\nsystem-5-link\n", "");
    let recorded = super::armed(&web1(), &armed).unwrap();
    assert_eq!(recorded.system, "/nix/store/abc-nixos-system-web1");
    assert_eq!(recorded.number(), Some(5));
    // Exit 17: a guard runs there already, another deploy's or one left by a killed flakem.
    let e = super::armed(&web1(), &output(17, "", "")).unwrap_err();
    assert_eq!(e.status(), 5);
    assert!(
        e.to_string().contains("a guard is armed there already"),
        "{e}"
    );
    let missing = "sh: 1: systemd-run: not found\n";
    let e = super::armed(&web1(), &output(127, "", missing)).unwrap_err();
    assert!(
        e.to_string()
            .contains("systemd-run: not found; --no-rollback"),
        "{e}"
    );
}

#[test]
fn the_wait_for_the_guard_ends_with_its_result() {
    let state = "rolled-back\n/nix/store/old\n";
    assert_eq!(
        guard_ended(&output(0, state, "")).unwrap(),
        GuardState {
            result: "rolled-back".into(),
            running: "/nix/store/old".into(),
        }
    );
    // A guard that removed itself, its result kept past the time it keeps it: over too.
    let gone = guard_ended(&output(0, "gone\n/nix/store/old\n", "")).unwrap();
    assert_eq!(gone.result, "gone");
    let waiting = "waiting\n/nix/store/new\n";
    assert_eq!(
        guard_ended(&output(0, waiting, "")).unwrap_err(),
        "the guard is waiting"
    );
    // Locked out until the old system is back: not yet.
    assert_eq!(
        guard_ended(&output(255, "", DENIED)).unwrap_err(),
        DENIED.trim()
    );
}

#[test]
fn what_the_host_runs_after_the_guard_is_what_flakem_reports() {
    let state = |result: &str, running: &str| GuardState {
        result: result.into(),
        running: running.into(),
    };
    let old = "/nix/store/old";
    let e = put_back(
        &web1(),
        &state("rolled-back", "/nix/store/old"),
        old,
        "not confirmed",
        None,
    );
    let e = e.unwrap_err();
    assert_eq!(e.status(), 6);
    assert_eq!(
        e.to_string(),
        "root@web1 was rolled back to /nix/store/old: not confirmed"
    );
    // Nothing was activated: the failed step's own status.
    let failed = Error::StepFailed {
        program: "nixos-rebuild".into(),
        status: 1,
    };
    let e = put_back(
        &web1(),
        &state("unchanged", "/nix/store/old"),
        old,
        "x",
        Some(failed),
    );
    assert_eq!(e.unwrap_err().status(), 1);
    // Rolled back, but to something else: flakem cannot vouch for the host.
    let e = put_back(
        &web1(),
        &state("rolled-back", "/nix/store/other"),
        old,
        "x",
        None,
    );
    assert_eq!(e.unwrap_err().status(), 4);
    // The guard was gone before flakem could read it: the running system says it all.
    let gone = put_back(&web1(), &state("gone", old), old, "x", None);
    assert_eq!(gone.unwrap_err().status(), 6);
    let gone = put_back(&web1(), &state("gone", "/nix/store/new"), old, "x", None);
    assert_eq!(gone.unwrap_err().status(), 4);
}

#[test]
fn a_host_that_never_came_back_names_the_generation_to_boot() {
    let recorded = |generation: &str| Recorded {
        system: "/nix/store/abc-old".into(),
        generation: generation.into(),
    };
    let timeout = || Error::Timeout("root@web1 did not come back within 5m".into());
    let e = never_came_back(timeout(), Some(&recorded("system-41-link")));
    assert_eq!(
        e.to_string(),
        "root@web1 did not come back within 5m; to boot the system it ran before, pick \
         generation 41 in its boot menu"
    );
    assert_eq!(e.status(), 3);
    let e = never_came_back(timeout(), Some(&recorded("")));
    assert!(
        e.to_string()
            .ends_with("pick /nix/store/abc-old in its boot menu"),
        "{e}"
    );
    let refused = Error::Check("refused".into());
    assert_eq!(never_came_back(refused, None).to_string(), "refused");
}

#[test]
fn a_confirmation_is_given_refused_or_too_late() {
    assert_eq!(
        confirmation(&output(0, "confirmed\ninactive\n", "")),
        Ok(true)
    );
    assert_eq!(confirmation(&output(6, "rolling-back\n", "")), Ok(false));
    let refused = confirmation(&output(255, "", DENIED)).unwrap_err();
    assert_eq!(
        refused,
        "a new ssh connection failed: root@127.0.5.1: Permission denied (publickey,password)."
    );
    let check = output(3, "checking\n", "the service is down\n");
    assert_eq!(
        not_confirmed(&check),
        "it failed (exit 3): checking / the service is down"
    );
    assert!(removed(&web1(), &output(0, "confirmed\ninactive\n", "")).is_ok());
    assert_eq!(
        removed(&web1(), &output(0, "active\n", ""))
            .unwrap_err()
            .status(),
        4
    );
}
