//! What a host's system generations are, read from what the day-two plans print there
//! (`day_two::READ`), and the choices made from them: the generation a rollback goes to, the
//! generations a garbage collection deletes. Pure: tested with real outputs, without a host.

use std::fmt::Write;

use serde::Serialize;

use crate::duration::{GcAge, Keep};
use crate::error::Error;
use crate::names::Host;

/// One system generation of a host (`/nix/var/nix/profiles/system-N-link`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Generation {
    pub number: u32,
    /// When it was made (the link's own modification time, as nix-env reads it), in UTC.
    pub date: String,
    /// The same, in seconds since the epoch.
    pub created: i64,
    pub path: String,
    /// `nixos-version` of the system, when it has one.
    pub nixos_version: Option<String>,
    /// The host runs it (`/run/current-system`).
    pub running: bool,
    /// The host booted it (`/run/booted-system`).
    pub booted: bool,
    /// The profile points at it: what the host boots next, and what nix-env calls current.
    pub profile: bool,
}

/// Everything the read printed: the generations, oldest first, and the host's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub generations: Vec<Generation>,
    /// The running system's store path, whether or not a generation holds it.
    pub running: Option<String>,
    /// The host's time when it was read, in seconds since the epoch.
    pub now: i64,
}

/// Reads the lines of `day_two::READ`: `generation N SECONDS PATH [VERSION]`, then `profile
/// system-N-link`, `running PATH`, `booted PATH` and `now SECONDS`.
pub fn parse(host: &Host, stdout: &str) -> Result<Listing, Error> {
    let bad = |line: &str| {
        Error::Check(format!(
            "cannot read the generations of {host}: unexpected line `{line}`"
        ))
    };
    let mut generations = Vec::new();
    let (mut profile, mut running, mut booted, mut now) = (None, None, None, None);
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = Some(value.trim()).filter(|v| !v.is_empty());
        match key {
            "generation" => {
                generations.push(generation(value.unwrap_or("")).ok_or_else(|| bad(line))?)
            }
            "profile" => profile = value.and_then(link_number),
            "running" => running = value.map(str::to_owned),
            "booted" => booted = value.map(str::to_owned),
            "now" => now = value.and_then(|v| v.parse().ok()),
            _ => return Err(bad(line)),
        }
    }
    let Some(now) = now else {
        return Err(Error::Check(format!(
            "cannot read the generations of {host}: no `now` line in `{}`",
            stdout.trim()
        )));
    };
    generations.sort_by_key(|g: &Generation| g.number);
    let mark = |path: &Option<String>| -> Option<u32> {
        let path = path.as_deref()?;
        let holds = |g: &&Generation| g.path == path;
        // The profile's generation when it holds the path, else the newest that does.
        let of_profile = generations
            .iter()
            .filter(holds)
            .find(|g| Some(g.number) == profile);
        of_profile
            .or_else(|| generations.iter().rev().find(holds))
            .map(|g| g.number)
    };
    let (running_number, booted_number) = (mark(&running), mark(&booted));
    for g in &mut generations {
        g.running = Some(g.number) == running_number;
        g.booted = Some(g.number) == booted_number;
        g.profile = Some(g.number) == profile;
    }
    Ok(Listing {
        generations,
        running,
        now,
    })
}

/// `N SECONDS PATH [VERSION]`.
fn generation(value: &str) -> Option<Generation> {
    let mut words = value.splitn(4, ' ');
    let number = words.next()?.parse().ok()?;
    let created: i64 = words.next()?.parse().ok()?;
    let path = words.next().filter(|p| p.starts_with('/'))?.to_owned();
    let nixos_version = words.next().map(str::trim).filter(|v| !v.is_empty());
    Some(Generation {
        number,
        date: utc(created),
        created,
        path,
        nixos_version: nixos_version.map(str::to_owned),
        running: false,
        booted: false,
        profile: false,
    })
}

