//! The fleet benchmark (issue 5): `flakem switch-push` to 8 hosts at once against 1 host,
//! the nix evaluations flakem and nixos-rebuild run, what `--diff` costs, and how fast the
//! completion of `DEPLOY_HOST` answers; nixos-rebuild alone and plain `nix build`s as
//! references. All on the test bed (tests/integration/testbed), with the stand-in
//! nixos-rebuild of tests/fixtures/bin-ng doing the real deploy and its activation fixed at
//! 1 s. Figures, not assertions: it writes benches/results/fleet.json and the `fleet-*` parts
//! of BENCHMARKS.md, which says how each figure is measured. Run with `cargo bench --bench
//! fleet` as root; `FLAKEM_BENCH_RUNS=N` (11) and `FLAKEM_BENCH_COMPLETIONS=N` (20) for a
//! quick try.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use common::{Machine, Stats, Table, Timed, env_count, millis, nproc, yes_no};
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
/// Cached completion calls made with the nix shim, to count their nix processes.
const COUNTED_COMPLETIONS: usize = 5;
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

/// The field separator of the nix shim's log lines.
const SEP: char = '\x1f';

fn main() {
    if !common::benchmarking("fleet") {
        return;
    }
    let runs = env_count("FLAKEM_BENCH_RUNS", RUNS);
    let completions = env_count("FLAKEM_BENCH_COMPLETIONS", COMPLETIONS);
    let started = Instant::now();
    let mut bench = Bench::new();
    let background_before = background_busy(Duration::from_secs(2));

    // A first generation everywhere, so that every measured run is a real redeploy.
    bench.deploy(&HOSTS, "warm", &[], false);

    // 1. 8 hosts against 1, and the reference: nixos-rebuild alone, 1 host and 8 at once.
    // Each round runs all four, in an order that alternates, so that drift on the (shared)
    // machine hits flakem and the reference alike.
    let [mut one, mut eight, mut bare_one, mut bare_eight] = [(); 4].map(|_| Vec::new());
    for r in 0..runs {
        let order = if r % 2 == 0 { [1, 8] } else { [8, 1] };
        for n in order {
            let run = bench.deploy(&HOSTS[..n], &format!("s{r}-{n}"), &[], false);
            if n == 1 { &mut one } else { &mut eight }.push(run);
        }
        for n in order {
            let run = bench.bare(&HOSTS[..n], &format!("n{r}-{n}"));
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
        for with_diff in [r % 2 == 1, r % 2 == 0] {
            let options: &[&str] = if with_diff { &["--diff"] } else { &[] };
            let generation = format!("d{r}-{}", if with_diff { "diff" } else { "plain" });
            let run = bench.deploy(&HOSTS[..1], &generation, options, false);
            if with_diff { &mut diff } else { &mut plain }.push(run);
        }
    }
    let diff_eight = bench.deploy(&HOSTS, "d-eight", &["--diff"], false);

    // 2. The evaluation counts of the timed runs come from their trace lines; these runs,
    // not timed, cross-check them with the nix shim (which costs every nix process a bash).
    let shimmed = SHIMMED.map(|(label, n, options)| {
        let generation = format!("shim-{n}-{}", options.len());
        (label, bench.deploy(&HOSTS[..n], &generation, options, true))
    });

    // A reference for (1): 8 builds at once against one build of all 8.
    let builds = (0..runs).map(|r| bench.builds(r)).collect();

    // 4. Completion.
    let completion = bench.completion(completions);
    let background = [background_before, background_busy(Duration::from_secs(2))];

    Report {
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
        discarded: bench.discarded,
        waited: QUIET_BUDGET.saturating_sub(bench.quiet_budget),
        took: started.elapsed(),
    }
    .publish();
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
    fn nix_starts_since(&self, from: usize) -> Vec<NixCall> {
        let text = fs::read(&self.nix_log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned();
        text.lines().map(NixCall::logged).collect()
    }

    /// `program` in the flake's directory, with the bed's environment and PATH with or
    /// without the nix shim.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>, shim: bool) -> Command {
        let mut command = self.bed.command(program);
        let path = if shim {
            &self.path
        } else {
            &self.path_unshimmed
        };
        command.env("PATH", path).stdin(Stdio::null());
        command
    }

    /// A deploy's `program`: `command`, with the runs' TMPDIR and the stand-in's activation
    /// time.
    fn deploy_command(&self, program: impl AsRef<std::ffi::OsStr>, shim: bool) -> Command {
        let mut command = self.command(program, shim);
        command
            .env("TMPDIR", &self.tmp)
            .env("FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS", ACTIVATION_SECONDS);
        command
    }

    /// Waits, within what is left of the budget, until the machine is quiet: other work
    /// keeps its CPUs less than `QUIET_SHARE` busy over a second.
    fn wait_quiet(&mut self) {
        let start = Instant::now();
        while background_busy(Duration::from_secs(1)) > QUIET_SHARE
            && start.elapsed() < self.quiet_budget
        {}
        self.quiet_budget = self.quiet_budget.saturating_sub(start.elapsed());
    }

    /// `once` with `generation` once the machine is quiet, repeated (with a new generation)
    /// while other work on the machine took more than `OTHERS_MAX_SHARE` of its CPUs during
    /// the run, `ATTEMPTS` times at most; `what` names the run in the log and in the note of
    /// a repeat.
    fn quiet_run(
        &mut self,
        what: &str,
        generation: &str,
        mut once: impl FnMut(&mut Bench, &str) -> Run,
    ) -> Run {
        for attempt in 0.. {
            self.wait_quiet();
            let generation = match attempt {
                0 => generation.to_owned(),
                n => format!("{generation}-again{n}"),
            };
            let run = once(self, &generation);
            eprintln!("{what}, {generation}: {}", run.summary());
            if run.others_share() <= OTHERS_MAX_SHARE || attempt + 1 == ATTEMPTS {
                return run;
            }
            let share = run.others_share() * 100.0;
            self.discarded
                .push(format!("{what}: other work took {share:.0} % of the CPUs"));
        }
        unreachable!("the loop returns")
    }

    /// `flakem switch-push --json OPTIONS HOSTS` after giving each host a fresh generation,
    /// in a `quiet_run`; checks that every host now runs it.
    fn deploy(&mut self, hosts: &[&str], generation: &str, options: &[&str], shim: bool) -> Run {
        let what = ["switch-push"]
            .iter()
            .chain(options)
            .copied()
            .collect::<Vec<_>>();
        let what = format!("{} to {} host(s)", what.join(" "), hosts.len());
        self.quiet_run(&what, generation, |bench, generation| {
            for host in hosts {
                bench.bed.set_generation(host, generation);
            }
            let list = hosts.join(",");
            let mut command = bench.deploy_command(env!("CARGO_BIN_EXE_flakem"), shim);
            command
                .args(["switch-push", "--json"])
                .args(options)
                .arg(&list);
            let log_from = bench.nix_log_len();
            let cpu = CpuMeter::start(&bench.bed);
            let timed = common::run_timed(command, RUN_DEADLINE, |_| {});
            let mut run = cpu.stop(hosts, timed);
            run.nix = bench.nix_starts_since(log_from);
            bench.check(&run, generation);
            run
        })
    }

    /// A reference, not flakem: the stand-in `nixos-rebuild` alone, with the arguments flakem
    /// gives it, once per host, all started at once; wall time until the last one exits.
    fn bare(&mut self, hosts: &[&str], generation: &str) -> Run {
        let what = format!("nixos-rebuild alone, {} host(s)", hosts.len());
        self.quiet_run(&what, generation, |bench, generation| {
            for host in hosts {
                bench.bed.set_generation(host, generation);
            }
            let cpu = CpuMeter::start(&bench.bed);
            let children: Vec<_> = (hosts.iter())
                .map(|host| {
                    let mut command = bench.deploy_command("nixos-rebuild", false);
                    command
                        .args(["switch", "--no-reexec", "--sudo", "--use-substitutes"])
                        .args(["--target-host", host, "--flake", &format!(".#{host}")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped());
                    command.spawn().expect("start nixos-rebuild")
                })
                .collect();
            let outputs = children.into_iter().map(|child| {
                let output = child.wait_with_output().expect("wait for nixos-rebuild");
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                (output.status, stderr)
            });
            let outputs: Vec<_> = outputs.collect();
            let timed = Timed {
                status: outputs[0].0,
                ended: Instant::now(),
                lines: Vec::new(),
                stdout: String::new(),
            };
            // Before the checks below: their ssh calls are the benchmark's, not nixos-rebuild's.
            let run = cpu.stop(hosts, timed);
            for (status, stderr) in &outputs {
                assert!(status.success(), "nixos-rebuild failed:\n{stderr}");
            }
            for host in hosts {
                let system = bench.bed.host(host).readlink("/run/current-system");
                let fresh = format!("-{host}-gen-{generation}");
                assert!(
                    system.as_deref().is_some_and(|s| s.ends_with(&fresh)),
                    "{host} runs {system:?}"
                );
            }
            run
        })
    }

    /// A reference, not flakem: the 8 toplevels (each a fresh generation) built here by 8
    /// `nix build` processes at once, as the 8 stand-ins do, and by one `nix build` of all 8.
    /// Wall times.
    fn builds(&mut self, round: usize) -> [f64; 2] {
        self.wait_quiet();
        let attribute = |h: &str| format!(".#nixosConfigurations.{h}.config.system.build.toplevel");
        let timed = |bench: &mut Bench, how: &str, groups: Vec<Vec<String>>| {
            for host in HOSTS {
                bench.bed.set_generation(host, &format!("b{round}-{how}"));
            }
            let start = Instant::now();
            let children: Vec<_> = (groups.iter())
                .map(|attributes| {
                    let mut command = bench.command("nix", false);
                    command
                        .args(["build", "--json", "--no-link"])
                        .args(attributes);
                    command.stdout(Stdio::null()).stderr(Stdio::null());
                    command.spawn().expect("start nix build")
                })
                .collect();
            for mut child in children {
                assert!(
                    child.wait().expect("nix build").success(),
                    "nix build failed"
                );
            }
            start.elapsed().as_secs_f64()
        };
        let apart = timed(self, "apart", HOSTS.map(|h| vec![attribute(h)]).to_vec());
        let together = timed(self, "together", vec![HOSTS.map(attribute).to_vec()]);
        eprintln!("8 nix builds at once: {apart:.2} s; one nix build of the 8: {together:.2} s");
        [apart, together]
    }

    /// Panics unless the run succeeded and every host runs the fresh generation.
    fn check(&self, run: &Run, generation: &str) {
        let failed = || {
            format!(
                "switch-push to {:?} failed:\n{}",
                run.hosts,
                run.timed.text()
            )
        };
        assert!(run.timed.status.success(), "{}", failed());
        let summary: Value = serde_json::from_str(&run.timed.stdout).unwrap_or_else(|e| {
            panic!("--json printed no JSON ({e}): {}", failed());
        });
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
            let runs = self.bed.host(host).readlink("/run/current-system");
            assert_eq!(
                runs.as_deref(),
                Some(system),
                "{host} runs what the summary says"
            );
        }
    }

    /// What bash's completion function runs on `flakem build-there <TAB>`, in the flake's
    /// directory; `cache` is `XDG_CACHE_HOME`.
    fn complete(&self, cache: &Path, shim: bool) -> (Duration, String) {
        let mut command = self.command(env!("CARGO_BIN_EXE_flakem"), shim);
        command
            .args(["--", "flakem", "build-there", ""])
            .env("COMPLETE", "bash")
            .env("_CLAP_IFS", "\u{b}")
            .env("_CLAP_COMPLETE_INDEX", "2")
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "false")
            .env("XDG_CACHE_HOME", cache)
            .stderr(Stdio::null());
        let start = Instant::now();
        let output = command.output().expect("run flakem's completion");
        let took = start.elapsed();
        assert!(output.status.success(), "completion failed: {output:?}");
        let words = String::from_utf8_lossy(&output.stdout).replace('\u{b}', " ");
        // A flake-only name and a bed-only ssh alias (node1 is both).
        for name in ["web1", "node8", "@all"] {
            let offered = words.split_whitespace().any(|w| w == name);
            assert!(offered, "no {name} in the completion: {words}");
        }
        (took, words)
    }

    fn completion(&mut self, cached_calls: usize) -> Completion {
        self.wait_quiet();
        let cache = |name: &str| self.bed.dir().join("caches").join(name);
        // Timed without the nix shim.
        let cold_ms = (0..COLD_COMPLETIONS)
            .map(|i| millis(self.complete(&cache(&format!("cold-{i}")), false).0))
            .collect();
        let warm = cache(&format!("cold-{}", COLD_COMPLETIONS - 1));
        let cached_ms = (0..cached_calls)
            .map(|_| millis(self.complete(&warm, false).0))
            .collect();
        // Counted with it: one cold call, then cached calls.
        let counted = cache("counted");
        let from = self.nix_log_len();
        let (_, words) = self.complete(&counted, true);
        let cold_nix = self.nix_starts_since(from);
        let from = self.nix_log_len();
        for _ in 0..COUNTED_COMPLETIONS {
            self.complete(&counted, true);
        }
        let cached_nix = self.nix_starts_since(from).len();
        let cache_files = fs::read_dir(counted.join("flakem")).into_iter().flatten();
        let cache_files = cache_files.flatten();
        let completion = Completion {
            cold_ms,
            cached_ms,
            cold_evaluations: cold_nix.iter().filter(|c| c.evaluates()).count(),
            cached_nix,
            words: words.split_whitespace().collect::<Vec<_>>().join(" "),
            cache_files: cache_files
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        };
        eprintln!("completion: {}", json!(completion));
        completion
    }
}

