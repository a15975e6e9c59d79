//! The reset benchmark (issue 3): `flakem switch-push-reset` against the naive "reboot, sleep,
//! retry ssh" loop of benches/naive-reset.sh, on the test bed. It writes
//! benches/results/reset.json and the `reset-*` parts of BENCHMARKS.md, which says how each
//! figure is measured. `cargo bench --bench reset` as root; `FLAKEM_BENCH_REBOOTS=N` (20).

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use common::{Stats, Table, Timed, millis, yes_no};
use testbed::{Host, Reboot, TestBed};

const HOST: &str = "web1";
const REBOOTS: usize = 20;
/// The reboot of the main runs: down at once, for 2 s.
const DOWN: Duration = Duration::from_secs(2);
/// The slow shutdown: sessions end at once, sshd accepts on the old boot id for 2.5 s, then
/// the host is down for 2 s.
const SLOW_ACCEPT_FOR: Duration = Duration::from_millis(2500);
const SLOW_DOWN: Duration = Duration::from_secs(2);
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How long the watcher waits for the host to go down and come back, and how often it tries
/// the host's port while it is down.
const WATCH_DEADLINE: Duration = Duration::from_secs(90);
const WATCH_EVERY: Duration = Duration::from_micros(500);
/// flakem's targets from issue 3.
const TARGET_MEDIAN_MS: f64 = 500.0;
const TARGET_MAX_MS: f64 = 1500.0;
const TARGET_OWN_CONNECTIONS: usize = 2;
const TARGET_TRIES_PER_SECOND: usize = 5;

/// The deploy command both sides run (flakem prints the same one).
const NIXOS_REBUILD: &str =
    "nixos-rebuild boot --no-reexec --sudo --use-substitutes --target-host web1 --flake .#web1";

/// The naive reset, as a user would type it; `set -x` prints each command as it starts, as
/// flakem does, and its collection's session first prints the boot id it runs on.
const NAIVE: &str = include_str!("naive-reset.sh");
/// The name the naive script runs under (the parent of its ssh processes).
const NAIVE_NAME: &str = "naive-reset";

/// The deploy's `+` line on stderr (flakem's trace, the naive script's `set -x`).
const DEPLOY: &str = "+ nixos-rebuild boot ";

fn main() {
    if !common::benchmarking("reset") {
        return;
    }
    let reboots = common::env_count("FLAKEM_BENCH_REBOOTS", REBOOTS);
    let started = Instant::now();
    let mut bench = Bench::new();

    // A first generation, switched to, so that every measured run is a real redeploy.
    bench.bed.set_generation(HOST, "a");
    let (first, _) = bench.run_flakem(&["switch-push", HOST], &[]);
    assert!(first.status.success(), "{}", first.text());

    // (b) cross-check: the connections of a bare `nixos-rebuild boot` of the stand-in.
    bench.bed.set_generation(HOST, "b");
    let before = accepted(&bench.host());
    let mut words = NIXOS_REBUILD.split(' ');
    let mut command = bench.command(words.next().expect("a program"));
    command.args(words);
    let bare = common::run_timed(command, RUN_DEADLINE, |_| {});
    assert!(bare.status.success(), "{}", bare.text());
    let bare = accepted(&bench.host()) - before;
    eprintln!("bare nixos-rebuild boot: {bare} connections accepted");

    bench.host().set_reboot(Reboot::Down(DOWN));
    let flakem = bench.resets(reboots, "flakem", Bench::flakem_reset);
    let naive = bench.resets(reboots, "naive", Bench::naive_reset);

    let (accept_for, down) = (SLOW_ACCEPT_FOR, SLOW_DOWN);
    (bench.host()).set_reboot(Reboot::SlowShutdown { accept_for, down });
    let mut slow_reset = |generation, reset: fn(&Bench) -> Reset| {
        bench.bed.set_generation(HOST, generation);
        let reset = reset(&bench);
        eprintln!("{generation}: {}", json!(reset));
        reset
    };
    let slow_naive = slow_reset("slow-naive", Bench::naive_reset);
    let slow = [slow_reset("slow-flakem", Bench::flakem_reset), slow_naive];

    let report = Report {
        flakem,
        naive,
        slow,
    };
    let failed = report
        .flakem
        .iter()
        .chain(&report.naive)
        .filter(|r| !r.ok)
        .count();
    let took = started.elapsed();
    common::Figures {
        bench: "reset",
        versions: &["ssh -V 2>&1", "nix --version"],
        facts: vec![
            format!("whole benchmark: {:.0} s; failed runs: {failed}", took.as_secs_f64()),
            format!("reboots per side: {reboots}"),
        ],
        parameters: json!({
            "host": HOST,
            "reboots_per_side": reboots,
            "down_ms": millis(DOWN),
            "slow_shutdown": {"accept_for_ms": millis(SLOW_ACCEPT_FOR), "down_ms": millis(SLOW_DOWN)},
            "deploy": NIXOS_REBUILD,
            "naive_script": NAIVE,
        }),
        tables: vec![
            ("results", report.results(bare)),
            ("slow", report.slow()),
            ("per-reset", report.per_reset()),
        ],
        texts: vec![("script", format!("```bash\n{NAIVE}```"))],
        more: json!({
            "bare_nixos_rebuild_connections": bare,
            "resets": {"flakem": report.flakem, "naive": report.naive},
            "slow_shutdown": {"flakem": report.slow[0], "naive": report.slow[1]},
        }),
    }
    .publish();
}

