//! Running a job's hosts: the checks of every host before any build, then each host's plan,
//! a bounded number at a time. One host failing never stops or hides the others; a summary
//! (a table, or JSON with `--json`) ends a run of several hosts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::console::Console;
use crate::error::Error;
use crate::exec::{Executor, Failure};
use crate::job::{Job, Machine};
use crate::plan::Plan;
use crate::signals;

/// One host's part of a run.
pub struct Part {
    pub machine: Machine,
    pub plan: Plan,
    pub console: Console,
}

/// What happened to one host, as the summary shows it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub host: String,
    pub target: Option<String>,
    pub result: Verdict,
    pub step: Option<String>,
    pub exit_code: Option<u8>,
    pub seconds: f64,
    pub system: Option<String>,
    #[serde(skip)]
    pub message: Option<String>,
    #[serde(skip)]
    pub tail: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Failed,
    Interrupted,
    Skipped,
}

/// Runs every part; with one host and no `--json`, its own error is the result.
pub fn run(job: &Job, parts: &[Part]) -> Result<(), Error> {
    if let [part] = parts
        && !job.json
    {
        let mut executor = Executor::new(&part.console);
        let result = executor
            .run(&part.plan.checks)
            .and_then(|()| executor.run(&part.plan.steps));
        executor.finish(&part.plan);
        return result.map_err(|f| f.error);
    }
    let outcomes = run_all(job, parts);
    // Hosts that failed a check or were skipped may still hold a control master.
    for part in parts {
        Executor::new(&part.console).finish(&part.plan);
    }
    summarize(job, &outcomes);
    let count = |v| outcomes.iter().filter(|o| o.result == v).count();
    let failed = outcomes.iter().filter(|o| o.result == Verdict::Failed);
    if outcomes.iter().any(|o| o.step.as_deref() == Some("check")) {
        Err(Error::Check(format!(
            "checks failed for {} of {} hosts; nothing was built",
            failed.count(),
            outcomes.len()
        )))
    } else if count(Verdict::Interrupted) > 0 || signals::interrupted() {
        Err(Error::Interrupted)
    } else if let [one] = outcomes.as_slice()
        && one.result == Verdict::Failed
    {
        Err(Error::StepFailed {
            program: one.step.clone().unwrap_or_default(),
            status: one.exit_code.unwrap_or(1),
        })
    } else if count(Verdict::Failed) > 0 {
        Err(Error::HostsFailed(format!(
            "{} of {} hosts failed",
            count(Verdict::Failed),
            outcomes.len()
        )))
    } else {
        Ok(())
    }
}

fn run_all(job: &Job, parts: &[Part]) -> Vec<Outcome> {
    let started = Instant::now();
    // Checks first, all hosts at once: nothing is built unless every host passes.
    let checked: Vec<Result<(), Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .iter()
            .map(|p| s.spawn(|| Executor::new(&p.console).run(&p.plan.checks)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a check thread"))
            .collect()
    });
    if checked.iter().any(Result::is_err) {
        return parts
            .iter()
            .zip(checked)
            .map(|(part, result)| {
                let mut outcome = outcome(part, started, None);
                match result {
                    Ok(()) => outcome.result = Verdict::Skipped,
                    Err(failure) => {
                        part.console.say(&failure.error.to_string());
                        fail(&mut outcome, failure);
                    }
                }
                outcome
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(parts.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..job.parallel(parts.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(part) = parts.get(i) else { break };
                    let result = run_one(part);
                    outcomes.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    outcomes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|o| o.expect("every part ran"))
        .collect()
}

fn run_one(part: &Part) -> Outcome {
    let started = Instant::now();
    if signals::interrupted() {
        let mut skipped = outcome(part, started, None);
        skipped.result = Verdict::Skipped;
        return skipped;
    }
    let mut executor = Executor::new(&part.console);
    let result = executor.run(&part.plan.steps);
    executor.finish(&part.plan);
    let mut outcome = outcome(part, started, executor.system());
    if let Err(failure) = result {
        if let Error::Interrupted = failure.error {
            outcome.result = Verdict::Interrupted;
            outcome.step = Some(failure.step);
        } else {
            part.console.say(&failure.error.to_string());
            fail(&mut outcome, failure);
        }
    }
    outcome.tail = part.console.tail();
    outcome
}

fn outcome(part: &Part, started: Instant, system: Option<&str>) -> Outcome {
    Outcome {
        host: part.machine.host.to_string(),
        target: part.machine.target.as_ref().map(ToString::to_string),
        result: Verdict::Ok,
        step: None,
        exit_code: None,
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        system: system.map(str::to_owned),
        message: None,
        tail: Vec::new(),
    }
}

fn fail(outcome: &mut Outcome, failure: Failure) {
    outcome.result = Verdict::Failed;
    outcome.exit_code = Some(failure.error.status());
    outcome.message = Some(failure.error.to_string());
    outcome.step = Some(failure.step);
}

/// The table on stdout, or the JSON summary with `--json`.
fn summarize(job: &Job, outcomes: &[Outcome]) {
    if job.json {
        println!(
            "{}",
            serde_json::to_string_pretty(outcomes).expect("plain data")
        );
        return;
    }
    let width = outcomes
        .iter()
        .map(|o| o.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  {:40}  {:>7}  SYSTEM", "HOST", "RESULT", "TIME");
    for o in outcomes {
        let result = match (&o.result, &o.step, o.exit_code) {
            (Verdict::Failed, Some(step), Some(code)) => format!("failed at {step} (exit {code})"),
            (Verdict::Interrupted, Some(step), _) => format!("interrupted at {step}"),
            (verdict, _, _) => format!("{verdict:?}").to_lowercase(),
        };
        let system = o.system.as_deref().unwrap_or("");
        println!(
            "{:width$}  {result:40}  {:>6.1}s  {system}",
            o.host, o.seconds
        );
        if o.result == Verdict::Failed {
            for line in o.message.iter().chain(&o.tail) {
                println!("{:width$}  | {line}", "");
            }
        }
    }
}
