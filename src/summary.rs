//! The end of a run of several hosts: what happened to each (a table on stdout, or JSON
//! with `--json`), and the one exit status of the run, merged by the phase each host
//! stopped in.

use std::fmt::Write;

use serde::Serialize;

use crate::console;
use crate::error::Error;
use crate::generations::Generation;

/// The phases of a run, in order: every host passes one before any enters the next
/// (`Evaluate` is one evaluation for all; `Prepare` and `Confirm` only with `--diff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Check,
    Evaluate,
    Prepare,
    Confirm,
    Deploy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostResult {
    Ok,
    Failed,
    Interrupted,
    Skipped,
    /// The host put back the system it ran: the new one was not confirmed.
    #[serde(rename = "rolled-back")]
    RolledBack,
}

/// What happened to one host, as the summary shows it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub host: String,
    pub target: Option<String>,
    pub result: HostResult,
    pub step: Option<String>,
    pub exit_code: Option<u8>,
    pub seconds: f64,
    pub system: Option<String>,
    /// `generations` and `gc`: the host's system generations (after `gc`, those left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generations: Option<Vec<Generation>>,
    /// The phase it stopped in, when it did not finish.
    #[serde(skip)]
    pub phase: Option<Phase>,
    /// Why it failed or stopped; with one host and no `--json`, flakem's own result.
    #[serde(skip)]
    pub error: Option<Error>,
    #[serde(skip)]
    pub tail: Vec<String>,
}

impl Outcome {
    pub fn new(host: String, target: Option<String>) -> Outcome {
        Outcome {
            host,
            target,
            result: HostResult::Ok,
            step: None,
            exit_code: None,
            seconds: 0.0,
            system: None,
            generations: None,
            phase: None,
            error: None,
            tail: Vec::new(),
        }
    }

    /// Marks it skipped in `phase` at `step`, for `why`: nothing of it failed.
    pub fn skip(&mut self, phase: Phase, step: String, why: Error) {
        self.result = HostResult::Skipped;
        self.phase = Some(phase);
        self.step = Some(step);
        self.error = Some(why);
    }

    /// Marks it stopped in `phase` at `step` by `error`: interrupted, or failed.
    pub fn stop(&mut self, phase: Phase, step: String, error: Error) {
        self.result = match error {
            Error::Interrupted => HostResult::Interrupted,
            Error::RolledBack { .. } => HostResult::RolledBack,
            _ => HostResult::Failed,
        };
        if self.result != HostResult::Interrupted {
            self.exit_code = Some(error.status());
        }
        self.phase = Some(phase);
        self.step = Some(step);
        self.error = Some(error);
    }
}

/// The run's exit status: interrupted before anything else; then a check that failed (so
/// nothing was built), the evaluation's own error, a declined confirmation; then one host's
/// own status, or "some failed".
pub fn status(outcomes: Vec<Outcome>, interrupted: bool) -> Result<(), Error> {
    let count = |r| outcomes.iter().filter(|o| o.result == r).count();
    // A host rolled back is one that failed, as far as the run's status goes.
    let failed = count(HostResult::Failed) + count(HostResult::RolledBack);
    let all = outcomes.len();
    let in_phase = |o: &&Outcome, phase| o.phase == Some(phase) && o.error.is_some();
    if interrupted || count(HostResult::Interrupted) > 0 {
        return Err(Error::Interrupted);
    }
    if outcomes.iter().any(|o| in_phase(&o, Phase::Check)) {
        return Err(Error::Check(format!(
            "checks failed for {failed} of {all} hosts; nothing was built"
        )));
    }
    // One evaluation for all, one answer for all: its own error, or the answer's.
    let of_all = outcomes
        .iter()
        .position(|o| in_phase(&o, Phase::Evaluate) || in_phase(&o, Phase::Confirm));
    if let Some(i) = of_all {
        let error = outcomes.into_iter().nth(i).and_then(|o| o.error);
        return Err(error.unwrap_or(Error::Declined));
    }
    match outcomes.as_slice() {
        [one] if one.result == HostResult::RolledBack => Err(one
            .error
            .clone()
            .unwrap_or(Error::HostsFailed(format!("{} was rolled back", one.host)))),
        [one] if one.result == HostResult::Failed => Err(Error::StepFailed {
            program: one.step.clone().unwrap_or_default(),
            status: one.exit_code.unwrap_or(1),
        }),
        _ if failed > 0 => Err(Error::HostsFailed(format!(
            "{failed} of {all} hosts failed"
        ))),
        _ => Ok(()),
    }
}

