//! The fleet benchmark (issue 5): `flakem switch-push` to 8 hosts at once against 1, the nix
//! evaluations, `--diff` and completion, with references, on the test bed. It writes
//! benches/results/fleet.json and the `fleet-*` parts of BENCHMARKS.md, which says how each
//! figure is measured. `cargo bench --bench fleet` as root; `FLAKEM_BENCH_RUNS=N` (11) and
//! `FLAKEM_BENCH_COMPLETIONS=N` (20) and `FLAKEM_BENCH_COST_RUNS=N` (5) for a quick try.

// Only part of the bed is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/testbed/mod.rs"]
mod testbed;

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use common::{Stats, Table, Timed, env_count, millis, nproc, yes_no};
use testbed::TestBed;

/// The hosts; configurations of these names are added to the test flake.
const HOSTS: [&str; 8] = [
    "node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8",
];
/// The stand-in's activation time (`FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS`).
const ACTIVATION_SECONDS: f64 = 1.0;
const RUNS: usize = 11;
const COMPLETIONS: usize = 20;
/// Cold completion calls (each with a fresh cache).
const COLD_COMPLETIONS: usize = 3;
/// Cached completion calls made with the nix shim, to count their nix processes.
const COUNTED_COMPLETIONS: usize = 5;
/// Others run test suites on this shared machine: a run during which they took more than
/// this share of its CPUs is repeated (`ATTEMPTS` in all at most); before each run the
/// benchmark waits until its CPUs are less busy than `QUIET_SHARE` (`QUIET_BUDGET` in all).
const OTHERS_MAX_SHARE: f64 = 0.10;
const ATTEMPTS: usize = 4;
const QUIET_SHARE: f64 = 0.15;
const QUIET_BUDGET: Duration = Duration::from_secs(150);
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// Issue 5's targets.
const TARGET_RATIO: f64 = 1.5;
/// Issue 13's: system evaluations (flakem's + nixos-rebuild's) per run, 1 host (the plain
/// nixos-rebuild plan) and 8 (one evaluation for the fleet); ssh logins per host per run,
/// guarded (the confirmation is a new connection) and with `--no-rollback`.
const TARGET_SYSTEM_EVALUATIONS: [(usize, usize); 2] = [(0, 1), (1, 0)];
const TARGET_LOGINS: [usize; 2] = [2, 1];
const TARGET_CACHED_MS: f64 = 100.0;
/// Rounds with the test flake's evaluation cost model on (issue 13), each of flakem and
/// nixos-rebuild alone, 1 host and 8.
const COST_RUNS: usize = 5;
/// Issue 13's targets: with the cost model on, flakem 8 hosts ÷ flakem 1 host, flakem 8 hosts
/// ÷ 8 parallel nixos-rebuild, peak evaluation memory 8 hosts ÷ 1 host; with it off (the
/// trivial flake), flakem 8 hosts ÷ 8 parallel nixos-rebuild.
const TARGET_COST_RATIO: f64 = 1.5;
const TARGET_COST_VS_REBUILD: f64 = 0.6;
const TARGET_COST_MEMORY: f64 = 1.5;
const TARGET_TRIVIAL_VS_REBUILD: f64 = 1.1;

/// The options of guarded deploys and of deploys without the guard.
const GUARD: [&[&str]; 2] = [&[], &["--no-rollback"]];

/// The runs made with the nix shim, untimed: label, number of hosts, options.
const SHIMMED: [(&str, usize, &[&str]); 4] = [
    ("1 host", 1, &[]),
    ("8 hosts", 8, &[]),
    ("1 host, `--diff`", 1, &["--diff"]),
    ("8 hosts, `--diff`", 8, &["--diff"]),
];

const SEP: char = '\x1f';

fn main() {
    if !common::benchmarking("fleet") {
        return;
    }
    let runs = env_count("FLAKEM_BENCH_RUNS", RUNS);
    let completions = env_count("FLAKEM_BENCH_COMPLETIONS", COMPLETIONS);
    let started = Instant::now();
    let mut bench = Bench::new();
    let busy_before = background_busy(Duration::from_secs(2));

    // A first generation everywhere, so that every measured run is a real redeploy.
    bench.deploy(&HOSTS, "warm", &[], false);

    // (1) 1 host and 8, guarded and (5) with `--no-rollback`, then the reference
    // (nixos-rebuild alone) the same, and (3) plain and `--diff` to 1 host: each round runs
    // every kind, each pair in an order that alternates, so that drift on the (shared)
    // machine hits both sides of a comparison alike.
    let mut deploys = [(); 2].map(|_| [Vec::new(), Vec::new()]);
    let [mut bare, mut diff] = [(); 2].map(|_| [Vec::new(), Vec::new()]);
    for r in 0..runs {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for (i, n) in order.map(|i| (i, [1, 8][i])) {
            for g in order {
                let generation = format!("{}{r}-{n}", ["s", "u"][g]);
                let run = bench.deploy(&HOSTS[..n], &generation, GUARD[g], false);
                deploys[g][i].push(run);
            }
        }
        for (i, n) in order.map(|i| (i, [1, 8][i])) {
            bare[i].push(bench.bare(&HOSTS[..n], &format!("n{r}-{n}")));
        }
        for (i, how) in order.map(|i| (i, ["plain", "diff"][i])) {
            let options: &[&str] = [&[][..], &["--diff"]][i];
            let run = bench.deploy(&HOSTS[..1], &format!("d{r}-{how}"), options, false);
            diff[i].push(run);
        }
    }
    let diff_eight = bench.deploy(&HOSTS, "d-eight", &["--diff"], false);

    // (6) The test flake's evaluation cost model on (issue 13): flakem and nixos-rebuild
    // alone, 1 host and 8, interleaved as above, each nix process's peak memory recorded.
    let cost_runs = env_count("FLAKEM_BENCH_COST_RUNS", COST_RUNS);
    bench.bed.set_evaluation_cost(true);
    bench.memory = true;
    bench.deploy(&HOSTS, "cwarm", &[], false);
    let mut cost = [(); 2].map(|_| [Vec::new(), Vec::new()]);
    for r in 0..cost_runs {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for (i, n) in order.map(|i| (i, [1, 8][i])) {
            for g in order {
                let generation = format!("{}{r}-{n}", ["cs", "cn"][g]);
                let run = match g {
                    0 => bench.deploy(&HOSTS[..n], &generation, GUARD[0], false),
                    _ => bench.bare(&HOSTS[..n], &generation),
                };
                cost[g][i].push(run);
            }
        }
    }
    bench.memory = false;
    bench.bed.set_evaluation_cost(false);

    // (2) The evaluation counts of the timed runs come from their trace lines; these runs,
    // not timed, cross-check them with the nix shim (which costs every nix process a bash).
    let shimmed = SHIMMED.map(|(label, n, options)| {
        let generation = format!("shim-{n}-{}", options.len());
        (label, bench.deploy(&HOSTS[..n], &generation, options, true))
    });

    // A reference for (1): 8 builds at once against one build of all 8.
    let builds: Vec<[f64; 2]> = (0..runs).map(|r| bench.builds(r)).collect();

    let completion = bench.completion(completions);
    let busy = [busy_before, background_busy(Duration::from_secs(2))];
    let [flakem, unguarded] = deploys;
    let report = Report {
        flakem,
        unguarded,
        bare,
        diff,
        diff_eight,
        cost,
        shimmed,
        builds,
        completion,
    };
    let waited = QUIET_BUDGET.saturating_sub(bench.quiet_budget);
    let took = started.elapsed();
    let kept = [&report.flakem, &report.unguarded, &report.diff].into_iter();
    let kept = kept.flatten().flatten();
    let kept = Stats::over(kept.chain([&report.diff_eight]), Run::others_share);
    let discarded = match &bench.discarded[..] {
        [] => String::new(),
        d => format!(": {}", d.join("; ")),
    };
    common::Figures {
        bench: "fleet",
        versions: &["ssh -V 2>&1", "nix --version", "python3 --version"],
        facts: vec![
            format!(
                "other work on the machine (it is shared): its CPUs were {:.0} % busy in 2 s with \
                 nothing of this benchmark running before the runs, {:.0} % after them; waited \
                 {:.0} s in all for it to be quiet; {} run(s) repeated{discarded}; in the runs \
                 kept, other processes took {:.1} % of the CPUs (median), {:.1} % at most",
                busy[0] * 100.0,
                busy[1] * 100.0,
                waited.as_secs_f64(),
                bench.discarded.len(),
                kept.median * 100.0,
                kept.max * 100.0,
            ),
            format!(
                "whole benchmark: {:.0} s; {runs} runs of each kind; every run checked: exit 0, \
                 each host `ok` in the `--json` summary with the fresh generation, which the host \
                 now runs",
                took.as_secs_f64(),
            ),
        ],
        parameters: json!({
            "hosts": HOSTS,
            "activation_s": ACTIVATION_SECONDS,
            "runs_of_each_kind": runs,
            "cold_completions": COLD_COMPLETIONS,
            "cached_completions": completions,
            "quiet_share": QUIET_SHARE,
            "others_max_share": OTHERS_MAX_SHARE,
            "attempts": ATTEMPTS,
            "cost_model_runs_of_each_kind": cost_runs,
            "cost_model": cost_model(),
        }),
        tables: vec![
            ("results", report.results()),
            ("steps", report.steps()),
            ("nix", report.nix_processes()),
        ],
        texts: Vec::new(),
        more: json!({
            "other_work": {
                "busy_before": busy[0],
                "busy_after": busy[1],
                "waited_s": waited.as_secs_f64(),
                "repeated": bench.discarded,
            },
            "completion": report.completion,
        }),
    }
    .publish();
}