/// The bed, the shims and the programs every run uses.
struct Bench {
    bed: TestBed,
    tries: Tries,
    path: OsString,
    naive: PathBuf,
    gc_log: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let bed = TestBed::with_hosts(&[HOST]);
        let dir = bed.dir().join("bench");
        let tries = Tries::install(&dir, &common::on_path("ssh"));
        let naive = dir.join(NAIVE_NAME);
        common::write_executable(&naive, NAIVE);
        // The host's own nix-collect-garbage, first on its PATH (also under sudo: the host's
        // sudo keeps PATH): which boot each collection ran on.
        let host = bed.host(HOST);
        let real = ["/usr/bin", "/bin", "/usr/local/bin"];
        common::write_shim(
            &host.dir().join("bin/nix-collect-garbage"),
            "records the boot each collection runs on.",
            "mkdir -p /var/lib/flakem-bench\n\
             cat /proc/sys/kernel/random/boot_id >> /var/lib/flakem-bench/gc-boots\n",
            &common::first_in("nix-collect-garbage", real),
        );
        Bench {
            path: common::search_path(&[&dir.join("bin")]),
            gc_log: host.path("/var/lib/flakem-bench/gc-boots"),
            bed,
            tries,
            naive,
        }
    }

    fn host(&self) -> Host {
        self.bed.host(HOST)
    }

    /// The boot ids the host's garbage collections ran on, so far.
    fn gc_boots(&self) -> Vec<String> {
        let log = fs::read_to_string(&self.gc_log).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }

    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        common::command(&self.bed, program, &self.path)
    }

    fn run_flakem(&self, args: &[&str], marks: &[&'static str]) -> Run {
        let mut command = self.command(env!("CARGO_BIN_EXE_flakem"));
        command.args(args);
        run_marked(command, marks, self.host())
    }

    /// `count` resets by `reset`, each deploying the other of the generations `a` and `b`.
    fn resets(&mut self, count: usize, name: &str, reset: fn(&Bench) -> Reset) -> Vec<Reset> {
        let mut each = |i| {
            self.bed.set_generation(HOST, ["a", "b"][i % 2]);
            let reset = reset(self);
            eprintln!("{name:<6} {:2}: {}", i + 1, json!(reset));
            reset
        };
        (0..count).map(&mut each).collect()
    }

    fn flakem_reset(&self) -> Reset {
        // Its first step after the deploy: reading the boot id and the profile.
        const AFTER_DEPLOY: &str = "/proc/sys/kernel/random/boot_id && readlink";
        self.reset(
            "flakem",
            || self.run_flakem(&["switch-push-reset", HOST], &[DEPLOY, AFTER_DEPLOY]),
            |l| l.starts_with("+ ssh ") && l.contains("'readlink -f /run/booted-system"),
        )
    }

    fn naive_reset(&self) -> Reset {
        let mut command = self.command(&self.naive);
        command.arg(HOST);
        self.reset(
            NAIVE_NAME,
            || run_marked(command, &[DEPLOY, " sudo reboot"], self.host()),
            |l| l.starts_with("+ ssh ") && l.contains("nix-collect-garbage"),
        )
    }

    /// One reset by `deployer` (flakem, or the naive script: the parent of its ssh
    /// processes), run by `run`, watched; `next_step` finds its step after the wait. flakem
    /// must succeed; under a slow shutdown the naive script's collection may die with the
    /// old boot: not an error here.
    fn reset(
        &self,
        deployer: &str,
        run: impl FnOnce() -> Run,
        next_step: fn(&str) -> bool,
    ) -> Reset {
        let host = self.host();
        let (boot_before, gcs, before) = (host.boot_id(), self.gc_boots().len(), accepted(&host));
        let watch = Watch::start(host.clone());
        let (timed, marks) = run();
        let ok = timed.status.success();
        let may_fail = deployer == NAIVE_NAME;
        let outage = watch.finish(ok || may_fail);
        assert!(ok || may_fail, "{deployer} failed:\n{}", timed.text());
        if !ok {
            eprintln!("naive reset exited with {}", timed.status);
        }
        let first_line = |matching: &dyn Fn(&str) -> bool| {
            let mut lines = timed.lines.iter();
            lines.find(|(_, l)| matching(l)).map(|(at, _)| *at)
        };
        let reboot_line = first_line(&|l| l.starts_with("+ ") && l.contains("sudo reboot"));
        let next = first_line(&next_step);
        let tries = |from, to| self.tries.between(deployer, from, to);
        let last_line = timed.lines.last().map(|(at, _)| *at);
        let wait_end = next.or(last_line).unwrap_or(timed.ended);
        let wait = reboot_line.map_or_else(Vec::new, |from| tries(from, wait_end));
        let peak = wait.iter().map(|t| {
            let window = *t..*t + Duration::from_secs(1);
            wait.iter().filter(|u| window.contains(u)).count()
        });
        let boot_id = |l: &&str| l.len() == 36 && l.matches('-').count() == 4;
        Reset {
            ok,
            latency_ms: match (outage, next) {
                (Some(o), Some(n)) if n >= o.up => Some(millis(n - o.up)),
                _ => None,
            },
            down_ms: outage.map(|o| millis(o.up - o.down)),
            accepted_total: accepted(&host) - before,
            accepted_nixos_rebuild: match marks[..] {
                [Some(start), Some(end)] => Some(end - start),
                _ => None,
            },
            tries_down: outage.map_or(0, |o| tries(o.down, o.up).len()),
            peak_tries_per_second: peak.max().unwrap_or(0),
            try_offsets_ms: reboot_line
                .map_or_else(Vec::new, |r| wait.iter().map(|t| millis(*t - r)).collect()),
            closed_lines: (timed.lines.iter())
                .filter(|(_, l)| l.contains("does not accept connections yet"))
                .count(),
            boot_before,
            gc_boot: self.gc_boots().get(gcs).cloned(),
            printed_gc_boot: timed
                .stdout
                .lines()
                .map(str::trim)
                .find(boot_id)
                .map(str::to_owned),
            took_s: (timed.lines.first().zip(last_line))
                .map_or(0.0, |((a, _), b)| (b - *a).as_secs_f64()),
        }
    }
}