/// Busy and total CPU ticks of the machine (/proc/stat's first line).
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let first = stat.lines().next().unwrap_or_default();
    let fields: Vec<u64> = first
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

/// CPU ticks (user and system, its own and its reaped children's) of all processes that are
/// not this benchmark's: neither a descendant of it nor one naming the bed's directory (the
/// ssh control masters, which leave their parent).
fn others_ticks(bed_dir: &str) -> u64 {
    // pid → (parent, ticks, names the bed)
    let mut processes = BTreeMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // After the command name in parentheses: state ppid ... utime(14) stime cutime cstime.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields.get(11..15).map_or(0, |t| t.iter().sum());
        let ours = fs::read(entry.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(bed_dir));
        let parent = fields.get(1).copied().unwrap_or(0) as u32;
        processes.insert(pid, (parent, ticks, ours));
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
    let others = processes.iter().filter(|(pid, _)| !is_ours(**pid));
    others.map(|(_, (_, ticks, _))| ticks).sum()
}

/// The counters a run's CPU figures come from, read before the run.
struct CpuMeter {
    bed_dir: String,
    others: u64,
    /// The machine's busy ticks.
    machine: u64,
    own: f64,
    /// When the run starts: just after the counters are read.
    started: Instant,
}

impl CpuMeter {
    fn start(bed: &TestBed) -> CpuMeter {
        let bed_dir = bed.dir().to_string_lossy().into_owned();
        CpuMeter {
            others: others_ticks(&bed_dir),
            machine: cpu_ticks().0,
            own: children_cpu_seconds(),
            bed_dir,
            started: Instant::now(),
        }
    }

