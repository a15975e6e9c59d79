//! The guard benchmark (issue 12): how long a host whose new system locks every login out
//! takes to run the recorded system again, and whether good guarded deploys are ever rolled
//! back, on the test bed. It writes benches/results/guard.json and the `guard-*` parts of
//! BENCHMARKS.md, which says how each figure is measured. `cargo bench --bench guard` as
//! root; `FLAKEM_BENCH_LOCKOUTS=N` (5) and `FLAKEM_BENCH_GOOD_DEPLOYS=N` (20) for a quick try.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

// Only part of what the benchmarks share is used here.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use std::ffi::OsString;
use std::fs;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use common::{Stats, Table, Timed, env_count, millis, yes_no};
use testbed::{Host, TestBed};

const HOST: &str = "web1";
const LOCKOUTS: usize = 5;
const GOOD_DEPLOYS: usize = 20;
/// `--rollback-timeout` of the lock-outs and of the good deploys.
const LOCKOUT_TIMEOUT: Duration = Duration::from_secs(5);
const GOOD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long past a good deploy's timeout the host is still watched for a rollback: more
/// than the guard takes past its timeout to put a system back (its one-second polls, then
/// the rollback itself), which the lock-outs measure.
const MARGIN: Duration = Duration::from_secs(3);
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How often the watch reads the host's state, and the longest it may watch one deploy.
const WATCH_EVERY: Duration = Duration::from_millis(1);
const WATCH_DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    if !common::benchmarking("guard") {
        return;
    }
    let lockouts = env_count("FLAKEM_BENCH_LOCKOUTS", LOCKOUTS);
    let goods = env_count("FLAKEM_BENCH_GOOD_DEPLOYS", GOOD_DEPLOYS);
    let started = Instant::now();
    let mut bench = Bench::new();

    // A good system, deployed without a guard: the one each lock-out's guard records.
    let first = bench.deploy("base", &["--no-rollback"], Duration::ZERO);
    assert!(first.timed.status.success(), "{}", first.timed.text());

    let timeout = format!("{}s", LOCKOUT_TIMEOUT.as_secs());
    let lockouts: Vec<Lockout> = (1..=lockouts)
        .map(|round| {
            let generation = format!("lockout{round}");
            let deploy = bench.deploy(
                &generation,
                &["--rollback-timeout", &timeout],
                Duration::ZERO,
            );
            let lockout = Lockout::of(&deploy, &bench.host());
            eprintln!("lock-out {round}: {}", json!(lockout));
            lockout
        })
        .collect();

    // Good deploys in a row, each the other of two generations: every one activates a new
    // system. The host is watched until the timeout and the margin have passed.
    let timeout = format!("{}s", GOOD_TIMEOUT.as_secs());
    let goods: Vec<Good> = (0..goods)
        .map(|i| {
            let generation = ["good-a", "good-b"][i % 2];
            let watch_past = GOOD_TIMEOUT + MARGIN;
            let deploy = bench.deploy(generation, &["--rollback-timeout", &timeout], watch_past);
            let good = Good::of(&deploy, &bench.host());
            eprintln!("good {:2}: {}", i + 1, json!(good));
            good
        })
        .collect();

    let report = Report { lockouts, goods };
    common::Figures {
        bench: "guard",
        versions: &["ssh -V 2>&1", "nix --version"],
        facts: vec![format!(
            "whole benchmark: {:.0} s; {} lock-out rounds, each checked: exit 6, the host \
                 back on the recorded system, no guard left; {} good deploys in a row",
            started.elapsed().as_secs_f64(),
            report.lockouts.len(),
            report.goods.len(),
        )],
        parameters: json!({
            "host": HOST,
            "lockout_rounds": report.lockouts.len(),
            "lockout_rollback_timeout_s": LOCKOUT_TIMEOUT.as_secs(),
            "good_deploys": report.goods.len(),
            "good_rollback_timeout_s": GOOD_TIMEOUT.as_secs(),
            "margin_s": MARGIN.as_secs(),
            "watch_every_ms": millis(WATCH_EVERY),
        }),
        tables: vec![("lockout", report.lockout()), ("good", report.good())],
        texts: Vec::new(),
        more: json!({ "lockouts": report.lockouts, "good_deploys": report.goods }),
    }
    .publish();
}

struct Bench {
    bed: TestBed,
    path: OsString,
}

