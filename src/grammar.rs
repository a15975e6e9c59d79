//! The command grammar of docs/PRODUCT.md, word by word:
//!
//! ```text
//! flakem [OPTIONS] COMMAND [OPTIONS] [ACTION] DEPLOY_HOST [FLAKE_TARGET] [NIX_OPTIONS...]
//! ```
//!
//! flakem's options are recognised by name anywhere before `DEPLOY_HOST` (`--` ends them);
//! everything after the host belongs to nix, verbatim. clap then checks the option words.

use crate::commands::{Action, Command};
use crate::error::Error;
use crate::options::{self, OptionName};

/// A command line split into its parts; nothing is validated beyond the grammar yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// flakem's option words, in order, for clap to check.
    pub options: Vec<String>,
    pub action: Option<Action>,
    /// `None` when `build` or `switch` was given no host.
    pub host: Option<String>,
    pub target: Option<String>,
    /// `NIX_OPTIONS`, or `ssh-wait`'s `CMD...`.
    pub rest: Vec<String>,
}

/// What the words say: a command to run, or options alone for clap to answer (`--help`,
/// `--version`, or an error saying the command is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Invocation),
    OptionsOnly {
        command: Option<Command>,
        options: Vec<String>,
    },
}

const HELP: [&str; 4] = ["-h", "--help", "-V", "--version"];

/// Splits `args` (without the program name). `called_as` is the command when the binary
/// was started through a link of that name.
pub fn parse(called_as: Option<Command>, args: &[String]) -> Result<Parsed, Error> {
    let mut scanner = Scanner {
        names: options::names(),
        args,
        pos: 0,
        options_ended: false,
        options: Vec::new(),
        command: called_as,
    };
    match scanner.run() {
        // Help asked for on an incomplete command line is still help.
        Err(_) if scanner.options.iter().any(|o| HELP.contains(&o.as_str())) => {
            Ok(Parsed::OptionsOnly {
                command: scanner.command,
                options: scanner.options,
            })
        }
        result => result,
    }
}

struct Scanner<'a> {
    names: Vec<OptionName>,
    args: &'a [String],
    pos: usize,
    options_ended: bool,
    options: Vec<String>,
    command: Option<Command>,
}