    /// The run of `timed` to `hosts`, with its CPU figures: what the counters moved by since
    /// `start`. Other work's are sums, not per process: a process that ended meanwhile moved
    /// its time into its parent's children's time, and one that started and ended meanwhile
    /// shows there too.
    fn stop(self, hosts: &[&str], timed: Timed) -> Run {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Run {
            cpu_busy: (cpu_ticks().0 - self.machine) as f64 / hz,
            cpu_own: children_cpu_seconds() - self.own,
            cpu_others: others_ticks(&self.bed_dir).saturating_sub(self.others) as f64 / hz,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            started: self.started,
            timed,
            nix: Vec::new(),
        }
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
                    words.nth(1);
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

    /// A line of the nix shim's log: the parent's name, then the arguments.
    fn logged(line: &str) -> NixCall {
        let mut fields = line.split(SEP);
        let who = match fields.next().unwrap_or_default() {
            "flakem" => Who::Flakem,
            p if p.starts_with("nixos-rebuild") => Who::NixosRebuild,
            _ => Who::Other,
        };
        NixCall::from_args(who, &fields.map(str::to_owned).collect::<Vec<_>>())
    }

    /// The nix command of a traced line (`+ cmd`, flakem's own, or `$ cmd`, the stand-in's),
    /// skipping `env` and `VAR=value` words.
    fn traced(text: &str) -> Option<NixCall> {
        let (who, command) = if let Some(c) = text.strip_prefix("+ ") {
            (Who::Flakem, c)
        } else {
            (Who::NixosRebuild, text.strip_prefix("$ ")?)
        };
        let words = shell_words::split(command)
            .unwrap_or_else(|_| command.split_whitespace().map(str::to_owned).collect());
        let program = words
            .iter()
            .position(|w| w != "env" && (w.starts_with('-') || !w.contains('=')))?;
        (words[program] == "nix").then(|| NixCall::from_args(who, &words[program + 1..]))
    }
}

/// A line of flakem's stderr without its `[host] ` prefix (with several hosts), and the host.
fn split_host(line: &str) -> (Option<&str>, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some((host, text)) = rest.split_once("] ")
        && !host.contains(' ')
    {
        return (Some(host), text);
    }
    (None, line)
}

/// One run of flakem (or, as a reference, of nixos-rebuild alone: no lines then).
struct Run {
    hosts: Vec<String>,
    /// When the run started (its wall time and its lines' instants are from then).
    started: Instant,
    timed: Timed,
    /// What the nix shim logged during the run.
    nix: Vec<NixCall>,
    /// The machine's busy CPU time over the run.
    cpu_busy: f64,
    /// CPU time of flakem's process tree (this machine's side: not the hosts' sshd sessions).
    cpu_own: f64,
    /// CPU time of processes that are not this benchmark's (other work on the machine).
    cpu_others: f64,
}

/// Evaluating nix processes of a run, by who ran them.
#[derive(Default, Clone, Copy, Serialize)]
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
    fn wall(&self) -> Duration {
        self.timed.ended - self.started
    }