struct Bench {
    bed: TestBed,
    /// PATH without the nix shim, with it first, and with the memory shim first.
    paths: [OsString; 3],
    nix_log: PathBuf,
    /// One line per nix process started through the memory shim (`memory`): its peak RSS
    /// in KB and its command line, written by `/usr/bin/time` when it ends.
    rss_log: PathBuf,
    /// Runs go through the memory shim (PATH `paths[2]`) when not through the nix shim.
    memory: bool,
    /// What is left of the time the benchmark may wait for other work on the machine to end.
    quiet_budget: Duration,
    /// Runs repeated because of other work on the machine, and why.
    discarded: Vec<String>,
}

impl Bench {
    fn new() -> Bench {
        let mut bed = TestBed::new();
        for host in HOSTS {
            bed.set_generation(host, "0");
            bed.add_host(host);
        }
        let bin = bed.dir().join("bench/bin");
        let nix_log = bed.dir().join("bench/nix-starts");
        // One line per nix process, written by one printf (one write, appended): its parent's
        // name (`nixos-rebuild.sh` for the stand-in, which bash runs) and its arguments.
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
        fs::write(&nix_log, "").expect("create the nix log");
        // The same for memory, without a bash in between to count: /usr/bin/time runs the
        // real nix and appends "MAXRSS_KB COMMAND LINE" when it ends.
        let mem_bin = bed.dir().join("bench/bin-mem");
        let rss_log = bed.dir().join("bench/nix-rss");
        let time = Path::new("/usr/bin/time");
        assert!(
            time.is_file(),
            "the benchmark needs /usr/bin/time (Debian: time)"
        );
        common::write_shim(
            &mem_bin.join("nix"),
            "runs the real nix under /usr/bin/time, which records its peak memory.",
            &format!(
                "exec {} -a -o {} -f '%M %C' {} \"$@\"\n",
                time.display(),
                rss_log.display(),
                common::on_path("nix").display()
            ),
            &common::on_path("nix"),
        );
        fs::write(&rss_log, "").expect("create the nix memory log");
        Bench {
            paths: [
                common::search_path(&[]),
                common::search_path(&[&bin]),
                common::search_path(&[&mem_bin]),
            ],
            bed,
            nix_log,
            rss_log,
            memory: false,
            quiet_budget: QUIET_BUDGET,
            discarded: Vec::new(),
        }
    }

    fn rss_log_len(&self) -> usize {
        log_len(&self.rss_log)
    }

    /// The nix processes that ended since `from` in the memory log.
    fn rss_since(&self, from: usize) -> Vec<NixRss> {
        log_since(&self.rss_log, from)
            .lines()
            .filter_map(NixRss::logged)
            .collect()
    }

    fn nix_log_len(&self) -> usize {
        log_len(&self.nix_log)
    }

    fn nix_starts_since(&self, from: usize) -> Vec<NixCall> {
        log_since(&self.nix_log, from)
            .lines()
            .map(NixCall::logged)
            .collect()
    }

    fn command(&self, program: impl AsRef<OsStr>, shim: bool) -> Command {
        let path = match (shim, self.memory) {
            (true, _) => &self.paths[1],
            (false, true) => &self.paths[2],
            (false, false) => &self.paths[0],
        };
        let mut command = common::command(&self.bed, program, path);
        command.env(
            "FAKE_NIXOS_REBUILD_ACTIVATION_SECONDS",
            ACTIVATION_SECONDS.to_string(),
        );
        command
    }

    /// Waits, within what is left of the budget, until other work keeps the machine's CPUs
    /// less than `QUIET_SHARE` busy over a second.
    fn wait_quiet(&mut self) {
        let start = Instant::now();
        while background_busy(Duration::from_secs(1)) > QUIET_SHARE
            && start.elapsed() < self.quiet_budget
        {}
        self.quiet_budget = self.quiet_budget.saturating_sub(start.elapsed());
    }

