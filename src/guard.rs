//! The guard of a remote activation (docs/PRODUCT.md, "Safe activation"): a transient unit
//! on the host, armed before the activation, that puts back the system the host ran unless
//! a new connection confirms the new one in time. Everything here is plain data: the script
//! the host runs and the commands that arm, confirm, order and remove it. The executor runs
//! them; the verdicts read their answers.

use std::time::Duration;

use crate::cmd::{Cmd, Value, Word};
use crate::names::Host;
use crate::ssh::{Connection, Ssh};
use crate::sudo::Sudo;

/// The transient unit, and the directory in the host's `/run` where it keeps its state: one
/// guard per host at a time (arming fails while one is there, as with a second deploy).
const UNIT: &str = "flakem-guard";
const DIR: &str = "/run/flakem-guard";

/// The longest the guard waits for an activation to start and end (a build before it
/// included) before it gives up and removes itself, having changed nothing.
const LONGEST_WAIT: Duration = Duration::from_secs(6 * 3600);

/// After its decision, how long a guard keeps its result for flakem to read (flakem reads
/// it within seconds, then removes the guard); then it removes itself, so that a flakem
/// killed or cut off leaves nothing on the host.
const LINGER: Duration = Duration::from_secs(30);

/// The unit's own limit (`RuntimeMaxSec`) allows this for the recorded system's
/// switch-to-configuration, past the longest wait, the deadline and the linger.
const ROLLBACK_ALLOWANCE: Duration = Duration::from_secs(3600);

/// Puts the profile back to the recorded system (`$recorded`): to its own generation
/// (`$generation`, a `system-N-link`) when that still holds it, else to a new one.
macro_rules! profile_back {
    () => {
        "if [ \"$(readlink -f \"/nix/var/nix/profiles/$generation\")\" = \"$recorded\" ]; \
         then n=${generation#system-}; \
         nix-env -p /nix/var/nix/profiles/system --switch-generation \"${n%-link}\"; \
         else nix-env -p /nix/var/nix/profiles/system --set \"$recorded\"; fi"
    };
}

/// The guard, in POSIX sh. Arguments: its directory, the seconds to wait for the
/// confirmation after the activation ended, the action (`switch` or `test`), the longest
/// wait for the activation and how long to keep its result. The system to put back and its
/// profile generation are in `recorded`, written when it was armed. The activation has
/// ended when the running system is another and no switch-to-configuration runs: the host
/// sees it by itself, whatever became of flakem. It ends with one word in `result`:
/// `confirmed`, `unchanged` (nothing to put back), or `rolled-back`; a confirmation and the
/// deadline are decided under one lock.
const SCRIPT: &[&str] = &[
    "set -u",
    "dir=$1 timeout=$2 action=$3 longest=$4 linger=$5",
    "recorded=$(sed -n 1p \"$dir/recorded\")",
    "generation=$(sed -n 2p \"$dir/recorded\")",
    "PATH=\"$recorded/sw/bin:$PATH\"",
    "running() { readlink -f /run/current-system; }",
    "activating() { pgrep -f \"switch-to-configuration (switch|test|boot)\" >/dev/null 2>&1; }",
    // Hundredths of a second since boot: a clock no one sets.
    "uptime() { tr -d . < /proc/uptime | cut -d' ' -f1; }",
    "finish() { echo \"$1\" > \"$dir/result\"; \
     [ \"$1\" = confirmed ] || sleep \"$linger\"; rm -rf \"$dir\"; exit 0; }",
    concat!(
        "roll_back() { exec 9> \"$dir/lock\"; flock 9; \
         [ -e \"$dir/confirmed\" ] && finish confirmed; \
         while activating; do sleep 1; done; \
         [ \"$(running)\" = \"$recorded\" ] && finish unchanged; \
         echo rolling-back > \"$dir/result\"; flock -u 9; \
         if [ \"$action\" = switch ]; then ",
        profile_back!(),
        "; fi; \"$recorded/bin/switch-to-configuration\" \"$action\"; finish rolled-back; }"
    ),
    "given_up=$(( $(uptime) + longest * 100 ))",
    "until [ \"$(running)\" != \"$recorded\" ] && ! activating; do \
     [ -e \"$dir/confirmed\" ] && finish confirmed; \
     [ -e \"$dir/roll-back\" ] && roll_back; \
     [ \"$(uptime)\" -lt \"$given_up\" ] || finish unchanged; sleep 1; done",
    "deadline=$(( $(uptime) + timeout * 100 ))",
    "while [ \"$(uptime)\" -lt \"$deadline\" ]; do \
     [ -e \"$dir/confirmed\" ] && finish confirmed; \
     [ -e \"$dir/roll-back\" ] && roll_back; sleep 1; done",
    "roll_back",
];

/// Puts back the recorded system (`$1`, of generation `$2`) as the boot default: a reset's
/// new boot that was not confirmed. The reboot into it is a step of its own.
const BOOT_BACK: &[&str] = &[
    "set -e",
    "recorded=$1 generation=$2",
    profile_back!(),
    "\"$recorded/bin/switch-to-configuration\" boot",
];

/// Prints the running system and the profile's generation (`system-N-link`): what a guard
/// puts back.
macro_rules! record {
    () => {
        "{ readlink -f /run/current-system; readlink /nix/var/nix/profiles/system || true; }"
    };
}
const RECORD: &[&str] = &[record!()];

