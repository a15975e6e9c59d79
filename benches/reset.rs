//! The reset benchmark: `flakem switch-push-reset` against a naive "reboot, sleep, retry ssh"
//! loop, both on the test bed (tests/integration/testbed), with the stand-in nixos-rebuild of
//! tests/fixtures/bin-ng doing the real deploy. Figures, not assertions: it prints them and
//! writes BENCHMARKS.md at the repository root. Run with `cargo bench --bench reset`; it needs
//! root, like the test bed. `FLAKEM_BENCH_REBOOTS=N` changes the number of reboots per side
//! (20 by default) for a quick try; BENCHMARKS.md should be written with the default.
//!
//! How each figure is measured (BENCHMARKS.md says the same for its readers):
//! - The instants the host went down and accepted again: a watcher thread sees the host's
//!   processes gone (the bed's supervisor empties `Host::pids` as it kills the host's init),
//!   then tries plain TCP connects to the host's port 22 every 0.5 ms: the first refused one
//!   is "down", the next that succeeds "accepting again".
//! - What the deployer does and when: its stderr is read line by line and each line is
//!   timestamped as it arrives (flakem prints `+ ...` before each process it starts; the naive
//!   script runs under `set -x`, which does the same).
//! - Every ssh process started on the client: an `ssh` shim first on PATH (a `/bin/sh` script
//!   in the bed's directory) writes its parent's name and its arguments to a FIFO that a thread
//!   of this benchmark reads and timestamps, then execs the real ssh.
//! - Connections the host accepted: "Accepted publickey" lines in its sshd log.
//! - On which boot the garbage was collected: a `nix-collect-garbage` shim first on the host's
//!   PATH records the host's boot id, then execs the real one.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::ffi::OsString;
use std::fmt::Write as _;
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

use common::{Timed, write_table, yes_no};
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
const TARGET_MEDIAN: Duration = Duration::from_millis(500);
const TARGET_MAX: Duration = Duration::from_millis(1500);
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

/// The naive reset, as a user would type it: deploy, reboot, sleep, retry ssh until it works,
/// collect garbage. `set -x` prints each command as it starts, as flakem does. The garbage
/// collection's session first prints the boot id it runs on.
const NAIVE: &str = r#"#!/bin/bash
# The naive reset (benchmark reference, not part of flakem): `$NIX_SSHOPTS` is the test
# bed's `-F <ssh config>`, split into words as nix does.
set -x
H=$1
nixos-rebuild boot --no-reexec --sudo --use-substitutes --target-host "$H" --flake ".#$H" || exit
ssh $NIX_SSHOPTS "$H" sudo reboot
sleep 1
until ssh $NIX_SSHOPTS -o ConnectTimeout=5 -o BatchMode=yes "$H" true; do :; done
ssh $NIX_SSHOPTS "$H" 'cat /proc/sys/kernel/random/boot_id; sudo nix-collect-garbage --delete-older-than 15d'
"#;

/// The deploy's `+` line on stderr (flakem's trace, the naive script's `set -x`).
const DEPLOY: &str = "+ nixos-rebuild boot ";

