//! Running a job's hosts: the checks of every host before any build, then each host's plan,
//! a bounded number at a time. One host failing never stops or hides the others; a summary
//! (a table, or JSON with `--json`) ends a run of several hosts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use std::fmt::Write;

use crate::console::{self, Console};
use crate::error::Error;
use crate::exec::{Executor, Failure};
use crate::flake;
use crate::job::{Job, Machine};
use crate::plan::{Cmd, Plan};
use crate::signals;

/// One host's part of a run.
pub struct Part {
    pub machine: Machine,
    pub plan: Plan,
    pub console: Console,
}

impl Part {
    fn executor(&self) -> Executor<'_> {
        Executor::new(&self.console)
    }
}

/// Evaluates the derivations of the parts whose plans build one (`Plan::drv_of`), all in
/// one `nix eval`, once every host passed its checks. `eval` is that evaluation.
fn derivations(
    eval: Option<&Cmd>,
    parts: &[Part],
    console: &Console,
) -> Result<Vec<Option<String>>, Error> {
    let Some(eval) = eval else {
        return Ok(parts.iter().map(|_| None).collect());
    };
    let wanted = parts.iter().filter(|p| p.plan.drv_of.is_some()).count();
    let mut drvs = flake::read_drvs(eval, console, wanted)?.into_iter();
    Ok(parts
        .iter()
        .map(|p| p.plan.drv_of.as_ref().and_then(|_| drvs.next()))
        .collect())
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
    /// Why it failed or stopped; with one host and no `--json`, flakem's own result.
    #[serde(skip)]
    pub error: Option<Error>,
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
/// `eval` evaluates the derivations the plans build by hand, if any do.
pub fn run(job: &Job, parts: &[Part], eval: Option<&Cmd>) -> Result<(), Error> {
    let mut outcomes = run_all(job, parts, eval);
    if !job.json
        && let [one] = outcomes.as_mut_slice()
    {
        return match one.error.take() {
            Some(error) => Err(error),
            None if signals::interrupted() => Err(Error::Interrupted),
            None => Ok(()),
        };
    }
    summarize(job, &outcomes);
    let count = |v| outcomes.iter().filter(|o| o.result == v).count();
    let at = |step: &str| outcomes.iter().any(|o| o.step.as_deref() == Some(step));
    if at("check") {
        Err(Error::Check(format!(
            "checks failed for {} of {} hosts; nothing was built",
            count(Verdict::Failed),
            outcomes.len()
        )))
    } else if at("confirm") {
        Err(Error::Declined)
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

/// With `--confirm`: asks once, after every host's changes were shown, whether to activate.
fn confirm(job: &Job, parts: &[Part], ready: &[usize]) -> Result<(), Error> {
    if !job.confirm || ready.is_empty() || signals::interrupted() {
        return Ok(());
    }
    let hosts: Vec<String> = ready
        .iter()
        .map(|&i| parts[i].machine.host.to_string())
        .collect();
    eprint!("flakem: activate on {}? [y/N] ", hosts.join(", "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim().to_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Declined),
    }
}

/// Runs the phases, then closes every control master still open (hosts that failed a check,
/// were skipped or interrupted), all hosts at once and after Ctrl-C too.
fn run_all(job: &Job, parts: &[Part], eval: Option<&Cmd>) -> Vec<Outcome> {
    let executors: Vec<Mutex<Executor>> = parts.iter().map(|p| Mutex::new(p.executor())).collect();
    let outcomes = phases(job, parts, eval, &executors);
    std::thread::scope(|s| {
        for (part, executor) in parts.iter().zip(&executors) {
            s.spawn(move || lock(executor).finish(&part.plan));
        }
    });
    outcomes
}

/// The phases of a run of several hosts. Every host is checked before any is built, and
/// (with `--diff`) every host is built and compared before any is activated; within a phase
/// hosts run `--jobs` at a time, and one failing stops only itself. A host's masters close as
/// soon as its last phase ends, while other hosts still work.
fn phases(
    job: &Job,
    parts: &[Part],
    eval: Option<&Cmd>,
    executors: &[Mutex<Executor>],
) -> Vec<Outcome> {
    // With one host and no summary, main says why it failed; otherwise the host's own lines do.
    let say = parts.len() > 1 || job.json;
    let fail = |part: &Part, outcome: &mut Outcome, failure: Failure| {
        if say {
            part.console.say(&failure.error.to_string());
        }
        fail(part, outcome, failure);
    };
    let mut outcomes: Vec<Outcome> = parts.iter().map(|p| outcome(p, None)).collect();
    let everyone: Vec<usize> = (0..parts.len()).collect();
    // Checks: all hosts at once, and nothing is built unless every host passes.
    let mut checked = phase(parts.len(), &everyone, |i| {
        lock(&executors[i]).run(&parts[i].plan.checks)
    });
    if job.command.activates_remotely() {
        same_machines(parts, executors, &mut checked);
    }
    if checked.iter().any(|r| matches!(r, Some(Err(_)))) {
        for (i, result) in checked.into_iter().enumerate() {
            match result {
                Some(Err(failure)) => fail(&parts[i], &mut outcomes[i], failure),
                _ => outcomes[i].result = Verdict::Skipped,
            }
        }
        return outcomes;
    }
    let plain = Console::plain();
    let console = match parts {
        [one] => &one.console,
        _ => &plain,
    };
    match derivations(eval, parts, console) {
        Ok(drvs) => {
            for (executor, drv) in executors.iter().zip(drvs) {
                drv.into_iter()
                    .for_each(|drv| lock(executor).learn_drv(drv));
            }
        }
        Err(error) => {
            let message = error.to_string();
            for (part, outcome) in parts.iter().zip(&mut outcomes) {
                let error = Error::Check(message.clone());
                fail(
                    part,
                    outcome,
                    Failure {
                        step: "evaluate".into(),
                        error,
                    },
                );
            }
            return outcomes;
        }
    }
    let mut ready = everyone;
    for (n, steps) in [
        (|p: &Part| &p.plan.prepare) as fn(&Part) -> &Vec<crate::plan::Step>,
        |p: &Part| &p.plan.steps,
    ]
    .into_iter()
    .enumerate()
    {
        let preparing = n == 0;
        if steps(&parts[0]).is_empty() {
            continue;
        }
        let results = phase(job.parallel(ready.len()), &ready, |i| {
            let started = Instant::now();
            let mut executor = lock(&executors[i]);
            let result = executor.run(steps(&parts[i]));
            if !preparing {
                executor.finish(&parts[i].plan);
            }
            (started.elapsed().as_secs_f64(), result)
        });
        for (i, result) in results.into_iter().enumerate() {
            let outcome = &mut outcomes[i];
            match result {
                None if ready.contains(&i) => outcome.result = Verdict::Skipped,
                None => {}
                Some((seconds, result)) => {
                    outcome.seconds += seconds;
                    match result {
                        Ok(()) => {}
                        Err(f) if matches!(f.error, Error::Interrupted) => {
                            outcome.result = Verdict::Interrupted;
                            outcome.step = Some(f.step);
                            outcome.error = Some(f.error);
                        }
                        Err(failure) => fail(&parts[i], outcome, failure),
                    }
                }
            }
        }
        ready.retain(|&i| outcomes[i].result == Verdict::Ok);
        if preparing && let Err(error) = confirm(job, parts, &ready) {
            let message = error.to_string();
            for &i in &ready {
                outcomes[i].result = Verdict::Skipped;
                outcomes[i].step = Some("confirm".into());
                outcomes[i].error = Some(match error {
                    Error::Declined => Error::Declined,
                    _ => Error::Io(message.clone()),
                });
            }
            return outcomes;
        }
    }
    for (i, outcome) in outcomes.iter_mut().enumerate() {
        let executor = lock(&executors[i]);
        outcome.system = executor.system().map(str::to_owned);
        outcome.seconds = (outcome.seconds * 10.0).round() / 10.0;
        if outcome.result != Verdict::Ok {
            outcome.system = None;
        }
    }
    outcomes
}

/// Fails the checks of hosts that turned out to be one machine (the same /etc/machine-id
/// under two names): two deploys to it at once would race.
fn same_machines(
    parts: &[Part],
    executors: &[Mutex<Executor>],
    checked: &mut [Option<Result<(), Failure>>],
) {
    let ids: Vec<Option<String>> = parts
        .iter()
        .zip(executors)
        .map(|(p, e)| lock(e).machine_id(&p.machine.host).map(str::to_owned))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let twins: Vec<&str> = (0..parts.len())
            .filter(|&j| j != i && ids[j].as_ref() == Some(id))
            .map(|j| parts[j].machine.host.as_str())
            .collect();
        if !twins.is_empty() {
            checked[i] = Some(Err(Failure {
                step: "check".into(),
                error: Error::Check(format!(
                    "{} is the same machine as {} (same /etc/machine-id): deploy it once",
                    parts[i].machine.host,
                    twins.join(", ")
                )),
            }));
        }
    }
}

/// Runs `work` for the hosts `which`, `jobs` at a time; hosts not started before Ctrl-C
/// stay `None`.
fn phase<T: Send>(
    jobs: usize,
    which: &[usize],
    work: impl Fn(usize) -> T + Sync,
) -> Vec<Option<T>> {
    let next = AtomicUsize::new(0);
    let size = which.iter().max().map_or(0, |m| m + 1);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..size).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while let Some(&i) = which.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if signals::interrupted() {
                        break;
                    }
                    let result = work(i);
                    lock(&results)[i] = Some(result);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn outcome(part: &Part, system: Option<&str>) -> Outcome {
    Outcome {
        host: part.machine.host.to_string(),
        target: part.machine.target.as_ref().map(ToString::to_string),
        result: Verdict::Ok,
        step: None,
        exit_code: None,
        seconds: 0.0,
        system: system.map(str::to_owned),
        error: None,
        tail: Vec::new(),
    }
}

/// Marks `outcome` failed at `failure`'s step.
fn fail(part: &Part, outcome: &mut Outcome, failure: Failure) {
    outcome.result = Verdict::Failed;
    outcome.exit_code = Some(failure.error.status());
    outcome.step = Some(failure.step);
    outcome.error = Some(failure.error);
    outcome.tail = part.console.tail();
}

/// The table on stdout, or the JSON summary with `--json`.
fn summarize(job: &Job, outcomes: &[Outcome]) {
    if job.json {
        let json = serde_json::to_string_pretty(outcomes).expect("plain data");
        console::print_stdout(&format!("{json}\n"));
        return;
    }
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
            (Verdict::Failed, Some(step), Some(code)) => format!("failed at {step} (exit {code})"),
            (Verdict::Interrupted, Some(step), _) => format!("interrupted at {step}"),
            (verdict, _, _) => format!("{verdict:?}").to_lowercase(),
        };
        let system = o.system.as_deref().unwrap_or("");
        writeln!(
            out,
            "{:width$}  {result:40}  {:>6.1}s  {system}",
            o.host, o.seconds
        )
        .ok();
        if o.result == Verdict::Failed {
            let message = o.error.as_ref().map(ToString::to_string);
            for line in message.iter().chain(&o.tail) {
                writeln!(out, "{:width$}  | {line}", "").ok();
            }
        }
    }
    console::print_stdout(&out);
}
