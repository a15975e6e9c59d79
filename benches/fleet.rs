//! The fleet benchmark (issue 5): `flakem switch-push` to 8 hosts at once against 1 host,
//! the nix evaluations flakem and nixos-rebuild run, what `--diff` costs, and how fast the
//! completion of `DEPLOY_HOST` answers. All on the test bed (tests/integration/testbed), with
//! the stand-in nixos-rebuild of tests/fixtures/bin-ng doing the real deploy and its activation
//! fixed at 1 s (`FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS`). Figures, not assertions: it prints
//! them and rewrites its own section of BENCHMARKS.md (between the `fleet benchmark` marker
//! comments; the rest of the file is left as it is). Run with `cargo bench --bench fleet`; it
//! needs root, like the test bed. `FLAKEM_BENCH_RUNS=N` (11 by default) and
//! `FLAKEM_BENCH_COMPLETIONS=N` (20) change the number of runs for a quick try.
//!
//! How each figure is measured (BENCHMARKS.md says the same for its readers):
//! - Wall time: from spawning flakem to its exit, `--json` so that each run's summary can be
//!   checked (every host `ok`, its system the fresh generation, which the host now runs).
//! - Steps: flakem's stderr is read line by line and each line is timestamped as it arrives
//!   (flakem prints `+ ...` before each process it starts, the stand-in `$ ...`, and with
//!   several hosts each line carries its `[host]` prefix).
//! - Evaluations: those lines (`+ nix ... eval` is flakem's own, `$ nix ... eval` and
//!   `$ nix ... build <flake>#...` the stand-in's), cross-checked in four untimed runs by a
//!   `nix` shim first on PATH that logs its parent's name and arguments for every nix process
//!   started (timed runs go without it, as the references do).
//! - CPU: the machine's busy time from /proc/stat over the run, and the CPU time of flakem's
//!   process tree (`getrusage(RUSAGE_CHILDREN)` before and after).
//! - Other work on the (shared) machine: the CPU time of every process that is not the
//!   benchmark's; runs during which it took more than 10 % of the CPUs are repeated.
//! - References, not flakem: the stand-in nixos-rebuild alone for 1 and 8 hosts, and plain
//!   `nix build`s of the 8 toplevels.
//! - Completion: the exact call bash's completion function makes on Tab, timed from spawn to
//!   exit, with a fresh `XDG_CACHE_HOME` for a cold start.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{env_count, max, median, min, nproc, write_table, yes_no};
use testbed::TestBed;

/// The hosts; configurations of these names are added to the test flake.
const HOSTS: [&str; 8] = [
    "node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8",
];
/// The stand-in's activation time (`FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS`).
const ACTIVATION_SECONDS: &str = "1";
/// Runs of each kind, unless `FLAKEM_BENCH_RUNS` says otherwise.
const RUNS: usize = 11;
/// Cached completion calls, unless `FLAKEM_BENCH_COMPLETIONS` says otherwise.
const COMPLETIONS: usize = 20;
/// Cold completion calls (each with a fresh cache).
const COLD_COMPLETIONS: usize = 3;
/// A measured run during which processes other than this benchmark's took more than this
/// share of the machine's CPUs is repeated (others run test suites on shared machines)...
const OTHERS_MAX_SHARE: f64 = 0.10;
/// ... at most this many times in all.
const ATTEMPTS: usize = 4;
/// Before each run the benchmark waits until the machine is this quiet...
const QUIET_SHARE: f64 = 0.15;
/// ... for this long at most over the whole benchmark.
const QUIET_BUDGET: Duration = Duration::from_secs(150);
/// Far above what any single run needs.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// Issue 5's targets.
const TARGET_RATIO: f64 = 1.5;
const TARGET_OWN_EVALUATIONS: usize = 1;
const TARGET_CACHED_MS: f64 = 100.0;

/// The runs made with the nix shim, untimed: label, number of hosts, options.
const SHIMMED: [(&str, usize, &[&str]); 4] = [
    ("1 host", 1, &[]),
    ("8 hosts", 8, &[]),
    ("1 host, `--diff`", 1, &["--diff"]),
    ("8 hosts, `--diff`", 8, &["--diff"]),
];

/// Whether a run's nix processes go through the shim.
#[derive(Clone, Copy, PartialEq)]
enum Shim {
    On,
    Off,
}