    /// The share of the machine's CPUs other work took during the run.
    fn others_share(&self) -> f64 {
        self.cpu_others / (self.wall().as_secs_f64() * nproc() as f64)
    }

    /// The share of the machine's CPUs busy during the run.
    fn busy_share(&self) -> f64 {
        self.cpu_busy / (self.wall().as_secs_f64() * nproc() as f64)
    }

    /// Its stderr lines, each with when it arrived after the spawn.
    fn lines(&self) -> impl Iterator<Item = (Duration, &str)> {
        let lines = self.timed.lines.iter();
        lines.map(|(at, line)| (*at - self.started, line.as_str()))
    }

    fn evaluations(&self) -> Evaluations {
        let mut e = Evaluations::default();
        for call in self
            .lines()
            .filter_map(|(_, l)| NixCall::traced(split_host(l).1))
        {
            match call.who {
                Who::Flakem if call.evaluates() => e.flakem += 1,
                Who::NixosRebuild if call.subcommand == "eval" => e.rebuild_eval += 1,
                Who::NixosRebuild if call.evaluates() => e.rebuild_build += 1,
                _ => {}
            }
        }
        for call in self.nix.iter().filter(|c| c.evaluates()) {
            *match call.who {
                Who::Flakem => &mut e.shim_flakem,
                Who::NixosRebuild => &mut e.shim_rebuild,
                Who::Other => &mut e.shim_other,
            } += 1;
        }
        e
    }

