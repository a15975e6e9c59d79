//! What to do when ssh fails: its stderr read for the usual causes, each with the command
//! or setting that mends it.

use crate::names::Host;
use crate::quote;
use crate::ssh::Ssh;

/// What to do about the usual reasons ssh fails, from its stderr: one clause for a message
/// line. Commands in it carry the words of `NIX_SSHOPTS`, as flakem's own do.
pub fn advice(ssh: &Ssh, host: &Host, stderr: &str) -> String {
    let name = host.without_user();
    let ssh = |first: &[&str], rest: &[&str]| {
        let mut words: Vec<&str> = vec!["ssh"];
        words.extend(first);
        words.extend(ssh.user_options.iter().map(String::as_str));
        words.extend(["--", host.as_str()]);
        words.extend(rest);
        quote::join(&words)
    };
    if let Some(changed) = ChangedKey::parse(stderr) {
        let what_now = if changed.file.starts_with("/etc/") {
            format!(
                "update it in {} (on NixOS: programs.ssh.knownHosts)",
                changed.file
            )
        } else {
            format!(
                "remove the old one with `{}`",
                quote::join(&["ssh-keygen", "-R", changed.known_as, "-f", changed.file])
            )
        };
        format!(
            "its host key changed: it sent {}, not the key {}:{} has for it; if you know why \
             (a reinstall, new host keys), {what_now} and run again; if not, someone may be \
             in between",
            changed.fingerprint.unwrap_or("another key"),
            changed.file,
            changed.line
        )
    } else if stderr.contains("host key is known for") {
        format!(
            "its host key is not known, and StrictHostKeyChecking keeps ssh from taking a new \
             one: check its fingerprint, then accept it once with `{}`",
            ssh(&["-o", "StrictHostKeyChecking=accept-new"], &["true"])
        )
    } else if stderr.contains("Host key verification failed") {
        format!(
            "its host key is not known: check it, then accept it once with `{}`",
            ssh(&[], &["true"])
        )
    } else if stderr.contains("Too many authentication failures") {
        format!(
            "it gave up after ssh offered too many keys (an agent holding many?): name the \
             right one as IdentityFile for {name} in ~/.ssh/config, with IdentitiesOnly yes"
        )
    } else if stderr.contains("Permission denied") {
        format!(
            "it refused our key: install it with `ssh-copy-id {host}`, or name the key as \
             IdentityFile for {name} in ~/.ssh/config"
        )
    } else if stderr.contains("Connection refused") {
        format!(
            "{name} refused the connection to its ssh port: is sshd running there (a host \
             still booting refuses for a while; `flakem ssh-wait {host}` waits)?"
        )
    } else if stderr.contains("No route to host") || stderr.contains("Network is unreachable") {
        format!("no way to {name} from here: is it on, and is this machine on its network?")
    } else if stderr.contains("Could not resolve") {
        format!("{name} is neither a known host name nor an ssh config alias")
    } else if stderr.contains("timed out") {
        format!(
            "is {name} up, and does nothing drop the connection on the way? (to give it more \
             time: NIX_SSHOPTS='-o ConnectTimeout=60')"
        )
    } else {
        format!("is {name} up and reachable? (`flakem ssh-wait {host}` waits for it)")
    }
}

/// What ssh says when a host's key is not the one known_hosts has for it.
#[derive(Debug)]
struct ChangedKey<'a> {
    /// The name known_hosts has it under (`[addr]:port` off port 22).
    known_as: &'a str,
    file: &'a str,
    line: &'a str,
    /// The key the host sent, `SHA256:...`.
    fingerprint: Option<&'a str>,
}