/// The field separator of the nix shim's log lines.
const SEP: char = '\x1f';

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` (or --all-targets) does not, and
    // this takes minutes and root: it must not run as a test.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("fleet benchmark: run it with `cargo bench --bench fleet`; nothing to do here");
        return;
    }
    let runs = env_count("FLAKEM_BENCH_RUNS", RUNS);
    let completions = env_count("FLAKEM_BENCH_COMPLETIONS", COMPLETIONS);
    let started = Instant::now();
    let mut bench = Bench::new();
    let background_before = background_busy(Duration::from_secs(2));

    // A first generation everywhere, so that every measured run is a real redeploy.
    let warm = bench.deploy(&HOSTS, "warm", &[], Shim::Off);
    eprintln!("warm-up, 8 hosts: {}", warm.summary());

    // 1. 8 hosts against 1, and the reference: nixos-rebuild alone, 1 host and 8 at once.
    // Each round runs all four, in an order that alternates, so that drift on the (shared)
    // machine hits flakem and the reference alike.
    let (mut one, mut eight) = (Vec::new(), Vec::new());
    let (mut bare_one, mut bare_eight) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let order: [usize; 2] = if r % 2 == 0 { [1, 8] } else { [8, 1] };
        for n in order {
            let run = bench.deploy(&HOSTS[..n], &format!("s{r}-{n}"), &[], Shim::Off);
            eprintln!("switch-push, {n} host(s), run {}: {}", r + 1, run.summary());
            if n == 1 { &mut one } else { &mut eight }.push(run);
        }
        for n in order {
            let run = bench.bare(&HOSTS[..n], &format!("n{r}-{n}"));
            eprintln!(
                "nixos-rebuild alone, {n} host(s), run {}: {:.2} s; CPU: flakem's tree {:.1} s, others {:.1} s",
                r + 1,
                run.wall.as_secs_f64(),
                run.cpu_own,
                run.cpu_others
            );
            if n == 1 {
                &mut bare_one
            } else {
                &mut bare_eight
            }
            .push(run);
        }
    }

    // 3. --diff against plain, one host, alternating.
    let (mut plain, mut diff) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_diff in order {
            let options: &[&str] = if with_diff { &["--diff"] } else { &[] };
            let generation = format!("d{r}-{}", if with_diff { "diff" } else { "plain" });
            let run = bench.deploy(&HOSTS[..1], &generation, options, Shim::Off);
            eprintln!(
                "switch-push{}, 1 host, run {}: {}",
                if with_diff { " --diff" } else { "" },
                r + 1,
                run.summary()
            );
            if with_diff { &mut diff } else { &mut plain }.push(run);
        }
    }
    let diff_eight = bench.deploy(&HOSTS, "d-eight", &["--diff"], Shim::Off);
    eprintln!("switch-push --diff, 8 hosts: {}", diff_eight.summary());

    // 2. The evaluation counts of the timed runs come from their trace lines; these runs,
    // not timed, cross-check them with the nix shim (which costs every nix process a bash).
    let mut shimmed = Vec::new();
    for (label, n, options) in SHIMMED {
        let run = bench.deploy(
            &HOSTS[..n],
            &format!("shim-{n}-{}", options.len()),
            options,
            Shim::On,
        );
        eprintln!("{label}, with the nix shim: {}", run.summary());
        shimmed.push((label, run));
    }

    // A reference for (1): 8 builds at once against one build of all 8.
    let mut builds = Vec::new();
    for r in 0..runs {
        let (apart, together) = bench.builds(r);
        eprintln!(
            "8 nix builds at once: {:.2} s; one nix build of the 8: {:.2} s",
            apart.as_secs_f64(),
            together.as_secs_f64()
        );
        builds.push((apart, together));
    }

    // 4. Completion.
    let completion = bench.completion(completions);
    eprintln!("completion: {}", completion.summary());
    let background = (background_before, background_busy(Duration::from_secs(2)));
    eprintln!(
        "machine busy without a run: {:.0} % before, {:.0} % after",
        background.0 * 100.0,
        background.1 * 100.0
    );

    let report = Report {
        runs,
        one,
        eight,
        plain,
        diff,
        diff_eight,
        shimmed,
        bare_one,
        bare_eight,
        builds,
        completion,
        background,
        discarded: bench.discarded.clone(),
        waited: QUIET_BUDGET.saturating_sub(bench.quiet_budget),
        took: started.elapsed(),
    };
    let section = report.markdown();
    println!("{section}");
    let path = common::update_benchmarks(|parts| parts.fleet = section);
    eprintln!(
        "wrote the fleet section of {} in {:.0?}",
        path.display(),
        started.elapsed()
    );
}

/// The bed, the shim and the environment every run uses.
struct Bench {
    bed: TestBed,
    /// PATH with the nix shim first, then the ng stand-in, then this machine's PATH.
    path: OsString,
    /// The same without the shim.
    path_unshimmed: OsString,
    tmp: PathBuf,
    nix_log: PathBuf,
    /// What is left of the time the benchmark may wait for other work on the machine to end.
    quiet_budget: Duration,
    /// Runs thrown away because other work took too much of the machine during them.
    discarded: Vec<String>,
}

impl Bench {
    fn new() -> Bench {
        let mut bed = TestBed::new();
        for host in HOSTS {
            bed.set_generation(host, "0");
            bed.add_host(host);
        }
        let dir = bed.dir().join("bench");
        let tmp = bed.dir().join("t");
        fs::create_dir_all(&tmp).expect("create the runs' TMPDIR");
        let bin = dir.join("bin");
        let nix_log = dir.join("nix-starts");
        fs::create_dir_all(&dir).expect("create the benchmark's directory");
        fs::write(&nix_log, "").expect("create the nix log");
        // One line per nix process: its parent's name (`nixos-rebuild.sh` for the stand-in,
        // which bash runs) and its arguments, separated by SEP, written by one printf (one
        // write, appended).
        common::write_shim(
            &bin.join("nix"),
            "records who starts nix and how, then runs the real nix.",
            &format!(
                "read -r line < /proc/$PPID/comm || line=unknown\n\
                 case $(tr '\\0' ' ' < /proc/$PPID/cmdline) in\n\
                 *nixos-rebuild.sh*) line=nixos-rebuild.sh ;;\n\
                 esac\n\
                 for a in \"$@\"; do line=\"$line{SEP}$a\"; done\n\
                 printf '%s\\n' \"$line\" >> {}\n",
                nix_log.display()
            ),
            &common::on_path("nix"),
        );
        Bench {
            path: common::search_path(&[&bin]),
            path_unshimmed: common::search_path(&[]),
            bed,
            tmp,
            nix_log,
            quiet_budget: QUIET_BUDGET,
            discarded: Vec::new(),
        }
    }

    fn nix_log_len(&self) -> usize {
        fs::metadata(&self.nix_log).map_or(0, |m| m.len() as usize)
    }

    /// The nix processes started since the log had `from` bytes.
    fn nix_starts_since(&self, from: usize) -> Vec<NixStart> {
        let text = fs::read(&self.nix_log).unwrap_or_default();
        String::from_utf8_lossy(&text[from.min(text.len())..])
            .lines()
            .map(NixStart::parse)
            .collect()
    }

    /// Waits, within what is left of the budget, until the machine is quiet: other work
    /// keeps its CPUs less than `QUIET_SHARE` busy over a second.
    fn wait_quiet(&mut self) {
        let start = Instant::now();
        while background_busy(Duration::from_secs(1)) > QUIET_SHARE
            && start.elapsed() < self.quiet_budget
        {}
        let waited = start.elapsed();
        self.quiet_budget = self.quiet_budget.saturating_sub(waited);
        if waited > Duration::from_secs(2) {
            eprintln!(
                "waited {:.0} s for other work on the machine to end ({:.0} s of waiting left)",
                waited.as_secs_f64(),
                self.quiet_budget.as_secs_f64()
            );
        }
    }

    /// `once` with `generation` once the machine is quiet, repeated (with a new generation)
    /// while other work on the machine took more than `OTHERS_MAX_SHARE` of its CPUs during
    /// the run, `ATTEMPTS` times at most; `what` names the run in the note of a repeat.
    fn quiet_run(
        &mut self,
        what: &str,
        generation: &str,
        mut once: impl FnMut(&mut Bench, &str) -> Run,
    ) -> Run {
        let mut attempt = 0;
        loop {
            self.wait_quiet();
            let generation = match attempt {
                0 => generation.to_owned(),
                n => format!("{generation}-again{n}"),
            };
            let run = once(self, &generation);
            attempt += 1;
            if run.others_share() <= OTHERS_MAX_SHARE || attempt == ATTEMPTS {
                return run;
            }
            let what = format!(
                "{what}: other work took {:.0} % of the CPUs",
                run.others_share() * 100.0
            );
            eprintln!("discarded ({what})");
            self.discarded.push(what);
        }
    }

    /// `deploy_once`, in a `quiet_run`.
    fn deploy(&mut self, hosts: &[&str], generation: &str, options: &[&str], shim: Shim) -> Run {
        let what = format!(
            "switch-push{} to {} host(s)",
            if options.contains(&"--diff") {
                " --diff"
            } else {
                ""
            },
            hosts.len()
        );
        self.quiet_run(&what, generation, |bench, generation| {
            bench.deploy_once(hosts, generation, options, shim)
        })
    }

    /// `flakem switch-push --json OPTIONS HOSTS` after giving each host a fresh generation;
    /// checks that every host now runs it.
    fn deploy_once(
        &mut self,
        hosts: &[&str],
        generation: &str,
        options: &[&str],
        shim: Shim,
    ) -> Run {
        for host in hosts {
            self.bed.set_generation(host, generation);
        }
        let list = hosts.join(",");
        let mut args = vec!["switch-push", "--json"];
        args.extend(options);
        args.push(&list);
        let mut command = self.bed.command(env!("CARGO_BIN_EXE_flakem"));
        command
            .args(&args)
            .env(
                "PATH",
                match shim {
                    Shim::On => &self.path,
                    Shim::Off => &self.path_unshimmed,
                },
            )
            .env("TMPDIR", &self.tmp)
            .env("FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS", ACTIVATION_SECONDS)
            .stdin(Stdio::null());
        let log_from = self.nix_log_len();
        let cpu = CpuMeter::start(&self.bed);
        let start = Instant::now();
        let timed = common::run_timed(command, RUN_DEADLINE, |_| {});
        let mut run = Run {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            status: timed.status,
            wall: timed.ended - start,
            lines: timed
                .lines
                .into_iter()
                .map(|(at, line)| (at - start, line))
                .collect(),
            stdout: timed.stdout,
            ..Run::default()
        };
        cpu.stop(&mut run);
        run.nix = self.nix_starts_since(log_from);
        self.check(&run, generation);
        run
    }

    /// `bare_once`, in a `quiet_run`.
    fn bare(&mut self, hosts: &[&str], generation: &str) -> Run {
        let what = format!("nixos-rebuild alone, {} host(s)", hosts.len());
        self.quiet_run(&what, generation, |bench, generation| {
            bench.bare_once(hosts, generation)
        })
    }

    /// A reference, not flakem: the stand-in `nixos-rebuild` alone, with the arguments flakem
    /// gives it, once per host, all started at once; wall time until the last one exits.
    fn bare_once(&mut self, hosts: &[&str], generation: &str) -> Run {
        for host in hosts {
            self.bed.set_generation(host, generation);
        }
        let cpu = CpuMeter::start(&self.bed);
        let start = Instant::now();
        let children: Vec<_> = hosts
            .iter()
            .map(|host| {
                let flake = format!(".#{host}");
                let mut command = self.bed.command("nixos-rebuild");
                command
                    .args(["switch", "--no-reexec", "--sudo", "--use-substitutes"])
                    .args(["--target-host", host, "--flake", &flake])
                    .env("PATH", &self.path_unshimmed)
                    .env("TMPDIR", &self.tmp)
                    .env("FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS", ACTIVATION_SECONDS)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                command.spawn().expect("start nixos-rebuild")
            })
            .collect();
        let mut status = None;
        let mut failures = String::new();
        for child in children {
            let output = child.wait_with_output().expect("wait for nixos-rebuild");
            if !output.status.success() {
                failures.push_str(&String::from_utf8_lossy(&output.stderr));
            }
            status.get_or_insert(output.status);
        }
        let wall = start.elapsed();
        let mut run = Run {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            status: status.expect("a host"),
            wall,
            ..Run::default()
        };
        // Before the checks below: their ssh calls are the benchmark's, not nixos-rebuild's.
        cpu.stop(&mut run);
        assert!(failures.is_empty(), "nixos-rebuild failed:\n{failures}");
        for host in hosts {
            let system = self.bed.host(host).readlink("/run/current-system");
            assert!(
                system
                    .as_deref()
                    .is_some_and(|s| s.ends_with(&format!("-{host}-gen-{generation}"))),
                "{host} runs {system:?}"
            );
        }
        run
    }

    /// A reference, not flakem: the 8 toplevels (each a fresh generation) built here by 8
    /// `nix build` processes at once, as the 8 stand-ins do, and by one `nix build` of all 8.
    /// Wall times.
    fn builds(&mut self, round: usize) -> (Duration, Duration) {
        self.wait_quiet();
        let attribute = |h: &str| format!(".#nixosConfigurations.{h}.config.system.build.toplevel");
        let nix_build = |bed: &TestBed, attributes: &[String]| {
            let mut command = bed.command("nix");
            command
                .args(["build", "--json", "--no-link"])
                .args(attributes)
                .env("PATH", &self.path_unshimmed)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            command.spawn().expect("start nix build")
        };
        for host in HOSTS {
            self.bed.set_generation(host, &format!("b{round}-apart"));
        }
        let start = Instant::now();
        let children: Vec<_> = HOSTS
            .iter()
            .map(|h| nix_build(&self.bed, &[attribute(h)]))
            .collect();
        for mut child in children {
            assert!(
                child.wait().expect("nix build").success(),
                "nix build failed"
            );
        }
        let apart = start.elapsed();
        for host in HOSTS {
            self.bed.set_generation(host, &format!("b{round}-together"));
        }
        let start = Instant::now();
        let all: Vec<String> = HOSTS.iter().map(|h| attribute(h)).collect();
        assert!(
            nix_build(&self.bed, &all)
                .wait()
                .expect("nix build")
                .success(),
            "nix build failed"
        );
        (apart, start.elapsed())
    }

    /// Panics unless the run succeeded and every host runs the fresh generation.
    fn check(&self, run: &Run, generation: &str) {
        assert!(
            run.status.success(),
            "switch-push {} failed ({}):\n{}",
            run.hosts.join(","),
            run.status,
            run.text()
        );
        let summary: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {}", run.stdout));
        let rows = summary.as_array().expect("a JSON array");
        assert_eq!(rows.len(), run.hosts.len(), "{summary}");
        for (row, host) in rows.iter().zip(&run.hosts) {
            let system = row["system"].as_str().unwrap_or_default();
            assert!(
                row["result"] == "ok"
                    && row["host"] == host.as_str()
                    && system.ends_with(&format!("-{host}-gen-{generation}")),
                "{host}: {row}"
            );
            assert_eq!(
                self.bed
                    .host(host)
                    .readlink("/run/current-system")
                    .as_deref(),
                Some(system),
                "{host} runs what the summary says"
            );
        }
    }

    /// What bash's completion function runs on `flakem build-there <TAB>`, in the flake's
    /// directory; `cache` is `XDG_CACHE_HOME`.
    fn complete(&self, cache: &Path, shimmed: bool) -> (Duration, String) {
        let mut command = self.bed.command(env!("CARGO_BIN_EXE_flakem"));
        command
            .args(["--", "flakem", "build-there", ""])
            .env("COMPLETE", "bash")
            .env("_CLAP_IFS", "\u{b}")
            .env("_CLAP_COMPLETE_INDEX", "2")
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "false")
            .env("XDG_CACHE_HOME", cache)
            .env(
                "PATH",
                if shimmed {
                    &self.path
                } else {
                    &self.path_unshimmed
                },
            )
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let output = command.output().expect("run flakem's completion");
        let took = start.elapsed();
        assert!(output.status.success(), "completion failed: {output:?}");
        let words = String::from_utf8_lossy(&output.stdout).replace('\u{b}', " ");
        // A flake-only name and a bed-only ssh alias (node1 is both).
        for name in ["web1", "node8", "@all"] {
            assert!(
                words.split_whitespace().any(|w| w == name),
                "no {name} in the completion: {words}"
            );
        }
        (took, words)
    }

    fn completion(&mut self, cached_calls: usize) -> Completion {
        self.wait_quiet();
        let cache = |name: &str| self.bed.dir().join("caches").join(name);
        // Timed without the nix shim.
        let mut cold = Vec::new();
        for i in 0..COLD_COMPLETIONS {
            cold.push(self.complete(&cache(&format!("cold-{i}")), false).0);
        }
        let warm = cache(&format!("cold-{}", COLD_COMPLETIONS - 1));
        let mut cached = Vec::new();
        for _ in 0..cached_calls {
            cached.push(self.complete(&warm, false).0);
        }
        // Counted with it: one cold call, then cached calls.
        let counted = cache("counted");
        let from = self.nix_log_len();
        let (_, words) = self.complete(&counted, true);
        let cold_nix = self.nix_starts_since(from);
        let from = self.nix_log_len();
        for _ in 0..5 {
            self.complete(&counted, true);
        }
        let cached_nix = self.nix_starts_since(from);
        let cache_files: Vec<String> = fs::read_dir(counted.join("flakem"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Completion {
            cold,
            cached,
            cold_nix,
            cached_nix,
            cached_nix_calls: 5,
            words,
            cache_files,
        }
    }
}

/// Busy and total CPU ticks of the machine (/proc/stat's first line).
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// User and system CPU time of this process's children that were waited for (a run of flakem:
/// flakem and everything it waited for, down the tree: the stand-in, nix, ssh).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The share of the machine's CPUs busy over `window`, while this benchmark runs nothing:
/// other work on the machine.
fn background_busy(window: Duration) -> f64 {
    let before = cpu_ticks();
    thread::sleep(window);
    let after = cpu_ticks();
    let total = (after.1 - before.1).max(1) as f64;
    (after.0 - before.0) as f64 / total
}

/// CPU ticks (user and system, its own and its reaped children's) of every process that is
/// not this benchmark's: neither a descendant of it nor one naming the bed's directory (the
/// ssh control masters, which leave their parent).
fn others_ticks(bed_dir: &str) -> BTreeMap<u32, u64> {
    let mut processes = BTreeMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state ppid ... utime(14) stime cutime cstime.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let ticks = (11..15).map(number).sum::<u64>();
        let ours = fs::read(entry.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(bed_dir));
        processes.insert(pid, (number(1) as u32, ticks, ours));
    }
    let me = std::process::id();
    let is_ours = |mut pid: u32| {
        for _ in 0..64 {
            match processes.get(&pid) {
                _ if pid == me => return true,
                Some((_, _, true)) => return true,
                Some((parent, _, _)) if *parent > 1 => pid = *parent,
                _ => return false,
            }
        }
        false
    };
    processes
        .iter()
        .filter(|(pid, _)| !is_ours(**pid))
        .map(|(pid, (_, ticks, _))| (*pid, *ticks))
        .collect()
}

/// The counters a run's CPU figures come from, read before the run.
struct CpuMeter {
    bed_dir: String,
    others: BTreeMap<u32, u64>,
    /// The machine's busy ticks.
    machine: u64,
    own: f64,
}

impl CpuMeter {
    fn start(bed: &TestBed) -> CpuMeter {
        let bed_dir = bed.dir().to_string_lossy().into_owned();
        CpuMeter {
            others: others_ticks(&bed_dir),
            machine: cpu_ticks().0,
            own: children_cpu_seconds(),
            bed_dir,
        }
    }

    /// Sets `run`'s CPU figures: what the counters moved by since `start`. Other work's are
    /// sums, not per process: a process that ended meanwhile moved its time into its parent's
    /// children's time, and one that started and ended meanwhile shows there too.
    fn stop(self, run: &mut Run) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        run.cpu_busy = (cpu_ticks().0 - self.machine) as f64 / hz;
        run.cpu_own = children_cpu_seconds() - self.own;
        let sum = |m: &BTreeMap<u32, u64>| m.values().sum::<u64>();
        let others = sum(&others_ticks(&self.bed_dir)).saturating_sub(sum(&self.others));
        run.cpu_others = others as f64 / hz;
    }
}

/// Who started a process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    Flakem,
    NixosRebuild,
    Other,
}

/// A nix command line: who ran it and its subcommand (`store diff-closures` for two words).
#[derive(Clone, Debug)]
struct NixCall {
    who: Who,
    subcommand: String,
    /// An installable or argument names a flake attribute (`...#...`).
    flake_attribute: bool,
}

