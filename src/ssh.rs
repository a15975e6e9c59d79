//! flakem's own ssh calls. They take the words of `NIX_SSHOPTS` as nixos-rebuild does, never
//! prompt (`BatchMode`), and put `--` before the host so that nothing after it is an option.

use std::path::{Path, PathBuf};

use crate::names::Host;
use crate::plan::Cmd;
use crate::quote;

/// How one ssh call connects.
#[derive(Clone, Copy, Debug)]
pub enum Connection<'a> {
    /// A connection of its own, never a control socket: each try of a wait.
    Fresh,
    /// A fresh connection that stays behind as the control master at this socket.
    NewMaster(&'a Path),
    /// Through the control master at this socket, starting it when there is none.
    Shared(&'a Path),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ssh {
    /// The words of `NIX_SSHOPTS`, split as a shell would.
    pub user_options: Vec<String>,
}

/// Long enough to bridge flakem's steps, short enough not to linger after it.
const PERSIST: &str = "ControlPersist=60";

/// How long a connection that starts a shared master (the check before the build) may take
/// to connect and shake hands: a host whose firewall drops packets would otherwise hold the
/// check for the system's TCP timeout, about two minutes. It comes after `NIX_SSHOPTS`, so
/// `-o ConnectTimeout=N` there wins (ssh takes an option's first value).
const CONNECT_TIMEOUT: &str = "ConnectTimeout=15";

impl Ssh {
    pub fn from_nix_sshopts(value: Option<&str>) -> Result<Ssh, String> {
        let user_options = match value {
            Some(v) => shell_words::split(v).map_err(|e| format!("NIX_SSHOPTS: {e}"))?,
            None => Vec::new(),
        };
        Ok(Ssh { user_options })
    }

    /// `ssh ... -- HOST WORDS...`: the words reach the remote shell as ssh joins them.
    pub fn raw(&self, conn: Connection, host: &Host, words: &[String]) -> Cmd {
        let mut argv = vec!["ssh".to_owned()];
        let control: Vec<String> = match conn {
            Connection::Fresh => vec!["ControlPath=none".into()],
            Connection::NewMaster(socket) => vec![
                "ControlMaster=yes".into(),
                format!("ControlPath={}", socket.display()),
                PERSIST.into(),
            ],
            Connection::Shared(socket) => vec![
                "ControlMaster=auto".into(),
                format!("ControlPath={}", socket.display()),
                PERSIST.into(),
            ],
        };
        let waiting = !matches!(conn, Connection::Shared(_));
        let timeouts = ["ConnectTimeout=5", "ServerAliveInterval=5"];
        let options = control
            .iter()
            .map(String::as_str)
            .chain(waiting.then_some(timeouts).into_iter().flatten())
            .chain(["BatchMode=yes"]);
        for o in options {
            argv.extend(["-o".to_owned(), o.to_owned()]);
        }
        argv.extend(self.user_options.iter().cloned());
        if !waiting {
            argv.extend(["-o".to_owned(), CONNECT_TIMEOUT.to_owned()]);
        }
        argv.extend(["--".to_owned(), host.to_string()]);
        argv.extend(words.iter().cloned());
        Cmd::new(argv)
    }

    /// Runs a script of flakem's own on the host: each command's words are quoted, and the
    /// commands are joined with `&&`.
    pub fn script(&self, conn: Connection, host: &Host, commands: &[&[&str]]) -> Cmd {
        let script = commands
            .iter()
            .map(|words| quote::join(words))
            .collect::<Vec<_>>()
            .join(" && ");
        self.raw(conn, host, &[script])
    }

    /// Asks the control master at `socket` to exit.
    pub fn exit_master(&self, socket: &Path, host: &Host) -> Cmd {
        let mut argv: Vec<String> = ["ssh", "-o"].map(str::to_owned).to_vec();
        argv.push(format!("ControlPath={}", socket.display()));
        argv.extend(self.user_options.iter().cloned());
        argv.extend(["-O", "exit", "--"].map(str::to_owned));
        argv.push(host.to_string());
        Cmd::new(argv)
    }

    /// `ssh -G HOST`: the address and port ssh would connect to, for cheap TCP probes.
    pub fn resolve(&self, host: &Host) -> Cmd {
        let mut argv = vec!["ssh".to_owned(), "-G".to_owned()];
        argv.extend(self.user_options.iter().cloned());
        argv.extend(["--".to_owned(), host.to_string()]);
        Cmd::new(argv)
    }
}

impl Ssh {
    /// What to do about the usual reasons ssh fails, from its stderr: one clause for a
    /// message line. Commands in it carry the words of `NIX_SSHOPTS`, as flakem's own do.
    pub fn advice(&self, host: &Host, stderr: &str) -> String {
        let name = host.without_user();
        let ssh = |first: &[&str], rest: &[&str]| {
            let mut words: Vec<&str> = vec!["ssh"];
            words.extend(first);
            words.extend(self.user_options.iter().map(String::as_str));
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

/// A value of `ssh -G` output (keys are lower case there), e.g. `hostname` or `port`.
pub fn config_value(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().to_owned())
    })
}

/// Where a host's steps keep their control sockets: one before a reboot, one after, and one
/// for a build host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sockets {
    pub before: PathBuf,
    pub after: PathBuf,
    pub builder: PathBuf,
}

impl Sockets {
    pub fn in_dir(dir: &Path) -> Sockets {
        Sockets {
            before: dir.join("before"),
            after: dir.join("after"),
            builder: dir.join("builder"),
        }
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

    fn advice(options: &[&str], stderr: &str) -> String {
        let ssh = Ssh {
            user_options: options.iter().map(|o| o.to_string()).collect(),
        };
        ssh.advice(&Host::parse("root@web1").unwrap(), stderr)
    }

    #[test]
    fn a_changed_host_key_is_not_taken_for_an_unknown_one() {
        let said = advice(&[], CHANGED);
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
        let said = advice(&[], &declared);
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
            advice(&["-F", "/my ssh/config"], strict),
            "its host key is not known, and StrictHostKeyChecking keeps ssh from taking a new one: \
             check its fingerprint, then accept it once with \
             `ssh -o StrictHostKeyChecking=accept-new -F '/my ssh/config' -- root@web1 true`"
        );
        // ask (the default), which BatchMode turns into a refusal: ssh asks when run by hand.
        assert_eq!(
            advice(&[], "Host key verification failed.\n"),
            "its host key is not known: check it, then accept it once with `ssh -- root@web1 true`"
        );
    }

    #[test]
    fn a_refused_connection_or_login_gets_the_advice_for_its_cause() {
        // An agent offering key after key runs into the server's MaxAuthTries.
        let too_many = "Received disconnect from 127.0.99.7 port 22:2: Too many authentication \
                        failures\nDisconnected from 127.0.99.7 port 22\n";
        let said = advice(&[], too_many);
        assert!(
            said.starts_with("it gave up after ssh offered too many keys"),
            "{said}"
        );
        let refused = "ssh: connect to host 127.0.99.7 port 2223: Connection refused\n";
        let said = advice(&[], refused);
        assert!(
            said.starts_with("web1 refused the connection to its ssh port"),
            "{said}"
        );
        let unreachable = "ssh: connect to host 10.9.8.7 port 22: No route to host\n";
        let said = advice(&[], unreachable);
        assert!(said.starts_with("no way to web1 from here"), "{said}");
        let denied = "root@127.0.99.7: Permission denied (publickey,password).\n";
        let said = advice(&[], denied);
        assert!(said.starts_with("it refused our key"), "{said}");
    }
}
