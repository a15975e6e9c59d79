//! The reset benchmark (issue 3): `flakem switch-push-reset` against the naive "reboot, sleep,
//! retry ssh" loop of benches/naive-reset.sh, both on the test bed (tests/integration/testbed)
//! with the stand-in nixos-rebuild of tests/fixtures/bin-ng doing the real deploy. Figures,
//! not assertions: it writes benches/results/reset.json and the `reset-*` parts of
//! BENCHMARKS.md, which says how each figure is measured. Run with `cargo bench --bench
//! reset` as root; `FLAKEM_BENCH_REBOOTS=N` (20 by default) for a quick try.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use common::{Machine, Stats, Table, Timed, millis, yes_no};
use testbed::{Host, Reboot, TestBed};

/// The host every run deploys to (a configuration of the test flake).
const HOST: &str = "web1";
/// Reboots per side, unless `FLAKEM_BENCH_REBOOTS` says otherwise.
const REBOOTS: usize = 20;
/// The fixed reboot of the main runs: down at once, for 2 s.
const DOWN: Duration = Duration::from_secs(2);
/// The slow shutdown: sessions end at once, sshd accepts on the old boot id for 2.5 s, then
/// the host is down for 2 s.
const SLOW_ACCEPT_FOR: Duration = Duration::from_millis(2500);
const SLOW_DOWN: Duration = Duration::from_secs(2);
/// Far above what any single run needs.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How long the watcher waits for a host to go down and come back.
const WATCH_DEADLINE: Duration = Duration::from_secs(90);
/// How often the watcher tries the host's port while it is down.
const WATCH_EVERY: Duration = Duration::from_micros(500);
/// flakem's targets from issue 3.
const TARGET_MEDIAN_MS: f64 = 500.0;
const TARGET_MAX_MS: f64 = 1500.0;
const TARGET_OWN_CONNECTIONS: usize = 2;
const TARGET_TRIES_PER_SECOND: usize = 5;

/// The deploy command both sides run (flakem prints the same one).
const NIXOS_REBUILD: &[&str] = &[
    "nixos-rebuild",
    "boot",
    "--no-reexec",
    "--sudo",
    "--use-substitutes",
    "--target-host",
    HOST,
    "--flake",
    ".#web1",
];

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
    let first = bench.run_flakem(&["switch-push", HOST], &[]);
    assert!(first.timed.status.success(), "{}", first.timed.text());

    // (b) cross-check: the connections of a bare `nixos-rebuild boot` of the stand-in.
    bench.bed.set_generation(HOST, "b");
    let bare = bench.run_bare_nixos_rebuild();
    eprintln!("bare nixos-rebuild boot: {bare} connections accepted");

    let host = bench.bed.host(HOST);
    host.set_reboot(Reboot::Down(DOWN));
    let flakem = bench.resets(reboots, "flakem", Bench::flakem_reset);
    let naive = bench.resets(reboots, "naive", Bench::naive_reset);

    host.set_reboot(Reboot::SlowShutdown {
        accept_for: SLOW_ACCEPT_FOR,
        down: SLOW_DOWN,
    });
    bench.bed.set_generation(HOST, "slow-naive");
    let slow_naive = bench.naive_reset();
    eprintln!("naive, slow shutdown: {}", slow_naive.summary());
    bench.bed.set_generation(HOST, "slow-flakem");
    let slow_flakem = bench.flakem_reset();
    eprintln!("flakem, slow shutdown: {}", slow_flakem.summary());

    Report {
        reboots,
        bare,
        flakem,
        naive,
        slow_flakem,
        slow_naive,
        took: started.elapsed(),
    }
    .publish();
}

/// The bed, the shims and the programs every run uses.
struct Bench {
    bed: TestBed,
    starts: SshStarts,
    path: OsString,
    tmp: PathBuf,
    naive: PathBuf,
    gc_log: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let bed = TestBed::with_hosts(&[HOST]);
        let dir = bed.dir().join("bench");
        let tmp = bed.dir().join("t");
        fs::create_dir_all(&tmp).expect("create the runs' TMPDIR");
        let starts = SshStarts::install(&dir, &common::on_path("ssh"));
        let path = common::search_path(&[&starts.bin]);

        let naive = dir.join(NAIVE_NAME);
        common::write_executable(&naive, NAIVE);