impl NixCall {
    /// `eval`, or `build` of a flake attribute (which evaluates it first).
    fn evaluates(&self) -> bool {
        self.subcommand == "eval" || (self.subcommand == "build" && self.flake_attribute)
    }

    /// From nix's arguments (after the program name).
    fn from_args(who: Who, args: &[String]) -> NixCall {
        let mut words = args.iter();
        let mut subcommand = String::new();
        while let Some(w) = words.next() {
            match w.as_str() {
                "--extra-experimental-features" | "--experimental-features" => {
                    words.next();
                }
                "--option" => {
                    words.next();
                    words.next();
                }
                w if w.starts_with('-') => {}
                w => {
                    subcommand = w.to_owned();
                    if w == "store"
                        && let Some(next) = words.next()
                    {
                        subcommand = format!("store {next}");
                    }
                    break;
                }
            }
        }
        NixCall {
            who,
            subcommand,
            flake_attribute: args.iter().any(|a| a.contains('#')),
        }
    }
}

/// A nix process as the shim logged it.
struct NixStart(NixCall);

impl NixStart {
    fn parse(line: &str) -> NixStart {
        let mut fields = line.split(SEP);
        let parent = fields.next().unwrap_or_default();
        let who = match parent {
            "flakem" => Who::Flakem,
            p if p.starts_with("nixos-rebuild") => Who::NixosRebuild,
            _ => Who::Other,
        };
        let args: Vec<String> = fields.map(str::to_owned).collect();
        NixStart(NixCall::from_args(who, &args))
    }
}

