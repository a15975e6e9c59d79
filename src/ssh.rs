//! flakem's own ssh calls. They take the words of `NIX_SSHOPTS` as nixos-rebuild does, never
//! prompt (`BatchMode`), and put `--` before the host so that nothing after it is an option.

use std::path::{Path, PathBuf};

use crate::cmd::{Cmd, Word};
use crate::names::Host;

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
    pub fn raw(&self, conn: Connection, host: &Host, words: Vec<Word>) -> Cmd {
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
        let mut cmd = Cmd::new(argv);
        cmd.argv.extend(words);
        cmd
    }

    /// Runs a script of flakem's own on the host: each command's words are quoted, and the
    /// commands are joined with `&&`.
    pub fn script(&self, conn: Connection, host: &Host, commands: &[&[&str]]) -> Cmd {
        let commands: Vec<Vec<Word>> = commands
            .iter()
            .map(|words| words.iter().map(|w| Word::from(*w)).collect())
            .collect();
        self.script_of(conn, host, &commands)
    }

    /// [`Ssh::script`] of words that may hold values known only at run time.
    pub fn script_of(&self, conn: Connection, host: &Host, commands: &[Vec<Word>]) -> Cmd {
        let lines: Vec<Word> = commands.iter().map(|words| shell_line(words)).collect();
        self.raw(conn, host, vec![Word::join(&lines, " && ")])
    }

    /// The ssh options flakem hands down to nix and nixos-rebuild (`NIX_SSHOPTS`): the
    /// user's first, so that theirs win (OpenSSH keeps an option's first value), then the
    /// connection flakem's check opened to the host at `socket`, so that every later step
    /// of the host goes through it: the host is logged into once.
    pub fn handed_down(&self, socket: &Path) -> String {
        let control = format!(
            "-o ControlMaster=auto -o ControlPath={} -o {PERSIST}",
            socket.display()
        );
        [self.user_options.join(" "), control]
            .join(" ")
            .trim()
            .to_owned()
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

/// Every word quoted and joined with spaces: one command line for a remote shell.
pub fn shell_line(words: &[Word]) -> Word {
    let quoted: Vec<Word> = words.iter().map(Word::quoted).collect();
    Word::join(&quoted, " ")
}

/// A value of `ssh -G` output (keys are lower case there), e.g. `hostname` or `port`.
pub fn config_value(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().to_owned())
    })
}

/// The control socket of the user's own for a host, from its `ssh -G`: the ControlPath that
/// NIX_SSHOPTS or the ssh config gives it (`none` is none).
pub fn users_master(config: &str) -> Option<PathBuf> {
    config_value(config, "controlpath")
        .filter(|path| path != "none")
        .map(PathBuf::from)
}

/// Where a host's steps keep their control sockets: one before a reboot, one after, and one
/// for a build host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sockets {
    pub before: PathBuf,
    pub after: PathBuf,
    pub builder: PathBuf,
    /// Whether `before` is the user's own master (their ControlPath), which flakem shares
    /// and leaves to their ControlPersist rather than closing it.
    pub users: bool,
}

impl Sockets {
    /// flakem's sockets in its private `dir`, the first one the user's own if they have one.
    pub fn in_dir(dir: &Path, users: Option<&Path>) -> Sockets {
        Sockets {
            before: users.map_or_else(|| dir.join("before"), Path::to_owned),
            after: dir.join("after"),
            builder: dir.join("builder"),
            users: users.is_some(),
        }
    }
}
