//! The two names a user gives: the ssh destination and the flake target. Both end up in
//! argument lists, remote command strings and Nix expressions, so anything that could be
//! read as more than a name is refused before anything runs.

use std::fmt;

use crate::error::Error;

/// What ssh is given: `host` or `user@host` (an address, a DNS name or an ssh config alias).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host(String);

/// A name under `nixosConfigurations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target(String);

/// `DEPLOY_HOST` as given: one host, a comma-separated list, `@all`, or `@pattern` (a glob
/// over the flake's configuration names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostList {
    Named(Vec<Host>),
    All,
    Pattern(glob::Pattern),
}

impl HostList {
    pub fn parse(word: &str) -> Result<HostList, Error> {
        if let Some(pattern) = word.strip_prefix('@') {
            if pattern == "all" {
                return Ok(HostList::All);
            }
            // Glob characters are what a pattern is for; everything else as in a name.
            let plain: String = pattern.chars().filter(|c| !"*?[]".contains(*c)).collect();
            if !plain.is_empty() {
                check_name("DEPLOY_HOST pattern", &plain).map_err(|_| bad_pattern(word))?;
            }
            return glob::Pattern::new(pattern)
                .map(HostList::Pattern)
                .map_err(|_| bad_pattern(word));
        }
        if !word.contains(',') {
            return Ok(HostList::Named(vec![Host::parse(word)?]));
        }
        let hosts = word
            .split(',')
            .map(|h| match h {
                "" => Err(Error::Usage(format!(
                    "DEPLOY_HOST {word:?} has an empty entry"
                ))),
                h => Host::parse(h),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostList::Named(hosts))
    }

    /// One host named outright: the only form `build` and `switch` take, and the only one
    /// that may be given a `FLAKE_TARGET`.
    pub fn single(&self) -> Option<&Host> {
        match self {
            HostList::Named(hosts) if hosts.len() == 1 => hosts.first(),
            _ => None,
        }
    }

    /// Whether the hosts are known only once the flake's names are.
    pub fn needs_names(&self) -> bool {
        !matches!(self, HostList::Named(_))
    }

    /// The hosts, given the flake's configuration names for `@all` and `@pattern`.
    pub fn expand(&self, names: &[String]) -> Result<Vec<Host>, Error> {
        let matching: Vec<Host> = match self {
            HostList::Named(hosts) => return Ok(hosts.clone()),
            HostList::All => names
                .iter()
                .map(|n| Host::parse(n))
                .collect::<Result<_, _>>()?,
            HostList::Pattern(p) => names
                .iter()
                .filter(|n| p.matches(n))
                .map(|n| Host::parse(n))
                .collect::<Result<_, _>>()?,
        };
        if matching.is_empty() {
            return Err(Error::Usage(format!("no configuration matches {self}")));
        }
        Ok(matching)
    }
}

fn bad_pattern(word: &str) -> Error {
    Error::Usage(format!(
        "DEPLOY_HOST {word:?} is not a pattern over configuration names (like @web*)"
    ))
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostList::Named(hosts) => {
                let names: Vec<&str> = hosts.iter().map(|h| h.0.as_str()).collect();
                f.write_str(&names.join(","))
            }
            HostList::All => f.write_str("@all"),
            HostList::Pattern(p) => write!(f, "@{p}"),
        }
    }
}

impl Host {
    /// A stand-in for hosts known only at run time, in a dry run of `@all` or `@pattern`.
    pub fn placeholder() -> Host {
        Host("<host>".to_owned())
    }

    pub fn parse(word: &str) -> Result<Host, Error> {
        check_name("DEPLOY_HOST", word)?;
        if let Some((user, host)) = word.split_once('@')
            && (user.is_empty() || host.is_empty() || host.contains('@'))
        {
            return Err(Error::Usage(format!(
                "DEPLOY_HOST {word:?} is not host or user@host"
            )));
        }
        Ok(Host(word.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host without any `user@`: the default flake target.
    pub fn without_user(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(_, h)| h)
    }
}

impl Target {
    /// The configuration of a host known only at run time, in a dry run of `@all`.
    pub fn placeholder() -> Target {
        Target("<host>".to_owned())
    }

    pub fn parse(word: &str) -> Result<Target, Error> {
        check_name("FLAKE_TARGET", word)?;
        Ok(Target(word.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(what: &str, word: &str) -> Result<(), Error> {
    let why = if word.is_empty() {
        "is empty".to_owned()
    } else if word.starts_with('-') {
        "starts with `-` (nix options go after the host)".to_owned()
    } else if let Some(c) = word.chars().find(|c| !allowed(*c)) {
        match c {
            c if c.is_whitespace() => "holds whitespace".to_owned(),
            c if c.is_control() => "holds a control character".to_owned(),
            '\'' | '"' | '\\' => format!("holds the quote character `{c}`"),
            '*' | '?' | '[' | ']' | '{' | '}' => format!("holds the glob character `{c}`"),
            '#' => "holds `#`".to_owned(),
            c => format!("holds the shell character `{c}`"),
        }
    } else {
        return Ok(());
    };
    Err(Error::Usage(format!("{what} {word:?} {why}")))
}

/// Letters, digits and the punctuation of host names, addresses and attribute names.
fn allowed(c: char) -> bool {
    c.is_alphanumeric() && !c.is_control() || "._-@:+%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for w in [
            "bigmachine",
            "myname@bigmachine",
            "root@10.3.2.1",
            "fe80::1%eth0",
            "web-1.example.org",
        ] {
            assert!(Host::parse(w).is_ok(), "{w}");
        }
        assert_eq!(Host::parse("me@big").unwrap().without_user(), "big");
        assert_eq!(Host::parse("big").unwrap().without_user(), "big");
    }

    #[test]
    fn bad_names_say_why() {
        let cases = [
            ("", "is empty"),
            ("-oProxyCommand=x", "starts with `-`"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\u{1b}b", "control character"),
            ("a'b", "quote"),
            ("a\"b", "quote"),
            ("a\\b", "quote"),
            ("a;b", "shell character `;`"),
            ("a|b", "`|`"),
            ("a&b", "`&`"),
            ("$(x)", "`$`"),
            ("a<b", "`<`"),
            ("a>b", "`>`"),
            ("a(b", "`(`"),
            ("a)b", "`)`"),
            ("a`b", "shell character"),
            ("a#b", "`#`"),
            ("web*", "glob character `*`"),
            ("web?", "glob"),
            ("web[1]", "glob"),
            ("a/b", "`/`"),
            ("@host", "not host or user@host"),
            ("user@", "not host or user@host"),
            ("a@b@c", "not host or user@host"),
        ];
        for (word, why) in cases {
            let e = Host::parse(word).unwrap_err().to_string();
            assert!(e.starts_with("DEPLOY_HOST"), "{e}");
            assert!(e.contains(why), "{word:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
        assert!(
            Target::parse("x y")
                .unwrap_err()
                .to_string()
                .starts_with("FLAKE_TARGET")
        );
    }
}