/// A traced line of flakem's stderr: `[host] ` (with several hosts), then `+ cmd` (flakem's
/// own) or `$ cmd` (the stand-in's), or anything else.
struct Line<'a> {
    host: Option<&'a str>,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Line<'a> {
        if let Some(rest) = line.strip_prefix('[')
            && let Some((host, text)) = rest.split_once("] ")
            && !host.contains(' ')
        {
            return Line {
                host: Some(host),
                text,
            };
        }
        Line {
            host: None,
            text: line,
        }
    }

    /// The nix command of a `+ ` or `$ ` line, skipping `env` and `VAR=value` words.
    fn nix(&self) -> Option<NixCall> {
        let (who, command) = if let Some(c) = self.text.strip_prefix("+ ") {
            (Who::Flakem, c)
        } else if let Some(c) = self.text.strip_prefix("$ ") {
            (Who::NixosRebuild, c)
        } else {
            return None;
        };
        let words = shell_words::split(command)
            .unwrap_or_else(|_| command.split_whitespace().map(str::to_owned).collect());
        let program = words
            .iter()
            .position(|w| w != "env" && (w.starts_with('-') || !w.contains('=')))?;
        (words[program] == "nix").then(|| NixCall::from_args(who, &words[program + 1..]))
    }
}

/// One run of flakem (or, as a reference, of nixos-rebuild alone: no lines then).
#[derive(Default)]
struct Run {
    hosts: Vec<String>,
    status: ExitStatus,
    wall: Duration,
    /// stderr lines, with when they arrived after the spawn.
    lines: Vec<(Duration, String)>,
    stdout: String,
    /// What the nix shim logged during the run.
    nix: Vec<NixStart>,
    /// The machine's busy CPU time over the run.
    cpu_busy: f64,
    /// CPU time of flakem's process tree (this machine's side: not the hosts' sshd sessions).
    cpu_own: f64,
    /// CPU time of processes that are not this benchmark's (other work on the machine).
    cpu_others: f64,
}

/// Evaluating nix processes of a run, by who ran them.
#[derive(Default, Clone, Copy, PartialEq)]
struct Evaluations {
    /// flakem's `+ nix ... eval` (or `build` of a flake attribute) lines.
    flakem: usize,
    /// The stand-in's `$ nix ... eval` lines.
    rebuild_eval: usize,
    /// The stand-in's `$ nix ... build <flake>#...` lines.
    rebuild_build: usize,
    /// The shim's count of evaluating nix processes whose parent is flakem.
    shim_flakem: usize,
    /// ... whose parent is the stand-in.
    shim_rebuild: usize,
    /// ... whose parent is something else.
    shim_other: usize,
}

impl Evaluations {
    fn rebuild(&self) -> usize {
        self.rebuild_eval + self.rebuild_build
    }

    /// The trace lines and the shim agree.
    fn consistent(&self) -> bool {
        self.flakem == self.shim_flakem && self.rebuild() == self.shim_rebuild
    }
}

impl Run {
    /// The share of the machine's CPUs other work took during the run.
    fn others_share(&self) -> f64 {
        self.cpu_others / (self.wall.as_secs_f64() * nproc() as f64)
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for (_, line) in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        let _ = write!(text, "stdout:\n{}", self.stdout);
        text
    }

    fn evaluations(&self) -> Evaluations {
        let mut e = Evaluations::default();
        for (_, line) in &self.lines {
            let Some(call) = Line::parse(line).nix() else {
                continue;
            };
            match call.who {
                Who::Flakem if call.evaluates() => e.flakem += 1,
                Who::NixosRebuild if call.subcommand == "eval" => e.rebuild_eval += 1,
                Who::NixosRebuild if call.evaluates() => e.rebuild_build += 1,
                _ => {}
            }
        }
        for NixStart(call) in &self.nix {
            if call.evaluates() {
                match call.who {
                    Who::Flakem => e.shim_flakem += 1,
                    Who::NixosRebuild => e.shim_rebuild += 1,
                    Who::Other => e.shim_other += 1,
                }
            }
        }
        e
    }

    /// Every nix process of the run, by who and subcommand.
    fn nix_processes(&self) -> BTreeMap<(Who, String), usize> {
        let mut counts = BTreeMap::new();
        for NixStart(call) in &self.nix {
            let name = if call.subcommand == "build" && call.flake_attribute {
                "build <flake>#…".to_owned()
            } else {
                call.subcommand.clone()
            };
            *counts.entry((call.who, name)).or_insert(0) += 1;
        }
        counts
    }

    /// The lines of `host` (all lines when the run has one host), without the prefix.
    fn host_lines(&self, host: &str) -> Vec<(Duration, &str)> {
        let single = self.hosts.len() == 1;
        self.lines
            .iter()
            .filter_map(|(at, line)| {
                let parsed = Line::parse(line);
                match parsed.host {
                    Some(h) if h == host => Some((*at, parsed.text)),
                    None if single => Some((*at, parsed.text)),
                    _ => None,
                }
            })
            .collect()
    }

    /// When flakem's names evaluation ended: the first line after its `+ nix ... eval`.
    fn names_evaluated(&self) -> Option<Duration> {
        let i = self.lines.iter().position(|(_, l)| {
            l.starts_with("+ nix ") && Line::parse(l).nix().is_some_and(|c| c.evaluates())
        })?;
        self.lines.get(i + 1).map(|(at, _)| *at)
    }