/// A deploy of one generation, and what the host's watch saw of it.
struct Deploy {
    started: Instant,
    timed: Timed,
    /// The system the host ran before.
    old: Option<String>,
    /// The deployed generation's store path ends with this.
    new: String,
    seen: Vec<(Instant, State)>,
}

impl Bench {
    fn new() -> Bench {
        let bed = TestBed::with_hosts(&[HOST]);
        let path = common::search_path(&[]);
        Bench { bed, path }
    }

    fn host(&self) -> Host {
        self.bed.host(HOST)
    }

    /// `flakem switch-push OPTIONS web1` of `generation`, with the host watched from before
    /// it starts until `watch_past` after the activation ended (or after flakem's exit, if
    /// that is later or nothing was activated).
    fn deploy(&mut self, generation: &str, options: &[&str], watch_past: Duration) -> Deploy {
        self.bed.set_generation(HOST, generation);
        let watch = Watch::start(self.host());
        let mut command = common::command(&self.bed, env!("CARGO_BIN_EXE_flakem"), &self.path);
        command.arg("switch-push").args(options).arg(HOST);
        let started = Instant::now();
        let timed = common::run_timed(command, RUN_DEADLINE, |_| {});
        let new = format!("-{HOST}-gen-{generation}");
        let activated = activation(&watch.seen(), &new).unwrap_or(timed.ended);
        let seen = watch.finish(timed.ended.max(activated + watch_past));
        let old = seen.first().and_then(|(_, s)| s.running.clone());
        Deploy {
            started,
            timed,
            old,
            new,
            seen,
        }
    }
}

/// What the watch reads on the host, from outside.
#[derive(Clone, PartialEq, Debug)]
struct State {
    /// Where `/run/current-system` leads.
    running: Option<String>,
    /// The guard's `/run/flakem-guard/result` (`rolling-back`, `rolled-back`, ...).
    guard: Option<String>,
}

impl State {
    fn of(host: &Host) -> State {
        let link = fs::read_link(host.path("/run/current-system"));
        let result = fs::read_to_string(host.path("/run/flakem-guard/result"));
        State {
            running: link.ok().map(|p| p.to_string_lossy().into_owned()),
            guard: result.ok().map(|r| r.trim().to_owned()),
        }
    }
}

/// The first instant the host ran a system whose path ends with `new`: the activation's
/// end (`ln -sfn` is the last thing the test flake's `switch-to-configuration` does).
fn activation(seen: &[(Instant, State)], new: &str) -> Option<Instant> {
    let mut runs_new = seen.iter().filter(|(_, s)| {
        let running = s.running.as_deref().unwrap_or_default();
        running.ends_with(new)
    });
    runs_new.next().map(|(at, _)| *at)
}

/// A thread that reads the host's [`State`] every millisecond and notes each change with the
/// instant it read it.
struct Watch {
    seen: Arc<Mutex<Vec<(Instant, State)>>>,
    end: Arc<Mutex<Option<Instant>>>,
    thread: JoinHandle<()>,
}

impl Watch {
    fn start(host: Host) -> Watch {
        let seen = Arc::new(Mutex::new(Vec::<(Instant, State)>::new()));
        let end = Arc::new(Mutex::new(None::<Instant>));
        let (sink, until) = (Arc::clone(&seen), Arc::clone(&end));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + WATCH_DEADLINE;
            loop {
                let state = State::of(&host);
                let now = Instant::now();
                let mut seen = sink.lock().expect("the watch's record");
                if seen.last().is_none_or(|(_, last)| *last != state) {
                    seen.push((now, state));
                }
                drop(seen);
                let ending = until
                    .lock()
                    .expect("the watch's end")
                    .is_some_and(|e| now >= e);
                if ending || now >= deadline {
                    break;
                }
                thread::sleep(WATCH_EVERY);
            }
        });
        Watch { seen, end, thread }
    }

    /// What it saw so far.
    fn seen(&self) -> Vec<(Instant, State)> {
        self.seen.lock().expect("the watch's record").clone()
    }

    /// Watches on until `at` (one more read if that has passed), then returns all it saw.
    fn finish(self, at: Instant) -> Vec<(Instant, State)> {
        *self.end.lock().expect("the watch's end") = Some(at);
        self.thread.join().expect("the watch");
        let seen = self.seen.lock().expect("the watch's record");
        seen.clone()
    }
}