/// The name the naive script runs under (the parent of its ssh processes).
const NAIVE_NAME: &str = "naive-reset";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and must not run this.
    if !std::env::args().any(|a| a == "--bench") {
        println!("reset benchmark: run it with `cargo bench --bench reset`");
        return;
    }
    let reboots = common::env_count("FLAKEM_BENCH_REBOOTS", REBOOTS);
    let started = Instant::now();
    let mut bench = Bench::new();

    // A first generation, switched to, so that every measured run is a real redeploy.
    bench.bed.set_generation(HOST, "a");
    let first = bench.run_flakem(&["switch-push", HOST], &[]);
    assert!(
        first.timed.status.success(),
        "switch-push failed:\n{}",
        first.text()
    );

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

    let report = Report {
        reboots,
        bare,
        flakem,
        naive,
        slow_flakem,
        slow_naive,
        took: started.elapsed(),
    };
    let text = report.markdown();
    println!("{text}");
    // The fleet benchmark's section is kept as it is.
    let path = common::update_benchmarks(|parts| parts.reset = text);
    eprintln!("wrote {} in {:.0?}", path.display(), started.elapsed());
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
        fs::read_to_string(&self.gc_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
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
        run_timed(command, marks, self.host())
    }

    /// A bare `nixos-rebuild boot` of the stand-in; returns the connections the host accepted.
    fn run_bare_nixos_rebuild(&self) -> usize {
        let host = self.host();
        let before = accepted(&host);
        let mut command = self.command(NIXOS_REBUILD[0]);
        command.args(&NIXOS_REBUILD[1..]);
        let run = run_timed(command, &[], host.clone());
        assert!(
            run.timed.status.success(),
            "nixos-rebuild failed:\n{}",
            run.text()
        );
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
            || run_timed(command, &[DEPLOY, " sudo reboot"], self.host()),
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
        let status = run.timed.status;
        let may_fail = deployer == NAIVE_NAME;
        let outage = watch.finish(status.success() || may_fail);
        assert!(
            status.success() || may_fail,
            "{deployer} failed:\n{}",
            run.text()
        );
        if !status.success() {
            eprintln!("naive reset exited with {status}");
        }
        let after = accepted(&host);
        Reset::new(
            &run,
            outage,
            before,
            after,
            &self.starts,
            deployer,
            next_step,
            boot_before,
            self.gc_boots().get(gcs).cloned(),
        )
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
    args: String,
}

