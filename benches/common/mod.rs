//! What the benchmarks (benches/reset.rs, benches/fleet.rs, benches/guard.rs) share: running
//! a deployer with its stderr lines timestamped as they arrive, the shims, the statistics,
//! and publishing the figures as data: `benches/results/<name>.json` and the generated
//! regions of BENCHMARKS.md, whose prose is written by hand, so none of it lives here.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::testbed::TestBed;

/// Whether this is `cargo bench`, which passes `--bench`: `cargo test --all-targets` runs
/// the benchmarks' binaries too, and these take minutes and root.
pub fn benchmarking(name: &str) -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!("{name} benchmark: run it with `cargo bench --bench {name}`; nothing to do here");
    }
    yes
}

/// The number in the environment variable `name`, or `default` when it is unset, not a
/// number or 0.
pub fn env_count(name: &str, default: usize) -> usize {
    let value = std::env::var(name).ok().and_then(|n| n.parse().ok());
    value.filter(|n| *n > 0).unwrap_or(default)
}

pub struct Timed {
    pub status: ExitStatus,
    /// When its exit was seen (it is polled every millisecond).
    pub ended: Instant,
    /// Its stderr lines, each with the instant it arrived.
    pub lines: Vec<(Instant, String)>,
    pub stdout: String,
}

impl Timed {
    /// Its stderr and stdout, for the message of a failed run.
    pub fn text(&self) -> String {
        let lines = self.lines.iter().map(|(_, line)| format!("{line}\n"));
        lines.collect::<String>() + "stdout:\n" + &self.stdout
    }
}

/// Runs `command` with stdout and stderr piped. Each stderr line is timestamped as it arrives
/// and handed at once to `on_line` (on the thread that reads them); stdout is kept whole.
/// Kills it and panics if it is still running after `deadline`.
pub fn run_timed(
    mut command: Command,
    deadline: Duration,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Timed {
    let started = Instant::now();
    let mut child = (command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn())
    .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        let (mut lines, mut buffer) = (Vec::new(), Vec::new());
        while let Ok(1..) = stderr.read_until(b'\n', &mut buffer) {
            let at = Instant::now();
            let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
            buffer.clear();
            on_line(&line);
            lines.push((at, line));
        }
        lines
    });
    let out_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let (status, ended) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, Instant::now());
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {deadline:?}; killed it");
        }
        thread::sleep(Duration::from_millis(1));
    };
    Timed {
        status,
        ended,
        lines: reader.join().expect("stderr reader"),
        stdout: out_reader.join().expect("stdout reader"),
    }
}

/// `program` in the bed's flake directory with the bed's environment, `path` as PATH, the
/// runs' own TMPDIR and no stdin.
pub fn command(bed: &TestBed, program: impl AsRef<OsStr>, path: &OsStr) -> Command {
    let tmp = bed.dir().join("t");
    fs::create_dir_all(&tmp).expect("create the runs' TMPDIR");
    let mut command = bed.command(program);
    command
        .env("PATH", path)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    command
}

/// What `command` (a `/bin/sh` command line) prints, trimmed; empty if it fails to start.
pub fn shell(command: &str) -> String {
    let output = Command::new("/bin/sh").args(["-c", command]).output();
    output.map_or_else(
        |_| String::new(),
        |o| String::from_utf8_lossy(&o.stdout).trim().into(),
    )
}

pub fn nproc() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn write_executable(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("a directory")).expect("create a shim directory");
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod a shim");
}

/// Writes a shim at `path`: a `/bin/sh` script that runs `body` (shell lines that record
/// something about this start, as `purpose` says), then execs `real` with its arguments.
pub fn write_shim(path: &Path, purpose: &str, body: &str, real: &Path) {
    let real = real.display();
    let text = format!("#!/bin/sh\n# flakem benchmark shim: {purpose}\n{body}exec {real} \"$@\"\n");
    write_executable(path, &text);
}

/// The first file named `name` in `dirs`.
pub fn first_in(name: &str, dirs: impl IntoIterator<Item = impl AsRef<Path>>) -> PathBuf {
    let mut paths = dirs.into_iter().map(|d| d.as_ref().join(name));
    paths
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} found"))
}

fn own_path() -> Vec<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect()
}

/// The program `name` on this process's PATH (the real one a shim execs).
pub fn on_path(name: &str) -> PathBuf {
    first_in(name, own_path())
}

/// PATH for the runs: `first` (shim directories), then the stand-in nixos-rebuild of
/// tests/fixtures/bin-ng, then this process's PATH.
pub fn search_path(first: &[&Path]) -> OsString {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin-ng");
    let dirs = first.iter().map(|d| d.to_path_buf()).chain([fixtures]);
    std::env::join_paths(dirs.chain(own_path())).expect("PATH")
}

