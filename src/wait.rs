//! Bounded waits for a host: cheap TCP probes of its ssh port while it is down, ssh tries
//! spaced so that a refused connection never spins, a deadline, and a timestamped line per
//! failed try. What each try's answer means is the verdicts'.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::console::{Console, Stream};
use crate::duration::Timeout;
use crate::error::Error;
use crate::names::Host;
use crate::process;
use crate::ssh::Ssh;
use crate::verdict::{self, Try};

/// How often the ssh port is probed with a plain TCP connect while the host is down.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// At most two ssh tries a second, so a refused connection never spins.
const TRY_EVERY: Duration = Duration::from_millis(500);
/// Without a port to probe (a proxy in between), ssh is tried once a second.
const TRY_EVERY_UNPROBED: Duration = Duration::from_secs(1);
/// While the port stays closed, a line this often shows the wait is alive.
const SAY_CLOSED_EVERY: Duration = Duration::from_secs(5);

/// What a wait is for: the host, how to find its address (`ssh -G`), its deadline.
pub struct For<'a> {
    pub console: &'a Console,
    pub host: &'a Host,
    pub resolve: &'a Cmd,
    pub timeout: Timeout,
    pub ssh: &'a Ssh,
}

/// Tries `attempt` (`cat boot_id` over a fresh connection that stays as the master) until
/// the host answers with a boot id other than `old`, which it returns. A connection that
/// answered with `old` is closed with `close`.
pub fn new_boot(w: &For, attempt: &Cmd, close: &Cmd, old: &str) -> Result<String, Error> {
    let mut wait = Wait::start(w)?;
    w.console.trace(attempt);
    loop {
        wait.until_try()?;
        let out = process::output(attempt)?;
        match verdict::new_boot(w.host, &out, old, w.ssh)? {
            Try::Done(id) => return Ok(id.unwrap_or_default()),
            Try::OldBoot => {
                wait.say(&format!("still on the old boot id {old}"));
                w.console.trace(close);
                process::output(close)?;
            }
            Try::NotYet(why) => wait.say(&why),
        }
    }
}

/// How long after its deadline a guard may take to put the recorded system back.
pub const GUARD_SLACK: Duration = Duration::from_secs(120);

/// Tries `state` (over a new connection) until the host's guard has ended, while the host
/// may refuse us all along (the new system cut us off until the old one is back). A host
/// that could not be told to roll back decides at its deadline: no try before `not_before`,
/// so that a host refusing us does not count a login refused twice a second (fail2ban).
pub fn guard(
    w: &For,
    state: &Cmd,
    not_before: Option<Instant>,
) -> Result<verdict::GuardState, Error> {
    let mut wait = Wait::start(w)?;
    if let Some(at) = not_before.filter(|at| *at > Instant::now()) {
        let secs = (at - Instant::now()).as_secs_f64();
        wait.say(&format!(
            "cannot be told to roll back: it does by itself at its deadline; next try in {secs:.0}s"
        ));
        wait.next_try = Some(at);
    }
    w.console.trace(state);
    loop {
        wait.until_try()?;
        let out = process::output(state)?;
        match verdict::guard_ended(&out) {
            Ok(ended) => return Ok(ended),
            Err(why) => wait.say(&why),
        }
    }
}

/// `ssh-wait`: tries `attempt` until ssh connects; the user's command talks to the
/// terminal, ssh's own failures are kept for the verdict.
pub fn ssh(w: &For, attempt: &Cmd) -> Result<(), Error> {
    let mut wait = Wait::start(w)?;
    w.console.trace(attempt);
    loop {
        wait.until_try()?;
        let mut child = process::command(attempt);
        w.console.attach(&mut child);
        child.stderr(Stdio::piped());
        let mut running = process::spawn(attempt, &mut child)?;
        let stdout = running.child().stdout.take();
        let stderr = running.child().stderr.take();
        let err = w.console.pump(stdout, stderr);
        let end = running.wait()?;
        process::not_interrupted()?;
        match verdict::ssh_wait(w.host, end, &err, w.ssh)? {
            Try::NotYet(why) => wait.say(&why),
            Try::Done(_) | Try::OldBoot => return Ok(()),
        }
    }
}

struct Wait<'a> {
    console: &'a Console,
    host: &'a Host,
    timeout: Timeout,
    address: Option<SocketAddr>,
    deadline: Option<Instant>,
    /// No ssh try before this.
    next_try: Option<Instant>,
    tries: u32,
    said_closed: Option<Instant>,
}

impl<'a> Wait<'a> {
    fn start(w: &For<'a>) -> Result<Wait<'a>, Error> {
        let out = process::reported(w.console, w.resolve)?;
        process::check(w.resolve, out.status)?;
        let target = verdict::probe_target(&String::from_utf8_lossy(&out.stdout));
        Ok(Wait {
            console: w.console,
            host: w.host,
            timeout: w.timeout,
            address: target.and_then(|t| t.to_socket_addrs().ok()?.next()),
            // A deadline past what an Instant holds is no deadline.
            deadline: w.timeout.0.and_then(|t| Instant::now().checked_add(t)),
            next_try: None,
            tries: 0,
            said_closed: None,
        })
    }

    /// Returns when it is time for the next ssh try: the port accepts (or cannot be probed)
    /// and the last try is far enough behind.
    fn until_try(&mut self) -> Result<(), Error> {
        let spacing = match self.address {
            Some(_) => TRY_EVERY,
            None => TRY_EVERY_UNPROBED,
        };
        loop {
            process::not_interrupted()?;
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout(format!(
                    "{} did not answer as expected within {} ({} ssh tries)",
                    self.host, self.timeout, self.tries
                )));
            }
            if let Some(next) = self.next_try.filter(|next| now < *next) {
                std::thread::sleep(PROBE_EVERY.min(next - now));
                continue;
            }
            if self.address.is_none_or(port_open) {
                self.next_try = Some(now + spacing);
                self.tries += 1;
                return Ok(());
            }
            if self.said_closed.is_none_or(|t| now >= t + SAY_CLOSED_EVERY) {
                self.said_closed = Some(now);
                let addr = self.address.map(|a| a.to_string()).unwrap_or_default();
                self.say(&format!("{addr} does not accept connections yet"));
            }
            std::thread::sleep(PROBE_EVERY);
        }
    }

    fn say(&self, what: &str) {
        let line = format!("[{}] {}: try {}: {what}", clock(), self.host, self.tries);
        self.console.line(Stream::Err, &line);
    }
}

fn port_open(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