/// The number of `system-N-link`.
fn link_number(link: &str) -> Option<u32> {
    let name = link.rsplit('/').next()?;
    name.strip_prefix("system-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (days to a civil date: Howard Hinnant's
/// algorithm).
fn utc(seconds: i64) -> String {
    let (days, time) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

impl Listing {
    fn numbers(&self) -> String {
        let numbers: Vec<String> = self.generations.iter().map(described).collect();
        match numbers.is_empty() {
            true => "none".to_owned(),
            false => numbers.join(", "),
        }
    }

    fn running_generation(&self) -> Option<&Generation> {
        self.generations.iter().find(|g| g.running)
    }

    /// The generation a rollback switches to: `to`, or the newest before the running one
    /// that is another system (the profile's, when no generation holds the running system).
    pub fn rollback_target(&self, host: &Host, to: Option<u32>) -> Result<&Generation, Error> {
        if let Some(to) = to {
            return self
                .generations
                .iter()
                .find(|g| g.number == to)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{host} has no system generation {to}; it has {}",
                        self.numbers()
                    ))
                });
        }
        let previous = match self.running_generation() {
            Some(running) => self
                .generations
                .iter()
                .rev()
                .find(|g| g.number < running.number && g.path != running.path),
            None => self
                .generations
                .iter()
                .find(|g| g.profile && Some(&g.path) != self.running.as_ref()),
        };
        previous.ok_or_else(|| {
            Error::Usage(format!(
                "{host} has no system generation to roll back to before the running one; it \
                 has {}",
                self.numbers()
            ))
        })
    }

    /// The generations a garbage collection deletes: those `keep` does not keep, never the
    /// running, booted or profile's one (nix-env refuses to delete the profile's).
    pub fn to_delete(&self, keep: Keep) -> Vec<u32> {
        let newest: Vec<u32> = match keep {
            Keep::Newest(n) => self
                .generations
                .iter()
                .rev()
                .take(n as usize)
                .map(|g| g.number)
                .collect(),
            Keep::NewerThan(GcAge(days)) => {
                let cutoff = self.now - i64::from(days) * 86_400;
                let kept = self.generations.iter().filter(|g| g.created >= cutoff);
                kept.map(|g| g.number).collect()
            }
        };
        self.generations
            .iter()
            .filter(|g| !(g.running || g.booted || g.profile || newest.contains(&g.number)))
            .map(|g| g.number)
            .collect()
    }

    /// The closing line of a garbage collection: what went, what remains.
    pub fn remain(&self, deleted: &[u32], freed: Option<&str>) -> String {
        let deleted: Vec<String> = deleted.iter().map(u32::to_string).collect();
        let deleted = match deleted.as_slice() {
            [] => "deleted no generation".to_owned(),
            [one] => format!("deleted generation {one}"),
            many => format!("deleted generations {}", many.join(", ")),
        };
        let count = self.generations.len();
        let s = if count == 1 { "" } else { "s" };
        let freed = freed.map(|f| format!("; {f}")).unwrap_or_default();
        format!(
            "{deleted}; {count} generation{s} remain: {}{freed}",
            self.numbers()
        )
    }

    /// A table, oldest first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let version_width = self
            .generations
            .iter()
            .filter_map(|g| g.nixos_version.as_ref().map(String::len))
            .max()
            .unwrap_or(0)
            .max("NIXOS VERSION".len());
        writeln!(
            out,
            "{:>10}  {:19}  {:version_width$}  {:24}  STORE PATH",
            "GENERATION", "DATE (UTC)", "NIXOS VERSION", "STATE"
        )
        .ok();
        for g in &self.generations {
            writeln!(
                out,
                "{:>10}  {:19}  {:version_width$}  {:24}  {}",
                g.number,
                g.date.replace('T', " ").trim_end_matches('Z'),
                g.nixos_version.as_deref().unwrap_or("-"),
                state(g).join(", "),
                g.path
            )
            .ok();
        }
        if self.generations.is_empty() {
            writeln!(out, "(no system generations)").ok();
        }
        if let Some(running) = self
            .running
            .as_ref()
            .filter(|_| self.running_generation().is_none())
        {
            writeln!(out, "running: {running} (no generation holds it)").ok();
        }
        out
    }
}

/// What a generation is to the host: running, booted, the profile's.
fn state(g: &Generation) -> Vec<&'static str> {
    [
        (g.running, "running"),
        (g.booted, "booted"),
        (g.profile, "profile"),
    ]
    .into_iter()
    .filter_map(|(is, name)| is.then_some(name))
    .collect()
}

/// `3 (running, booted)`.
fn described(g: &Generation) -> String {
    match state(g).join(", ") {
        s if s.is_empty() => g.number.to_string(),
        s => format!("{} ({s})", g.number),
    }
}

/// After a rollback, `readlink -f /run/current-system` must be the system asked for.
pub fn running(host: &Host, stdout: &str, want: &str) -> Result<(), Error> {
    match stdout.trim() {
        running if running == want => Ok(()),
        running => Err(Error::CameBackWrong(format!(
            "{host} runs {running}, not the generation's system {want}"
        ))),
    }
}

/// What `nix-collect-garbage` said it freed: its `N store paths deleted, X MiB freed` line.
pub fn freed(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(" freed") && l.contains("store paths deleted"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