impl Scanner<'_> {
    fn run(&mut self) -> Result<Parsed, Error> {
        let called_as = self.command;
        let command = match called_as {
            Some(c) => c,
            None if self.next_positional().is_none() => {
                let options = std::mem::take(&mut self.options);
                return Ok(Parsed::OptionsOnly {
                    command: None,
                    options,
                });
            }
            None => self.read_command()?,
        };
        self.command = Some(command);
        let mut action = None;
        if command.takes_action()
            && let Some(word) = self.next_positional()
            && let Some(a) = Action::chosen_from(word)
        {
            let word = word.clone();
            // An action word is the action only when another word follows it; alone, it is
            // a missing host (a host named like an action needs the action before it).
            self.pos += 1;
            if self.next_positional().is_none() {
                return Err(Error::Usage(format!(
                    "{command}: missing DEPLOY_HOST after `{word}` (for a host named `{word}`, \
                     give the action first: {command} switch {word})"
                )));
            }
            action = Some(a);
        }
        let host = match self.next_positional().cloned() {
            None if command.host_is_optional() => None,
            None => return Err(Error::Usage(format!("{command}: missing DEPLOY_HOST"))),
            Some(w) if w.starts_with('-') && command.host_is_optional() => None,
            Some(w) if w.starts_with('-') && !self.options_ended => {
                return Err(Error::Usage(format!(
                    "{command}: `{w}` is not a flakem option; nix options go after the host \
                     ({command} HOST {w})"
                )));
            }
            Some(w) => {
                self.pos += 1;
                Some(w)
            }
        };
        if command.day_two() {
            // No configuration and no nix options: the words after the host are flakem's
            // options too (`rollback HOST --to 3`).
            if let Some(w) = self.next_positional() {
                return Err(Error::Usage(format!(
                    "{command} takes DEPLOY_HOST and flakem's options, not `{w}`"
                )));
            }
        }
        let mut rest = self.args[self.pos..].to_vec();
        let target = match rest.first() {
            Some(w) if host.is_some() && command != Command::SshWait && !w.starts_with('-') => {
                Some(rest.remove(0))
            }
            _ => None,
        };
        Ok(Parsed::Run(Invocation {
            command,
            options: std::mem::take(&mut self.options),
            action,
            host,
            target,
            rest,
        }))
    }

    fn read_command(&mut self) -> Result<Command, Error> {
        let word = self.next_positional().expect("the caller saw a word");
        let command = Command::from_name(word).ok_or_else(|| {
            let names = Command::ALL.map(Command::name);
            let hint = crate::suggest::closest(word, names)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_else(|| format!("; one of: {}", names.join(", ")));
            Error::Usage(format!("unknown command `{word}`{hint}"))
        })?;
        self.pos += 1;
        Ok(command)
    }

    /// Moves past option words (collecting them) and `--`, and returns the next positional
    /// word without consuming it.
    fn next_positional(&mut self) -> Option<&String> {
        while let Some(word) = self.args.get(self.pos) {
            if self.options_ended {
                return Some(word);
            }
            if word == "--" {
                self.options_ended = true;
                self.pos += 1;
                continue;
            }
            let Some(width) = self.option_width(word) else {
                return Some(word);
            };
            let end = (self.pos + width).min(self.args.len());
            self.options.extend_from_slice(&self.args[self.pos..end]);
            self.pos = end;
        }
        None
    }

    /// How many words the option at the current position spans (1, or 2 with a separate
    /// value), or `None` when `word` is not one of flakem's options.
    fn option_width(&self, word: &str) -> Option<usize> {
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline_value) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let o = self
                .names
                .iter()
                .find(|o| o.long.as_deref() == Some(name))?;
            return Some(if o.takes_value && !inline_value { 2 } else { 1 });
        }
        let shorts = word.strip_prefix('-')?;
        let mut width = 1;
        for (i, c) in shorts.char_indices() {
            let o = self.names.iter().find(|o| o.short == Some(c))?;
            if o.takes_value {
                // `-xVALUE` or `-x VALUE`.
                if i + c.len_utf8() == shorts.len() {
                    width = 2;
                }
                break;
            }
        }
        (!shorts.is_empty()).then_some(width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn parse_ok(args: &[&str]) -> Invocation {
        match parse(None, &words(args)) {
            Ok(Parsed::Run(i)) => i,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn parse_err(args: &[&str]) -> String {
        match parse(None, &words(args)) {
            Ok(p) => panic!("{args:?} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_product_example() {
        let i = parse_ok(&["switch-pull", "myname@bigmachine", "--show-trace"]);
        assert_eq!(i.command, Command::SwitchPull);
        assert_eq!(i.action, None);
        assert_eq!(i.host.as_deref(), Some("myname@bigmachine"));
        assert_eq!(i.target, None);
        assert_eq!(i.rest, words(&["--show-trace"]));
    }

    #[test]
    fn options_anywhere_before_the_host() {
        let i = parse_ok(&[
            "-n",
            "switch-push",
            "--flake",
            "/f",
            "boot",
            "--no-sudo",
            "h",
            "t",
        ]);
        assert_eq!(i.options, words(&["-n", "--flake", "/f", "--no-sudo"]));
        assert_eq!(i.action, Some(Action::Boot));
        assert_eq!(i.host.as_deref(), Some("h"));
        assert_eq!(i.target.as_deref(), Some("t"));
        assert!(i.rest.is_empty());
    }

    #[test]
    fn options_after_the_host_belong_to_nix() {
        let i = parse_ok(&["switch-push", "h", "--dry-run", "--flake", "x"]);
        assert!(i.options.is_empty());
        assert_eq!(i.rest, words(&["--dry-run", "--flake", "x"]));
    }

    #[test]
    fn inline_and_short_option_values() {
        let i = parse_ok(&["--flake=/f", "switch-push-reset", "--timeout", "5m", "h"]);
        assert_eq!(i.options, words(&["--flake=/f", "--timeout", "5m"]));
        assert_eq!(i.host.as_deref(), Some("h"));
    }

    #[test]
    fn an_action_word_alone_is_a_missing_host() {
        assert!(parse_err(&["switch-push", "boot"]).contains("missing DEPLOY_HOST"));
        assert!(parse_err(&["switch-push", "-n", "boot", "--dry-run"]).contains("missing"));
        // The word after the action may be anything, even nix-looking.
        let e = parse_err(&["switch-push", "boot", "--show-trace"]);
        assert!(e.contains("nix options go after the host"), "{e}");
    }

    #[test]
    fn a_host_named_like_an_action() {
        let i = parse_ok(&["switch-push", "switch", "boot"]);
        assert_eq!(i.action, Some(Action::Switch));
        assert_eq!(i.host.as_deref(), Some("boot"));
        let i = parse_ok(&["switch-push", "boot", "test"]);
        assert_eq!(
            (i.action, i.host.as_deref()),
            (Some(Action::Boot), Some("test"))
        );
    }

    #[test]
    fn actions_only_for_push_and_pull() {
        let i = parse_ok(&["build-there", "boot", "x"]);
        assert_eq!(i.action, None);
        assert_eq!(i.host.as_deref(), Some("boot"));
        assert_eq!(i.target.as_deref(), Some("x"));
    }

    #[test]
    fn double_dash_ends_flakem_options() {
        let i = parse_ok(&["switch-push", "--", "h", "--", "-n"]);
        assert!(i.options.is_empty());
        assert_eq!(i.host.as_deref(), Some("h"));
        assert_eq!(i.rest, words(&["--", "-n"]));
        let i = parse_ok(&["switch-push", "--", "-n", "x"]);
        assert_eq!(
            i.host.as_deref(),
            Some("-n"),
            "refused later, by the host check"
        );
    }

    #[test]
    fn local_commands_default_their_host() {
        let i = parse_ok(&["build"]);
        assert_eq!((i.host, i.target), (None, None));
        let i = parse_ok(&["switch", "--show-trace", "laptop"]);
        assert_eq!(i.host, None);
        assert_eq!(i.rest, words(&["--show-trace", "laptop"]));
        let i = parse_ok(&["build", "-n", "laptop", "-L"]);
        assert_eq!(i.options, words(&["-n"]));
        assert_eq!(i.host.as_deref(), Some("laptop"));
        assert_eq!(i.rest, words(&["-L"]));
    }

    #[test]
    fn unknown_words_in_the_host_place() {
        let e = parse_err(&["switch-pull", "--show-trace", "h"]);
        assert!(e.contains("nix options go after the host"), "{e}");
    }

    #[test]
    fn nix_options_stay_verbatim() {
        let tricky = ["-L", "", "a b", "it's", "--", "--option", "x", "\"y\""];
        let mut args = vec!["switch-pull", "h", "t"];
        args.extend(tricky);
        assert_eq!(parse_ok(&args).rest, words(&tricky));
    }

    #[test]
    fn ssh_wait_takes_a_command() {
        let i = parse_ok(&["ssh-wait", "--timeout", "0", "h", "uname", "-a"]);
        assert_eq!(i.target, None);
        assert_eq!(i.rest, words(&["uname", "-a"]));
    }

    #[test]
    fn day_two_options_may_follow_the_host() {
        let i = parse_ok(&["rollback", "web1", "--to", "3"]);
        assert_eq!(i.host.as_deref(), Some("web1"));
        assert_eq!(i.options, words(&["--to", "3"]));
        assert_eq!((i.target, i.rest), (None, Vec::new()));
        let i = parse_ok(&["gc", "--json", "@all", "--keep", "2"]);
        assert_eq!(i.options, words(&["--json", "--keep", "2"]));
        let e = parse_err(&["generations", "web1", "web1-target"]);
        assert!(e.contains("not `web1-target`"), "{e}");
        let e = parse_err(&["gc", "web1", "--show-trace"]);
        assert!(e.contains("not `--show-trace`"), "{e}");
    }

    #[test]
    fn through_a_link() {
        let Ok(Parsed::Run(i)) = parse(Some(Command::SwitchPush), &words(&["-n", "h"])) else {
            panic!("no invocation");
        };
        assert_eq!(i.command, Command::SwitchPush);
        assert_eq!(i.host.as_deref(), Some("h"));
    }

    #[test]
    fn bad_commands() {
        let options_only = |command, options: &[&str]| Parsed::OptionsOnly {
            command,
            options: words(options),
        };
        assert_eq!(parse(None, &[]).unwrap(), options_only(None, &[]));
        let p = parse(None, &words(&["-n", "--help"])).unwrap();
        assert_eq!(p, options_only(None, &["-n", "--help"]));
        let p = parse(None, &words(&["switch-push", "-h"])).unwrap();
        assert_eq!(p, options_only(Some(Command::SwitchPush), &["-h"]));
        assert!(parse_err(&["swich-push", "h"]).contains("did you mean `switch-push`"));
        assert!(parse_err(&["switch-pull"]).contains("missing DEPLOY_HOST"));
    }
}