    /// The instants each step of a plain deploy started, per host (see `STEPS`).
    fn steps(&self, host: &str) -> Option<[Duration; STEPS.len()]> {
        let lines = self.host_lines(host);
        let find = |after: Duration, what: &dyn Fn(&str) -> bool| {
            lines
                .iter()
                .find(|(at, text)| *at >= after && what(text))
                .map(|(at, _)| *at)
        };
        let names = self.names_evaluated()?;
        let nix_is = |text: &str, sub: &str| {
            text.starts_with("$ ") && Line::parse(text).nix().is_some_and(|c| c.subcommand == sub)
        };
        let rebuild = find(names, &|t| t.starts_with("+ nixos-rebuild "))?;
        let build = find(rebuild, &|t| nix_is(t, "build"))?;
        let copy = find(build, &|t| nix_is(t, "copy"))?;
        let profile = find(copy, &|t| {
            t.starts_with("$ ssh ") && t.contains(" nix-env -p ")
        })?;
        let wait = find(profile, &|t| t.contains("activation takes"))?;
        let activate = find(wait, &|t| {
            t.starts_with("$ ssh ") && t.contains("switch-to-configuration")
        })?;
        let read = find(activate, &|t| {
            t.starts_with("+ ssh ") && t.contains("readlink -f /run/current-system")
        })?;
        Some([names, rebuild, build, copy, profile, wait, activate, read])
    }

    fn summary(&self) -> String {
        let e = self.evaluations();
        let shim = |n: usize| match self.nix.is_empty() {
            true => String::new(),
            false => format!(" (shim {n})"),
        };
        format!(
            "{} in {:.2} s; evaluations: flakem {}{}, nixos-rebuild {} eval + {} build{}{}; \
             CPU: machine busy {:.1} s of {:.1} s, flakem's tree {:.1} s, others {:.1} s",
            if self.status.success() {
                "ok"
            } else {
                "FAILED"
            },
            self.wall.as_secs_f64(),
            e.flakem,
            shim(e.shim_flakem),
            e.rebuild_eval,
            e.rebuild_build,
            shim(e.shim_rebuild),
            if e.shim_other > 0 {
                format!(", other {}", e.shim_other)
            } else {
                String::new()
            },
            self.cpu_busy,
            self.wall.as_secs_f64() * nproc() as f64,
            self.cpu_own,
            self.cpu_others,
        )
    }
}

/// What `Run::steps` times: from one instant to the next (the first starts at the spawn).
const STEPS: [&str; 8] = [
    "flakem starts, evaluates the names (`+ nix ... eval`)",
    "checks (ssh, machine id, sudo), dialect, until `+ nixos-rebuild`",
    "the stand-in starts (bash, Python's argparse), until `$ nix build`",
    "`nix build` of the flake attribute: evaluate and build",
    "`nix copy` to the host",
    "`ssh ... nix-env -p ... --set`: the profile",
    "the activation wait (`FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS=1`)",
    "`ssh ... switch-to-configuration switch`, the stand-in exits, until flakem reads the \
     system (`+ ssh ... readlink -f /run/current-system`)",
];

/// After the last host's `readlink` line.
const TAIL: &str = "after the last host's `readlink`: every connection closed (`ssh -O exit`), the \
                    summary, exit";

struct Completion {
    cold: Vec<Duration>,
    cached: Vec<Duration>,
    cold_nix: Vec<NixStart>,
    cached_nix: Vec<NixStart>,
    cached_nix_calls: usize,
    words: String,
    cache_files: Vec<String>,
}

impl Completion {
    fn evaluations(starts: &[NixStart]) -> usize {
        starts.iter().filter(|NixStart(c)| c.evaluates()).count()
    }