        // The host's own nix-collect-garbage, first on its PATH (also under sudo: the host's
        // sudo keeps PATH): which boot each collection ran on.
        let host = bed.host(HOST);
        common::write_shim(
            &host.dir().join("bin/nix-collect-garbage"),
            "records the boot each collection runs on.",
            "mkdir -p /var/lib/flakem-bench\n\
             cat /proc/sys/kernel/random/boot_id >> /var/lib/flakem-bench/gc-boots\n",
            &common::first_in(
                "nix-collect-garbage",
                ["/usr/bin", "/bin", "/usr/local/bin"],
            ),
        );
        let gc_log = host.path("/var/lib/flakem-bench/gc-boots");
        Bench {
            bed,
            starts,
            path,
            tmp,
            naive,
            gc_log,
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

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = self.bed.command(program);
        command
            .env("PATH", &self.path)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null());
        command
    }

    /// flakem with `args`; the host's accepted connections are counted when the first
    /// stderr line containing each of `marks` arrives.
    fn run_flakem(&self, args: &[&str], marks: &[&'static str]) -> Run {
        let mut command = self.command(env!("CARGO_BIN_EXE_flakem"));
        command.args(args);
        run_marked(command, marks, self.host())
    }

    /// A bare `nixos-rebuild boot` of the stand-in; returns the connections the host accepted.
    fn run_bare_nixos_rebuild(&self) -> usize {
        let host = self.host();
        let before = accepted(&host);
        let mut command = self.command(NIXOS_REBUILD[0]);
        command.args(&NIXOS_REBUILD[1..]);
        let run = run_marked(command, &[], host.clone());
        assert!(run.timed.status.success(), "{}", run.timed.text());
        accepted(&host) - before
    }

    /// `count` resets by `reset`, each deploying the other of the generations `a` and `b`.
    fn resets(&mut self, count: usize, name: &str, reset: fn(&Bench) -> Reset) -> Vec<Reset> {
        (0..count)
            .map(|i| {
                self.bed.set_generation(HOST, ["a", "b"][i % 2]);
                let reset = reset(self);
                eprintln!("{name:<6} {:2}: {}", i + 1, reset.summary());
                reset
            })
            .collect()
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
        next_step: impl Fn(&str) -> bool,
    ) -> Reset {
        let host = self.host();
        let boot_before = host.boot_id();
        let gcs = self.gc_boots().len();
        let before = accepted(&host);
        let watch = Watch::start(host.clone());
        let run = run();
        let timed = &run.timed;
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
        let tries = |from, to| self.starts.tries(deployer, from, to);
        let wait_end = next
            .or_else(|| timed.lines.last().map(|(at, _)| *at))
            .unwrap_or(timed.ended);
        let wait = reboot_line.map_or_else(Vec::new, |from| tries(from, wait_end));
        let peak = wait.iter().map(|t| {
            let window = *t..*t + Duration::from_secs(1);
            wait.iter().filter(|u| window.contains(u)).count()
        });
        let (first, last) = (timed.lines.first(), timed.lines.last());
        Reset {
            ok,
            latency_ms: match (outage, next) {
                (Some(o), Some(n)) if n >= o.up => Some(millis(n - o.up)),
                _ => None,
            },
            down_ms: outage.map(|o| millis(o.up - o.down)),
            accepted_total: accepted(&host) - before,
            accepted_nixos_rebuild: match run.accepted_at_marks[..] {
                [Some(start), Some(end)] => Some(end - start),
                _ => None,
            },
            tries_down: outage.map_or(0, |o| tries(o.down, o.up).len()),
            peak_tries_per_second: peak.max().unwrap_or(0),
            try_offsets_ms: reboot_line.map_or_else(Vec::new, |r| {
                wait.iter().map(|t| millis(t.duration_since(r))).collect()
            }),
            closed_lines: (timed.lines.iter())
                .filter(|(_, l)| l.contains("does not accept connections yet"))
                .count(),
            boot_before,
            gc_boot: self.gc_boots().get(gcs).cloned(),
            printed_gc_boot: (timed.stdout.lines().map(str::trim))
                .find(|l| l.len() == 36 && l.matches('-').count() == 4)
                .map(str::to_owned),
            took_s: first
                .zip(last)
                .map_or(0.0, |((a, _), (b, _))| (*b - *a).as_secs_f64()),
        }
    }
}

/// "Accepted publickey" lines in the host's sshd log so far.
fn accepted(host: &Host) -> usize {
    host.sshd_log().matches("Accepted publickey").count()
}

