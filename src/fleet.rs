//! Running a job's hosts: the checks of every host before any build, then each host's plan,
//! a bounded number at a time. One host failing never stops or hides the others; a summary
//! (a table, or JSON with `--json`) ends a run of several hosts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::cmd::Cmd;
use crate::commands::Command;
use crate::console::Console;
use crate::error::Error;
use crate::exec::{Executor, Failure};
use crate::flake;
use crate::job::{Job, Machine};
use crate::plan::{Plan, Plans, Step};
use crate::process::{self, Started};
use crate::resolve::World;
use crate::signals;
use crate::summary::{self, HostResult, Outcome, Phase};

/// One host's part of a run.
struct Part<'a> {
    machine: &'a Machine,
    plan: &'a Plan,
    console: Console,
}

/// Runs every host's plan; with one host and no `--json`, its own error is the result.
pub fn run(job: &Job, world: &World, plans: &Plans) -> Result<(), Error> {
    let several = world.machines.len() > 1;
    let parts = world
        .machines
        .iter()
        .zip(&plans.hosts)
        .map(|(machine, plan)| {
            let console = Console::new(&machine.host, several, job.json, job.log_dir.as_deref())?;
            Ok(Part {
                machine,
                plan,
                console,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let executors: Vec<Mutex<Executor>> = parts
        .iter()
        .map(|p| Mutex::new(Executor::new(&p.console, &world.machine_id)))
        .collect();
    let run = Run {
        job,
        parts: &parts,
        executors: &executors,
        eval: plans.eval.as_ref(),
    };
    let mut outcomes = run.phases();
    run.finish();
    run.settle(&mut outcomes);
    if !job.json
        && let [one] = outcomes.as_mut_slice()
    {
        return match one.error.take() {
            Some(error) => Err(error),
            None => process::not_interrupted(),
        };
    }
    summary::print(job.json, &outcomes);
    summary::status(outcomes, signals::interrupted())
}

struct Run<'a> {
    job: &'a Job,
    parts: &'a [Part<'a>],
    executors: &'a [Mutex<Executor<'a>>],
    eval: Option<&'a Cmd>,
}

impl Run<'_> {
    /// The phases of a run. Every host is checked before any is built, and (with `--diff`)
    /// every host is built and compared before any is activated; within a phase hosts run
    /// `--jobs` at a time, and one failing stops only itself. A host's masters close as soon
    /// as its last phase ends, while other hosts still work.
    fn phases(&self) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = self.parts.iter().map(outcome).collect();
        let everyone: Vec<usize> = (0..self.parts.len()).collect();
        // A fleet's one evaluation starts alongside the checks: it only reads the flake,
        // and its result waits for every check to pass.
        let several = self.parts.len() > 1;
        let early = self.eval.filter(|_| several).map(|eval| {
            let plain = Console::plain();
            process::start(&plain, eval)
        });
        // Checks: all hosts at once, and nothing is built unless every host passes.
        let mut checked = self.phase(everyone.len(), &everyone, |p| &p.plan.checks, false, false);
        if self.job.command.activates_remotely() || self.job.command.day_two() {
            self.same_machines(&mut checked);
        }
        let passed = self.record(Phase::Check, checked, &everyone, &mut outcomes);
        if passed.len() < everyone.len() {
            if let Some(Ok(evaluation)) = early {
                evaluation.stop();
            }
            skip(&passed, &mut outcomes);
            return outcomes;
        }
        if let Err(error) = self.derivations(early) {
            self.evaluation_failed(error, &mut outcomes);
            return outcomes;
        }
        let mut ready = everyone;
        if self.parts.iter().any(|p| !p.plan.prepare.is_empty()) {
            let jobs = self.job.parallel(ready.len());
            let prepared = self.phase(jobs, &ready, |p| &p.plan.prepare, false, false);
            ready = self.record(Phase::Prepare, prepared, &ready, &mut outcomes);
            if let Err(error) = self.confirm(&ready) {
                for &i in &ready {
                    outcomes[i].skip(Phase::Confirm, "confirm".into(), error.clone());
                }
                return outcomes;
            }
        }
        self.deploy(&ready, &mut outcomes);
        outcomes
    }

    /// The hosts' steps: `--canary` hosts first, the others only if every canary came
    /// through; a rolling run stops at the first host that did not, and the rest are
    /// skipped.
    fn deploy(&self, ready: &[usize], outcomes: &mut [Outcome]) {
        let (canaries, rest) = ready.split_at(self.job.canary.min(ready.len()));
        for (group, waiting) in [(canaries, rest), (rest, &[][..])] {
            if group.is_empty() {
                continue;
            }
            let jobs = self.job.parallel(group.len());
            let halt = self.job.halts(jobs);
            let results = self.phase(jobs, group, |p| &p.plan.steps, true, halt);
            let through = self.record(Phase::Deploy, results, group, outcomes);
            if through.len() < group.len() {
                skip(waiting, outcomes);
                return;
            }
        }
    }

    /// What the summary shows of each host however the run ended: the system of a host
    /// that came through, its time to a tenth of a second.
    fn settle(&self, outcomes: &mut [Outcome]) {
        for (outcome, executor) in outcomes.iter_mut().zip(self.executors) {
            if outcome.result == HostResult::Ok {
                let executor = lock(executor);
                outcome.system = executor.system().map(str::to_owned);
                let listed = matches!(self.job.command, Command::Generations | Command::Gc);
                let listing = executor.generations().filter(|_| listed);
                outcome.generations = listing.map(|l| l.generations.clone());
            }
            outcome.seconds = (outcome.seconds * 10.0).round() / 10.0;
        }
    }

    /// Runs `steps` of the hosts `which`, `jobs` at a time, timing each; with `last`, each
    /// host's activation is settled (its guard) and its masters close as soon as it is done.
    /// Hosts not started before Ctrl-C, or after a failure when it `halt`s, stay `None`.
    fn phase(
        &self,
        jobs: usize,
        which: &[usize],
        steps: for<'p> fn(&'p Part<'p>) -> &'p Vec<Step>,
        last: bool,
        halt: bool,
    ) -> Vec<Option<(f64, Result<(), Failure>)>> {
        let next = AtomicUsize::new(0);
        let halted = AtomicBool::new(false);
        let results = Mutex::new((0..self.parts.len()).map(|_| None).collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..jobs.max(1) {
                s.spawn(|| {
                    while let Some(&i) = which.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if signals::interrupted() || halted.load(Ordering::SeqCst) {
                            break;
                        }
                        let started = Instant::now();
                        let mut executor = lock(&self.executors[i]);
                        let mut result = executor.run(steps(&self.parts[i]));
                        if last {
                            result = executor.settle(self.parts[i].plan, result);
                            executor.finish(self.parts[i].plan);
                        }
                        halted.fetch_or(halt && result.is_err(), Ordering::SeqCst);
                        lock(&results)[i] = Some((started.elapsed().as_secs_f64(), result));
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a phase's results into the outcomes of the hosts `which`; returns the hosts
    /// that came through it.
    fn record(
        &self,
        phase: Phase,
        results: Vec<Option<(f64, Result<(), Failure>)>>,
        which: &[usize],
        outcomes: &mut [Outcome],
    ) -> Vec<usize> {
        // With one host and no summary, main says why it failed; otherwise the host's own
        // lines do.
        let say = self.parts.len() > 1 || self.job.json;
        for (i, result) in results.into_iter().enumerate() {
            let outcome = &mut outcomes[i];
            match result {
                None if which.contains(&i) => outcome.result = HostResult::Skipped,
                None => {}
                Some((seconds, result)) => {
                    outcome.seconds += seconds;
                    let Err(failure) = result else { continue };
                    if say && !matches!(failure.error, Error::Interrupted) {
                        self.parts[i].console.say(&failure.error.to_string());
                    }
                    outcome.stop(phase, failure.step, failure.error);
                    outcome.tail = self.parts[i].console.tail();
                }
            }
        }
        let through = |&i: &usize| outcomes[i].result == HostResult::Ok;
        which.iter().copied().filter(through).collect()
    }

    /// The derivations of the hosts whose plans build one (`Plan::drv_of`), all from one
    /// `nix eval`: `started` alongside the checks (a fleet's), or started now.
    fn derivations(&self, started: Option<Result<Started, Error>>) -> Result<(), Error> {
        let Some(eval) = self.eval else {
            return Ok(());
        };
        let wanted = self.parts.iter().filter(|p| p.plan.drv_of.is_some());
        let plain = Console::plain();
        let console = match self.parts {
            [one] => &one.console,
            _ => &plain,
        };
        let started = started.unwrap_or_else(|| process::start(console, eval))?;
        let out = started.finish(console)?;
        // Named for what failed: not a host's step, the one evaluation of them all.
        process::check(eval, out.status).map_err(|e| match e {
            Error::StepFailed { status, .. } => Error::StepFailed {
                program: "nix eval".into(),
                status,
            },
            e => e,
        })?;
        let drvs = flake::parse_drvs(&out.stdout, wanted.clone().count())?;
        let wanting = self.parts.iter().zip(self.executors);
        let wanting = wanting.filter(|(p, _)| p.plan.drv_of.is_some());
        for ((_, executor), drv) in wanting.zip(drvs) {
            lock(executor).learn_drv(drv);
        }
        Ok(())
    }

    /// The one evaluation failed: every host stops there, with its error.
    fn evaluation_failed(&self, error: Error, outcomes: &mut [Outcome]) {
        if self.parts.len() > 1 && !matches!(error, Error::Interrupted) {
            Console::plain().say(&format!("the evaluation of every host failed: {error}"));
        }
        for outcome in outcomes.iter_mut() {
            outcome.stop(Phase::Evaluate, "evaluate".into(), error.clone());
        }
    }

    /// With `--confirm`: asks once, after every host's changes were shown, whether to
    /// activate.
    fn confirm(&self, ready: &[usize]) -> Result<(), Error> {
        if !self.job.confirm || ready.is_empty() || signals::interrupted() {
            return Ok(());
        }
        let hosts: Vec<String> = ready
            .iter()
            .map(|&i| self.parts[i].machine.host.to_string())
            .collect();
        eprint!("flakem: activate on {}? [y/N] ", hosts.join(", "));
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        match answer.trim().to_lowercase().as_str() {
            "y" | "yes" => Ok(()),
            _ => Err(Error::Declined),
        }
    }

    /// Fails the checks of hosts that turned out to be one machine (the same
    /// /etc/machine-id under two names): two deploys to it at once would race.
    fn same_machines(&self, checked: &mut [Option<(f64, Result<(), Failure>)>]) {
        let ids: Vec<Option<String>> = self
            .parts
            .iter()
            .zip(self.executors)
            .map(|(p, e)| lock(e).machine_id(&p.machine.host).map(str::to_owned))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            let twins: Vec<&str> = (0..self.parts.len())
                .filter(|&j| j != i && ids[j].as_ref() == Some(id))
                .map(|j| self.parts[j].machine.host.as_str())
                .collect();
            if let (false, Some((_, result))) = (twins.is_empty(), &mut checked[i]) {
                *result = Err(Failure {
                    step: "check".into(),
                    error: Error::Check(format!(
                        "{} is the same machine as {} (same /etc/machine-id): deploy it once",
                        self.parts[i].machine.host,
                        twins.join(", ")
                    )),
                });
            }
        }
    }

    /// Closes every control master still open (hosts that failed a check, were skipped or
    /// interrupted), all hosts at once and after Ctrl-C too.
    fn finish(&self) {
        std::thread::scope(|s| {
            for (part, executor) in self.parts.iter().zip(self.executors) {
                s.spawn(move || lock(executor).finish(part.plan));
            }
        });
    }
}

fn outcome(part: &Part) -> Outcome {
    let target = part.machine.target.as_ref().map(ToString::to_string);
    Outcome::new(part.machine.host.to_string(), target)
}

/// The hosts that passed while others did not are skipped.
fn skip(passed: &[usize], outcomes: &mut [Outcome]) {
    for &i in passed {
        outcomes[i].result = HostResult::Skipped;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