    fn summary(&self) -> String {
        format!(
            "cold {} (evaluations {}), cached median {:.1} ms, max {:.1} ms over {} calls \
             (nix processes in {} cached calls: {})",
            list_ms(&self.cold),
            Completion::evaluations(&self.cold_nix),
            millis(median(&self.cached)),
            millis(max(&self.cached)),
            self.cached.len(),
            self.cached_nix_calls,
            self.cached_nix.len()
        )
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn list_ms(values: &[Duration]) -> String {
    values
        .iter()
        .map(|d| format!("{:.0} ms", millis(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_s(values: &[Duration]) -> String {
    values
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn walls(runs: &[Run]) -> Vec<Duration> {
    runs.iter().map(|r| r.wall).collect()
}

/// `x` with its sign and `decimals` decimals, and `±0` when it rounds to zero.
fn signed(x: f64, decimals: usize, unit: &str) -> String {
    let text = format!("{:+.*}", decimals, x);
    if text[1..].chars().all(|c| c == '0' || c == '.') {
        format!("±{}{unit}", &text[1..])
    } else {
        format!("{text}{unit}")
    }
}

/// The same figure for every run, or each run's.
fn same_or_each(values: &[usize]) -> String {
    match values {
        [first, rest @ ..] if rest.iter().all(|v| v == first) => first.to_string(),
        _ => values
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

struct Report {
    runs: usize,
    one: Vec<Run>,
    eight: Vec<Run>,
    plain: Vec<Run>,
    diff: Vec<Run>,
    diff_eight: Run,
    /// The runs with the nix shim, by `SHIMMED`'s labels.
    shimmed: Vec<(&'static str, Run)>,
    /// nixos-rebuild alone: 1 host, 8 at once.
    bare_one: Vec<Run>,
    bare_eight: Vec<Run>,
    /// 8 `nix build`s at once, one `nix build` of the 8.
    builds: Vec<(Duration, Duration)>,
    completion: Completion,
    /// The machine's busy share with no run going, before and after.
    background: (f64, f64),
    /// Runs repeated because of other work on the machine, and the time spent waiting for it.
    discarded: Vec<String>,
    waited: Duration,
    took: Duration,
}

impl Report {
    /// Median over `runs` (and their hosts) of each step's duration, and the median over runs
    /// of the slowest host's; the last entry is the tail after the last host's `readlink`
    /// (one per run).
    fn step_table(runs: &[Run]) -> Vec<(Duration, Duration)> {
        let mut pooled = vec![Vec::new(); STEPS.len() + 1];
        let mut slowest = vec![Vec::new(); STEPS.len() + 1];
        for run in runs {
            let mut worst = vec![Duration::ZERO; STEPS.len() + 1];
            let mut last_read = Duration::ZERO;
            for host in &run.hosts {
                let Some(instants) = run.steps(host) else {
                    eprintln!("{host}: not every step's line found");
                    continue;
                };
                let mut from = Duration::ZERO;
                for (i, at) in instants.iter().enumerate() {
                    let took = at.saturating_sub(from);
                    pooled[i].push(took);
                    worst[i] = worst[i].max(took);
                    from = *at;
                }
                last_read = last_read.max(from);
            }
            let tail = run.wall.saturating_sub(last_read);
            pooled[STEPS.len()].push(tail);
            worst[STEPS.len()] = tail;
            for (i, w) in worst.into_iter().enumerate() {
                slowest[i].push(w);
            }
        }
        pooled
            .iter()
            .zip(&slowest)
            .map(|(p, s)| (median(p), median(s)))
            .collect()
    }

    fn markdown(&self) -> String {
        let (t1, t8) = (median(&walls(&self.one)), median(&walls(&self.eight)));
        let ratio = t8.as_secs_f64() / t1.as_secs_f64();
        let activation: f64 = ACTIVATION_SECONDS.parse().unwrap_or(0.0);
        let ratio_rest = (t8.as_secs_f64() - activation) / (t1.as_secs_f64() - activation);
        let evals =
            |runs: &[Run]| -> Vec<Evaluations> { runs.iter().map(Run::evaluations).collect() };
        let (e1, e8) = (evals(&self.one), evals(&self.eight));
        let (ep, ed) = (evals(&self.plain), evals(&self.diff));
        let ed8 = self.diff_eight.evaluations();
        let shim_evals: Vec<Evaluations> =
            self.shimmed.iter().map(|(_, r)| r.evaluations()).collect();
        let consistent = shim_evals.iter().all(Evaluations::consistent);
        let others: usize = shim_evals.iter().map(|e| e.shim_other).sum();
        let pick = |es: &[Evaluations], f: fn(&Evaluations) -> usize| {
            same_or_each(&es.iter().map(f).collect::<Vec<_>>())
        };
        let med = |v: Vec<f64>| median(&v);
        // Machine busy CPU-seconds, its share of all CPUs, flakem's tree's CPU-seconds.
        let cpu = |runs: &[Run]| {
            (
                med(runs.iter().map(|r| r.cpu_busy).collect()),
                med(runs
                    .iter()
                    .map(|r| r.cpu_busy / (r.wall.as_secs_f64() * nproc() as f64))
                    .collect()),
                med(runs.iter().map(|r| r.cpu_own).collect()),
            )
        };
        let (cpu1, share1, own1) = cpu(&self.one);
        let (cpu8, share8, own8) = cpu(&self.eight);
        let (b1, b8) = (
            median(&walls(&self.bare_one)),
            median(&walls(&self.bare_eight)),
        );
        let bare_ratio = b8.as_secs_f64() / b1.as_secs_f64();
        let (_, _, bare_own1) = cpu(&self.bare_one);
        let (_, _, bare_own8) = cpu(&self.bare_eight);
        let (tp, td) = (median(&walls(&self.plain)), median(&walls(&self.diff)));
        let c = &self.completion;
        let cached_median = millis(median(&c.cached));
        let (s1, s8) = (
            Report::step_table(&self.one),
            Report::step_table(&self.eight),
        );
        let busy_lines = self
            .eight
            .iter()
            .flat_map(|r| &r.lines)
            .filter(|(_, l)| l.contains("SQLite database") && l.contains("is busy"))
            .count();
        let apart = median(&self.builds.iter().map(|b| b.0).collect::<Vec<_>>());
        let together = median(&self.builds.iter().map(|b| b.1).collect::<Vec<_>>());

        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(
            w,
            "## Many hosts, `--diff` and completion (`cargo bench --bench fleet`)\n"
        );
        let _ = writeln!(
            w,
            "Written by `cargo bench --bench fleet` ([benches/fleet.rs](benches/fleet.rs)) on the \
             same test bed: {} hosts (`{}`, configurations added to the test flake), the \
             stand-in `nixos-rebuild` of `tests/fixtures/bin-ng` doing the real deploy (real \
             nix evaluations, builds and copies, the profile and `switch-to-configuration` on \
             the host over real OpenSSH) with its activation fixed at {ACTIVATION_SECONDS} s \
             (`FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS={ACTIVATION_SECONDS}`: a wait just before \
             `switch-to-configuration`). Figures, not test assertions. This benchmark rewrites \
             only this section.\n",
            HOSTS.len(),
            HOSTS.join("`, `")
        );
        let _ = writeln!(w, "### Machine and run\n");
        common::write_machine(w, &["ssh -V 2>&1", "nix --version", "python3 --version"]);
        let kept: Vec<&Run> = self
            .one
            .iter()
            .chain(&self.eight)
            .chain(&self.plain)
            .chain(&self.diff)
            .chain([&self.diff_eight])
            .collect();
        let others_median = med(kept.iter().map(|r| r.others_share()).collect());
        let others_max = kept.iter().map(|r| r.others_share()).fold(0.0, f64::max);
        let _ = writeln!(
            w,
            "- other work on the machine (it is shared): its CPUs were {:.0} % busy in 2 s with \
             nothing of this benchmark running before the runs, {:.0} % after them. Before \
             each run the benchmark waits for the machine to be quiet (< {:.0} % busy; waited \
             {:.0} s in all); a run during which other processes took more than {:.0} % of the \
             CPUs is repeated with a new generation ({} repeated{}). In the runs kept, other \
             processes took {:.1} % of the CPUs (median), {:.1} % at most",
            self.background.0 * 100.0,
            self.background.1 * 100.0,
            QUIET_SHARE * 100.0,
            self.waited.as_secs_f64(),
            OTHERS_MAX_SHARE * 100.0,
            self.discarded.len(),
            if self.discarded.is_empty() {
                String::new()
            } else {
                format!(": {}", self.discarded.join("; "))
            },
            others_median * 100.0,
            others_max * 100.0,
        );
        let _ = writeln!(
            w,
            "- whole benchmark: {:.0} s; {} runs of each kind; every run checked: exit 0, \
             each host `ok` in the `--json` summary with the fresh generation, which the host \
             now runs\n",
            self.took.as_secs_f64(),
            self.runs
        );

        let _ = writeln!(w, "### Results\n");
        let row =
            |figure: &str, value: String| [figure.to_owned(), value, String::new(), String::new()];
        let met = |figure: &str, value: String, target: String, ok: bool| {
            [figure.to_owned(), value, target, yes_no(ok).to_owned()]
        };
        // Wall times: the median, then each run's.
        let walls_row = |figure: &str, runs: &[Run]| {
            let walls = walls(runs);
            let value = format!("{} ({})", secs(median(&walls)), list_s(&walls));
            row(&format!("{figure}, median (each run)"), value)
        };
        let own_evaluations = |figure: &str, es: &[Evaluations]| {
            let target = TARGET_OWN_EVALUATIONS;
            met(
                figure,
                pick(es, |e| e.flakem),
                target.to_string(),
                es.iter().all(|e| e.flakem == target),
            )
        };
        let by_rebuild = |es: &[Evaluations]| {
            format!(
                "{} + {}",
                pick(es, |e| e.rebuild_eval),
                pick(es, |e| e.rebuild_build)
            )
        };
        let own_and_rebuild = |es: &[Evaluations]| {
            format!(
                "{} + {}",
                pick(es, |e| e.flakem),
                pick(es, Evaluations::rebuild)
            )
        };
        let rows = [
            walls_row("(1) `switch-push` to 1 host, wall time", &self.one),
            walls_row(
                "(1) `switch-push` to 8 hosts at once, wall time",
                &self.eight,
            ),
            met(
                "(1) **8 hosts ÷ 1 host** (medians)",
                format!("**{ratio:.2}**"),
                format!("≤ {TARGET_RATIO}"),
                ratio <= TARGET_RATIO,
            ),
            row(
                &format!(
                    "(1) same without the {ACTIVATION_SECONDS} s activation: (t₈ − 1 s) ÷ (t₁ − 1 s)"
                ),
                format!("{ratio_rest:.2}"),
            ),
            walls_row(
                "(1) reference, not flakem: `nixos-rebuild switch` (the stand-in) alone, same arguments, 1 host",
                &self.bare_one,
            ),
            walls_row(
                "(1) reference: 8 of them started at once, until the last ends",
                &self.bare_eight,
            ),
            row(
                "(1) reference: **8 ÷ 1 for nixos-rebuild alone**",
                format!("**{bare_ratio:.2}**"),
            ),
            row(
                "(1) flakem's wall time over nixos-rebuild alone's (medians): 1 host / 8 hosts",
                format!(
                    "{:+.2} s / {:+.2} s",
                    t1.as_secs_f64() - b1.as_secs_f64(),
                    t8.as_secs_f64() - b8.as_secs_f64()
                ),
            ),
            own_evaluations(
                "(2) nix evaluations by flakem itself (`+ nix … eval`), 1 host",
                &e1,
            ),
            own_evaluations(
                "(2) nix evaluations by flakem itself (`+ nix … eval`), 8 hosts",
                &e8,
            ),
            row(
                "(2) by nixos-rebuild (the stand-in), 1 host: `$ nix … eval` + `$ nix … build <flake>#…`",
                by_rebuild(&e1),
            ),
            row(
                "(2) by nixos-rebuild (the stand-in), 8 hosts: `$ nix … eval` + `$ nix … build <flake>#…`",
                by_rebuild(&e8),
            ),
            walls_row("(3) `switch-push` 1 host, wall time", &self.plain),
            walls_row("(3) `switch-push --diff` 1 host, wall time", &self.diff),
            row(
                "(3) what `--diff` adds, 1 host (difference of the medians)",
                format!(
                    "{} ({})",
                    signed(td.as_secs_f64() - tp.as_secs_f64(), 2, " s"),
                    signed((td.as_secs_f64() / tp.as_secs_f64() - 1.0) * 100.0, 0, " %")
                ),
            ),
            row(
                "(3) evaluations, 1 host, plain: flakem's own + nixos-rebuild's",
                own_and_rebuild(&ep),
            ),
            row(
                "(3) evaluations, 1 host, `--diff`: flakem's own + nixos-rebuild's",
                own_and_rebuild(&ed),
            ),
            row(
                &format!(
                    "(3) `switch-push --diff` 8 hosts, one run: wall time (plain: {})",
                    secs(t8)
                ),
                secs(self.diff_eight.wall),
            ),
            met(
                "(3) evaluations, 8 hosts, `--diff`: flakem's own + nixos-rebuild's",
                own_and_rebuild(&[ed8]),
                "flakem's own: as many as for 1 host".to_owned(),
                ed.iter().all(|e| e.flakem == ed8.flakem),
            ),
            row(
                &format!(
                    "(4) completion of `flakem build-there <TAB>`, cold (fresh cache; {} nix evaluation), each call",
                    Completion::evaluations(&c.cold_nix)
                ),
                list_ms(&c.cold),
            ),
            met(
                &format!("(4) completion, cached, median of {} calls", c.cached.len()),
                format!("**{cached_median:.1} ms**"),
                format!("< {TARGET_CACHED_MS:.0} ms"),
                cached_median < TARGET_CACHED_MS,
            ),
            row(
                "(4) completion, cached, min / max",
                format!(
                    "{:.1} / {:.1} ms",
                    millis(min(&c.cached)),
                    millis(max(&c.cached))
                ),
            ),
            row(
                &format!(
                    "(4) nix processes started by {} cached calls",
                    c.cached_nix_calls
                ),
                c.cached_nix.len().to_string(),
            ),
        ];
        write_table(w, ["figure", "value", "target", "met"], rows);

        let _ = writeln!(
            w,
            "Cross-check of the evaluation counts: in {} runs made with the `nix` shim (1 and 8 \
             hosts, plain and `--diff`; not timed), its count of evaluating nix processes started \
             by flakem and by the stand-in {} the trace lines{}.\n",
            self.shimmed.len(),
            if consistent {
                "matches"
            } else {
                "**does not match**"
            },
            if others > 0 {
                format!(" ({others} evaluating nix processes had another parent)")
            } else {
                String::new()
            }
        );

        let _ = writeln!(w, "### Where the time goes (plain `switch-push`)\n");
        let _ = writeln!(
            w,
            "From the arrival of flakem's stderr lines: each step runs from the line that \
             starts it to the line that starts the next. 1 host: median over its runs; 8 hosts: \
             median over every host of every run, and the slowest host's (median over runs).\n"
        );
        let steps = STEPS.iter().copied().chain([TAIL]).zip(s1.iter().zip(&s8));
        let mut rows: Vec<[String; 4]> = steps
            .map(|(label, ((a, _), (b, bw)))| {
                let [a, b, bw] = [a, b, bw].map(|d| format!("{:.0} ms", millis(*d)));
                [label.to_owned(), a, b, bw]
            })
            .collect();
        let whole =
            |label: &str, one: String, eight: String| [label.to_owned(), one, String::new(), eight];
        rows.extend([
            whole(
                "**whole run** (wall time, median)",
                format!("**{:.0} ms**", millis(t1)),
                format!("**{:.0} ms**", millis(t8)),
            ),
            whole(
                "CPU time of flakem's process tree on this machine (flakem, stand-in, nix, ssh; median)",
                format!("{own1:.1} s"),
                format!("{own8:.1} s"),
            ),
            whole(
                "the same for nixos-rebuild alone (reference; median)",
                format!("{bare_own1:.1} s"),
                format!("{bare_own8:.1} s"),
            ),
            whole(
                &format!(
                    "the machine's busy CPU time during the run, and its share of the {} CPUs (median)",
                    nproc()
                ),
                format!("{cpu1:.1} s, {:.0} %", share1 * 100.0),
                format!("{cpu8:.1} s, {:.0} %", share8 * 100.0),
            ),
        ]);
        write_table(
            w,
            ["step", "1 host", "8 hosts, per host", "8 hosts, slowest"],
            rows,
        );
        let _ = writeln!(
            w,
            "A reference, not flakem: the 8 toplevels (fresh generations) built on this machine \
             by 8 `nix build` processes at once, as the 8 stand-ins do: {} (median of {}); by \
             one `nix build` of all 8 attributes: {}.\n",
            secs(apart),
            self.builds.len(),
            secs(together)
        );

        let _ = writeln!(
            w,
            "Every nix process of a run (the shim's log, in the runs made with it):\n"
        );
        let mut rows = Vec::new();
        for (label, run) in &self.shimmed {
            for ((who, sub), n) in run.nix_processes() {
                let who = match who {
                    Who::Flakem => "flakem",
                    Who::NixosRebuild => "nixos-rebuild (stand-in)",
                    Who::Other => "other",
                };
                rows.push([
                    label.to_string(),
                    who.to_owned(),
                    format!("`{sub}`"),
                    n.to_string(),
                ]);
            }
        }
        write_table(
            w,
            ["run", "started by", "nix subcommand", "processes"],
            rows,
        );

        // The steps (not the wait) that grew most from 1 host to 8.
        let mut grown: Vec<(f64, &str, f64, f64)> = STEPS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 6)
            .map(|(i, label)| {
                let (a, b) = (millis(s1[i].0), millis(s8[i].0));
                (b - a, *label, a, b)
            })
            .collect();
        grown.sort_by(|x, y| y.0.total_cmp(&x.0));
        let grown: Vec<String> = grown
            .iter()
            .take(3)
            .map(|(_, label, a, b)| format!("{label}: {a:.0} → {b:.0} ms"))
            .collect();

        let _ = writeln!(w, "### Reading the figures\n");
        let others8 = med(self.eight.iter().map(|r| r.cpu_others).collect());
        let work8 = (cpu8 - others8).max(own8);
        let n = nproc() as f64;
        let bound = activation + own8 / n;
        let _ = writeln!(
            w,
            "- (1) 8 hosts took {ratio:.2} × the time of 1 host (target ≤ {TARGET_RATIO}, i.e. \
             ≤ {:.2} s here: {}). The {ACTIVATION_SECONDS} s activations overlap (each host \
             waits its second at the same time: {:.0} ms per host, {:.0} ms for the slowest). \
             What grows is the work before them, done for all 8 hosts at once on this one \
             machine; the steps that grew most per host: {}.",
            TARGET_RATIO * t1.as_secs_f64(),
            yes_no(ratio <= TARGET_RATIO),
            millis(s8[6].0),
            millis(s8[6].1),
            grown.join("; "),
        );
        let _ = writeln!(
            w,
            "\n  The cause is the machine's CPUs: the test bed has {} and runs the 8 hosts on \
             them too. An 8-host run needed about {work8:.1} CPU-seconds (the machine's busy \
             time less other work's): {own8:.1} in flakem's process tree (flakem, the \
             stand-ins, nix, ssh) and the rest in the hosts' sshd sessions, `nix-store \
             --serve`, `nix-env` and sudo. Nearly all of it comes before the activation, so \
             the last host cannot start its wait before ≈ {work8:.1} ÷ {} = {:.2} s: ≈ {:.2} s \
             in all, against {} measured. The \
             client side alone puts the floor at \
             {ACTIVATION_SECONDS} s + {own8:.1} ÷ {} = {bound:.2} s, {:.2} × one host{}. The \
             steps themselves are not slow: 8 `nix build`s of the 8 toplevels at once took {} \
             on their own (one `nix build` of all 8: {}); in the table each step's growth is \
             mostly time spent waiting for a CPU held by the other hosts' work.",
            nproc(),
            nproc(),
            work8 / n,
            activation + work8 / n,
            secs(t8),
            nproc(),
            bound / t1.as_secs_f64(),
            if bound / t1.as_secs_f64() > TARGET_RATIO {
                ": over the target, however the hosts are scheduled"
            } else {
                ""
            },
            secs(apart),
            secs(together),
        );
        let _ = writeln!(
            w,
            "\n  nixos-rebuild alone, with the same arguments and no flakem, {}: 8 at once took \
             {bare_ratio:.2} × one ({} against {}). flakem adds {:+.2} s to one host and {:+.2} \
             s to 8, and {:+.1} / {:+.1} CPU-seconds (1 / 8 hosts) to nixos-rebuild's \
             {bare_own1:.1} / {bare_own8:.1}: its names evaluation (once for all hosts), its \
             checks ({:.0} ms before the first `+ nixos-rebuild` with 1 host, {:.0} ms for the \
             last with 8) and reading each host's system afterwards.{}",
            if bare_ratio > TARGET_RATIO {
                "misses 1.5 as well on this machine"
            } else {
                "stays within 1.5"
            },
            secs(b8),
            secs(b1),
            t1.as_secs_f64() - b1.as_secs_f64(),
            t8.as_secs_f64() - b8.as_secs_f64(),
            own1 - bare_own1,
            own8 - bare_own8,
            millis(s1[0].0 + s1[1].0),
            millis(s8[0].1 + s8[1].1),
            if busy_lines > 0 {
                format!(
                    " (nix printed \"SQLite database … is busy\" {busy_lines} times in the \
                     8-host runs: 8 nix processes on one store database and evaluation cache.)"
                )
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            w,
            "- (2) flakem ran {} evaluation of its own for 1 host and {} for 8 (`+ nix … eval \
             --json --impure --expr …getFlake…`: the configuration names, once for all hosts). \
             The evaluations per host are nixos-rebuild's: the stand-in, like the real one in \
             flake mode without `--build-host`, evaluates and builds each host's toplevel with \
             `nix build '<flake>#nixosConfigurations.\"HOST\".config.system.build.toplevel'` \
             (its `$ nix … build` lines; it prints `$ nix … eval` only with `--build-host`): one \
             per host.",
            pick(&e1, |e| e.flakem),
            pick(&e8, |e| e.flakem),
        );
        let _ = writeln!(
            w,
            "- (3) `--diff` splits the deploy: once every host passed its checks, flakem \
             evaluates the `drvPath` of every host's system in one `nix eval` (`+ nix … eval \
             --json … [ f.nixosConfigurations.\"node1\"….drvPath … ]`), realises each here \
             (`nix-store --realise`), copies it, runs `nix store diff-closures` on the host, then \
             activates with `nixos-rebuild switch --store-path` (which evaluates nothing). So the \
             per-host evaluations leave nixos-rebuild, and flakem adds one evaluation for all \
             hosts: flakem's own + nixos-rebuild's are {} + {} for 1 host and {} + {} for 8 (the \
             names, then every host's derivation). That is what the split costs in evaluations, \
             which the issue asks to report; the plain deploy keeps its one. In time, `--diff` \
             changed a deploy \
             by {} for one host (medians of {} runs each: its extra steps and the diff over ssh, \
             against the stand-in's `nix build` it spares) and by {} for 8 hosts (one run, \
             against the median of the plain ones), where flakem's process tree used \
             {:.1} CPU-seconds against {:.1} without `--diff`.",
            pick(&ed, |e| e.flakem),
            pick(&ed, Evaluations::rebuild),
            ed8.flakem,
            ed8.rebuild(),
            signed(td.as_secs_f64() - tp.as_secs_f64(), 2, " s"),
            self.runs,
            signed(
                self.diff_eight.wall.as_secs_f64() - t8.as_secs_f64(),
                2,
                " s"
            ),
            self.diff_eight.cpu_own,
            own8,
        );
        let _ = writeln!(
            w,
            "- (4) The first completion evaluates the flake (one `nix eval --json --impure \
             --expr …`) and writes `$XDG_CACHE_HOME/flakem/{}`; later calls read that file \
             (keyed by the flake's lock and its files' paths, sizes and modification times) and \
             start no nix process. The timing is the completion process alone, spawn to exit; \
             bash adds the fork of its `$( … )`. The test flake evaluates in milliseconds, so \
             the cold call here is a floor: on a flake that imports nixpkgs the evaluation \
             takes seconds, and only the first Tab after a change pays it. Offered: {}.\n",
            c.cache_files.first().map_or("names-….json", String::as_str),
            c.words.split_whitespace().collect::<Vec<_>>().join(" ")
        );

        let _ = writeln!(w, "{}", METHOD);
        md
    }
}

const METHOD: &str = r#"### How it is measured

- **Runs.** Every run deploys a fresh generation to each of its hosts (the test flake's
  `test-overrides.nix` changes, so each toplevel is a new store path: nix really evaluates,
  builds, copies and activates), after one warm-up run to all 8 hosts. 1-host and 8-host
  runs alternate, as do plain and `--diff` runs, and each round of flakem's runs is
  followed by the same round of the reference (nixos-rebuild alone), so that drift on the
  machine hits both sides. Command:
  `flakem switch-push --json [--diff] node1[,node2,...]`, default `--jobs` (all hosts, up to 8),
  the dialect probed (`auto`: ng, the stand-in of `tests/fixtures/bin-ng`).
- **Wall time.** From spawning flakem to its exit. Median over the runs; the ratio is the
  ratio of the medians.
- **Evaluations.** flakem's stderr lines: flakem prints `+ <command>` before each process it
  starts, the stand-in prints `$ <command>` before each of its own, and with several hosts
  both carry the host's `[host] ` prefix. An evaluation is a `nix eval`, or a `nix build` of a
  flake attribute (`<flake>#...`), which evaluates before it builds; `nix copy`, `nix store
  diff-closures` and `nix-store --realise` evaluate nothing. Cross-check: in four more runs,
  not timed (1 and 8 hosts, plain and `--diff`), a `nix` shim first on PATH logs, for every
  nix process, its parent's name (`flakem`, or the stand-in's `nixos-rebuild.sh`) and its
  arguments, then execs the real nix. The timed runs (flakem's and the references') go
  without it: it starts a bash and a `tr` before every nix process, a cost only the runs
  through it would pay.
- **Steps.** Each stderr line is timestamped as it arrives; a step is the time between the
  line that starts it and the line that starts the next (see the table).
- **CPU.** The machine's busy time (`/proc/stat`: all but idle and iowait) over the run,
  against wall time × the number of CPUs; flakem's process tree's CPU time
  (`getrusage(RUSAGE_CHILDREN)` of the benchmark before and after: flakem and everything it
  waited for); other work's CPU time: the user and system time, with their reaped children's,
  of every process that is neither a descendant of the benchmark nor names the bed's
  directory, summed before and after the run.
- **Other work.** The machine is shared. Before each run the benchmark waits (150 s at most
  in all) until its CPUs are less than 15 % busy over a second, and a run during which other
  work took more than 10 % of them is repeated with a new generation (4 tries at most).
- **References, not flakem.** `nixos-rebuild switch --no-reexec --sudo --use-substitutes
  --target-host H --flake .#H` (what flakem runs) started directly, for 1 host and for 8 at
  once, with the same environment; and `nix build --json --no-link` of the 8 toplevels, as 8
  processes at once and as one.
- **Completion.** The call bash's completion function (`COMPLETE=bash flakem`) makes on Tab:
  `COMPLETE=bash _CLAP_COMPLETE_INDEX=2 _CLAP_COMPLETE_COMP_TYPE=9 flakem -- flakem
  build-there ''`, in the test flake's directory, with the bed's `NIX_SSHOPTS` (its ssh config
  gives the aliases). Cold: a fresh `XDG_CACHE_HOME` each time (so flakem's cache and nix's
  are empty). Cached: the same call again with the cache the last cold call wrote.

### Reproduce

As root on Debian 12 with the test bed's packages (`apt-get install -y nix-bin
openssh-server openssh-client sudo age iproute2 util-linux python3`):

```
cargo bench --bench fleet     # about five minutes; rewrites this section of BENCHMARKS.md
FLAKEM_BENCH_RUNS=1 FLAKEM_BENCH_COMPLETIONS=5 cargo bench --bench fleet   # a quick try (also rewrites it)
```
"#;