/// One ssh process started on the client, as the shim reported it.
struct SshStart {
    at: Instant,
    parent: String,
    /// A try of a wait loop: both flakem's tries and the naive loop's carry
    /// `ConnectTimeout=5`; the reboot's ssh, flakem's steps through a control master, its
    /// `ssh -G` and `ssh -O exit`, and nixos-rebuild's ssh calls do not.
    is_try: bool,
}

/// The ssh shim and the thread that timestamps what it reports.
struct SshStarts {
    bin: PathBuf,
    seen: Arc<Mutex<Vec<SshStart>>>,
}

impl SshStarts {
    fn install(dir: &Path, real_ssh: &Path) -> SshStarts {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).expect("create the shim directory");
        let fifo = dir.join("ssh-starts");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: c_path is a valid NUL-terminated string.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            let error = std::io::Error::last_os_error();
            panic!("mkfifo {}: {error}", fifo.display());
        }
        // Read and write, so it never sees an end and a writer never blocks for a reader.
        let pipe = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open the FIFO");
        // One short line per start: atomic on a pipe (under PIPE_BUF), builtins only.
        common::write_shim(
            &bin.join("ssh"),
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
            for line in BufReader::new(pipe).lines() {
                let at = Instant::now();
                let Ok(line) = line else { break };
                let (parent, args) = line.split_once(' ').unwrap_or((&line, ""));
                sink.lock().expect("ssh starts").push(SshStart {
                    at,
                    parent: parent.to_owned(),
                    is_try: args.contains("ConnectTimeout="),
                });
            }
        });
        SshStarts { bin, seen }
    }

    /// Instants of the tries by `parent` between `from` and `to`.
    fn tries(&self, parent: &str, from: Instant, to: Instant) -> Vec<Instant> {
        let seen = self.seen.lock().expect("ssh starts");
        seen.iter()
            .filter(|s| s.parent == parent && s.is_try && (from..=to).contains(&s.at))
            .map(|s| s.at)
            .collect()
    }
}

/// When the host went down and when its sshd accepted again.
#[derive(Clone, Copy)]
struct Outage {
    down: Instant,
    up: Instant,
}

/// A thread that notes the host's outage: down when its processes are gone (the supervisor
/// clears them as it kills the host's init) and its port 22 refuses, up when a plain TCP
/// connect to that port succeeds again.
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
            let going = || !stopped.load(Ordering::Relaxed) && Instant::now() < deadline;
            let address = SocketAddr::from((host.address(), 22));
            let open = || TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok();
            // Polls until `done`; false if the watch ended first.
            let until = |done: &dyn Fn() -> bool, every: Duration| loop {
                if done() {
                    return true;
                }
                if !going() {
                    return false;
                }
                thread::sleep(every);
            };
            // The supervisor clears the pids just before it kills the host: down is when the
            // port refuses.
            if !until(&|| host.pids().is_empty(), Duration::from_millis(1))
                || !until(&|| !open(), WATCH_EVERY)
            {
                return None;
            }
            let down = Instant::now();
            until(&open, WATCH_EVERY).then(|| Outage {
                down,
                up: Instant::now(),
            })
        });
        Watch { stop, thread }
    }

    /// Waits for the host to be back (a slow shutdown may outlast the run), then returns the
    /// outage; `None` if the host did not go down and come back within the deadline. After a
    /// failed run (`wait` false) it stops watching at once.
    fn finish(self, wait: bool) -> Option<Outage> {
        if !wait {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.thread.join().expect("watcher")
    }
}

/// One run of a deployer, and the host's accepted connections when each marked line arrived.
struct Run {
    timed: Timed,
    accepted_at_marks: Vec<Option<usize>>,
}

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
    let accepted_at_marks = counts.lock().expect("mark counts").clone();
    Run {
        timed,
        accepted_at_marks,
    }
}

/// The figures of one reset (as they go into the JSON, too).
#[derive(Serialize)]
struct Reset {
    ok: bool,
    /// From sshd accepting again to the deployer's next step.
    latency_ms: Option<f64>,
    /// How long the host was down (processes gone to port accepting).
    down_ms: Option<f64>,
    accepted_total: usize,
    accepted_nixos_rebuild: Option<usize>,
    /// Connecting ssh starts while the host was down.
    tries_down: usize,
    /// The most connecting ssh starts within any one second of the wait (reboot line to next
    /// step).
    peak_tries_per_second: usize,
    /// When each try of the wait (reboot line to next step) started, after the reboot line.
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