    /// Every nix process of the run, by who and subcommand.
    fn nix_processes(&self) -> BTreeMap<(Who, String), usize> {
        let mut counts = BTreeMap::new();
        for call in &self.nix {
            let name = if call.subcommand == "build" && call.flake_attribute {
                "build <flake>#…".to_owned()
            } else {
                call.subcommand.clone()
            };
            *counts.entry((call.who, name)).or_insert(0) += 1;
        }
        counts
    }

    /// The instants each step of a plain deploy started, per host (see `STEPS`).
    fn steps(&self, host: &str) -> Option<[Duration; STEPS.len()]> {
        let single = self.hosts.len() == 1;
        // The lines of `host` (all lines when the run has one host), without the prefix.
        let lines: Vec<(Duration, &str)> = (self.lines())
            .filter_map(|(at, line)| match split_host(line) {
                (Some(h), text) if h == host => Some((at, text)),
                (None, text) if single => Some((at, text)),
                _ => None,
            })
            .collect();
        let find = |after: Duration, what: &dyn Fn(&str) -> bool| {
            let mut lines = lines.iter();
            lines
                .find(|(at, text)| *at >= after && what(text))
                .map(|(at, _)| *at)
        };
        // When flakem's names evaluation ended: the first line after its `+ nix ... eval`.
        let mut all = self.lines();
        all.find(|(_, l)| {
            l.starts_with("+ nix ") && NixCall::traced(l).is_some_and(|c| c.evaluates())
        })?;
        let (names, _) = all.next()?;
        let nix_is = |text: &str, sub: &str| {
            text.starts_with("$ ") && NixCall::traced(text).is_some_and(|c| c.subcommand == sub)
        };
        let ssh_with = |text: &str, prefix, what| text.starts_with(prefix) && text.contains(what);
        let rebuild = find(names, &|t| t.starts_with("+ nixos-rebuild "))?;
        let build = find(rebuild, &|t| nix_is(t, "build"))?;
        let copy = find(build, &|t| nix_is(t, "copy"))?;
        let profile = find(copy, &|t| ssh_with(t, "$ ssh ", " nix-env -p "))?;
        let wait = find(profile, &|t| t.contains("activation takes"))?;
        let activate = find(wait, &|t| ssh_with(t, "$ ssh ", "switch-to-configuration"))?;
        let read = find(activate, &|t| {
            ssh_with(t, "+ ssh ", "readlink -f /run/current-system")
        })?;
        Some([names, rebuild, build, copy, profile, wait, activate, read])
    }

    fn summary(&self) -> String {
        format!(
            "{} in {:.2} s; evaluations {}; CPU: machine busy {:.1} s, flakem's tree {:.1} s, \
             others {:.1} s",
            self.timed.status,
            self.wall().as_secs_f64(),
            json!(self.evaluations()),
            self.cpu_busy,
            self.cpu_own,
            self.cpu_others,
        )
    }