/// Median, min and max of a figure over runs, without NaNs (NaN for none); with an even
/// number of them, the median is halfway between the two middle ones.
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// The statistics of `figure` over `items` (records of runs); `None`s are left out.
    pub fn over<T, V: Into<Option<f64>>>(
        items: impl IntoIterator<Item = T>,
        figure: impl Fn(T) -> V,
    ) -> Stats {
        let v = items.into_iter().filter_map(|i| figure(i).into());
        let mut v: Vec<f64> = v.filter(|v| !v.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Stats {
            median: match n {
                0 => f64::NAN,
                _ if n % 2 == 1 => v[n / 2],
                _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            },
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn yes_no(ok: bool) -> String {
    if ok { "yes" } else { "**no**" }.to_owned()
}

/// The machine a benchmark ran on, and the flakem it measured.
#[derive(Serialize)]
struct Machine {
    date: String,
    nproc: usize,
    cpu: String,
    kernel: String,
    versions: Vec<String>,
    commit: String,
    uncommitted_changes: bool,
}

impl Machine {
    fn now(versions: &[&str]) -> Machine {
        let git = concat!("git -C ", env!("CARGO_MANIFEST_DIR"));
        let changes = format!("{git} status --porcelain -- src Cargo.toml Cargo.lock");
        Machine {
            date: shell("date -u '+%Y-%m-%d %H:%M UTC'"),
            nproc: nproc(),
            cpu: shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
            kernel: shell("uname -sr"),
            versions: versions.iter().map(|v| shell(v)).collect(),
            commit: shell(&format!("{git} rev-parse --short HEAD || echo unknown")),
            uncommitted_changes: !shell(&changes).is_empty(),
        }
    }

    /// The list of "Machine and run": the machine's items, then the benchmark's `facts`.
    fn markdown(&self, facts: &[String]) -> String {
        let changes = if self.uncommitted_changes {
            ", with uncommitted changes under src/ or to Cargo.toml (others' work in progress)"
        } else {
            ""
        };
        let mut w = format!(
            "- date: {}\n- nproc: {}; CPU: {}\n- kernel {}; {}\n- flakem at commit {}{changes} \
             (built by `cargo bench`, release profile)\n",
            self.date,
            self.nproc,
            self.cpu,
            self.kernel,
            self.versions.join("; "),
            self.commit,
        );
        for fact in facts {
            let _ = writeln!(w, "- {fact}");
        }
        w
    }
}

/// A table of figures, as a benchmark shows it: a header and rows of cells, in markdown in
/// BENCHMARKS.md and as arrays in the JSON.
#[derive(Serialize)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(
        header: [&str; N],
        rows: impl IntoIterator<Item = [String; N]>,
    ) -> Table {
        Table {
            header: header.map(str::to_owned).to_vec(),
            rows: rows.into_iter().map(Vec::from).collect(),
        }
    }

    fn markdown(&self) -> String {
        let row = |cells: &[String]| {
            let cells = cells.iter().map(|c| {
                if c.is_empty() {
                    " |".into()
                } else {
                    format!(" {c} |")
                }
            });
            "|".to_owned() + &cells.collect::<String>() + "\n"
        };
        let rule = "|".to_owned() + &"---|".repeat(self.header.len()) + "\n";
        row(&self.header) + &rule + &self.rows.iter().map(|r| row(r)).collect::<String>()
    }
}

/// What a benchmark publishes.
pub struct Figures {
    /// The benchmark's name: its JSON is `benches/results/<bench>.json`, its regions of
    /// BENCHMARKS.md are `<bench>-machine` and `<bench>-<table>`.
    pub bench: &'static str,
    pub versions: &'static [&'static str],
    /// Its own items of "Machine and run".
    pub facts: Vec<String>,
    pub parameters: Value,
    /// Its tables, each in the region of its name.
    pub tables: Vec<(&'static str, Table)>,
    /// Regions of other text, not in the JSON.
    pub texts: Vec<(&'static str, String)>,
    /// More figures, for the JSON only.
    pub more: Value,
}

impl Figures {
    /// Writes the JSON, then each region's text between its markers in BENCHMARKS.md
    /// (`<!-- generated: NAME -->` … `<!-- end: NAME -->`), leaving everything else in the
    /// file, the other benchmarks' regions too, as it is. Panics if a marker is missing.
    pub fn publish(self) {
        let bench = self.bench;
        let machine = Machine::now(self.versions);
        let mut regions = self.texts;
        regions.push(("machine", machine.markdown(&self.facts)));
        regions.extend(self.tables.iter().map(|(name, t)| (*name, t.markdown())));
        let data = json!({
            "benchmark": bench,
            "machine": machine,
            "facts": self.facts,
            "parameters": self.parameters,
            "tables": (self.tables.iter())
                .map(|(name, table)| (name.to_string(), json!(table)))
                .collect::<serde_json::Map<_, _>>(),
            "more": self.more,
        });
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let json = root.join(format!("benches/results/{bench}.json"));
        fs::create_dir_all(json.parent().expect("a directory")).expect("create benches/results");
        let text = serde_json::to_string_pretty(&data).expect("figures as JSON") + "\n";
        fs::write(&json, text).unwrap_or_else(|e| panic!("write {}: {e}", json.display()));
        let path = root.join("BENCHMARKS.md");
        let mut md = fs::read_to_string(&path).expect("read BENCHMARKS.md");
        for (name, region) in regions {
            let begin = format!("<!-- generated: {bench}-{name} -->\n");
            let end = format!("<!-- end: {bench}-{name} -->");
            let start = md.find(&begin).map(|i| i + begin.len());
            let stop = start.and_then(|s| md[s..].find(&end).map(|i| s + i));
            let (Some(start), Some(stop)) = (start, stop) else {
                panic!(
                    "BENCHMARKS.md has no `{begin}` … `{end}`: the figures are only in {json:?}"
                );
            };
            md.replace_range(start..stop, &format!("\n{}\n\n", region.trim()));
        }
        fs::write(&path, md).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("wrote {} and {}", json.display(), path.display());
    }
}