    fn summary(&self) -> String {
        format!(
            "{} latency {}, down {}, connections {} (nixos-rebuild / own {}), tries while down \
             {} ({:.1}/s), peak {}/s, gc on the old boot: {:?}, took {:.1}s",
            if self.ok { "ok" } else { "FAILED" },
            ms(self.latency_ms),
            ms(self.down_ms),
            self.accepted_total,
            self.connections(),
            self.tries_down,
            self.tries_per_second_down(),
            self.peak_tries_per_second,
            self.gc_on_old_boot(),
            self.took_s
        )
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("?".into(), |v| format!("{v:.0} ms"))
}

/// The statistics of a per-reset figure.
fn stats(resets: &[Reset], figure: impl Fn(&Reset) -> Option<f64>) -> Stats {
    Stats::of(&resets.iter().filter_map(figure).collect::<Vec<_>>())
}

/// The max of a count, with the median and min when they differ.
fn count(s: &Stats) -> String {
    if s.min == s.max {
        format!("{:.0}", s.max)
    } else {
        format!("{:.0} (median {:.1}, min {:.0})", s.max, s.median, s.min)
    }
}

struct Report {
    reboots: usize,
    bare: usize,
    flakem: Vec<Reset>,
    naive: Vec<Reset>,
    slow_flakem: Reset,
    slow_naive: Reset,
    took: Duration,
}

impl Report {
    /// Results: per reset, flakem's and the naive loop's, with flakem's targets.
    fn results(&self) -> Table {
        let (f, n) = (&self.flakem[..], &self.naive[..]);
        // A row: the figure, flakem's and the naive loop's, flakem's target and if it met it.
        let row = |figure: &str, flakem: String, naive: String, target: Option<(String, bool)>| {
            let (target, met) = target.map_or_else(Default::default, |(t, met)| (t, yes_no(met)));
            [figure.to_owned(), flakem, naive, target, met]
        };
        let latency = |figure: &str, pick: fn(&Stats) -> f64, target: Option<f64>| {
            let of = |rs| stats(rs, |r| r.latency_ms);
            let (flakem, naive) = (pick(&of(f)), pick(&of(n)));
            let target = target.map(|limit| (format!("< {limit:.0} ms"), flakem < limit));
            row(
                figure,
                format!("{flakem:.0} ms"),
                format!("{naive:.0} ms"),
                target,
            )
        };
        // A count per reset, and flakem's target for its max.
        let count_row = |figure: &str, of: fn(&Reset) -> Option<usize>, target: Option<usize>| {
            let of = |rs| stats(rs, |r| of(r).map(|n| n as f64));
            let flakem = of(f);
            let target = target.map(|t| (format!("≤ {t}"), flakem.max <= t as f64));
            row(figure, count(&flakem), count(&of(n)), target)
        };
        let median = |figure: &str, of: fn(&Reset) -> Option<f64>, unit: &str, decimals| {
            let show = |rs| format!("{:.*} {unit}", decimals, stats(rs, of).median);
            row(figure, show(f), show(n), None)
        };
        let rate = |rs| stats(rs, |r| Some(r.tries_per_second_down()));
        let (frate, nrate) = (rate(f), rate(n));
        let gc_on_old = |rs: &[Reset]| {
            let old = rs.iter().filter(|r| r.gc_on_old_boot() == Some(true));
            format!("{} of {}", old.count(), rs.len())
        };
        let rows = [
            latency(
                "(a) sshd accepting again → next step, median",
                |s| s.median,
                Some(TARGET_MEDIAN_MS),
            ),
            latency("(a) same, max", |s| s.max, Some(TARGET_MAX_MS)),
            latency("(a) same, min", |s| s.min, None),
            count_row(
                "(b) connections accepted by the host per reset",
                |r| Some(r.accepted_total),
                None,
            ),
            count_row(
                "(b) of which nixos-rebuild's",
                |r| r.accepted_nixos_rebuild,
                None,
            ),
            count_row(
                "(b) of which the deployer's own",
                Reset::own_connections,
                Some(TARGET_OWN_CONNECTIONS),
            ),
            row(
                "(b) a bare `nixos-rebuild boot`, same arguments (cross-check)",
                self.bare.to_string(),
                self.bare.to_string(),
                None,
            ),
            count_row(
                "(c) ssh tries while the host was down",
                |r| Some(r.tries_down),
                None,
            ),
            row(
                "(c) ssh tries per second while down (tries ÷ time down)",
                format!("{:.1}", frate.max),
                format!("{:.1} (median {:.1})", nrate.max, nrate.median),
                Some((
                    format!("≤ {TARGET_TRIES_PER_SECOND}"),
                    frate.max <= TARGET_TRIES_PER_SECOND as f64,
                )),
            ),
            count_row(
                "(c) most ssh tries in any 1 s of the wait",
                |r| Some(r.peak_tries_per_second),
                Some(TARGET_TRIES_PER_SECOND),
            ),
            count_row(
                "(c) ssh tries in the whole wait (reboot → next step)",
                |r| Some(r.try_offsets_ms.len()),
                None,
            ),
            median(
                "host down (processes gone → port accepting), median",
                |r| r.down_ms,
                "ms",
                0,
            ),
            median(
                "whole reset (first to last line of stderr), median",
                |r| Some(r.took_s),
                "s",
                1,
            ),
            row(
                "garbage collected on the old boot (runs)",
                gc_on_old(f),
                gc_on_old(n),
                Some((
                    "0".to_owned(),
                    f.iter().all(|r| r.gc_on_old_boot() == Some(false)),
                )),
            ),
            count_row(
                "\"does not accept connections yet\" lines printed per reset",
                |r| Some(r.closed_lines),
                None,
            ),
        ];
        let header = ["figure", "flakem", "naive loop", "target (flakem)", "met"];
        Table::new(header, rows)
    }