    /// Its figures in the JSON.
    fn data(&self) -> Value {
        json!({
            "hosts": self.hosts.len(),
            "wall_s": self.wall().as_secs_f64(),
            "cpu_busy_s": self.cpu_busy,
            "cpu_own_s": self.cpu_own,
            "cpu_others_s": self.cpu_others,
            "evaluations": self.evaluations(),
        })
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

#[derive(Serialize)]
struct Completion {
    /// Milliseconds, each call.
    cold_ms: Vec<f64>,
    cached_ms: Vec<f64>,
    /// Evaluating nix processes of a cold call.
    cold_evaluations: usize,
    /// Nix processes of `COUNTED_COMPLETIONS` cached calls.
    cached_nix: usize,
    /// What it offered.
    words: String,
    /// What the cold call wrote to `$XDG_CACHE_HOME/flakem`.
    cache_files: Vec<String>,
}

fn secs(seconds: f64) -> String {
    format!("{seconds:.2} s")
}

/// The runs' wall times, in seconds.
fn walls(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(|r| r.wall().as_secs_f64()).collect()
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
        _ => (values.iter().map(usize::to_string))
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
    shimmed: [(&'static str, Run); 4],
    /// nixos-rebuild alone: 1 host, 8 at once.
    bare_one: Vec<Run>,
    bare_eight: Vec<Run>,
    /// 8 `nix build`s at once, one `nix build` of the 8.
    builds: Vec<[f64; 2]>,
    completion: Completion,
    /// The machine's busy share with no run going, before and after.
    background: [f64; 2],
    /// Runs repeated because of other work on the machine, and the time spent waiting for it.
    discarded: Vec<String>,
    waited: Duration,
    took: Duration,
}

fn median(values: &[f64]) -> f64 {
    Stats::of(values).median
}

/// The median of `f` over `runs`.
fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

impl Report {
    /// Median over `runs` (and their hosts) of each step's milliseconds, and the median over
    /// runs of the slowest host's; the last entry is the tail after the last host's
    /// `readlink` (one per run).
    fn step_table(runs: &[Run]) -> Vec<(f64, f64)> {
        let mut pooled = vec![Vec::new(); STEPS.len() + 1];
        let mut slowest = vec![Vec::new(); STEPS.len() + 1];
        for run in runs {
            let mut worst = vec![0.0_f64; STEPS.len() + 1];
            let mut last_read = Duration::ZERO;
            for host in &run.hosts {
                let Some(instants) = run.steps(host) else {
                    eprintln!("{host}: not every step's line found");
                    continue;
                };
                let mut from = Duration::ZERO;
                for (i, at) in instants.iter().enumerate() {
                    let took = millis(at.saturating_sub(from));
                    pooled[i].push(took);
                    worst[i] = worst[i].max(took);
                    from = *at;
                }
                last_read = last_read.max(from);
            }
            let tail = millis(run.wall().saturating_sub(last_read));
            pooled[STEPS.len()].push(tail);
            worst[STEPS.len()] = tail;
            for (i, w) in worst.into_iter().enumerate() {
                slowest[i].push(w);
            }
        }
        let both = pooled.iter().zip(&slowest);
        both.map(|(p, s)| (median(p), median(s))).collect()
    }

    fn publish(&self) {
        let machine = Machine::now(&["ssh -V 2>&1", "nix --version", "python3 --version"]);
        let (results, steps, nix) = (self.results(), self.steps(), self.nix_processes());
        let each = |runs: &[Run]| runs.iter().map(Run::data).collect::<Vec<_>>();
        let data = json!({
            "benchmark": "fleet",
            "machine": machine,
            "took_s": self.took.as_secs_f64(),
            "parameters": {
                "hosts": HOSTS,
                "activation_s": ACTIVATION_SECONDS,
                "runs_of_each_kind": self.runs,
                "cold_completions": COLD_COMPLETIONS,
                "cached_completions": self.completion.cached_ms.len(),
                "quiet_share": QUIET_SHARE,
                "others_max_share": OTHERS_MAX_SHARE,
                "attempts": ATTEMPTS,
            },
            "tables": {
                "results": results,
                "steps": steps,
                "nix_processes": nix,
            },
            "other_work": {
                "busy_before": self.background[0],
                "busy_after": self.background[1],
                "waited_s": self.waited.as_secs_f64(),
                "discarded": self.discarded,
            },
            "runs": {
                "one": each(&self.one),
                "eight": each(&self.eight),
                "plain": each(&self.plain),
                "diff": each(&self.diff),
                "diff_eight": self.diff_eight.data(),
                "bare_one": each(&self.bare_one),
                "bare_eight": each(&self.bare_eight),
                "builds_apart_s": self.builds.iter().map(|b| b[0]).collect::<Vec<_>>(),
                "builds_together_s": self.builds.iter().map(|b| b[1]).collect::<Vec<_>>(),
            },
            "completion": self.completion,
        });
        common::publish(
            "fleet",
            &data,
            &[
                ("fleet-machine", machine.markdown(&self.run_facts())),
                ("fleet-results", results.markdown()),
                ("fleet-steps", steps.markdown()),
                ("fleet-nix", nix.markdown()),
            ],
        );
    }

    /// The run's own items of "Machine and run": other work on the machine, the runs.
    fn run_facts(&self) -> [String; 2] {
        let kept = [&self.one, &self.eight, &self.plain, &self.diff]
            .into_iter()
            .flatten();
        let kept: Vec<f64> = (kept.chain([&self.diff_eight]))
            .map(Run::others_share)
            .collect();
        let discarded = match &self.discarded[..] {
            [] => String::new(),
            d => format!(": {}", d.join("; ")),
        };
        [
            format!(
                "other work on the machine (it is shared): its CPUs were {:.0} % busy in 2 s with \
                 nothing of this benchmark running before the runs, {:.0} % after them; waited {:.0} \
                 s in all for it to be quiet; {} run(s) repeated{discarded}; in the runs kept, \
                 other processes took {:.1} % of the CPUs (median), {:.1} % at most",
                self.background[0] * 100.0,
                self.background[1] * 100.0,
                self.waited.as_secs_f64(),
                self.discarded.len(),
                median(&kept) * 100.0,
                Stats::of(&kept).max * 100.0,
            ),
            format!(
                "whole benchmark: {:.0} s; {} runs of each kind; every run checked: exit 0, each \
                 host `ok` in the `--json` summary with the fresh generation, which the host now runs",
                self.took.as_secs_f64(),
                self.runs
            ),
        ]
    }

    /// The figures of issue 5, (1) to (4), with its targets.
    fn results(&self) -> Table {
        let [t1s, t8s, b1s, b8s, tps, tds] = [
            &self.one,
            &self.eight,
            &self.bare_one,
            &self.bare_eight,
            &self.plain,
            &self.diff,
        ]
        .map(|runs| median(&walls(runs)));
        let ratio = t8s / t1s;
        let activation: f64 = ACTIVATION_SECONDS.parse().unwrap_or(0.0);
        let evals = |runs: &[Run]| runs.iter().map(Run::evaluations).collect::<Vec<_>>();
        let (e1, e8, ep, ed) = (
            evals(&self.one),
            evals(&self.eight),
            evals(&self.plain),
            evals(&self.diff),
        );
        let ed8 = self.diff_eight.evaluations();
        let shim_evals: Vec<Evaluations> =
            self.shimmed.iter().map(|(_, r)| r.evaluations()).collect();
        let others: usize = shim_evals.iter().map(|e| e.shim_other).sum();
        let pick = |es: &[Evaluations], f: fn(&Evaluations) -> usize| {
            same_or_each(&es.iter().map(f).collect::<Vec<_>>())
        };
        let own8 = med(&self.eight, |r| r.cpu_own);
        // What an 8-host run needed of this machine's CPUs: its busy time less other work's.
        let work8 =
            (med(&self.eight, |r| r.cpu_busy) - med(&self.eight, |r| r.cpu_others)).max(own8);
        let n = nproc() as f64;
        let client_floor = activation + own8 / n;
        let c = &self.completion;
        let cached = Stats::of(&c.cached_ms);
        let busy_lines = (self.eight.iter().flat_map(|r| r.lines()))
            .filter(|(_, l)| l.contains("SQLite database") && l.contains("is busy"))
            .count();
        let build = |i: usize| {
            secs(median(
                &self.builds.iter().map(|b| b[i]).collect::<Vec<_>>(),
            ))
        };

        let row =
            |figure: &str, value: String| [figure.to_owned(), value, String::new(), String::new()];
        let met = |figure: &str, value: String, target: String, ok: bool| {
            [figure.to_owned(), value, target, yes_no(ok)]
        };
        // Wall times: the median, then each run's.
        let walls_row = |figure: &str, runs: &[Run]| {
            let walls = walls(runs);
            let each: Vec<String> = walls.iter().map(|s| format!("{s:.2}")).collect();
            let value = format!("{} ({})", secs(median(&walls)), each.join(", "));
            row(&format!("{figure}, median (each run)"), value)
        };
        let own_evaluations = |figure: &str, es: &[Evaluations]| {
            let target = TARGET_OWN_EVALUATIONS;
            let ok = es.iter().all(|e| e.flakem == target);
            met(figure, pick(es, |e| e.flakem), target.to_string(), ok)
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
                format!("≤ {TARGET_RATIO} (≤ {:.2} s here)", TARGET_RATIO * t1s),
                ratio <= TARGET_RATIO,
            ),
            row(
                "(1) same without the 1 s activation: (t₈ − 1 s) ÷ (t₁ − 1 s)",
                format!("{:.2}", (t8s - activation) / (t1s - activation)),
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
                format!("**{:.2}**", b8s / b1s),
            ),
            row(
                "(1) flakem's wall time over nixos-rebuild alone's (medians): 1 host / 8 hosts",
                format!("{:+.2} s / {:+.2} s", t1s - b1s, t8s - b8s),
            ),
            row(
                "(1) reference: the 8 toplevels built by 8 `nix build`s at once / by one `nix build` of all 8 (medians)",
                format!("{} / {}", build(0), build(1)),
            ),
            row(
                "(1) CPU-seconds an 8-host run needed (the machine's busy time less other work's; median)",
                format!("{work8:.1} s"),
            ),
            row(
                "(1) the floor they set: 1 s activation + CPU-seconds ÷ CPUs (measured: t₈)",
                format!("{:.2} s ({})", activation + work8 / n, secs(t8s)),
            ),
            row(
                "(1) the floor flakem's process tree alone sets: 1 s + its CPU-seconds ÷ CPUs, and ÷ t₁",
                format!("{client_floor:.2} s, {:.2}", client_floor / t1s),
            ),
            row(
                "(1) nix's \"SQLite database … is busy\" lines in the 8-host runs",
                busy_lines.to_string(),
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
            row(
                &format!(
                    "(2) cross-check: the `nix` shim's count of evaluating nix processes (in {} runs, not timed) matches the trace lines",
                    self.shimmed.len()
                ),
                format!(
                    "{}{}",
                    yes_no(shim_evals.iter().all(Evaluations::consistent)),
                    match others {
                        0 => String::new(),
                        n => format!(" ({n} evaluating nix processes had another parent)"),
                    }
                ),
            ),
            walls_row("(3) `switch-push` 1 host, wall time", &self.plain),
            walls_row("(3) `switch-push --diff` 1 host, wall time", &self.diff),
            row(
                "(3) what `--diff` adds, 1 host (difference of the medians)",
                format!(
                    "{} ({})",
                    signed(tds - tps, 2, " s"),
                    signed((tds / tps - 1.0) * 100.0, 0, " %")
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
                "(3) `switch-push --diff` 8 hosts, one run: wall time (plain: median), and what `--diff` changed",
                format!(
                    "{} ({}), {}",
                    secs(self.diff_eight.wall().as_secs_f64()),
                    secs(t8s),
                    signed(self.diff_eight.wall().as_secs_f64() - t8s, 2, " s")
                ),
            ),
            row(
                "(3) CPU time of flakem's process tree, 8 hosts: `--diff` (one run) / plain (median)",
                format!("{:.1} s / {own8:.1} s", self.diff_eight.cpu_own),
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
                    c.cold_evaluations
                ),
                (c.cold_ms.iter().map(|ms| format!("{ms:.0} ms")))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            met(
                &format!(
                    "(4) completion, cached, median of {} calls",
                    c.cached_ms.len()
                ),
                format!("**{:.1} ms**", cached.median),
                format!("< {TARGET_CACHED_MS:.0} ms"),
                cached.median < TARGET_CACHED_MS,
            ),
            row(
                "(4) completion, cached, min / max",
                format!("{:.1} / {:.1} ms", cached.min, cached.max),
            ),
            row(
                &format!("(4) nix processes started by {COUNTED_COMPLETIONS} cached calls"),
                c.cached_nix.to_string(),
            ),
            row("(4) names offered", c.words.clone()),
        ];
        Table::new(["figure", "value", "target", "met"], rows)
    }

    /// Where the time of a plain deploy goes, and the CPU time it took.
    fn steps(&self) -> Table {
        let (s1, s8) = (Self::step_table(&self.one), Self::step_table(&self.eight));
        let steps = STEPS.iter().copied().chain([TAIL]).zip(s1.iter().zip(&s8));
        let mut rows: Vec<[String; 4]> = steps
            .map(|(label, ((a, _), (b, bw)))| {
                let [a, b, bw] = [a, b, bw].map(|ms| format!("{ms:.0} ms"));
                [label.to_owned(), a, b, bw]
            })
            .collect();
        let whole =
            |label: &str, one: String, eight: String| [label.to_owned(), one, String::new(), eight];
        let cpu = |runs: &[Run]| format!("{:.1} s", med(runs, |r| r.cpu_own));
        let busy = |runs: &[Run]| {
            let (busy, share) = (med(runs, |r| r.cpu_busy), med(runs, Run::busy_share));
            format!("{busy:.1} s, {:.0} %", share * 100.0)
        };
        let ms = |runs: &[Run]| format!("**{:.0} ms**", median(&walls(runs)) * 1e3);
        rows.extend([
            whole("**whole run** (wall time, median)", ms(&self.one), ms(&self.eight)),
            whole(
                "CPU time of flakem's process tree on this machine (flakem, stand-in, nix, ssh; median)",
                cpu(&self.one),
                cpu(&self.eight),
            ),
            whole(
                "the same for nixos-rebuild alone (reference; median)",
                cpu(&self.bare_one),
                cpu(&self.bare_eight),
            ),
            whole(
                &format!(
                    "the machine's busy CPU time during the run, and its share of the {} CPUs (median)",
                    nproc()
                ),
                busy(&self.one),
                busy(&self.eight),
            ),
        ]);
        Table::new(
            ["step", "1 host", "8 hosts, per host", "8 hosts, slowest"],
            rows,
        )
    }

    /// Every nix process of the runs made with the shim.
    fn nix_processes(&self) -> Table {
        let rows = self.shimmed.iter().flat_map(|(label, run)| {
            run.nix_processes().into_iter().map(move |((who, sub), n)| {
                let who = match who {
                    Who::Flakem => "flakem",
                    Who::NixosRebuild => "nixos-rebuild (stand-in)",
                    Who::Other => "other",
                };
                [
                    label.to_string(),
                    who.to_owned(),
                    format!("`{sub}`"),
                    n.to_string(),
                ]
            })
        });
        Table::new(["run", "started by", "nix subcommand", "processes"], rows)
    }
}
