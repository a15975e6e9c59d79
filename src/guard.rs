//! The guard of a remote activation (docs/PRODUCT.md, "Safe activation"): a transient unit
//! on the host, armed before the activation, that puts back the system the host ran unless
//! a new connection confirms the new one in time. Everything here is plain data: the script
//! the host runs and the commands that arm, confirm, order and remove it. The executor runs
//! them; the verdicts read their answers.

use std::time::Duration;

use crate::cmd::{Cmd, Word};
use crate::names::Host;
use crate::ssh::{Connection, Ssh};

/// The transient unit, and the directory in the host's `/run` where it keeps its state: one
/// guard per host at a time (arming fails while one is there, as with a second deploy).
const UNIT: &str = "flakem-guard";
const DIR: &str = "/run/flakem-guard";

/// The longest the guard waits for an activation to start and end (a build before it
/// included) before it gives up and exits, having changed nothing.
const LONGEST_WAIT: Duration = Duration::from_secs(6 * 3600);

/// The guard, in POSIX sh. Arguments: its directory, the seconds to wait for the
/// confirmation after the activation ended, and the action (`switch` or `test`). The
/// system to put back and its profile generation are in `recorded`, written when it was
/// armed. The activation has ended when the running system is another and no
/// switch-to-configuration runs: the host sees it by itself, whatever became of flakem.
/// It ends with one word in `result`: `confirmed`, `unchanged` (nothing to put back), or
/// `rolled-back`; a confirmation and the deadline are decided under one lock.
const SCRIPT: &[&str] = &[
    "set -u",
    "dir=$1 timeout=$2 action=$3",
    "profile=/nix/var/nix/profiles/system",
    "recorded=$(sed -n 1p \"$dir/recorded\")",
    "generation=$(sed -n 2p \"$dir/recorded\")",
    "PATH=\"$recorded/sw/bin:$PATH\"",
    "running() { readlink -f /run/current-system; }",
    "activating() { pgrep -f \"switch-to-configuration (switch|test|boot)\" >/dev/null 2>&1; }",
    "uptime() { cut -d. -f1 /proc/uptime; }",
    "finish() { echo \"$1\" > \"$dir/result\"; exit 0; }",
    "roll_back() { exec 9> \"$dir/lock\"; flock 9; \
     [ -e \"$dir/confirmed\" ] && finish confirmed; \
     while activating; do sleep 1; done; \
     [ \"$(running)\" = \"$recorded\" ] && finish unchanged; \
     echo rolling-back > \"$dir/result\"; flock -u 9; \
     if [ \"$action\" = switch ]; then case $generation in \
     system-*-link) n=${generation#system-}; \
     nix-env -p \"$profile\" --switch-generation \"${n%-link}\" ;; \
     *) nix-env -p \"$profile\" --set \"$recorded\" ;; esac; fi; \
     \"$recorded/bin/switch-to-configuration\" \"$action\"; finish rolled-back; }",
    "until [ \"$(running)\" != \"$recorded\" ] && ! activating; do \
     [ -e \"$dir/confirmed\" ] && finish confirmed; \
     [ -e \"$dir/roll-back\" ] && roll_back; sleep 1; done",
    "deadline=$(( $(uptime) + timeout ))",
    "while [ \"$(uptime)\" -lt \"$deadline\" ]; do \
     [ -e \"$dir/confirmed\" ] && finish confirmed; \
     [ -e \"$dir/roll-back\" ] && roll_back; sleep 1; done",
    "roll_back",
];

/// Arms the guard over flakem's connection to the host: records the running system and the
/// profile's generation (printed, two lines), then starts the unit.
const ARM: &[&str] = &[
    "set -e",
    // A guard that ended while flakem was gone left its directory: only a running one
    // stops this deploy (exit 17).
    "if [ -e \"$1\" ]; then if systemctl is-active -q \"$5\"; then exit 17; fi; rm -rf \"$1\"; fi",
    "mkdir -m 700 \"$1\"",
    "printf %s \"$2\" > \"$1/guard.sh\"",
    "{ readlink -f /run/current-system; readlink /nix/var/nix/profiles/system || true; } \
     > \"$1/recorded\"",
    "cat \"$1/recorded\"",
    "systemd-run --unit \"$5\" --collect --quiet --no-ask-password -p \"RuntimeMaxSec=$6\" \
     -- /bin/sh \"$1/guard.sh\" \"$1\" \"$3\" \"$4\"",
];

/// Confirms under the guard's lock (exit 6 when the deadline came first), then removes the
/// guard: one new connection does both.
const CONFIRM: &[&str] = &[
    "exec 9> \"$1/lock\"",
    "flock 9",
    "if [ -e \"$1/result\" ]; then cat \"$1/result\"; exit 6; fi",
    "touch \"$1/confirmed\"",
    "flock -u 9",
    "echo confirmed",
    REMOVE_WORDS,
];

