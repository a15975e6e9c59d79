//! Durations and ages a user gives: how long a wait may last, how old a generation must be
//! to be collected.

use std::time::Duration;

/// A bound on one wait; `None` waits forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

impl Timeout {
    /// `90s`, `10m`, `1h` or plain seconds; `0` waits forever.
    pub fn parse(s: &str) -> Result<Timeout, String> {
        const EXPECTED: &str = "expected a number with s, m or h (90s, 10m, 1h)";
        let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "s"),
        };
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(EXPECTED.into()),
        };
        let n: u64 = number.parse().map_err(|_| EXPECTED.to_string())?;
        // Once wrapped around to another duration (release) or panicked (debug).
        match n.checked_mul(scale) {
            Some(secs) => Ok(Timeout((secs > 0).then(|| Duration::from_secs(secs)))),
            None => Err(format!(
                "{s} is too long to count in seconds; 0 waits forever"
            )),
        }
    }
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("no limit"),
            Some(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                    _ if s % 60 == 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

/// How old a generation must be to be deleted, in days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcAge(pub u32);

impl GcAge {
    pub fn parse(s: &str) -> Result<GcAge, String> {
        s.strip_suffix('d')
            .filter(|days| !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|days| days.parse().ok())
            .map(GcAge)
            .ok_or_else(|| "nix takes ages in days only, like 15d".into())
    }

    /// nix-collect-garbage's arguments for this age. nix refuses `0d` ("invalid number of
    /// days"); deleting every old generation is `--delete-old`.
    pub fn nix_args(self) -> Vec<String> {
        match self.0 {
            0 => vec!["--delete-old".to_owned()],
            days => vec!["--delete-older-than".to_owned(), format!("{days}d")],
        }
    }
}

/// Which old system generations a garbage collection keeps, besides the running, booted and
/// profile's ones, which it never deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The newest N (`--keep N`).
    Newest(u32),
    /// Those newer than the age (`--older-than Nd` deletes the others).
    NewerThan(GcAge),
}

impl Keep {
    /// What `gc` keeps unless told: the newest five.
    pub const DEFAULT: Keep = Keep::Newest(5);
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Newest(1) => write!(f, "the newest generation"),
            Keep::Newest(n) => write!(f, "the newest {n} generations"),
            Keep::NewerThan(GcAge(days)) => write!(f, "the generations newer than {days}d"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        let secs = |s| Timeout::parse(s).map(|t| t.0.map(|d| d.as_secs()));
        assert_eq!(secs("90s"), Ok(Some(90)));
        assert_eq!(secs("10m"), Ok(Some(600)));
        assert_eq!(secs("1h"), Ok(Some(3600)));
        assert_eq!(secs("45"), Ok(Some(45)));
        assert_eq!(secs("0"), Ok(None));
        assert_eq!(secs("876000h"), Ok(Some(876000 * 3600)));
        assert_eq!(secs("18446744073709551615"), Ok(Some(u64::MAX)));
        // Once wrapped around to another duration in release builds, or panicked.
        for bad in [
            "",
            "m",
            "10d",
            "1.5m",
            "-1",
            "10 m",
            "10000000000000000h",
            "18446744073709551616",
        ] {
            assert!(Timeout::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Timeout(Some(Duration::from_secs(600))).to_string(), "10m");
        assert_eq!(Timeout(Some(Duration::from_secs(90))).to_string(), "90s");
    }

    #[test]
    fn gc_ages_are_days_only() {
        assert_eq!(GcAge::parse("15d"), Ok(GcAge(15)));
        assert_eq!(GcAge::parse("0d"), Ok(GcAge(0)));
        assert_eq!(GcAge(15).nix_args(), ["--delete-older-than", "15d"]);
        assert_eq!(GcAge(0).nix_args(), ["--delete-old"]);
        for bad in [
            "15",
            "d",
            "2w",
            "15 d",
            "-1d",
            "1.5d",
            "15D",
            "99999999999d",
        ] {
            assert!(GcAge::parse(bad).is_err(), "{bad}");
        }
    }
}