    /// `what`, a deploy of a fresh `generation` to `hosts` by `start` once the machine is
    /// quiet, with its CPU figures (other work's are sums over processes: one that ended
    /// meanwhile moved its time into its parent's children's), repeated while other work
    /// took too much of the CPUs; checks that every host now runs the generation.
    fn measure(
        &mut self,
        what: String,
        hosts: &[&str],
        generation: &str,
        start: impl Fn(&Bench, &str) -> Timed,
    ) -> Run {
        let bed_dir = self.bed.dir().to_string_lossy().into_owned();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        for attempt in 0.. {
            self.wait_quiet();
            let generation = match attempt {
                0 => generation.to_owned(),
                n => format!("{generation}-again{n}"),
            };
            for host in hosts {
                self.bed.set_generation(host, &generation);
            }
            let log_from = self.nix_log_len();
            let rss_from = self.rss_log_len();
            let logins = |bed: &TestBed| hosts.iter().map(|h| accepted(&bed.host(h))).collect();
            let before: Vec<usize> = logins(&self.bed);
            let (others, busy, own) = (others_ticks(&bed_dir), cpu_ticks().0, children_cpu());
            let started = Instant::now();
            let timed = start(self, &generation);
            // Before the checks: their ssh calls are the benchmark's.
            let run = Run {
                cpu_busy: (cpu_ticks().0 - busy) as f64 / hz,
                cpu_own: children_cpu() - own,
                cpu_others: others_ticks(&bed_dir).saturating_sub(others) as f64 / hz,
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                started,
                timed,
                nix: self.nix_starts_since(log_from),
                nix_rss: self.rss_since(rss_from),
                logins: (logins(&self.bed).iter().zip(before))
                    .map(|(a, b): (&usize, _)| a - b)
                    .collect(),
            };
            assert!(
                run.timed.status.success(),
                "{what} failed:\n{}",
                run.timed.text()
            );
            for host in hosts {
                let system = self.bed.host(host).readlink("/run/current-system");
                let fresh = format!("-{host}-gen-{generation}");
                let runs_it = system.as_deref().is_some_and(|s| s.ends_with(&fresh));
                assert!(runs_it, "{host} runs {system:?}");
            }
            let share = run.others_share() * 100.0;
            eprintln!(
                "{what}, {generation}: {:.2} s, others {share:.0} %",
                run.secs()
            );
            if share <= OTHERS_MAX_SHARE * 100.0 || attempt + 1 == ATTEMPTS {
                return run;
            }
            let why = format!("{what}: other work took {share:.0} % of the CPUs");
            self.discarded.push(why);
        }
        unreachable!("the loop returns")
    }

    /// `flakem switch-push --json OPTIONS HOSTS`, measured; checks its summary too.
    fn deploy(&mut self, hosts: &[&str], generation: &str, options: &[&str], shim: bool) -> Run {
        let with = options.iter().map(|o| format!(" {o}")).collect::<String>();
        let what = format!("switch-push{with} to {} host(s)", hosts.len());
        self.measure(what, hosts, generation, |bench, generation| {
            let mut command = bench.command(env!("CARGO_BIN_EXE_flakem"), shim);
            command
                .args(["switch-push", "--json"])
                .args(options)
                .arg(hosts.join(","));
            let timed = common::run_timed(command, RUN_DEADLINE, |_| {});
            if timed.status.success() {
                check_summary(&timed, hosts, generation);
            }
            timed
        })
    }

    /// A reference, not flakem: the stand-in `nixos-rebuild` alone, with the arguments flakem
    /// gives it, once per host, all started at once; wall time until the last one exits.
    fn bare(&mut self, hosts: &[&str], generation: &str) -> Run {
        let what = format!("nixos-rebuild alone, {} host(s)", hosts.len());
        self.measure(what, hosts, generation, |bench, _| {
            let outputs = spawn_all(hosts.iter().map(|host| {
                let mut command = bench.command("nixos-rebuild", false);
                command.args(["switch", "--no-reexec", "--sudo", "--use-substitutes"]);
                command.args(["--target-host", host, "--flake", &format!(".#{host}")]);
                command
            }));
            let ended = Instant::now();
            let failed = outputs.iter().find(|o| !o.status.success());
            let Output { status, stderr, .. } = failed.unwrap_or(&outputs[0]);
            let stdout = String::from_utf8_lossy(stderr).into_owned();
            let (status, lines) = (*status, Vec::new());
            Timed {
                status,
                ended,
                lines,
                stdout,
            }
        })
    }

    /// A reference, not flakem: wall times of the 8 toplevels (each a fresh generation) built
    /// by 8 `nix build` processes at once, as the 8 stand-ins do, and by one of all 8.
    fn builds(&mut self, round: usize) -> [f64; 2] {
        self.wait_quiet();
        let attribute = |h: &str| format!(".#nixosConfigurations.{h}.config.system.build.toplevel");
        let apart = HOSTS.map(|h| vec![attribute(h)]).to_vec();
        let ways = [
            ("apart", apart),
            ("together", vec![HOSTS.map(attribute).to_vec()]),
        ];
        let [apart, together] = ways.map(|(how, groups)| {
            for host in HOSTS {
                self.bed.set_generation(host, &format!("b{round}-{how}"));
            }
            let start = Instant::now();
            let outputs = spawn_all(groups.iter().map(|attributes| {
                let mut command = self.command("nix", false);
                command
                    .args(["build", "--json", "--no-link"])
                    .args(attributes);
                command
            }));
            assert!(
                outputs.iter().all(|o| o.status.success()),
                "nix build failed"
            );
            start.elapsed().as_secs_f64()
        });
        eprintln!("8 nix builds at once: {apart:.2} s; one nix build of the 8: {together:.2} s");
        [apart, together]
    }

    /// What bash's completion function runs on `flakem build-there <TAB>`, with `cache` as
    /// `XDG_CACHE_HOME`: its milliseconds and the names offered.
    fn complete(&self, cache: &Path, shim: bool) -> (f64, String) {
        let mut command = self.command(env!("CARGO_BIN_EXE_flakem"), shim);
        command
            .args(["--", "flakem", "build-there", ""])
            .stderr(Stdio::null());
        command.env("XDG_CACHE_HOME", cache).envs([
            ("COMPLETE", "bash"),
            ("_CLAP_IFS", "\u{b}"),
            ("_CLAP_COMPLETE_INDEX", "2"),
            ("_CLAP_COMPLETE_COMP_TYPE", "9"),
            ("_CLAP_COMPLETE_SPACE", "false"),
        ]);
        let start = Instant::now();
        let output = command.output().expect("run flakem's completion");
        let took = millis(start.elapsed());
        assert!(output.status.success(), "completion failed: {output:?}");
        let words = String::from_utf8_lossy(&output.stdout).replace('\u{b}', " ");
        let words: Vec<&str> = words.split_whitespace().collect();
        // A flake-only name and a bed-only ssh alias (node1 is both).
        for name in ["web1", "node8", "@all"] {
            assert!(
                words.contains(&name),
                "no {name} in the completion: {words:?}"
            );
        }
        (took, words.join(" "))
    }