impl<'a> ChangedKey<'a> {
    fn parse(stderr: &'a str) -> Option<ChangedKey<'a>> {
        let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        let known_as = lines.iter().find_map(|l| {
            let (name, _) = l
                .strip_prefix("Host key for ")?
                .split_once(" has changed")?;
            Some(name)
        })?;
        let (file, line) = lines.iter().find_map(|l| {
            let (_, at) = l.strip_prefix("Offending ")?.split_once(" key in ")?;
            at.rsplit_once(':')
        })?;
        let fingerprint = lines
            .windows(2)
            .find(|w| w[0].starts_with("The fingerprint for the"))
            .map(|w| w[1].trim_end_matches('.'));
        Some(ChangedKey {
            known_as,
            file,
            line,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSH 9.2's words for a known host that sent another key (the same under
    /// `StrictHostKeyChecking` yes, ask and accept-new).
    const CHANGED: &str = "\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:RfyrPolw5F8782dPykmQKL59JRrTegrV+ridRbiIxrs.
Please contact your system administrator.
Add correct host key in /home/me/.ssh/known_hosts to get rid of this message.
Offending ED25519 key in /home/me/.ssh/known_hosts:3
  remove with:
  ssh-keygen -f \"/home/me/.ssh/known_hosts\" -R \"[127.0.99.7]:2222\"
Host key for [127.0.99.7]:2222 has changed and you have requested strict checking.
Host key verification failed.
";

    fn advised(options: &[&str], stderr: &str) -> String {
        let ssh = Ssh {
            user_options: options.iter().map(|o| o.to_string()).collect(),
        };
        advice(&ssh, &Host::parse("root@web1").unwrap(), stderr)
    }

    #[test]
    fn a_changed_host_key_is_not_taken_for_an_unknown_one() {
        let said = advised(&[], CHANGED);
        assert!(said.starts_with("its host key changed: it sent SHA256:RfyrPolw5F8782dPykmQKL59JRrTegrV+ridRbiIxrs, not the key /home/me/.ssh/known_hosts:3 has for it"), "{said}");
        assert!(
            said.contains(
                "remove the old one with `ssh-keygen -R '[127.0.99.7]:2222' -f /home/me/.ssh/known_hosts`"
            ),
            "{said}"
        );
        assert!(said.ends_with("someone may be in between"), "{said}");
        // A key declared by the system (NixOS writes /etc/ssh/ssh_known_hosts) is not
        // ssh-keygen's to remove.
        let declared = CHANGED.replace("/home/me/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts");
        let said = advised(&[], &declared);
        assert!(
            said.contains(
                "update it in /etc/ssh/ssh_known_hosts (on NixOS: programs.ssh.knownHosts)"
            ),
            "{said}"
        );
        assert!(!said.contains("ssh-keygen"), "{said}");
    }

    #[test]
    fn an_unknown_host_key_is_accepted_the_way_the_settings_allow() {
        // StrictHostKeyChecking yes: a plain `ssh host true` would fail the same way.
        let strict = "No ED25519 host key is known for 127.0.5.1 and you have requested strict checking.\nHost key verification failed.\n";
        assert_eq!(
            advised(&["-F", "/my ssh/config"], strict),
            "its host key is not known, and StrictHostKeyChecking keeps ssh from taking a new one: \
             check its fingerprint, then accept it once with \
             `ssh -o StrictHostKeyChecking=accept-new -F '/my ssh/config' -- root@web1 true`"
        );
        // ask (the default), which BatchMode turns into a refusal: ssh asks when run by hand.
        assert_eq!(
            advised(&[], "Host key verification failed.\n"),
            "its host key is not known: check it, then accept it once with `ssh -- root@web1 true`"
        );
    }

    #[test]
    fn a_refused_connection_or_login_gets_the_advice_for_its_cause() {
        // An agent offering key after key runs into the server's MaxAuthTries.
        let too_many = "Received disconnect from 127.0.99.7 port 22:2: Too many authentication \
                        failures\nDisconnected from 127.0.99.7 port 22\n";
        let said = advised(&[], too_many);
        assert!(
            said.starts_with("it gave up after ssh offered too many keys"),
            "{said}"
        );
        let refused = "ssh: connect to host 127.0.99.7 port 2223: Connection refused\n";
        let said = advised(&[], refused);
        assert!(
            said.starts_with("web1 refused the connection to its ssh port"),
            "{said}"
        );
        let unreachable = "ssh: connect to host 10.9.8.7 port 22: No route to host\n";
        let said = advised(&[], unreachable);
        assert!(said.starts_with("no way to web1 from here"), "{said}");
        let denied = "root@127.0.99.7: Permission denied (publickey,password).\n";
        let said = advised(&[], denied);
        assert!(said.starts_with("it refused our key"), "{said}");
    }
}