/// Whether anything of the guard is left on the host: its directory or its unit.
fn guard_left(host: &Host) -> bool {
    let unit = host.units().iter().any(|u| u.contains("flakem-guard"));
    unit || host.path("/run/flakem-guard").exists()
}

/// The figures of one lock-out round.
#[derive(Serialize)]
struct Lockout {
    /// From the activation's end to the host running the recorded system again.
    back_ms: f64,
    /// From the activation's end to the guard's `rolling-back`.
    decided_ms: Option<f64>,
    /// flakem's wall time, start to exit 6.
    flakem_ms: f64,
    /// From the host running the recorded system again to flakem's exit.
    exit_after_back_ms: f64,
    /// flakem's tries while it waited for the host (its `HOST: try N:` lines).
    tries: usize,
}

impl Lockout {
    /// Checks that flakem exited 6 and the host runs the recorded system with no guard
    /// left, and reads the round's figures.
    fn of(deploy: &Deploy, host: &Host) -> Lockout {
        let Deploy { timed, seen, .. } = deploy;
        let context = || format!("{}\nthe host's states: {seen:#?}", timed.text());
        assert_eq!(timed.status.code(), Some(6), "{}", context());
        let activated = activation(seen, &deploy.new).unwrap_or_else(|| panic!("{}", context()));
        let after = |s: &(Instant, State)| s.0 >= activated;
        let mut later = seen.iter().filter(|s| after(s));
        let back = later.find(|(_, s)| s.running == deploy.old);
        let (back, _) = back.unwrap_or_else(|| panic!("never back: {}", context()));
        let rolling_back = seen
            .iter()
            .find(|(_, s)| s.guard.as_deref() == Some("rolling-back"));
        assert!(!guard_left(host), "a guard is left: {}", context());
        let now = State::of(host).running;
        assert_eq!(now, deploy.old, "{}", context());
        let tries = timed
            .lines
            .iter()
            .filter(|(_, l)| l.contains(&format!("{HOST}: try ")));
        Lockout {
            back_ms: millis(*back - activated),
            decided_ms: rolling_back.map(|(at, _)| millis(*at - activated)),
            flakem_ms: millis(timed.ended - deploy.started),
            exit_after_back_ms: millis(timed.ended.saturating_duration_since(*back)),
            tries: tries.count(),
        }
    }
}

/// The figures of one good deploy.
#[derive(Serialize)]
struct Good {
    /// flakem's exit status (`None`: killed by a signal).
    status: Option<i32>,
    /// flakem's wall time, start to exit.
    flakem_ms: f64,
    /// From the activation's end to flakem's exit.
    exit_after_activation_ms: Option<f64>,
    /// The systems the host ran after the activation's end, in order, until the timeout and
    /// the margin had passed.
    ran: Vec<Option<String>>,
    /// The guard's directory or unit was still there after that.
    guard_left: bool,
}

impl Good {
    fn of(deploy: &Deploy, host: &Host) -> Good {
        let Deploy { timed, seen, .. } = deploy;
        if !timed.status.success() {
            eprintln!("a good deploy failed:\n{}", timed.text());
        }
        let activated = activation(seen, &deploy.new);
        let after = seen
            .iter()
            .filter(|(at, _)| activated.is_some_and(|a| *at >= a));
        let mut ran: Vec<Option<String>> = Vec::new();
        for (_, state) in after {
            if ran.last() != Some(&state.running) {
                ran.push(state.running.clone());
            }
        }
        Good {
            status: timed.status.code(),
            flakem_ms: millis(timed.ended - deploy.started),
            exit_after_activation_ms: activated
                .map(|a| millis(timed.ended.saturating_duration_since(a))),
            ran,
            guard_left: guard_left(host),
        }
    }

    /// Did not exit 0, or did not run the deployed system all along until the timeout and
    /// the margin had passed.
    fn rolled_back(&self) -> bool {
        self.status != Some(0) || self.ran.len() != 1
    }
}

