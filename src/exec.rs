//! The executor: prints each step's processes (`+ ...` on stderr) and runs them, stopping at
//! the first failure with that step's status. It spawns and waits; what a result means it
//! asks the verdicts, and it decides nothing the plan did not say.

use std::io::{Read, Write};
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use crate::cmd::{Cmd, Value};
use crate::console::{Console, Stream};
use crate::duration::Timeout;
use crate::error::Error;
use crate::guard::Guard;
use crate::names::Host;
use crate::password;
use crate::plan::{Plan, Step};
use crate::process;
use crate::ssh::Ssh;
use crate::sudo::Sudo;
use crate::verdict;
use crate::wait;

mod day_two;

/// What the steps of a plan learn as they go.
#[derive(Default)]
struct Learnt {
    boot_id: Option<String>,
    system: Option<String>,
    new_boot_id: Option<String>,
    drv: Option<String>,
    /// Each checked host's /etc/machine-id, as its check printed it.
    machine_ids: Vec<(Host, String)>,
    /// Whether a guard was armed on the host: it must be confirmed or seen to roll back.
    armed: bool,
    /// When the steps of a guarded activation ended: the host's deadline counts from about
    /// then.
    activation_ended: Option<Instant>,
    /// What the host ran before the activation, as the guard or a reset recorded it.
    recorded: Option<verdict::Recorded>,
    /// What the day-two steps learnt of the host's generations.
    day_two: day_two::Learnt,
}

/// Runs one host's plan, printing through its console.
pub struct Executor<'a> {
    console: &'a Console,
    /// This machine's /etc/machine-id: the machine flakem never reboots.
    here: &'a str,
    learnt: Learnt,
    started: Instant,
    /// Whether `finish` ran: it closes each master once.
    finished: bool,
}

/// The step a plan stopped at, and why.
#[derive(Debug)]
pub struct Failure {
    pub step: String,
    pub error: Error,
}