    fn completion(&mut self, cached_calls: usize) -> Completion {
        self.wait_quiet();
        let cache = |name: &str| self.bed.dir().join("caches").join(name);
        // Timed without the nix shim.
        let cold =
            (0..COLD_COMPLETIONS).map(|i| self.complete(&cache(&format!("cold-{i}")), false));
        let cold_ms = cold.map(|(ms, _)| ms).collect();
        let warm = cache(&format!("cold-{}", COLD_COMPLETIONS - 1));
        let cached_ms = (0..cached_calls)
            .map(|_| self.complete(&warm, false).0)
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
        let cache_files = fs::read_dir(counted.join("flakem"))
            .into_iter()
            .flatten()
            .flatten();
        let completion = Completion {
            cold_ms,
            cached_ms,
            cold_evaluations: cold_nix.iter().filter(|c| c.evaluates()).count(),
            cached_nix: self.nix_starts_since(from).len(),
            words,
            cache_files: cache_files
                .map(|e| e.file_name().to_string_lossy().into())
                .collect(),
        };
        eprintln!("completion: {}", json!(completion));
        completion
    }
}

/// The numbers of the test flake's evaluation cost model (the attribute set that ends
/// tests/fixtures/flake/cost.nix), on one line.
fn cost_model() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flake/cost.nix");
    let text = fs::read_to_string(path).expect("read tests/fixtures/flake/cost.nix");
    let lines = text.lines().skip_while(|l| !l.starts_with('{'));
    lines.map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Panics unless flakem's `--json` summary has each of `hosts` `ok` with the fresh generation.
fn check_summary(timed: &Timed, hosts: &[&str], generation: &str) {
    let summary: Vec<Value> = serde_json::from_str(&timed.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON array ({e}):\n{}", timed.text()));
    assert_eq!(summary.len(), hosts.len(), "{summary:?}");
    for (row, host) in summary.iter().zip(hosts) {
        let system = row["system"].as_str().unwrap_or_default();
        let fresh = system.ends_with(&format!("-{host}-gen-{generation}"));
        assert!(
            row["result"] == "ok" && row["host"] == *host && fresh,
            "{host}: {row}"
        );
    }
}

/// "Accepted publickey" lines in the host's sshd log so far.
fn accepted(host: &testbed::Host) -> usize {
    host.sshd_log().matches("Accepted publickey").count()
}

/// Starts `commands` all at once, stdout to /dev/null, and waits for every one.
fn spawn_all(commands: impl Iterator<Item = Command>) -> Vec<Output> {
    let start = |mut c: Command| c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let children: Vec<_> = commands
        .map(|c| start(c).expect("start a process"))
        .collect();
    let outputs = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"));
    outputs.collect()
}

/// Busy and total CPU ticks of the machine.
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let first = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1);
    let fields: Vec<u64> = first.filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// User and system CPU seconds of this process's children that were waited for (a run of
/// flakem: flakem and everything it waited for, down the tree: the stand-in, nix, ssh).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn background_busy(window: Duration) -> f64 {
    let before = cpu_ticks();
    thread::sleep(window);
    let after = cpu_ticks();
    (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64
}