/// A row of the lock-outs' table: what it shows, how it is read from a round, its unit.
type Figure = (&'static str, fn(&Lockout) -> Option<f64>, Unit);

struct Report {
    lockouts: Vec<Lockout>,
    goods: Vec<Good>,
}

impl Report {
    /// The lock-outs: the median, min and max of each figure over the rounds, and each
    /// round's.
    fn lockout(&self) -> Table {
        let rows: [Figure; 7] = [
            (
                "(a) activation's end → host running the recorded system again",
                |l| Some(l.back_ms),
                Unit::S,
            ),
            (
                "(a) the same less `--rollback-timeout`: **the guard's overhead**",
                |l| Some(l.back_ms - millis(LOCKOUT_TIMEOUT)),
                Unit::S,
            ),
            (
                "(a) of which, past the timeout, until the guard decided (`rolling-back`)",
                |l| l.decided_ms.map(|d| d - millis(LOCKOUT_TIMEOUT)),
                Unit::Ms,
            ),
            (
                "(a) of which the rollback (`rolling-back` → recorded system running)",
                |l| l.decided_ms.map(|d| l.back_ms - d),
                Unit::Ms,
            ),
            (
                "(b) flakem's wall time, start → exit 6",
                |l| Some(l.flakem_ms),
                Unit::S,
            ),
            (
                "(b) host running the recorded system → flakem's exit",
                |l| Some(l.exit_after_back_ms),
                Unit::Ms,
            ),
            (
                "flakem's ssh tries while it waited for the host",
                |l| Some(l.tries as f64),
                Unit::Count,
            ),
        ];
        let rows = rows.map(|(figure, of, unit)| {
            let stats = Stats::over(&self.lockouts, of);
            let each = self
                .lockouts
                .iter()
                .map(|l| of(l).map_or("?".into(), |v| unit.show(v)));
            [
                figure.to_owned(),
                unit.show(stats.median),
                unit.show(stats.min),
                unit.show(stats.max),
                each.collect::<Vec<_>>().join(", "),
            ]
        });
        Table::new(["figure", "median", "min", "max", "each round"], rows)
    }

    /// The good deploys: false rollbacks against the target, leftovers and time.
    fn good(&self) -> Table {
        let n = self.goods.len();
        let of = |count: usize| format!("{count} / {n}");
        let count = |which: fn(&Good) -> bool| self.goods.iter().filter(|g| which(g)).count();
        let rolled_back = count(Good::rolled_back);
        let exited_0 = count(|g| g.status == Some(0));
        let left = count(|g| g.guard_left);
        let range = |s: Stats| {
            let [median, min, max] = [s.median, s.min, s.max].map(|v| Unit::S.show(v));
            format!("{median} ({min} – {max})")
        };
        let overhead = Stats::over(&self.lockouts, |l| l.back_ms - millis(LOCKOUT_TIMEOUT)).max;
        let (timeout, margin) = (GOOD_TIMEOUT.as_secs(), MARGIN.as_secs());
        let row = |figure: &str, value: String, target: Option<(String, bool)>| {
            let (target, met) = target.map_or_else(Default::default, |(t, ok)| (t, yes_no(ok)));
            [figure.to_owned(), value, target, met]
        };
        let rows = [
            row(
                "**false rollbacks**: did not exit 0, or the host ran another system before the \
                 timeout and the margin had passed",
                format!("**{}**", of(rolled_back)),
                // Issue 12's target.
                Some(("0".into(), rolled_back == 0)),
            ),
            row("exited 0", of(exited_0), None),
            row(
                "guard left afterwards (`/run/flakem-guard`, a `flakem-guard` unit)",
                of(left),
                Some(("0".into(), left == 0)),
            ),
            row(
                "flakem's wall time per good deploy, median (min – max)",
                range(Stats::over(&self.goods, |g| g.flakem_ms)),
                None,
            ),
            row(
                "activation's end → flakem's exit (the confirmation), median (min – max)",
                range(Stats::over(&self.goods, |g| g.exit_after_activation_ms)),
                None,
            ),
            row(
                "host watched after each activation: timeout + margin",
                format!("{timeout} s + {margin} s"),
                None,
            ),
            row(
                "the lock-outs' largest guard overhead past the timeout (what the margin covers)",
                Unit::S.show(overhead),
                Some((format!("< {margin} s"), overhead < millis(MARGIN))),
            ),
        ];
        Table::new(["figure", "value", "target", "met"], rows)
    }
}

/// How a figure is shown; figures are kept in milliseconds.
#[derive(Clone, Copy)]
enum Unit {
    S,
    Ms,
    Count,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::S => format!("{:.2} s", value / 1e3),
            Unit::Ms => format!("{value:.0} ms"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}