impl SshStart {
    /// A try of a wait loop: both flakem's tries and the naive loop's carry
    /// `ConnectTimeout=5`; the reboot's ssh, flakem's steps through a control master, its
    /// `ssh -G` and `ssh -O exit`, and nixos-rebuild's ssh calls do not.
    fn is_try(&self) -> bool {
        self.args.contains("ConnectTimeout=")
    }
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
            panic!(
                "mkfifo {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            );
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
                    args: args.to_owned(),
                });
            }
        });
        SshStarts { bin, seen }
    }

    /// Instants of the tries by `parent` between `from` and `to`.
    fn tries(&self, parent: &str, from: Instant, to: Instant) -> Vec<Instant> {
        self.seen
            .lock()
            .expect("ssh starts")
            .iter()
            .filter(|s| s.parent == parent && s.is_try() && s.at >= from && s.at <= to)
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
            while !host.pids().is_empty() {
                if !going() {
                    return None;
                }
                thread::sleep(Duration::from_millis(1));
            }
            // The supervisor clears the pids just before it kills the host: down is when the
            // port refuses.
            let address = SocketAddr::from((host.address(), 22));
            let open = || TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok();
            while open() {
                if !going() {
                    return None;
                }
                thread::sleep(WATCH_EVERY);
            }
            let down = Instant::now();
            loop {
                if open() {
                    return Some(Outage {
                        down,
                        up: Instant::now(),
                    });
                }
                if !going() {
                    return None;
                }
                thread::sleep(WATCH_EVERY);
            }
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

/// One run of a deployer: its stderr lines as they arrived, and the host's accepted
/// connections counted when the marked lines arrived.
struct Run {
    timed: Timed,
    /// The host's accepted connections when each mark's line arrived.
    accepted_at_marks: Vec<Option<usize>>,
}

impl Run {
    fn text(&self) -> String {
        let mut text = String::new();
        for (_, line) in &self.timed.lines {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    fn first_line(&self, matching: impl Fn(&str) -> bool) -> Option<Instant> {
        self.timed
            .lines
            .iter()
            .find(|(_, l)| matching(l))
            .map(|(at, _)| *at)
    }
}

/// `command` run to its end; the host's accepted connections are counted as soon as the
/// first stderr line containing each of `marks` arrives.
fn run_timed(command: Command, marks: &[&'static str], host: Host) -> Run {
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

/// The figures of one reset.
struct Reset {
    ok: bool,
    /// From sshd accepting again to the deployer's next step.
    latency: Option<Duration>,
    /// How long the host was down (processes gone to port accepting).
    down_for: Option<Duration>,
    accepted_total: usize,
    accepted_nixos_rebuild: Option<usize>,
    /// Connecting ssh starts while the host was down.
    tries_down: usize,
    /// The most connecting ssh starts within any one second of the wait (reboot line to next
    /// step).
    peak_tries_per_second: usize,
    /// Tries during the whole wait.
    tries_wait: usize,
    /// When each try of the wait started, after the reboot's `+` line.
    try_offsets: Vec<Duration>,
    /// flakem's "does not accept connections yet" lines.
    closed_lines: usize,
    boot_before: String,
    gc_boot: Option<String>,
    /// The boot id the naive script's collection session printed.
    printed_gc_boot: Option<String>,
    total: Duration,
}

impl Reset {
    #[allow(clippy::too_many_arguments)]
    fn new(
        run: &Run,
        outage: Option<Outage>,
        before: usize,
        after: usize,
        starts: &SshStarts,
        parent: &str,
        next_step: impl Fn(&str) -> bool,
        boot_before: String,
        gc_boot: Option<String>,
    ) -> Reset {
        let lines = &run.timed.lines;
        let reboot_line = run.first_line(|l| l.starts_with("+ ") && l.contains("sudo reboot"));
        let next = run.first_line(next_step);
        let latency = match (outage, next) {
            (Some(o), Some(n)) if n >= o.up => Some(n - o.up),
            _ => None,
        };
        let tries_down = outage.map_or(0, |o| starts.tries(parent, o.down, o.up).len());
        let wait_end = next
            .or_else(|| lines.last().map(|(at, _)| *at))
            .unwrap_or(run.timed.ended);
        let wait = reboot_line.map_or_else(Vec::new, |from| starts.tries(parent, from, wait_end));
        let peak = wait
            .iter()
            .map(|t| {
                wait.iter()
                    .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let closed_lines = lines
            .iter()
            .filter(|(_, l)| l.contains("does not accept connections yet"))
            .count();
        let printed_gc_boot = run
            .timed
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 36 && l.chars().filter(|c| *c == '-').count() == 4)
            .map(str::to_owned);
        let total = lines
            .first()
            .zip(lines.last())
            .map_or(Duration::ZERO, |((a, _), (b, _))| *b - *a);
        Reset {
            ok: run.timed.status.success(),
            latency,
            down_for: outage.map(|o| o.up - o.down),
            accepted_total: after - before,
            accepted_nixos_rebuild: match run.accepted_at_marks[..] {
                [Some(start), Some(end)] => Some(end - start),
                _ => None,
            },
            tries_down,
            peak_tries_per_second: peak,
            tries_wait: wait.len(),
            try_offsets: reboot_line.map_or_else(Vec::new, |r| {
                wait.iter()
                    .map(|t| t.saturating_duration_since(r))
                    .collect()
            }),
            closed_lines,
            boot_before,
            gc_boot,
            printed_gc_boot,
            total,
        }
    }

    fn own_connections(&self) -> Option<usize> {
        self.accepted_nixos_rebuild
            .map(|n| self.accepted_total.saturating_sub(n))
    }

    fn tries_per_second_down(&self) -> f64 {
        self.down_for
            .map_or(0.0, |d| self.tries_down as f64 / d.as_secs_f64())
    }

    /// Whether the garbage collection ran on the boot from before the reboot.
    fn gc_on_old_boot(&self) -> Option<bool> {
        self.gc_boot.as_ref().map(|b| *b == self.boot_before)
    }

    fn summary(&self) -> String {
        format!(
            "{} latency {}, down {}, connections {} ({} nixos-rebuild, {} own), \
             tries while down {} ({:.1}/s), peak {}/s, gc on {} boot, took {:.1}s",
            if self.ok { "ok" } else { "FAILED" },
            ms(self.latency),
            ms(self.down_for),
            self.accepted_total,
            self.accepted_nixos_rebuild
                .map_or("?".into(), |n| n.to_string()),
            self.own_connections().map_or("?".into(), |n| n.to_string()),
            self.tries_down,
            self.tries_per_second_down(),
            self.peak_tries_per_second,
            match self.gc_on_old_boot() {
                Some(true) => "the OLD",
                Some(false) => "the new",
                None => "no",
            },
            self.total.as_secs_f64()
        )
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("?".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    })
}

/// Median, min and max of a per-reset figure.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(resets: &[Reset], figure: impl Fn(&Reset) -> Option<f64>) -> Stats {
        let values: Vec<f64> = resets.iter().filter_map(figure).collect();
        Stats {
            median: common::median(&values),
            min: common::min(&values),
            max: common::max(&values),
        }
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
    fn markdown(&self) -> String {
        let latency = |rs: &[Reset]| Stats::of(rs, |r| r.latency.map(|d| d.as_secs_f64() * 1e3));
        let own = |rs: &[Reset]| Stats::of(rs, |r| r.own_connections().map(|n| n as f64));
        let nr = |rs: &[Reset]| Stats::of(rs, |r| r.accepted_nixos_rebuild.map(|n| n as f64));
        let total = |rs: &[Reset]| Stats::of(rs, |r| Some(r.accepted_total as f64));
        let down_rate = |rs: &[Reset]| Stats::of(rs, |r| Some(r.tries_per_second_down()));
        let down_tries = |rs: &[Reset]| Stats::of(rs, |r| Some(r.tries_down as f64));
        let peak = |rs: &[Reset]| Stats::of(rs, |r| Some(r.peak_tries_per_second as f64));
        let wait_tries = |rs: &[Reset]| Stats::of(rs, |r| Some(r.tries_wait as f64));
        let down_for = |rs: &[Reset]| Stats::of(rs, |r| r.down_for.map(|d| d.as_secs_f64() * 1e3));
        let took = |rs: &[Reset]| Stats::of(rs, |r| Some(r.total.as_secs_f64()));
        let gc_on_old = |rs: &[Reset]| {
            rs.iter()
                .filter(|r| r.gc_on_old_boot() == Some(true))
                .count()
        };
        let (f, n) = (&self.flakem[..], &self.naive[..]);
        let count = |s: &Stats| {
            if s.min == s.max {
                format!("{:.0}", s.max)
            } else {
                format!("{:.0} (median {:.1}, min {:.0})", s.max, s.median, s.min)
            }
        };
        let fl = latency(f);
        let nl = latency(n);
        let fo = own(f);
        let fpeak = peak(f);
        let frate = down_rate(f);
        let nrate = down_rate(n);
        let failed = f.iter().chain(n).filter(|r| !r.ok).count();

        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Written by `cargo bench --bench reset` ([benches/reset.rs](benches/reset.rs)): \
             `flakem switch-push-reset` against a naive \"reboot, sleep, retry ssh\" loop, \
             both on the test bed of `tests/integration/testbed` (real OpenSSH, real nix, the \
             stand-in `nixos-rebuild` of `tests/fixtures/bin-ng` doing the real deploy). \
             Figures, not test assertions.\n"
        );
        let _ = writeln!(w, "## Machine and run\n");
        common::write_machine(w, &["ssh -V 2>&1", "nix --version"]);
        let _ = writeln!(
            w,
            "- whole benchmark: {:.0} s; failed runs: {failed}\n",
            self.took.as_secs_f64()
        );

        let _ = writeln!(w, "## Parameters\n");
        let _ = writeln!(
            w,
            "- one host (`{HOST}`), rebooted {} times by each side: `Reboot::Down({DOWN:?})`, \
             down at once for 2 s, back with a new boot id;",
            self.reboots
        );
        let _ = writeln!(
            w,
            "- each reset deploys the other of two generations (`a`, `b`, alternating) with \
             `{}`;",
            NIXOS_REBUILD.join(" ")
        );
        let _ = writeln!(
            w,
            "- flakem: `flakem switch-push-reset {HOST}` with its defaults: dialect probed \
             (`auto`), timeout 10 min, garbage collection on with the default age \
             (`nix-collect-garbage --delete-older-than 15d`; neither `--no-gc` nor \
             `--gc-older-than`);"
        );
        let _ = writeln!(
            w,
            "- naive: the script below, with the same deploy command and the same collection;"
        );
        let _ = writeln!(
            w,
            "- slow shutdown (one run each side, at the end): `Reboot::SlowShutdown {{ \
             accept_for: {SLOW_ACCEPT_FOR:?}, down: {SLOW_DOWN:?} }}`: sessions end at once, \
             sshd accepts on the old boot id for 2.5 s, then the host is down for 2 s.\n"
        );
        let _ = writeln!(w, "```bash\n{}```\n", NAIVE);

        let _ = writeln!(w, "## Results\n");
        let _ = writeln!(
            w,
            "Per reset, over {} reboots per side (max, with median and min when they differ).\n",
            self.reboots
        );
        // A row: the figure, flakem's and the naive loop's, flakem's target and if it met it.
        let cells =
            |figure: &str, flakem: String, naive: String, target: Option<(String, bool)>| {
                let (target, met) = target.map_or_else(Default::default, |(target, met)| {
                    (target, yes_no(met).to_owned())
                });
                [figure.to_owned(), flakem, naive, target, met]
            };
        // The latency's median, max or min (`pick`), and flakem's target for it.
        let latency_row = |figure: &str, pick: fn(&Stats) -> f64, target: Option<Duration>| {
            let (flakem, naive) = (pick(&fl), pick(&nl));
            let target = target.map(|t| {
                (
                    format!("< {} ms", t.as_millis()),
                    flakem < t.as_secs_f64() * 1e3,
                )
            });
            cells(
                figure,
                format!("{flakem:.0} ms"),
                format!("{naive:.0} ms"),
                target,
            )
        };
        // A count per reset, and flakem's target for its max.
        let count_row = |figure: &str, stats: &dyn Fn(&[Reset]) -> Stats, target: Option<usize>| {
            let (flakem, naive) = (stats(f), stats(n));
            let target = target.map(|t| (format!("≤ {t}"), flakem.max <= t as f64));
            cells(figure, count(&flakem), count(&naive), target)
        };
        let median_row =
            |figure: &str, show: &dyn Fn(f64) -> String, stats: &dyn Fn(&[Reset]) -> Stats| {
                cells(figure, show(stats(f).median), show(stats(n).median), None)
            };
        let rows = [
            latency_row(
                "(a) sshd accepting again → next step, median",
                |s| s.median,
                Some(TARGET_MEDIAN),
            ),
            latency_row("(a) same, max", |s| s.max, Some(TARGET_MAX)),
            latency_row("(a) same, min", |s| s.min, None),
            count_row(
                "(b) connections accepted by the host per reset",
                &total,
                None,
            ),
            count_row("(b) of which nixos-rebuild's", &nr, None),
            count_row(
                "(b) of which the deployer's own",
                &own,
                Some(TARGET_OWN_CONNECTIONS),
            ),
            cells(
                "(b) a bare `nixos-rebuild boot`, same arguments (cross-check)",
                self.bare.to_string(),
                self.bare.to_string(),
                None,
            ),
            count_row("(c) ssh tries while the host was down", &down_tries, None),
            cells(
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
                &peak,
                Some(TARGET_TRIES_PER_SECOND),
            ),
            count_row(
                "(c) ssh tries in the whole wait (reboot → next step)",
                &wait_tries,
                None,
            ),
            median_row(
                "host down (processes gone → port accepting), median",
                &|ms| format!("{ms:.0} ms"),
                &down_for,
            ),
            median_row(
                "whole reset (first to last line of stderr), median",
                &|s| format!("{s:.1} s"),
                &took,
            ),
            cells(
                "garbage collected on the old boot (runs)",
                format!("{} of {}", gc_on_old(f), f.len()),
                format!("{} of {}", gc_on_old(n), n.len()),
                Some((
                    "0".to_owned(),
                    f.iter().all(|r| r.gc_on_old_boot() == Some(false)),
                )),
            ),
        ];
        write_table(
            w,
            ["figure", "flakem", "naive loop", "target (flakem)", "met"],
            rows,
        );
        let _ = writeln!(
            w,
            "flakem printed {} \"does not accept connections yet\" line(s) per reset \
             (median {:.0}).\n",
            count(&Stats::of(f, |r| Some(r.closed_lines as f64))),
            Stats::of(f, |r| Some(r.closed_lines as f64)).median
        );

        let _ = writeln!(w, "### Slow shutdown\n");
        let (sf, sn) = (&self.slow_flakem, &self.slow_naive);
        let row = |figure: &str, of: &dyn Fn(&Reset) -> String| [figure.to_owned(), of(sf), of(sn)];
        let rows = [
            row("boot id before the reboot", &|r| {
                format!("`{}`", r.boot_before)
            }),
            row("boot id the collection ran on (host-side shim)", &|r| {
                format!("`{}`", r.gc_boot.as_deref().unwrap_or("none"))
            }),
            [
                "boot id printed in the collection's own ssh session".to_owned(),
                String::new(),
                format!(
                    "`{}`",
                    sn.printed_gc_boot
                        .as_deref()
                        .unwrap_or("none (the session died)")
                ),
            ],
            row("**collected garbage on the old boot**", &|r| {
                format!("**{}**", gc_word(r))
            }),
            row("exit status", &|r| {
                if r.ok { "0" } else { "non-zero" }.to_owned()
            }),
            row("connections accepted (nixos-rebuild's / own)", &connections),
            row("ssh tries in the wait, most in any 1 s", &|r| {
                format!("{}, {}", r.tries_wait, r.peak_tries_per_second)
            }),
            row("tries, ms after the reboot's `+` line", &offsets),
            row(
                "shortest gap between two tries; shortest span of three",
                &spans,
            ),
            row(
                "host down (sessions ended 2.5 s before) → accepting on the new boot",
                &|r| ms(r.down_for),
            ),
            [
                "sshd accepting on the new boot → next step".to_owned(),
                ms(sf.latency),
                sn.latency.map_or_else(
                    || "none: it had gone on before the host went down".to_owned(),
                    |d| ms(Some(d)),
                ),
            ],
        ];
        write_table(w, ["", "flakem", "naive loop"], rows);

        let nl_peak = peak(n);
        let _ = writeln!(w, "### Reading the figures\n");
        let _ = writeln!(
            w,
            "- flakem's targets: (a) median {:.0} ms < 500 ms: {}; max {:.0} ms < 1500 ms: {}; \
             (b) at most {:.0} connections of its own per reset ≤ 2: {}; (c) at most {} ssh \
             tries in any second of the wait ≤ 5: {}.",
            fl.median,
            yes_no(fl.median < TARGET_MEDIAN.as_secs_f64() * 1e3),
            fl.max,
            yes_no(fl.max < TARGET_MAX.as_secs_f64() * 1e3),
            fo.max,
            yes_no(fo.max <= TARGET_OWN_CONNECTIONS as f64),
            fpeak.max,
            yes_no(fpeak.max <= TARGET_TRIES_PER_SECOND as f64),
        );
        let _ = writeln!(
            w,
            "- Latency: flakem's median is {:.0} ms above the naive loop's. The naive loop \
             starts ssh over and over (up to {:.0} a second here), so one of them connects \
             almost as soon as sshd accepts; flakem started at most {:.0} ssh per reset \
             while the port was closed: it probes the port with plain TCP connects and starts \
             ssh once one succeeds (probes 100 ms apart at the measured commit, `PROBE_EVERY` \
             in src/exec.rs), which can add up to one probe interval. Both then pay ssh's \
             connection setup.",
            fl.median - nl.median,
            nl_peak.max,
            down_tries(f).max,
        );
        let _ = writeln!(
            w,
            "- Connections: flakem's own are one control master before the reboot (its check \
             before the build, the boot id read and `sudo reboot` share it) and one after (the \
             try that sees the new boot id stays as the master of the verification, the \
             collection and the boot entries); every further try that reaches sshd is one \
             more, as under the slow shutdown, where the tries on the old boot id count. The \
             naive loop's are the reboot, the `true` that worked and the collection."
        );
        let _ = writeln!(
            w,
            "- Slow shutdown: the naive loop collected garbage on the {} boot; flakem on the {} \
             boot, after {} tries that saw the old boot id.{}\n",
            if self.slow_naive.gc_on_old_boot() == Some(true) {
                "**old**"
            } else {
                "new"
            },
            if self.slow_flakem.gc_on_old_boot() == Some(false) {
                "new"
            } else {
                "**old or no**"
            },
            self.slow_flakem
                .tries_wait
                .saturating_sub(usize::from(self.slow_flakem.latency.is_some())),
            if self.slow_flakem.peak_tries_per_second > 2 {
                " Its tries are spaced as the table shows: a sliding 1 s window catches three \
                 when the span of three comes out a hair under 1 s, as timing jitter of a \
                 millisecond does to tries 500 ms apart."
            } else {
                ""
            },
        );

        let _ = writeln!(w, "### Per reset\n");
        let rows = f.iter().zip(n).enumerate().map(|(i, (a, b))| {
            [
                (i + 1).to_string(),
                ms(a.latency),
                connections(a),
                a.tries_down.to_string(),
                ms(b.latency),
                connections(b),
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
        write_table(w, header, rows);

        let _ = writeln!(w, "{}", METHOD);
        md
    }
}

/// The shortest time between two consecutive tries, and between a try and the one after next.
fn spans(reset: &Reset) -> String {
    let shortest = |k: usize| {
        reset
            .try_offsets
            .windows(k + 1)
            .map(|w| w[k] - w[0])
            .min()
            .map_or("none".to_owned(), |d| ms(Some(d)))
    };
    format!("{}; {}", shortest(1), shortest(2))
}

fn offsets(reset: &Reset) -> String {
    let all: Vec<String> = reset
        .try_offsets
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

fn opt(n: Option<usize>) -> String {
    n.map_or("?".into(), |n| n.to_string())
}

/// The connections the host accepted for nixos-rebuild and for the deployer itself.
fn connections(reset: &Reset) -> String {
    format!(
        "{} / {}",
        opt(reset.accepted_nixos_rebuild),
        opt(reset.own_connections())
    )
}

fn gc_word(reset: &Reset) -> &'static str {
    match reset.gc_on_old_boot() {
        Some(true) => "yes",
        Some(false) => "no (new boot)",
        None => "no collection ran",
    }
}

const METHOD: &str = r#"## How it is measured

- **Down and back.** A thread of the benchmark waits for the host's processes to go (the
  test bed's supervisor clears the host's pids as it kills the host's init), then tries plain
  TCP connects to the host's port 22 every 0.5 ms: the first refused one is "down", the next
  that succeeds is "sshd accepts again". These probes never authenticate, so they add no "Accepted publickey" line.
- **(a) Latency.** The deployer's stderr is read line by line and each line is timestamped
  as it arrives. flakem prints `+ <command>` just before each process it starts; its next
  step after the wait is the verification, `+ ssh ... 'readlink -f /run/booted-system
  /run/current-system'`. The naive script runs under `set -x`; its next step is the
  collection's `+ ssh ... nix-collect-garbage ...`. Latency = that line's arrival minus the
  instant sshd accepted again.
- **(b) Connections.** "Accepted publickey" lines in the host's sshd log (`Host::sshd_log`),
  counted before and after each reset. Split by order: the deployer's steps run one after
  the other, so the count is also taken the moment the deploy's `+ nixos-rebuild boot` line
  arrives on stderr and the moment the deployer's next step's line arrives (flakem: the
  `boot_id && readlink` read before the reboot; naive: `ssh ... sudo reboot`). The
  difference is nixos-rebuild's share (a step's ssh has not authenticated yet when its `+`
  line is read, so its connection falls after the mark); everything else in the reset is
  the deployer's own (for flakem this includes its check before the build, if any).
  Cross-check: a bare `nixos-rebuild boot` of the stand-in with the same arguments, counted
  before and after.
- **(c) Tries.** Every ssh process started on the client goes through a shim first on PATH
  that reports its parent's name and arguments on a FIFO, timestamped by the benchmark as
  they arrive, then execs the real ssh (the shim costs about a millisecond per start). A try
  is an ssh start of the deployer's wait loop (parent `flakem`, or the naive script; both
  loops pass `-o ConnectTimeout=5`, which none of the other ssh calls do: not the reboot's,
  not flakem's calls through its control masters, not `ssh -G` or `ssh -O exit`, not
  nixos-rebuild's). "Tries while the host was down" are those between down and sshd
  accepting again; per second = that count ÷ the time down (the naive loop sleeps the first
  1 s of it: spinning, its rate is about twice that). "Most in any 1 s of the wait" slides
  a 1 s window over the tries between the reboot line and the next step.
- **Which boot collected.** A `nix-collect-garbage` shim first on the host's PATH (also under
  its sudo, which keeps PATH) appends the host's boot id to `/var/lib/flakem-bench/gc-boots`
  and execs the real one; the boot id before the reboot is read just before each reset. The
  naive script's collection session also prints its boot id itself.

## Reproduce

As root on Debian 12 with the test bed's packages (`apt-get install -y nix-bin
openssh-server openssh-client sudo age iproute2 util-linux`):

```
cargo bench --bench reset     # about 3-4 minutes; rewrites BENCHMARKS.md
FLAKEM_BENCH_REBOOTS=3 cargo bench --bench reset   # a quick try (also rewrites it)
```
"#;