/// CPU ticks (user and system, its own and its reaped children's) of all processes that are
/// not this benchmark's: neither a descendant of it nor one naming the bed's directory (the
/// ssh control masters, which leave their parent).
fn others_ticks(bed_dir: &str) -> u64 {
    // pid → (parent, ticks, names the bed)
    let mut processes = BTreeMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
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
        processes.insert(
            pid,
            (fields.get(1).copied().unwrap_or(0) as u32, ticks, ours),
        );
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

const FLAKEM: &str = "flakem";
const STAND_IN: &str = "nixos-rebuild (stand-in)";

/// A nix command line: who ran it (`FLAKEM`, `STAND_IN` or "other"), its subcommand
/// (`store diff-closures` for two words), and whether it names a host's system.
struct NixCall {
    who: &'static str,
    subcommand: String,
    flake_attribute: bool,
    system: bool,
}

impl NixCall {
    /// `eval`, or `build` of a flake attribute (which evaluates it first).
    fn evaluates(&self) -> bool {
        self.subcommand == "eval" || (self.subcommand == "build" && self.flake_attribute)
    }

    fn from_args(who: &'static str, args: &[String]) -> NixCall {
        let mut words = args.iter();
        let mut subcommand = String::new();
        while let Some(w) = words.next() {
            match w.as_str() {
                "--extra-experimental-features" | "--experimental-features" => _ = words.next(),
                "--option" => _ = words.nth(1),
                w if w.starts_with('-') => {}
                w => {
                    subcommand = w.to_owned();
                    if let ("store", Some(next)) = (w, words.next()) {
                        subcommand = format!("store {next}");
                    }
                    break;
                }
            }
        }
        let flake_attribute = args.iter().any(|a| a.contains('#'));
        let system = args
            .iter()
            .any(|a| a.contains("config.system.build.toplevel"));
        NixCall {
            who,
            subcommand,
            flake_attribute,
            system,
        }
    }

    fn logged(line: &str) -> NixCall {
        let mut fields = line.split(SEP);
        let who = match fields.next().unwrap_or_default() {
            "flakem" => FLAKEM,
            p if p.starts_with("nixos-rebuild") => STAND_IN,
            _ => "other",
        };
        NixCall::from_args(who, &fields.map(str::to_owned).collect::<Vec<_>>())
    }

    /// The nix command of a traced line (`+ cmd`, flakem's own, or `$ cmd`, the stand-in's),
    /// skipping `env` and `VAR=value` words.
    fn traced(text: &str) -> Option<NixCall> {
        let (who, command) = match text.strip_prefix("+ ") {
            Some(command) => (FLAKEM, command),
            None => (STAND_IN, text.strip_prefix("$ ")?),
        };
        let words = shell_words::split(command)
            .unwrap_or_else(|_| command.split_whitespace().map(str::to_owned).collect());
        let program =
            (words.iter()).position(|w| w != "env" && (w.starts_with('-') || !w.contains('=')))?;
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
    /// Its wall time and its lines' instants are from then.
    started: Instant,
    timed: Timed,
    nix: Vec<NixCall>,
    /// Its nix processes' peak memory (runs through the memory shim only).
    nix_rss: Vec<NixRss>,
    /// Each host's ssh logins during the run ("Accepted publickey" lines in its sshd log).
    logins: Vec<usize>,
    /// CPU seconds over the run: the machine's busy time, flakem's process tree's (this
    /// machine's side: not the hosts' sshd sessions), other work's.
    cpu_busy: f64,
    cpu_own: f64,
    cpu_others: f64,
}

/// A nix process's peak memory (`/usr/bin/time`'s maximum resident set size) and whether
/// it evaluated a host's system (its command line names `config.system.build.toplevel`:
/// flakem's `nix eval` of the `drvPath`s, the stand-in's `nix build`).
struct NixRss {
    mb: f64,
    system: bool,
}

impl NixRss {
    fn logged(line: &str) -> Option<NixRss> {
        let (kb, command) = line.split_once(' ')?;
        let kb: f64 = kb.parse().ok()?;
        let system = command.contains("config.system.build.toplevel");
        Some(NixRss {
            mb: kb / 1024.0,
            system,
        })
    }
}

/// Evaluating nix processes of a run (from its trace lines or the shim's log): system
/// evaluations (of a host's `config.system.build.toplevel`: flakem's `nix eval` of the
/// `drvPath`s, the stand-in's `nix build <flake>#…`) by flakem and by nixos-rebuild,
/// flakem's evaluation of the names, and any other.
#[derive(Clone, Copy, Default, PartialEq)]
struct Evaluations {
    flakem: usize,
    rebuild: usize,
    names: usize,
    other: usize,
}

impl Evaluations {
    fn of<'a>(calls: impl Iterator<Item = &'a NixCall>) -> Evaluations {
        let mut e = Evaluations::default();
        for call in calls.filter(|c| c.evaluates()) {
            *match (call.who, call.system) {
                (FLAKEM, true) => &mut e.flakem,
                (FLAKEM, false) => &mut e.names,
                (STAND_IN, true) => &mut e.rebuild,
                _ => &mut e.other,
            } += 1;
        }
        e
    }
}

impl Run {
    /// The largest system-evaluating nix process's peak memory, and the sum of them all (the
    /// 8 nixos-rebuilds' run at once: their sum is what the machine must hold), in MB.
    fn eval_memory(&self) -> (f64, f64) {
        let systems = self.nix_rss.iter().filter(|r| r.system).map(|r| r.mb);
        let (max, sum) = systems.fold((0.0_f64, 0.0_f64), |(m, s), mb| (m.max(mb), s + mb));
        (max, sum)
    }

    fn wall(&self) -> Duration {
        self.timed.ended - self.started
    }

    fn secs(&self) -> f64 {
        self.wall().as_secs_f64()
    }

    /// The shares of the machine's CPUs other work took, and that were busy, during the run.
    fn others_share(&self) -> f64 {
        self.cpu_others / (self.secs() * nproc() as f64)
    }

    fn busy_share(&self) -> f64 {
        self.cpu_busy / (self.secs() * nproc() as f64)
    }

    fn lines(&self) -> impl Iterator<Item = (Duration, &str)> {
        let lines = self.timed.lines.iter();
        lines.map(|(at, line)| (*at - self.started, line.as_str()))
    }

    /// From the trace lines.
    fn evaluations(&self) -> Evaluations {
        let lines = self.lines().map(|(_, l)| split_host(l).1);
        Evaluations::of(lines.filter_map(NixCall::traced).collect::<Vec<_>>().iter())
    }

    /// When each step of `STEPS` started for `host`, after the spawn (`None`: not in this
    /// run's plan), and when its last step ended (`+ ssh ... -O exit`).
    fn steps(&self, host: &str) -> Option<(Vec<Option<Duration>>, Duration)> {
        let single = self.hosts.len() == 1;
        // The lines of `host` and flakem's own (unprefixed), without the prefix.
        let lines: Vec<(Duration, &str)> = (self.lines())
            .filter_map(|(at, line)| match split_host(line) {
                (Some(h), _) if h != host => None,
                (_, text) => Some((at, text)),
            })
            .collect();
        let find = |after: Duration, (prefix, what): (&str, &str)| {
            let mut lines = lines.iter();
            let found =
                lines.find(|(at, t)| *at >= after && t.starts_with(prefix) && t.contains(what));
            found.map(|(at, _)| *at)
        };
        let (mut instants, mut last) = (Vec::new(), Duration::ZERO);
        for (_, plans, starts) in &STEPS {
            if *plans == [In::One, In::Many][usize::from(single)] {
                instants.push(None);
                continue;
            }
            last = match *starts {
                Start::Spawn => Duration::ZERO,
                // The first line after flakem's names evaluation, whichever host it is of.
                Start::NamesDone => {
                    let mut all = self.lines();
                    let names = |l: &str| NixCall::traced(l).is_some_and(|c| c.evaluates());
                    all.find(|(_, l)| l.starts_with("+ nix ") && names(l))?;
                    all.next()?.0
                }
                Start::Line(prefix, what) => find(last, (prefix, what))?,
            };
            instants.push(Some(last));
        }
        Some((instants, find(last, ("+ ssh ", " -O exit "))?))
    }
}

/// Where a step starts: at the spawn, when flakem's names evaluation ended (the next line of
/// its stderr), or at the first line of the host (or flakem's own, unprefixed) after the last
/// step's that starts with the first text and holds the second.
enum Start {
    Spawn,
    NamesDone,
    Line(&'static str, &'static str),
}

/// The plans a step is in: 1 host's, several hosts', both.
#[derive(PartialEq)]
enum In {
    One,
    Many,
    Both,
}

/// What `Run::steps` times in a guarded deploy (BENCHMARKS.md says what each step is): each
/// runs from its line to the next step's in the run's plan, the last to the host's `ssh -O
/// exit`; then the tail.
#[rustfmt::skip]
const STEPS: [(&str, In, Start); 13] = [
    ("names evaluation", In::Both, Start::Spawn),
    ("checks", In::Both, Start::NamesDone),
    ("evaluation of every host's derivation", In::Many, Start::Line("+ nix ", ".drvPath")),
    ("realise (the build, here)", In::Many, Start::Line("+ nix-store --realise ", "")),
    ("guard arming", In::Both, Start::Line("+ ssh ", "systemd-run --unit")),
    ("nixos-rebuild start", In::Both, Start::Line("+ ", " nixos-rebuild switch ")),
    ("`nix build` (evaluation and build)", In::One, Start::Line("$ nix ", " build ")),
    ("copy", In::Both, Start::Line("$ ", " copy ")),
    ("profile", In::Both, Start::Line("$ ssh ", " nix-env -p ")),
    ("activation wait (1 s)", In::Both, Start::Line("", "activation takes")),
    ("activation", In::Both, Start::Line("$ ssh ", "switch-to-configuration")),
    ("readlink", In::Both, Start::Line("+ ssh ", "'readlink -f /run/current-system'")),
    ("confirmation", In::Both, Start::Line("+ ssh -o ControlPath=none ", "/confirmed")),
];
const TAIL: &str = "tail";

#[derive(Serialize)]
struct Completion {
    cold_ms: Vec<f64>,
    cached_ms: Vec<f64>,
    cold_evaluations: usize,
    cached_nix: usize,
    words: String,
    /// What the cold call wrote to `$XDG_CACHE_HOME/flakem`.
    cache_files: Vec<String>,
}

fn secs(seconds: f64) -> String {
    format!("{seconds:.2} s")
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

/// The same count everywhere, or the smallest and the largest.
fn spread(values: impl Iterator<Item = usize>) -> String {
    let stats = Stats::over(values, |v| v as f64);
    match (stats.min, stats.max) {
        (min, max) if min == max => format!("{min}"),
        (min, max) => format!("{min}–{max}"),
    }
}

/// The same count for every run, or each run's.
fn same_or_each(values: impl Iterator<Item = usize>) -> String {
    let values: Vec<String> = values.map(|v| v.to_string()).collect();
    match &values[..] {
        [first, rest @ ..] if rest.iter().all(|v| v == first) => first.clone(),
        _ => values.join(", "),
    }
}

/// What runs needed of this machine's CPUs, in CPU-seconds: their busy time less other
/// work's (median), and never less than their own process tree's.
fn work(runs: &[Run]) -> f64 {
    let own = med(runs, |r| r.cpu_own);
    (med(runs, |r| r.cpu_busy) - med(runs, |r| r.cpu_others)).max(own)
}

fn med(runs: &[Run], figure: impl Fn(&Run) -> f64) -> f64 {
    Stats::over(runs, figure).median
}

struct Report {
    /// flakem's runs to 1 host and to 8; nixos-rebuild's alone, the reference, the same.
    flakem: [Vec<Run>; 2],
    /// The same with `--no-rollback`: no guard.
    unguarded: [Vec<Run>; 2],
    bare: [Vec<Run>; 2],
    /// Plain and `--diff`, 1 host.
    diff: [Vec<Run>; 2],
    diff_eight: Run,
    /// With the cost model on: flakem's and nixos-rebuild alone's runs, to 1 host and to 8.
    cost: [[Vec<Run>; 2]; 2],
    shimmed: [(&'static str, Run); 4],
    builds: Vec<[f64; 2]>,
    completion: Completion,
}

impl Report {
    /// The figures of issue 5, (1) to (4), with its targets.
    fn results(&self) -> Table {
        let ([one, eight], [un_one, un_eight]) = (&self.flakem, &self.unguarded);
        let ([bare_one, bare_eight], [plain, diff]) = (&self.bare, &self.diff);
        let [t1s, t8s, u1s, u8s, b1s, b8s, tps, tds] = [
            one, eight, un_one, un_eight, bare_one, bare_eight, plain, diff,
        ]
        .map(|r| med(r, Run::secs));
        let ratio = t8s / t1s;
        let [e1, e8, ep, ed] = [one, eight, plain, diff].map(|r| r.iter().map(Run::evaluations));
        let [e1, e8, ep, ed] = [e1, e8, ep, ed].map(Vec::from_iter);
        let ed8 = self.diff_eight.evaluations();
        let shim_agrees =
            (self.shimmed.iter()).all(|(_, r)| r.evaluations() == Evaluations::of(r.nix.iter()));
        let pick =
            |es: &[Evaluations], f: fn(&Evaluations) -> usize| same_or_each(es.iter().map(f));
        let own_and_rebuild = |es: &[_]| pick(es, |e| e.flakem) + " + " + &pick(es, |e| e.rebuild);
        let own8 = med(eight, |r| r.cpu_own);
        let work8 = work(eight);
        let n = nproc() as f64;
        let client_floor = ACTIVATION_SECONDS + own8 / n;
        let c = &self.completion;
        let cached = Stats::over(&c.cached_ms, |ms| *ms);
        let busy_lines = (eight.iter().flat_map(|r| r.lines()))
            .filter(|(_, l)| l.contains("SQLite database") && l.contains("is busy"))
            .count();
        let build = |i: usize| secs(Stats::over(&self.builds, |b| b[i]).median);
        let d8 = self.diff_eight.secs();

        let row =
            |figure: &str, value: String| [figure.into(), value, String::new(), String::new()];
        let met = |figure: &str, value: String, target: String, ok: bool| {
            [figure.to_owned(), value, target, yes_no(ok)]
        };
        let walls = |figure: &str, runs: &[Run]| {
            let each: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.secs())).collect();
            let value = format!("{} ({})", secs(med(runs, Run::secs)), each.join(", "));
            row(&format!("{figure}, median (each run)"), value)
        };
        let systems = |figure: &str, es: &[Evaluations], i: usize, why: &str| {
            let t = TARGET_SYSTEM_EVALUATIONS[i];
            let ok = es.iter().all(|e| (e.flakem, e.rebuild) == t);
            let target = format!("{} + {} ({why})", t.0, t.1);
            met(figure, own_and_rebuild(es), target, ok)
        };
        let guard_cost = |guarded: f64, without: f64| {
            let share = signed((guarded / without - 1.0) * 100.0, 0, " %");
            format!("{} ({share})", signed(guarded - without, 2, " s"))
        };
        let logins = |figure: &str, kinds: [&[Run]; 3]| {
            let each: [Vec<usize>; 3] =
                kinds.map(|runs| runs.iter().flat_map(|r| r.logins.clone()).collect());
            let ok = (each.iter().zip(TARGET_LOGINS)).all(|(l, t)| l.iter().all(|n| *n == t));
            let value = each.map(|l| spread(l.into_iter())).join(" / ");
            let [g, u] = TARGET_LOGINS;
            let target =
                format!("{g} / {u} (issue 13: 1, and the guard confirms over a new connection)");
            met(figure, value, target, ok)
        };
        let rows = [
            walls("(1) `switch-push` to 1 host, wall time", one),
            walls("(1) `switch-push` to 8 hosts at once, wall time", eight),
            met(
                "(1) **8 hosts ÷ 1 host** (medians)",
                format!("**{ratio:.2}**"),
                format!("≤ {TARGET_RATIO} (≤ {:.2} s here)", TARGET_RATIO * t1s),
                ratio <= TARGET_RATIO,
            ),
            row(
                "(1) same without the 1 s activation: (t₈ − 1 s) ÷ (t₁ − 1 s)",
                format!(
                    "{:.2}",
                    (t8s - ACTIVATION_SECONDS) / (t1s - ACTIVATION_SECONDS)
                ),
            ),
            walls(
                "(1) reference, not flakem: `nixos-rebuild switch` (the stand-in) alone, same \
                 arguments, 1 host",
                bare_one,
            ),
            walls(
                "(1) reference: 8 of them started at once, until the last ends",
                bare_eight,
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
                "(1) reference: the 8 toplevels built by 8 `nix build`s at once / by one `nix \
                 build` of all 8 (medians)",
                format!("{} / {}", build(0), build(1)),
            ),
            row(
                "(1) CPU-seconds an 8-host run needed (the machine's busy time less other work's; \
                 median)",
                format!("{work8:.1} s"),
            ),
            row(
                "(1) the floor they set: 1 s activation + CPU-seconds ÷ CPUs (measured: t₈)",
                format!("{:.2} s ({})", ACTIVATION_SECONDS + work8 / n, secs(t8s)),
            ),
            row(
                "(1) the floor flakem's process tree alone sets: 1 s + its CPU-seconds ÷ CPUs, and \
                 ÷ t₁",
                format!("{client_floor:.2} s, {:.2}", client_floor / t1s),
            ),
            row(
                "(1) nix's \"SQLite database … is busy\" lines in the 8-host runs",
                busy_lines.to_string(),
            ),
            systems(
                "(2) system evaluations per run (nix processes evaluating a host's \
                 `config.system.build.toplevel`), 1 host: flakem's + nixos-rebuild's",
                &e1,
                0,
                "the plain nixos-rebuild plan",
            ),
            systems(
                "(2) the same, 8 hosts at once",
                &e8,
                1,
                "one evaluation for the fleet",
            ),
            row(
                "(2) flakem's other evaluation per run, the configuration names: 1 host / 8 hosts",
                pick(&e1, |e| e.names) + " / " + &pick(&e8, |e| e.names),
            ),
            row(
                &format!(
                    "(2) cross-check: the `nix` shim's counts of evaluating nix processes (in {} \
                     runs, not timed) match the trace lines, none by another parent",
                    self.shimmed.len()
                ),
                yes_no(shim_agrees),
            ),
            walls("(3) `switch-push` 1 host, wall time", plain),
            walls("(3) `switch-push --diff` 1 host, wall time", diff),
            row(
                "(3) what `--diff` adds, 1 host (difference of the medians)",
                format!(
                    "{} ({})",
                    signed(tds - tps, 2, " s"),
                    signed((tds / tps - 1.0) * 100.0, 0, " %")
                ),
            ),
            row(
                "(3) system evaluations, 1 host, plain: flakem's + nixos-rebuild's",
                own_and_rebuild(&ep),
            ),
            row(
                "(3) system evaluations, 1 host, `--diff`: flakem's + nixos-rebuild's",
                own_and_rebuild(&ed),
            ),
            row(
                "(3) `switch-push --diff` 8 hosts, one run: wall time (plain: median), and what \
                 `--diff` changed",
                format!(
                    "{} ({}), {}",
                    secs(d8),
                    secs(t8s),
                    signed(d8 - t8s, 2, " s")
                ),
            ),
            row(
                "(3) CPU time of flakem's process tree, 8 hosts: `--diff` (one run) / plain \
                 (median)",
                format!("{:.1} s / {own8:.1} s", self.diff_eight.cpu_own),
            ),
            met(
                "(3) system evaluations, 8 hosts, `--diff`: flakem's + nixos-rebuild's",
                own_and_rebuild(std::slice::from_ref(&ed8)),
                "flakem's: as many as for 1 host".to_owned(),
                ed.iter().all(|e| e.flakem == ed8.flakem),
            ),
            row(
                &format!(
                    "(4) completion of `flakem build-there <TAB>`, cold (fresh cache; {} nix \
                     evaluation), each call",
                    c.cold_evaluations
                ),
                c.cold_ms
                    .iter()
                    .map(|ms| format!("{ms:.0} ms"))
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
            walls(
                "(5) `switch-push --no-rollback` (no guard) to 1 host, wall time",
                un_one,
            ),
            walls(
                "(5) `switch-push --no-rollback` to 8 hosts at once, wall time",
                un_eight,
            ),
            row(
                "(5) what the guard costs a good deploy (difference of the medians): 1 host / 8 \
                 hosts",
                guard_cost(t1s, u1s) + " / " + &guard_cost(t8s, u8s),
            ),
            row(
                "(5) 8 hosts ÷ 1 host without the guard (medians)",
                format!("{:.2}", u8s / u1s),
            ),
            logins(
                "(5) ssh logins per host per run (sshd's \"Accepted publickey\"), 1 host: \
                 guarded / `--no-rollback` / nixos-rebuild alone",
                [one, un_one, bare_one],
            ),
            logins(
                "(5) the same, 8 hosts at once",
                [eight, un_eight, bare_eight],
            ),
        ];
        let rows = rows.into_iter().chain(self.cost_rows(b8s, [t8s, u8s]));
        Table::new(["figure", "value", "target", "met"], rows)
    }

    /// (6): issue 13's figures with the test flake's evaluation cost model on, and its target
    /// for the trivial flake (the cost model off: `t8s` and `u8s` flakem's 8 hosts guarded
    /// and `--no-rollback`, `b8s` nixos-rebuild alone's, medians of (1) and (5)).
    fn cost_rows(&self, b8s: f64, [t8s, u8s]: [f64; 2]) -> Vec<[String; 4]> {
        let [[one, eight], [bare_one, bare_eight]] = &self.cost;
        let [t1, t8, b1, b8] = [one, eight, bare_one, bare_eight].map(|r| med(r, Run::secs));
        let row =
            |figure: &str, value: String| [figure.into(), value, String::new(), String::new()];
        let met = |figure: &str, value: String, target: String, ok: bool| {
            [figure.to_owned(), value, target, yes_no(ok)]
        };
        let walls = |figure: &str, runs: &[Run]| {
            let each: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.secs())).collect();
            let value = format!("{} ({})", secs(med(runs, Run::secs)), each.join(", "));
            row(&format!("{figure}, median (each run)"), value)
        };
        let max_mb = |runs: &[Run]| med(runs, |r| r.eval_memory().0);
        let sum_mb = |runs: &[Run]| med(runs, |r| r.eval_memory().1);
        let [m1, m8, bm1, bm8] = [one, eight, bare_one, bare_eight].map(|r| max_mb(r));
        let [s1, s8, bs1, bs8] = [one, eight, bare_one, bare_eight].map(|r| sum_mb(r));
        let (trivial, cost_ratio, vs_rebuild, memory) = (t8s / b8s, t8 / t1, t8 / b8, s8 / s1);
        let [w1, w8, bw8] = [one, eight, bare_eight].map(|r| work(r));
        let n = nproc() as f64;
        let floor8 = ACTIVATION_SECONDS + w8 / n;
        vec![
            met(
                "(1) flakem 8 hosts ÷ 8 parallel nixos-rebuild, trivial flake (cost model off; \
                 medians)",
                format!("**{trivial:.2}**"),
                format!("≤ {TARGET_TRIVIAL_VS_REBUILD}"),
                trivial <= TARGET_TRIVIAL_VS_REBUILD,
            ),
            met(
                "(1) the same without the guard (`--no-rollback`, which nixos-rebuild alone \
                 lacks too; (5))",
                format!("{:.2}", u8s / b8s),
                format!("≤ {TARGET_TRIVIAL_VS_REBUILD}"),
                u8s / b8s <= TARGET_TRIVIAL_VS_REBUILD,
            ),
            walls("(6) cost model on: `switch-push` to 1 host, wall time", one),
            walls(
                "(6) cost model on: `switch-push` to 8 hosts at once, wall time",
                eight,
            ),
            walls(
                "(6) cost model on, reference: `nixos-rebuild switch` (the stand-in) alone, 1 host",
                bare_one,
            ),
            walls(
                "(6) cost model on, reference: 8 of them started at once, until the last ends",
                bare_eight,
            ),
            met(
                "(6) **flakem 8 hosts ÷ flakem 1 host**, cost model on (medians)",
                format!("**{cost_ratio:.2}**"),
                format!(
                    "≤ {TARGET_COST_RATIO} (≤ {:.2} s here)",
                    TARGET_COST_RATIO * t1
                ),
                cost_ratio <= TARGET_COST_RATIO,
            ),
            met(
                "(6) **flakem 8 hosts ÷ 8 parallel nixos-rebuild**, cost model on (medians)",
                format!("**{vs_rebuild:.2}**"),
                format!(
                    "≤ {TARGET_COST_VS_REBUILD} (≤ {:.2} s here)",
                    TARGET_COST_VS_REBUILD * b8
                ),
                vs_rebuild <= TARGET_COST_VS_REBUILD,
            ),
            row(
                "(6) reference: 8 ÷ 1 for nixos-rebuild alone, cost model on",
                format!("{:.2}", b8 / b1),
            ),
            row(
                "(6) CPU-seconds a run needed (the machine's busy time less other work's; \
                 median): flakem 1 host / 8 hosts; 8 nixos-rebuilds alone",
                format!("{w1:.1} s / {w8:.1} s; {bw8:.1} s"),
            ),
            row(
                "(6) the floor flakem's 8-host runs set on this machine: 1 s activation + \
                 CPU-seconds ÷ CPUs (measured: t₈), and ÷ t₁",
                format!("{floor8:.2} s ({}), {:.2}", secs(t8), floor8 / t1),
            ),
            row(
                "(6) peak memory of the largest system-evaluating nix process (max RSS, median \
                 over runs): flakem 1 host / 8 hosts; nixos-rebuild alone 1 / 8",
                format!("{m1:.0} MB / {m8:.0} MB; {bm1:.0} MB / {bm8:.0} MB"),
            ),
            row(
                "(6) the system-evaluating nix processes' peak memory summed over a run (what \
                 runs at once must hold; median): flakem 1 host / 8 hosts; nixos-rebuild alone \
                 1 / 8",
                format!("{s1:.0} MB / {s8:.0} MB; {bs1:.0} MB / {bs8:.0} MB"),
            ),
            met(
                "(6) **peak evaluation memory, flakem 8 hosts ÷ 1 host** (the sums)",
                format!("**{memory:.2}**"),
                format!("≤ {TARGET_COST_MEMORY}"),
                memory <= TARGET_COST_MEMORY,
            ),
            row(
                "(6) system-evaluating nix processes per run, flakem 1 host / 8 hosts; \
                 nixos-rebuild alone 1 / 8 (from the memory shim)",
                [one, eight, bare_one, bare_eight]
                    .map(|runs| {
                        spread(
                            runs.iter()
                                .map(|r| r.nix_rss.iter().filter(|n| n.system).count()),
                        )
                    })
                    .join(" / "),
            ),
        ]
    }

    /// Where the time of a plain deploy goes, and the CPU time it took.
    fn steps(&self) -> Table {
        let [one, eight] = &self.flakem;
        let labels = STEPS.iter().map(|s| s.0).chain([TAIL]);
        let steps = labels.zip(step_times(one).zip(step_times(eight)));
        let steps = steps.map(|(label, (a, b))| {
            let ms = |t: Option<f64>| t.map_or("—".into(), |ms| format!("{ms:.0} ms"));
            let [a, b, bw] = [a.map(|a| a.0), b.map(|b| b.0), b.map(|b| b.1)].map(ms);
            [label.to_owned(), a, b, bw]
        });
        let whole = |label: &str, [one, eight]: &[Vec<Run>; 2], of: &dyn Fn(&[Run]) -> String| {
            [label.to_owned(), of(one), String::new(), of(eight)]
        };
        let cpu = |runs: &[Run]| format!("{:.1} s", med(runs, |r| r.cpu_own));
        let rows = steps.chain([
            whole("**whole run** (wall time, median)", &self.flakem, &|runs| {
                format!("**{:.0} ms**", med(runs, Run::secs) * 1e3)
            }),
            whole(
                "the same without the guard (`--no-rollback`)",
                &self.unguarded,
                &|runs| format!("{:.0} ms", med(runs, Run::secs) * 1e3),
            ),
            whole(
                "CPU time of flakem's process tree on this machine (flakem, stand-in, nix, ssh; \
                 median)",
                &self.flakem,
                &cpu,
            ),
            whole(
                "the same for nixos-rebuild alone (reference; median)",
                &self.bare,
                &cpu,
            ),
            whole(
                &format!(
                    "the machine's busy CPU time during the run, and its share of the {} CPUs \
                     (median)",
                    nproc()
                ),
                &self.flakem,
                &|runs| {
                    let (busy, share) = (med(runs, |r| r.cpu_busy), med(runs, Run::busy_share));
                    format!("{busy:.1} s, {:.0} %", share * 100.0)
                },
            ),
        ]);
        Table::new(
            ["step", "1 host", "8 hosts, per host", "8 hosts, slowest"],
            rows,
        )
    }

    fn nix_processes(&self) -> Table {
        let rows = self.shimmed.iter().flat_map(|(label, run)| {
            let mut counts = BTreeMap::new();
            for call in &run.nix {
                let name = match call.subcommand.as_str() {
                    "build" if call.flake_attribute => "build <flake>#…",
                    "eval" if call.system => "eval …toplevel.drvPath",
                    "eval" => "eval …attrNames…",
                    sub => sub,
                };
                *counts.entry((call.who, name)).or_insert(0) += 1;
            }
            let rows = counts.into_iter();
            rows.map(|((who, sub), n)| {
                [
                    label.to_string(),
                    who.into(),
                    format!("`{sub}`"),
                    n.to_string(),
                ]
            })
        });
        Table::new(["run", "started by", "nix subcommand", "processes"], rows)
    }
}

/// Median over `runs` (and their hosts) of each step's milliseconds, and the median over runs
/// of the slowest host's (`None` for a step not in their plan); the last is the tail after the
/// last host's `ssh -O exit` (one per run).
fn step_times(runs: &[Run]) -> impl Iterator<Item = Option<(f64, f64)>> {
    let n = STEPS.len() + 1;
    let (mut pooled, mut slowest) = (vec![Vec::new(); n], Vec::new());
    for run in runs {
        let mut worst = vec![None; n];
        let mut last_exit = Duration::ZERO;
        for host in &run.hosts {
            let Some((instants, end)) = run.steps(host) else {
                eprintln!("{host}: not every step's line found");
                continue;
            };
            let mut next = end;
            for (i, at) in instants.iter().enumerate().rev() {
                let Some(at) = *at else { continue };
                let took = millis(next.saturating_sub(at));
                pooled[i].push(took);
                worst[i] = Some(took.max(worst[i].unwrap_or(0.0)));
                next = at;
            }
            last_exit = last_exit.max(end);
        }
        worst[n - 1] = Some(millis(run.wall().saturating_sub(last_exit)));
        pooled[n - 1].extend(worst[n - 1]);
        slowest.push(worst);
    }
    (0..n).map(move |i| {
        let pooled = Stats::over(&pooled[i], |ms| *ms).median;
        let worst = Stats::over(&slowest, |w| w[i]).median;
        (!pooled.is_nan()).then_some((pooled, worst))
    })
}

/// How long a shim's log is now: where the next run's lines start.
fn log_len(log: &Path) -> usize {
    fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// What a shim logged since `from` (a `log_len`).
fn log_since(log: &Path, from: usize) -> String {
    let text = fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned()
}