impl<'a> Executor<'a> {
    pub fn new(console: &'a Console, here: &'a str) -> Executor<'a> {
        Executor {
            console,
            here,
            learnt: Learnt::default(),
            started: Instant::now(),
            finished: false,
        }
    }

    /// The host's `<drv>`, from the one evaluation for all hosts.
    pub fn learn_drv(&mut self, drv: String) {
        self.learnt.drv = Some(drv);
    }

    /// Runs `steps` in order, stopping at the first that fails.
    pub fn run(&mut self, steps: &[Step]) -> Result<(), Failure> {
        steps.iter().try_for_each(|step| {
            self.step(step).map_err(|error| Failure {
                step: step.name(),
                error,
            })
        })
    }

    /// Closes the control masters a plan may have left open; after Ctrl-C too.
    pub fn finish(&mut self, plan: &Plan) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        for step in &plan.finally {
            if let Step::CloseMaster { socket, cmd } = step
                && socket.exists()
            {
                // Not registered with the signal handler: after Ctrl-C, this must still run.
                self.console.trace(cmd);
                process::command(cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .ok();
            }
        }
    }

    /// `host`'s machine id, once its check read it.
    pub fn machine_id(&self, host: &Host) -> Option<&str> {
        self.learnt
            .machine_ids
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, id)| id.as_str())
    }

    /// The system the host runs after the plan, when a step read it.
    pub fn system(&self) -> Option<&str> {
        self.learnt.system.as_deref()
    }

    /// `step` with the values learnt so far in place of their placeholders.
    fn resolved(&self, step: &Step) -> Step {
        let recorded = self.learnt.recorded.as_ref();
        let values = [
            (Value::Drv, self.learnt.drv.as_deref()),
            (Value::System, self.learnt.system.as_deref()),
            (Value::Recorded, recorded.map(|r| r.system.as_str())),
            (Value::RecordedLink, recorded.map(|r| r.generation.as_str())),
            (Value::Generation, self.learnt.day_two.generation.as_deref()),
            (Value::Generations, self.learnt.day_two.doomed.as_deref()),
        ];
        let mut step = step.clone();
        for (value, learnt) in values {
            if let Some(learnt) = learnt {
                step.fill(value, learnt);
            }
        }
        step
    }

    fn step(&mut self, step: &Step) -> Result<(), Error> {
        let console = self.console;
        match &self.resolved(step) {
            Step::Build(cmd) => self.build(cmd),
            Step::Run(cmd) => {
                console.trace(cmd);
                let end = self.streamed(cmd)?;
                process::check(cmd, end)
            }
            Step::Copy {
                host,
                cmd,
                fallback,
            } => self.copy(host, cmd, fallback.as_ref()),
            Step::Pipe { from, to } => self.pipe(from, to),
            Step::Note(note) => {
                console.say(note);
                Ok(())
            }
            Step::CheckHost {
                host,
                sudo,
                reboots,
                cmd,
                ssh,
            } => self.check_host(host, *sudo, *reboots, cmd, ssh),
            Step::ReadBootState { host, cmd } => {
                let state = verdict::boot_state(host, &self.read(cmd)?, self.here)?;
                self.learnt.boot_id = Some(state.boot_id);
                self.learnt.system = Some(state.system);
                Ok(())
            }
            Step::ReadSystem(cmd) => {
                self.learnt.system = verdict::read_system(&self.read(cmd)?);
                Ok(())
            }
            Step::Reboot(cmd) => {
                console.trace(cmd);
                let end = self.streamed(cmd)?;
                process::not_interrupted()?;
                verdict::reboot(cmd.program(), end)
            }
            Step::CloseMaster { cmd, .. } => process::traced(console, cmd).map(drop),
            Step::WaitForNewBoot { .. } => self.new_boot(step),
            Step::VerifyBooted(cmd) => {
                verdict::booted(&self.read(cmd)?, self.system().unwrap_or(""))
            }
            Step::WaitForSsh {
                host,
                resolve,
                attempt,
                timeout,
                ssh,
            } => wait::ssh(&self.wait_for(host, resolve, *timeout, ssh), attempt),
            Step::Report { host } => {
                self.report(host);
                Ok(())
            }
            Step::ArmGuard { host, cmd, .. } => self.arm(host, cmd),
            Step::RecordSystem { host, cmd } => {
                self.learnt.recorded = Some(verdict::recorded(host, &self.read(cmd)?)?);
                Ok(())
            }
            Step::ConfirmBoot {
                host,
                health_checks,
                boot_back,
            } => self.confirm_boot(host, health_checks, boot_back),
            Step::DayTwo(act) => self.day_two(act),
        }
    }

    /// Waits for the host to answer with a new boot id; one that never does gets the
    /// name of what to boot by hand.
    fn new_boot(&mut self, step: &Step) -> Result<(), Error> {
        let Step::WaitForNewBoot {
            host,
            resolve,
            attempt,
            close,
            timeout,
            ssh,
        } = step
        else {
            return Ok(());
        };
        let w = self.wait_for(host, resolve, *timeout, ssh);
        let old = self.learnt.boot_id.as_deref().unwrap_or_default();
        let recorded = self.learnt.recorded.as_ref();
        let new = wait::new_boot(&w, attempt, close, old)
            .map_err(|e| verdict::never_came_back(e, recorded))?;
        self.learnt.new_boot_id = Some(new);
        Ok(())
    }

    fn check_host(
        &mut self,
        host: &Host,
        sudo: Sudo,
        reboots: bool,
        cmd: &Cmd,
        ssh: &Ssh,
    ) -> Result<(), Error> {
        let out = process::reported(self.console, cmd)?;
        let id = verdict::host_check(host, sudo, reboots, &out, ssh, self.here)?;
        let learnt = id.map(|id| (host.clone(), id));
        self.learnt.machine_ids.extend(learnt);
        Ok(())
    }

    fn arm(&mut self, host: &Host, cmd: &Cmd) -> Result<(), Error> {
        let out = process::reported(self.console, cmd)?;
        process::not_interrupted()?;
        self.learnt.recorded = Some(verdict::armed(host, &out)?);
        self.learnt.armed = true;
        Ok(())
    }

    /// Each health check of a reset's new boot; should one fail, the host boots back into
    /// the recorded system, proven like any reboot, and the plan ends with exit 6.
    fn confirm_boot(
        &mut self,
        host: &Host,
        checks: &[Cmd],
        boot_back: &[Step],
    ) -> Result<(), Error> {
        for check in checks {
            let out = process::reported(self.console, check)?;
            process::not_interrupted()?;
            if out.status.success() {
                continue;
            }
            let why = format!("--health-check {}", verdict::not_confirmed(&out));
            self.console.say(&format!(
                "{host}'s new boot was not confirmed ({why}): booting it back into the system \
                 it ran"
            ));
            for step in boot_back {
                self.step(step)?;
            }
            return Err(Error::RolledBack {
                host: host.to_string(),
                why,
                running: self.system().unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }

    /// After the steps of a plan that armed a guard: confirm the activation over new
    /// connections, or have the host put back the system it ran and prove it did.
    pub fn settle(&mut self, plan: &Plan, result: Result<(), Failure>) -> Result<(), Failure> {
        let (Some(guard), true) = (&plan.guard, self.learnt.armed) else {
            return result;
        };
        self.learnt.activation_ended = Some(Instant::now());
        let (step, settled) = match result {
            Ok(()) => ("confirm".to_owned(), self.confirm(guard)),
            Err(f) if matches!(f.error, Error::Interrupted) => {
                self.console.say(&format!(
                    "{}'s guard puts back the system it ran {}s after the activation ends",
                    guard.host,
                    guard.timeout.as_secs()
                ));
                return Err(f);
            }
            Err(f) => {
                let why = f.error.to_string();
                (f.step, self.put_back(guard, &why, Some(f.error)))
            }
        };
        settled.map_err(|error| Failure { step, error })
    }

    /// Each health check, then the confirmation, each over a new connection; the guard
    /// is removed once confirmed.
    fn confirm(&mut self, guard: &Guard) -> Result<(), Error> {
        for check in &guard.health_checks {
            let out = process::reported(self.console, check)?;
            process::not_interrupted()?;
            if !out.status.success() {
                let why = format!("--health-check {}", verdict::not_confirmed(&out));
                return self.put_back(guard, &why, None);
            }
        }
        let out = process::reported(self.console, &guard.confirm)?;
        match verdict::confirmation(&out) {
            Ok(true) => verdict::removed(&guard.host, &out),
            Ok(false) => self.put_back(guard, "its deadline came before the confirmation", None),
            Err(why) => self.put_back(guard, &format!("not confirmed: {why}"), None),
        }
    }

    /// Has the host put back the recorded system (at once where it can be told; else at
    /// its deadline, by itself), waits until it says it did, and removes the guard.
    fn put_back(&mut self, guard: &Guard, why: &str, failure: Option<Error>) -> Result<(), Error> {
        let told = process::reported(self.console, &guard.roll_back)?
            .status
            .success();
        let deadline = self.learnt.activation_ended.map(|t| t + guard.timeout);
        let slack = guard.timeout + wait::GUARD_SLACK;
        let w = self.wait_for(
            &guard.host,
            &guard.resolve,
            Timeout(Some(slack)),
            &guard.ssh,
        );
        let not_before = deadline.filter(|_| !told);
        let state = wait::guard(&w, &guard.state, not_before).map_err(|e| match e {
            Error::Timeout(e) => Error::CameBackWrong(format!(
                "cannot tell whether {} put back the system it ran: {e}",
                guard.host
            )),
            e => e,
        })?;
        self.remove(guard)?;
        self.learnt.system = Some(state.running.clone());
        let recorded = self.learnt.recorded.as_ref().map(|r| r.system.as_str());
        verdict::put_back(
            &guard.host,
            &state,
            recorded.unwrap_or_default(),
            why,
            failure,
        )
    }

    fn remove(&self, guard: &Guard) -> Result<(), Error> {
        let out = process::reported(self.console, &guard.remove)?;
        verdict::removed(&guard.host, &out)
    }

    fn wait_for<'w>(
        &'w self,
        host: &'w Host,
        resolve: &'w Cmd,
        timeout: Timeout,
        ssh: &'w Ssh,
    ) -> wait::For<'w> {
        wait::For {
            console: self.console,
            host,
            resolve,
            timeout,
            ssh,
        }
    }

    /// The closing line of a reset.
    fn report(&self, host: &Host) {
        self.console.say(&format!(
            "{host} rebooted from boot id {} to {}, running {}, in {:.1}s",
            self.learnt.boot_id.as_deref().unwrap_or("?"),
            self.learnt.new_boot_id.as_deref().unwrap_or("?"),
            self.learnt.system.as_deref().unwrap_or("?"),
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// Runs a remote read of flakem's own: its stdout, once it succeeded.
    fn read(&self, cmd: &Cmd) -> Result<String, Error> {
        let out = process::reported(self.console, cmd)?;
        process::check(cmd, out.status)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A build whose stdout flakem reads for the built system; its stderr the user sees.
    fn build(&mut self, cmd: &Cmd) -> Result<(), Error> {
        let text = self.captured(cmd)?;
        self.learnt.system = Some(verdict::built_system(cmd.program(), &text)?);
        Ok(())
    }

    /// Runs `cmd` and returns its stdout once it succeeded; its stderr the user sees.
    fn captured(&self, cmd: &Cmd) -> Result<String, Error> {
        let console = self.console;
        console.trace(cmd);
        let mut child = process::command(cmd);
        console.attach(&mut child);
        child.stdout(Stdio::piped());
        let mut running = process::spawn(cmd, &mut child)?;
        let stdout = running.child().stdout.take();
        let stderr = running.child().stderr.take();
        let mut text = String::new();
        std::thread::scope(|s| {
            s.spawn(|| console.pump(None::<std::process::ChildStdout>, stderr));
            if let Some(mut out) = stdout {
                out.read_to_string(&mut text).ok();
            }
        });
        process::check(cmd, running.wait()?)?;
        Ok(text)
    }

    /// `nix copy`, and its fallback should it fail.
    fn copy(&self, host: &Host, cmd: &Cmd, fallback: Option<&Cmd>) -> Result<(), Error> {
        self.console.trace(cmd);
        let mut end = self.streamed(cmd)?;
        if let (false, Some(fallback)) = (end.success(), fallback) {
            process::not_interrupted()?;
            self.console
                .say("that failed; trying the plain ssh:// store instead");
            self.console.trace(fallback);
            end = self.streamed(fallback)?;
        }
        process::not_interrupted()?;
        verdict::copy(host, cmd.program(), end)
    }

    /// `from`'s output into `to`, never through a file or a log line. Held in memory until
    /// it is known to be whole: a failed decryption must not replace the host's key with
    /// nothing.
    fn pipe(&self, from: &Cmd, to: &Cmd) -> Result<(), Error> {
        self.console.line(Stream::Err, &format!("+ {from} | {to}"));
        let mut producer = process::command(from);
        producer.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut running = process::spawn(from, &mut producer)?;
        let mut secret = Vec::new();
        if let Some(mut out) = running.child().stdout.take() {
            out.read_to_end(&mut secret)?;
        }
        let decrypted = process::check(from, running.wait()?);
        let result = decrypted.and_then(|()| match secret.is_empty() {
            true => Err(Error::Check(format!(
                "`{}` gave an empty key",
                from.program()
            ))),
            false => self.feed(to, &secret),
        });
        secret.fill(0);
        result
    }

    /// Runs `cmd` with `input` on its stdin.
    /// A command fed the sudo password gets it first, as its first line.
    fn feed(&self, cmd: &Cmd, input: &[u8]) -> Result<(), Error> {
        // Started unfed: the password goes on the same stdin as `input`, just before it.
        let unfed = Cmd {
            sudo_password: false,
            ..cmd.clone()
        };
        let mut consumer = process::command(&unfed);
        consumer.stdin(Stdio::piped());
        let mut running = process::spawn(&unfed, &mut consumer)?;
        if let Some(mut stdin) = running.child().stdin.take() {
            if cmd.sudo_password {
                password::feed(&mut stdin)?;
            }
            stdin.write_all(input)?;
        }
        process::check(cmd, running.wait()?)
    }

    /// Runs `cmd` with its output shown through the console.
    fn streamed(&self, cmd: &Cmd) -> Result<ExitStatus, Error> {
        let mut child = process::command(cmd);
        self.console.attach(&mut child);
        if cmd.program() == "ssh" {
            // flakem's own remote commands read nothing, and must not eat what the user types.
            child.stdin(Stdio::null());
        }
        let mut running = process::spawn(cmd, &mut child)?;
        let stdout = running.child().stdout.take();
        let stderr = running.child().stderr.take();
        self.console.pump(stdout, stderr);
        Ok(running.wait()?)
    }
}