/// The guard's result (`waiting` until it has one), the running system, the recorded one.
const STATE: &[&str] = &[
    "cat \"$1/result\" 2>/dev/null || echo waiting",
    "readlink -f /run/current-system",
    "sed -n 1p \"$1/recorded\"",
];

/// Stops the unit and removes the directory; prints whether the unit is still there.
const REMOVE_WORDS: &str = "systemctl stop \"$2\" 2>/dev/null || true; rm -rf \"$1\"; \
                            systemctl is-active \"$2\" || true";
const REMOVE: &[&str] = &[REMOVE_WORDS];

/// A host's guard, as its plan holds it. Everything after the arming goes over a new
/// connection: a master that survived the activation proves nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub host: Host,
    /// `--health-check`s, each bounded by the rollback timeout.
    pub health_checks: Vec<Cmd>,
    /// Confirms, and removes the guard once confirmed.
    pub confirm: Cmd,
    /// Has the guard put back the recorded system now, if the running one differs.
    pub roll_back: Cmd,
    /// Prints the guard's result and the running and recorded systems.
    pub state: Cmd,
    pub remove: Cmd,
    /// `ssh -G`, for the wait while the host rolls back.
    pub resolve: Cmd,
    /// How long the host waits for the confirmation.
    pub timeout: Duration,
    pub ssh: Ssh,
}

/// The dry-run form: what confirms the activation, and what runs when nothing does.
impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = &self.host;
        writeln!(
            f,
            "# confirm the activation over a new connection, each --health-check first:"
        )?;
        for check in &self.health_checks {
            writeln!(f, "+ {check}")?;
        }
        writeln!(f, "+ {}", self.confirm)?;
        writeln!(
            f,
            "# if that fails, or the activation did, {host} puts back the system it ran \
             (ordered at once where the host can be told):\n# if that fails:\n+ {}\n\
             # if that fails: wait until {host} answers again and say what it runs (exit 6), \
             each try:\n+ {}\n# if that fails:\n+ {}",
            self.roll_back, self.state, self.remove
        )
    }
}

/// The step that arms the guard for `action` (`switch` or `test`).
pub fn arm(
    ssh: &Ssh,
    master: Connection,
    host: &Host,
    sudo: bool,
    timeout: Duration,
    action: &str,
) -> Cmd {
    let args = [
        DIR.to_owned(),
        SCRIPT.join("; "),
        timeout.as_secs().to_string(),
        action.to_owned(),
        UNIT.to_owned(),
        LONGEST_WAIT.as_secs().to_string(),
    ];
    root_script(ssh, master, host, sudo, ARM, &args)
}

/// The guard of `host`'s plan: how flakem confirms the activation after `checks`, has the
/// host put the recorded system back, reads what it did, and removes it.
pub fn guard(ssh: &Ssh, host: &Host, sudo: bool, timeout: Duration, checks: &[String]) -> Guard {
    let fresh = Connection::Fresh;
    let dir = [DIR.to_owned()];
    let unit = [DIR.to_owned(), UNIT.to_owned()];
    let health_checks = checks
        .iter()
        .map(|check| {
            let bounded = ["timeout", &timeout.as_secs().to_string(), "sh", "-c", check];
            ssh.script(fresh, host, &[&bounded])
        })
        .collect();
    let flag = format!("{DIR}/roll-back");
    let order: Vec<&str> = match sudo {
        true => vec!["sudo", "touch", &flag],
        false => vec!["touch", &flag],
    };
    Guard {
        host: host.clone(),
        health_checks,
        confirm: root_script(ssh, fresh, host, sudo, CONFIRM, &unit),
        roll_back: ssh.script(fresh, host, &[&order]),
        state: root_script(ssh, fresh, host, sudo, STATE, &dir),
        remove: root_script(ssh, fresh, host, sudo, REMOVE, &unit),
        resolve: ssh.resolve(host),
        timeout,
        ssh: ssh.clone(),
    }
}

/// `[sudo] sh -c SCRIPT sh ARGS...` on the host: every value an argument, never text of
/// the script.
fn root_script(
    ssh: &Ssh,
    conn: Connection,
    host: &Host,
    sudo: bool,
    script: &[&str],
    args: &[String],
) -> Cmd {
    let script = script.join("; ");
    let mut words: Vec<Word> = match sudo {
        true => vec!["sudo".into()],
        false => Vec::new(),
    };
    words.extend(["sh", "-c", &script, "sh"].map(Word::from));
    words.extend(args.iter().map(Word::from));
    ssh.script_of(conn, host, &[words])
}