    /// The slow shutdown, one run each side.
    fn slow(&self) -> Table {
        let (sf, sn) = (&self.slow_flakem, &self.slow_naive);
        let row = |figure: &str, of: &dyn Fn(&Reset) -> String| [figure.to_owned(), of(sf), of(sn)];
        let boot = |id: Option<&str>, none: &str| format!("`{}`", id.unwrap_or(none));
        // The shortest time between a try and the `k`th after it.
        let shortest = |r: &Reset, k: usize| {
            let spans = r.try_offsets_ms.windows(k + 1).map(|w| w[k] - w[0]);
            let shortest = spans.reduce(f64::min);
            shortest.map_or("none".into(), |d| format!("{d:.0} ms"))
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
                boot(sn.printed_gc_boot.as_deref(), "none (the session died)"),
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
            row("connections accepted (nixos-rebuild's / own)", &|r| {
                r.connections()
            }),
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
                ms(sf.latency_ms),
                sn.latency_ms.map_or_else(
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
            [
                (i + 1).to_string(),
                ms(a.latency_ms),
                a.connections(),
                a.tries_down.to_string(),
                ms(b.latency_ms),
                b.connections(),
                format!("{} ({:.0})", b.tries_down, b.tries_per_second_down()),
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

    fn publish(&self) {
        let machine = Machine::now(&["ssh -V 2>&1", "nix --version"]);
        let failed = self.flakem.iter().chain(&self.naive);
        let failed = failed.filter(|r| !r.ok).count();
        let run = [
            format!(
                "whole benchmark: {:.0} s; failed runs: {failed}",
                self.took.as_secs_f64()
            ),
            format!("reboots per side: {}", self.reboots),
        ];
        let (results, slow, per_reset) = (self.results(), self.slow(), self.per_reset());
        let data = json!({
            "benchmark": "reset",
            "machine": machine,
            "took_s": self.took.as_secs_f64(),
            "parameters": {
                "host": HOST,
                "reboots_per_side": self.reboots,
                "down_ms": millis(DOWN),
                "slow_shutdown": {"accept_for_ms": millis(SLOW_ACCEPT_FOR), "down_ms": millis(SLOW_DOWN)},
                "deploy": NIXOS_REBUILD.join(" "),
                "naive_script": NAIVE,
            },
            "tables": {"results": results, "slow_shutdown": slow, "per_reset": per_reset},
            "bare_nixos_rebuild_connections": self.bare,
            "resets": {
                "flakem": self.flakem,
                "naive": self.naive,
                "slow_shutdown_flakem": self.slow_flakem,
                "slow_shutdown_naive": self.slow_naive,
            },
        });
        common::publish(
            "reset",
            &data,
            &[
                ("reset-machine", machine.markdown(&run)),
                ("reset-script", format!("```bash\n{NAIVE}```")),
                ("reset-results", results.markdown()),
                ("reset-slow", slow.markdown()),
                ("reset-per-reset", per_reset.markdown()),
            ],
        );
    }
}