/// Arms the guard over flakem's connection to the host: records the running system and the
/// profile's generation (printed, two lines), then starts the unit.
const ARM: &[&str] = &[
    "set -e",
    // The ssh connection this deploy came over: its sshd process, the first ancestor
    // named so (`sshd-session` since OpenSSH 9.8).
    "session() { p=$$; while [ -n \"$p\" ] && [ \"$p\" -gt 1 ]; do \
     case $(cat \"/proc/$p/comm\" 2>/dev/null) in sshd*) echo \"$p\"; return ;; esac; \
     p=$(sed -n 's/^PPid:[[:space:]]*//p' \"/proc/$p/status\" 2>/dev/null); done; }",
    // Whether the connection of the deploy that armed the guard in $1 has ended.
    "gone() { s=$(cat \"$1/session\" 2>/dev/null) && [ -n \"$s\" ] && \
     case $(cat \"/proc/$s/comm\" 2>/dev/null) in sshd*) false ;; *) true ;; esac; }",
    // Whether nothing was activated under the guard in $1: it protects nothing yet.
    "idle() { [ \"$(readlink -f /run/current-system)\" = \"$(sed -n 1p \"$1/recorded\")\" ] && \
     ! pgrep -f 'switch-to-configuration (switch|test|boot)' >/dev/null 2>&1; }",
    // A guard that has decided only keeps its result for a flakem that is gone, and one
    // whose deploy ended before activating anything (Ctrl-C during the build) protects
    // nothing: only one still deciding for a deploy that goes on stops this one (exit 17).
    "if [ -e \"$1\" ]; then case $(cat \"$1/result\" 2>/dev/null) in \
     confirmed|unchanged|rolled-back) ;; \
     *) if systemctl is-active -q \"$5\" && ! { gone \"$1\" && idle \"$1\"; }; then exit 17; fi ;; \
     esac; systemctl stop \"$5\" 2>/dev/null || true; rm -rf \"$1\"; fi",
    "mkdir -m 700 \"$1\"",
    "printf %s \"$2\" > \"$1/guard.sh\"",
    "session > \"$1/session\"",
    concat!(record!(), " > \"$1/recorded\""),
    "cat \"$1/recorded\"",
    "systemd-run --unit \"$5\" --collect --quiet --no-ask-password -p \"RuntimeMaxSec=$8\" \
     -- /bin/sh \"$1/guard.sh\" \"$1\" \"$3\" \"$4\" \"$6\" \"$7\"",
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

/// The guard's result (`waiting` until it has one, `gone` once it removed itself), and the
/// running system.
const STATE: &[&str] = &[
    "if [ -d \"$1\" ]; then cat \"$1/result\" 2>/dev/null || echo waiting; else echo gone; fi",
    "readlink -f /run/current-system",
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
    sudo: Sudo,
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
        LINGER.as_secs().to_string(),
        (LONGEST_WAIT + timeout + LINGER + ROLLBACK_ALLOWANCE)
            .as_secs()
            .to_string(),
    ];
    root_script(ssh, master, host, sudo, ARM, &args.map(Word::from))
}

/// The guard of `host`'s plan: how flakem confirms the activation after `checks`, has the
/// host put the recorded system back, reads what it did, and removes it.
pub fn guard(ssh: &Ssh, host: &Host, sudo: Sudo, timeout: Duration, checks: &[String]) -> Guard {
    let fresh = Connection::Fresh;
    let dir = [Word::from(DIR)];
    let unit = [Word::from(DIR), Word::from(UNIT)];
    let flag = format!("{DIR}/roll-back");
    let order = [sudo.prefix(), &["touch", &flag]].concat();
    Guard {
        host: host.clone(),
        health_checks: health_checks(ssh, host, timeout, checks),
        confirm: root_script(ssh, fresh, host, sudo, CONFIRM, &unit),
        roll_back: sudo.feeds(ssh.script(fresh, host, &[&order])),
        state: root_script(ssh, fresh, host, sudo, STATE, &dir),
        remove: root_script(ssh, fresh, host, sudo, REMOVE, &unit),
        resolve: ssh.resolve(host),
        timeout,
        ssh: ssh.clone(),
    }
}

/// Each `--health-check`, bounded by `timeout`, over a new connection of its own.
pub fn health_checks(ssh: &Ssh, host: &Host, timeout: Duration, checks: &[String]) -> Vec<Cmd> {
    let secs = timeout.as_secs().to_string();
    checks
        .iter()
        .map(|check| {
            let bounded = ["timeout", secs.as_str(), "sh", "-c", check];
            ssh.script(Connection::Fresh, host, &[&bounded])
        })
        .collect()
}

/// Reads the system a reset's host runs, and its generation, before the new one is
/// activated: what it boots back into if the new boot is not confirmed.
pub fn record(ssh: &Ssh, conn: Connection, host: &Host) -> Cmd {
    root_script(ssh, conn, host, Sudo::No, RECORD, &[])
}

/// Makes the recorded system the boot default again, for the reboot into it.
pub fn boot_back(ssh: &Ssh, conn: Connection, host: &Host, sudo: Sudo) -> Cmd {
    let args = [Value::Recorded, Value::RecordedLink].map(Word::value);
    root_script(ssh, conn, host, sudo, BOOT_BACK, &args)
}

/// `[sudo] sh -c SCRIPT sh ARGS...` on the host: every value an argument, never text of
/// the script.
fn root_script(
    ssh: &Ssh,
    conn: Connection,
    host: &Host,
    sudo: Sudo,
    script: &[&str],
    args: &[Word],
) -> Cmd {
    let words = sudo.shell(Word::from(script.join("; ")), args);
    sudo.feeds(ssh.script_of(conn, host, &[words]))
}