/// "Accepted publickey" lines in the host's sshd log so far.
fn accepted(host: &Host) -> usize {
    host.sshd_log().matches("Accepted publickey").count()
}

/// The ssh shim, and the thread that timestamps the tries it reports: ssh starts of a wait
/// loop, with the parent's name. Both flakem's tries and the naive loop's carry
/// `ConnectTimeout=5`; the reboot's ssh, flakem's steps through a control master, its `ssh
/// -G` and `ssh -O exit`, and nixos-rebuild's ssh calls do not.
struct Tries(Arc<Mutex<Vec<(Instant, String)>>>);

impl Tries {
    fn install(dir: &Path, real_ssh: &Path) -> Tries {
        let fifo = dir.join("ssh-starts");
        fs::create_dir_all(dir).expect("create the benchmark's directory");
        let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: c_path is a valid NUL-terminated string.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            let error = std::io::Error::last_os_error();
            panic!("mkfifo {}: {error}", fifo.display());
        }
        // Read and write, so it never sees an end and a writer never blocks for a reader.
        let pipe = fs::OpenOptions::new().read(true).write(true).open(&fifo);
        let pipe = BufReader::new(pipe.expect("open the FIFO"));
        // One short line per start: atomic on a pipe (under PIPE_BUF), builtins only.
        common::write_shim(
            &dir.join("bin/ssh"),
            "reports each ssh start, then runs the real ssh.",
            &format!(
                "read -r parent < /proc/$PPID/comm || parent=unknown\n\
                 printf '%s %.400s\\n' \"$parent\" \"$*\" > {}\n",
                fifo.display()
            ),
            real_ssh,
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        thread::spawn(move || {
            for line in pipe.lines() {
                let at = Instant::now();
                let Ok(line) = line else { break };
                let (parent, args) = line.split_once(' ').unwrap_or((&line, ""));
                if args.contains("ConnectTimeout=") {
                    sink.lock()
                        .expect("ssh tries")
                        .push((at, parent.to_owned()));
                }
            }
        });
        Tries(seen)
    }