/// The table on stdout, or the JSON summary with `--json`.
pub fn print(json: bool, outcomes: &[Outcome]) {
    if json {
        let json = serde_json::to_string_pretty(outcomes).expect("plain data");
        console::print_stdout(&format!("{json}\n"));
        return;
    }
    console::print_stdout(&table(outcomes));
}

fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let width = outcomes
        .iter()
        .map(|o| o.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:40}  {:>7}  SYSTEM",
        "HOST", "RESULT", "TIME"
    )
    .ok();
    for o in outcomes {
        let result = match (&o.result, &o.step, o.exit_code) {
            (HostResult::Failed, Some(step), Some(code)) => {
                format!("failed at {step} (exit {code})")
            }
            (HostResult::Interrupted, Some(step), _) => format!("interrupted at {step}"),
            (HostResult::RolledBack, _, _) => "rolled back (exit 6)".to_owned(),
            (result, _, _) => format!("{result:?}").to_lowercase(),
        };
        let system = o.system.as_deref().unwrap_or("");
        writeln!(
            out,
            "{:width$}  {result:40}  {:>6.1}s  {system}",
            o.host, o.seconds
        )
        .ok();
        if matches!(o.result, HostResult::Failed | HostResult::RolledBack) {
            let message = o.error.as_ref().map(ToString::to_string);
            for line in message.iter().chain(&o.tail) {
                writeln!(out, "{:width$}  | {line}", "").ok();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(host: &str) -> Outcome {
        Outcome::new(host.into(), Some(host.into()))
    }

    fn stopped(host: &str, phase: Phase, error: Error) -> Outcome {
        let mut o = outcome(host);
        o.stop(phase, "check".into(), error);
        o
    }

    #[test]
    fn ctrl_c_during_the_checks_is_an_interruption_not_a_failed_check() {
        let slow = stopped("web1", Phase::Check, Error::Interrupted);
        assert_eq!(slow.result, HostResult::Interrupted);
        assert_eq!(slow.exit_code, None);
        let mut skipped = outcome("web2");
        skipped.result = HostResult::Skipped;
        let e = status(vec![slow, skipped], true).unwrap_err();
        assert_eq!(e.status(), 130);
    }

    #[test]
    fn a_failed_check_means_nothing_was_built() {
        let bad = stopped("web1", Phase::Check, Error::Check("no".into()));
        let e = status(vec![bad, outcome("web2")], false).unwrap_err();
        assert_eq!(e.status(), 5);
        assert_eq!(
            e.to_string(),
            "checks failed for 1 of 2 hosts; nothing was built"
        );
    }

    #[test]
    fn a_failed_evaluation_keeps_its_own_status() {
        let failed = || Error::StepFailed {
            program: "nix".into(),
            status: 1,
        };
        let hosts = vec![
            stopped("web1", Phase::Evaluate, failed()),
            stopped("web2", Phase::Evaluate, failed()),
        ];
        let e = status(hosts, false).unwrap_err();
        assert_eq!(e.to_string(), "`nix` failed with exit status 1");
    }

    #[test]
    fn a_declined_confirmation_skips_every_host() {
        let mut asked = outcome("web1");
        asked.skip(Phase::Confirm, "confirm".into(), Error::Declined);
        assert_eq!((asked.result, asked.exit_code), (HostResult::Skipped, None));
        let e = status(vec![asked], false).unwrap_err();
        assert_eq!(e.to_string(), "nothing was activated: the answer was no");
    }

    #[test]
    fn hosts_that_failed_while_deploying() {
        let mut bad = stopped(
            "db",
            Phase::Deploy,
            Error::StepFailed {
                program: "nixos-rebuild".into(),
                status: 4,
            },
        );
        bad.step = Some("nixos-rebuild".into());
        let e = status(vec![outcome("web1"), bad], false).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string()),
            (1, "1 of 2 hosts failed".into())
        );
        assert!(status(vec![outcome("web1"), outcome("web2")], false).is_ok());
        let table = table(&[outcome("web1")]);
        assert!(table.starts_with("HOST  RESULT"), "{table}");
        assert!(table.contains("web1  ok"), "{table}");
    }
}
