//! How flakem becomes root on a remote host: the one place a sudo is spelled. Every remote
//! command of flakem's own that runs as root takes its words from [`Sudo::words`] and goes
//! through [`Sudo::feeds`], so that with `--ask-sudo-password` it reads the password from
//! its stdin, where the executor writes it; the password itself is never in a plan.

use crate::cmd::{Cmd, Word};

/// sudo on the target, as the job asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sudo {
    /// `--no-sudo`: the login is root, or there is no sudo.
    No,
    /// `sudo`, which must not want a password (the checks make sure of it).
    Plain,
    /// `--ask-sudo-password`: `sudo --stdin --prompt=`, the password asked once and fed on
    /// the stdin of each command that runs it.
    Password,
}

impl Sudo {
    pub fn used(self) -> bool {
        self != Sudo::No
    }

    /// The words before a command that runs as root: nothing, `sudo`, or `sudo --stdin
    /// --prompt=` (sudo reads one line from stdin, and prints no prompt).
    pub fn prefix(self) -> &'static [&'static str] {
        match self {
            Sudo::No => &[],
            Sudo::Plain => &["sudo"],
            Sudo::Password => &["sudo", "--stdin", "--prompt="],
        }
    }

    /// [`Sudo::prefix`] as words.
    pub fn words(self) -> Vec<Word> {
        self.prefix().iter().map(|w| Word::from(*w)).collect()
    }

    /// `[sudo] sh -c SCRIPT sh ARGS...`: one sudo running a whole script, every value an
    /// argument of it, never text of it.
    pub fn shell(self, script: Word, args: &[Word]) -> Vec<Word> {
        let mut words = self.words();
        words.extend([Word::from("sh"), Word::from("-c"), script, Word::from("sh")]);
        words.extend(args.iter().cloned());
        words
    }

    /// The check before the build: sudo answers without a prompt, or takes the password.
    /// `--reset-timestamp` makes it check the password even where a ticket is cached.
    pub fn check(self) -> &'static str {
        match self {
            Sudo::Password => "sudo --stdin --prompt= --reset-timestamp true",
            _ => "sudo -n true",
        }
    }

    /// `cmd`, which runs one sudo of this kind: with `--ask-sudo-password`, marked so that
    /// the executor feeds the password on its stdin. A command whose sudo reads the password
    /// must run only one.
    pub fn feeds(self, mut cmd: Cmd) -> Cmd {
        cmd.sudo_password = self == Sudo::Password;
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sudo_is_spelled_here() {
        assert_eq!(Sudo::No.words(), Vec::<Word>::new());
        assert_eq!(Sudo::Plain.prefix(), ["sudo"]);
        assert_eq!(Sudo::Password.prefix(), ["sudo", "--stdin", "--prompt="]);
        assert_eq!(Sudo::Plain.check(), "sudo -n true");
        let fed = Sudo::Password.feeds(Cmd::new(["ssh", "web1", "sudo --stdin --prompt= true"]));
        assert!(fed.sudo_password);
        assert!(!Sudo::Plain.feeds(Cmd::new(["ssh"])).sudo_password);
        // The plan says where the password goes, never what it is.
        assert_eq!(
            fed.to_string(),
            "ssh web1 'sudo --stdin --prompt= true'  # <sudo password on stdin>"
        );
    }
}