    /// Instants of the tries by `parent` between `from` and `to`.
    fn between(&self, parent: &str, from: Instant, to: Instant) -> Vec<Instant> {
        let seen = self.0.lock().expect("ssh tries");
        let tries = seen
            .iter()
            .filter(|(at, p)| p == parent && (from..=to).contains(at));
        tries.map(|(at, _)| *at).collect()
    }
}

/// When the host went down and when its sshd accepted again.
#[derive(Clone, Copy)]
struct Outage {
    down: Instant,
    up: Instant,
}

/// A thread that notes the host's outage: down when its processes are gone (the supervisor
/// clears them just before it kills the host's init) and its port 22 refuses, up when a
/// plain TCP connect to that port succeeds again.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Option<Outage>>,
}

impl Watch {
    fn start(host: Host) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + WATCH_DEADLINE;
            // Polls until `done`; false if the watch ended first.
            let until = |done: &dyn Fn() -> bool, every: Duration| loop {
                if done() {
                    return true;
                }
                if stopped.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    return false;
                }
                thread::sleep(every);
            };
            let gone = until(&|| host.pids().is_empty(), Duration::from_millis(1));
            if !gone || !until(&|| !host.is_accepting(), WATCH_EVERY) {
                return None;
            }
            let down = Instant::now();
            let up = until(&|| host.is_accepting(), WATCH_EVERY);
            up.then(|| Outage {
                down,
                up: Instant::now(),
            })
        });
        Watch { stop, thread }
    }

    /// Waits for the host to be back (a slow shutdown may outlast the run), then returns the
    /// outage, if the host went down and came back within the deadline. After a failed run
    /// (`wait` false) it stops watching at once.
    fn finish(self, wait: bool) -> Option<Outage> {
        self.stop.store(!wait, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

/// A run of a deployer, and the host's accepted connections when each marked line arrived.
type Run = (Timed, Vec<Option<usize>>);

/// `command` run to its end; the host's accepted connections are counted as soon as the
/// first stderr line containing each of `marks` arrives.
fn run_marked(command: Command, marks: &[&'static str], host: Host) -> Run {
    let marks = marks.to_vec();
    let counts = Arc::new(Mutex::new(vec![None; marks.len()]));
    let sink = Arc::clone(&counts);
    let timed = common::run_timed(command, RUN_DEADLINE, move |line| {
        let mut counts = sink.lock().expect("mark counts");
        for (mark, count) in marks.iter().zip(counts.iter_mut()) {
            if count.is_none() && line.contains(mark) {
                *count = Some(accepted(&host));
            }
        }
    });
    let counts = counts.lock().expect("mark counts").clone();
    (timed, counts)
}

/// The figures of one reset.
#[derive(Serialize)]
struct Reset {
    ok: bool,
    /// From sshd accepting again to the deployer's next step.
    latency_ms: Option<f64>,
    /// How long the host was down (processes gone to port accepting).
    down_ms: Option<f64>,
    accepted_total: usize,
    accepted_nixos_rebuild: Option<usize>,
    /// Tries while the host was down.
    tries_down: usize,
    /// The most tries within any one second of the wait (reboot line to next step).
    peak_tries_per_second: usize,
    /// When each try of the wait started, after the reboot line.
    try_offsets_ms: Vec<f64>,
    /// flakem's "does not accept connections yet" lines.
    closed_lines: usize,
    boot_before: String,
    /// The boot id the host-side shim saw the collection run on.
    gc_boot: Option<String>,
    /// The boot id the naive script's collection session printed.
    printed_gc_boot: Option<String>,
    /// First to last line of stderr.
    took_s: f64,
}

impl Reset {
    fn own_connections(&self) -> Option<usize> {
        let total = self.accepted_total;
        self.accepted_nixos_rebuild.map(|n| total.saturating_sub(n))
    }

    fn tries_per_second_down(&self) -> f64 {
        self.down_ms
            .map_or(0.0, |d| self.tries_down as f64 / d * 1e3)
    }

    /// Whether the garbage collection ran on the boot from before the reboot.
    fn gc_on_old_boot(&self) -> Option<bool> {
        self.gc_boot.as_ref().map(|b| *b == self.boot_before)
    }

    /// The connections the host accepted for nixos-rebuild and for the deployer itself.
    fn connections(&self) -> String {
        let opt = |n: Option<usize>| n.map_or("?".into(), |n| n.to_string());
        let nr = opt(self.accepted_nixos_rebuild);
        format!("{nr} / {}", opt(self.own_connections()))
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("?".into(), |v| format!("{v:.0} ms"))
}

/// The max of a count, with the median and min when they differ.
fn count(s: &Stats) -> String {
    if s.min == s.max {
        format!("{:.0}", s.max)
    } else {
        format!("{:.0} (median {:.1}, min {:.0})", s.max, s.median, s.min)
    }
}

/// A figure of the results table, taken from each side's resets.
enum Figure {
    /// A statistic of the latency; flakem's target: below so many ms.
    Latency(fn(&Stats) -> f64, Option<f64>),
    /// A count per reset, as `count` shows it; flakem's target: its max at most so many.
    Count(fn(&Reset) -> Option<usize>, Option<usize>),
    /// The median, in a unit, with so many decimals.
    Median(fn(&Reset) -> Option<f64>, &'static str, usize),
    /// flakem's cell and the naive loop's; flakem's target and whether it met it.
    Cells([String; 2], Option<(String, bool)>),
}

struct Report {
    flakem: Vec<Reset>,
    naive: Vec<Reset>,
    /// The slow shutdown: flakem's, the naive loop's.
    slow: [Reset; 2],
}

impl Report {
    /// Results: per reset, flakem's and the naive loop's, with flakem's targets.
    fn results(&self, bare: usize) -> Table {
        use Figure::*;
        let sides = [&self.flakem, &self.naive];
        let row = |(figure, how): (&str, Figure)| {
            let ([flakem, naive], target) = match how {
                Latency(pick, limit) => {
                    let [f, n] = sides.map(|rs| pick(&Stats::over(rs, |r| r.latency_ms)));
                    let target = limit.map(|limit| (format!("< {limit:.0} ms"), f < limit));
                    ([f, n].map(|v| format!("{v:.0} ms")), target)
                }
                Count(of, limit) => {
                    let [f, n] = sides.map(|rs| Stats::over(rs, |r| of(r).map(|n| n as f64)));
                    let target = limit.map(|t| (format!("≤ {t}"), f.max <= t as f64));
                    ([count(&f), count(&n)], target)
                }
                Median(of, unit, decimals) => {
                    let median = |rs| format!("{:.*} {unit}", decimals, Stats::over(rs, of).median);
                    (sides.map(median), None)
                }
                Cells(cells, target) => (cells, target),
            };
            let (target, met) = target.map_or_else(Default::default, |(t, ok)| (t, yes_no(ok)));
            [figure.to_owned(), flakem, naive, target, met]
        };
        let [frate, nrate] = sides.map(|rs| Stats::over(rs, |r| Some(r.tries_per_second_down())));
        let rate = [
            format!("{:.1}", frate.max),
            format!("{:.1} (median {:.1})", nrate.max, nrate.median),
        ];
        let max_rate = TARGET_TRIES_PER_SECOND;
        let gc_on_old = sides.map(|rs| {
            let old = rs.iter().filter(|r| r.gc_on_old_boot() == Some(true));
            format!("{} of {}", old.count(), rs.len())
        });
        let no_gc_on_old = self
            .flakem
            .iter()
            .all(|r| r.gc_on_old_boot() == Some(false));
        let rows = [
            (
                "(a) sshd accepting again → next step, median",
                Latency(|s| s.median, Some(TARGET_MEDIAN_MS)),
            ),
            ("(a) same, max", Latency(|s| s.max, Some(TARGET_MAX_MS))),
            ("(a) same, min", Latency(|s| s.min, None)),
            (
                "(b) connections accepted by the host per reset",
                Count(|r| Some(r.accepted_total), None),
            ),
            (
                "(b) of which nixos-rebuild's",
                Count(|r| r.accepted_nixos_rebuild, None),
            ),
            (
                "(b) of which the deployer's own",
                Count(Reset::own_connections, Some(TARGET_OWN_CONNECTIONS)),
            ),
            (
                "(b) a bare `nixos-rebuild boot`, same arguments (cross-check)",
                Cells([bare.to_string(), bare.to_string()], None),
            ),
            (
                "(c) ssh tries while the host was down",
                Count(|r| Some(r.tries_down), None),
            ),
            (
                "(c) ssh tries per second while down (tries ÷ time down)",
                Cells(
                    rate,
                    Some((format!("≤ {max_rate}"), frate.max <= max_rate as f64)),
                ),
            ),
            (
                "(c) most ssh tries in any 1 s of the wait",
                Count(|r| Some(r.peak_tries_per_second), Some(max_rate)),
            ),
            (
                "(c) ssh tries in the whole wait (reboot → next step)",
                Count(|r| Some(r.try_offsets_ms.len()), None),
            ),
            (
                "host down (processes gone → port accepting), median",
                Median(|r| r.down_ms, "ms", 0),
            ),
            (
                "whole reset (first to last line of stderr), median",
                Median(|r| Some(r.took_s), "s", 1),
            ),
            (
                "garbage collected on the old boot (runs)",
                Cells(gc_on_old, Some(("0".to_owned(), no_gc_on_old))),
            ),
            (
                "\"does not accept connections yet\" lines printed per reset",
                Count(|r| Some(r.closed_lines), None),
            ),
        ];
        let header = ["figure", "flakem", "naive loop", "target (flakem)", "met"];
        Table::new(header, rows.map(row))
    }

    /// The slow shutdown, one run each side.
    fn slow(&self) -> Table {
        let [flakem, naive] = &self.slow;
        let row =
            |figure: &str, of: &dyn Fn(&Reset) -> String| [figure.into(), of(flakem), of(naive)];
        let boot = |id: Option<&str>, none: &str| format!("`{}`", id.unwrap_or(none));
        // The shortest time between a try and the `k`th after it.
        let shortest = |r: &Reset, k: usize| {
            let spans = r.try_offsets_ms.windows(k + 1).map(|w| w[k] - w[0]);
            spans
                .reduce(f64::min)
                .map_or("none".into(), |d| format!("{d:.0} ms"))
        };
        let rows = [
            row("boot id before the reboot", &|r| {
                boot(Some(&r.boot_before), "")
            }),
            row("boot id the collection ran on (host-side shim)", &|r| {
                boot(r.gc_boot.as_deref(), "none")
            }),
            [
                "boot id printed in the collection's own ssh session".to_owned(),
                String::new(),
                boot(naive.printed_gc_boot.as_deref(), "none (the session died)"),
            ],
            row("**collected garbage on the old boot**", &|r| {
                let word = match r.gc_on_old_boot() {
                    Some(true) => "yes",
                    Some(false) => "no (new boot)",
                    None => "no collection ran",
                };
                format!("**{word}**")
            }),
            row("exit status", &|r| {
                if r.ok { "0" } else { "non-zero" }.to_owned()
            }),
            row(
                "connections accepted (nixos-rebuild's / own)",
                &Reset::connections,
            ),
            row("ssh tries in the wait, most in any 1 s", &|r| {
                format!("{}, {}", r.try_offsets_ms.len(), r.peak_tries_per_second)
            }),
            row("tries, ms after the reboot's `+` line", &|r| {
                let all: Vec<String> = r.try_offsets_ms.iter().map(|t| format!("{t:.0}")).collect();
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            }),
            row(
                "shortest gap between two tries; shortest span of three",
                &|r| format!("{}; {}", shortest(r, 1), shortest(r, 2)),
            ),
            row(
                "host down (sessions ended 2.5 s before) → accepting on the new boot",
                &|r| ms(r.down_ms),
            ),
            [
                "sshd accepting on the new boot → next step".to_owned(),
                ms(flakem.latency_ms),
                naive.latency_ms.map_or_else(
                    || "none: it had gone on before the host went down".to_owned(),
                    |d| ms(Some(d)),
                ),
            ],
        ];
        Table::new(["", "flakem", "naive loop"], rows)
    }

    /// Every reset of the main runs, side by side.
    fn per_reset(&self) -> Table {
        let rows = self.flakem.iter().zip(&self.naive).enumerate();
        let rows = rows.map(|(i, (a, b))| {
            let naive_tries = format!("{} ({:.0})", b.tries_down, b.tries_per_second_down());
            let [la, lb] = [a.latency_ms, b.latency_ms].map(ms);
            let (ca, cb) = (a.connections(), b.connections());
            [
                (i + 1).to_string(),
                la,
                ca,
                a.tries_down.to_string(),
                lb,
                cb,
                naive_tries,
            ]
        });
        let header = [
            "#",
            "flakem latency",
            "flakem conn. (n-r / own)",
            "flakem tries down",
            "naive latency",
            "naive conn. (n-r / own)",
            "naive tries down (per s)",
        ];
        Table::new(header, rows)
    }
}
