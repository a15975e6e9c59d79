//! What the two benchmarks (benches/reset.rs, benches/fleet.rs) share: running a deployer
//! with its stderr lines timestamped as they arrive, the shims they put first on PATH, the
//! statistics, the machine a benchmark ran on, and publishing the figures. The figures are
//! data: a benchmark writes them to `benches/results/<name>.json` and replaces the generated
//! parts of BENCHMARKS.md (tables and lists between `<!-- generated: … -->` markers); the
//! prose around them is written by hand, so none of it lives here.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

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
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// A process run to its end by `run_timed`.
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
        let mut text = String::new();
        for (_, line) in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        text + "stdout:\n" + &self.stdout
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
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stderr = BufReader::new(stderr);
        let mut buffer = Vec::new();
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

/// What `command` (a `/bin/sh` command line) prints, trimmed; empty if it fails to start.
pub fn shell(command: &str) -> String {
    Command::new("/bin/sh")
        .args(["-c", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn nproc() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn write_executable(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create a shim directory");
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod a shim");
}

/// Writes a shim at `path`: a `/bin/sh` script that runs `body` (shell lines that record
/// something about this start, as `purpose` says), then execs `real` with its arguments.
pub fn write_shim(path: &Path, purpose: &str, body: &str, real: &Path) {
    write_executable(
        path,
        &format!(
            "#!/bin/sh\n# flakem benchmark shim: {purpose}\n{body}exec {} \"$@\"\n",
            real.display()
        ),
    );
}

/// The first file named `name` in `dirs`.
pub fn first_in(name: &str, dirs: impl IntoIterator<Item = impl AsRef<Path>>) -> PathBuf {
    dirs.into_iter()
        .map(|d| d.as_ref().join(name))
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
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = first.iter().map(|d| d.to_path_buf()).collect();
    dirs.push(fixtures.join("bin-ng"));
    dirs.extend(own_path());
    std::env::join_paths(dirs).expect("PATH")
}

/// Median, min and max of a figure over runs, without NaNs (NaN for none); with an even
/// number of them, the median is halfway between the two middle ones.
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut v: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
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
pub struct Machine {
    date: String,
    nproc: usize,
    cpu: String,
    kernel: String,
    /// What the benchmark's `versions` commands printed (ssh, nix, ...).
    versions: Vec<String>,
    commit: String,
    /// Others' uncommitted work under src/ or in Cargo.toml went into the build.
    uncommitted_changes: bool,
}

impl Machine {
    /// This machine now; `versions` are shell commands that print a tool's version.
    pub fn now(versions: &[&str]) -> Machine {
        let git = concat!("git -C ", env!("CARGO_MANIFEST_DIR"));
        Machine {
            date: shell("date -u '+%Y-%m-%d %H:%M UTC'"),
            nproc: nproc(),
            cpu: shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
            kernel: shell("uname -sr"),
            versions: versions.iter().map(|v| shell(v)).collect(),
            commit: shell(&format!("{git} rev-parse --short HEAD || echo unknown")),
            uncommitted_changes: !shell(&format!(
                "{git} status --porcelain -- src Cargo.toml Cargo.lock"
            ))
            .is_empty(),
        }
    }

    /// The list items that start a benchmark's "Machine and run"; `more` are its own.
    pub fn markdown(&self, more: &[String]) -> String {
        let mut w = format!(
            "- date: {}\n- nproc: {}; CPU: {}\n- kernel {}; {}\n- flakem at commit {}{} \
             (built by `cargo bench`, release profile)\n",
            self.date,
            self.nproc,
            self.cpu,
            self.kernel,
            self.versions.join("; "),
            self.commit,
            if self.uncommitted_changes {
                ", with uncommitted changes under src/ or to Cargo.toml (others' work in progress)"
            } else {
                ""
            }
        );
        for item in more {
            let _ = writeln!(w, "- {item}");
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

    pub fn markdown(&self) -> String {
        let row = |cells: &[String]| {
            cells
                .iter()
                .fold("|".to_owned(), |row, cell| match cell.as_str() {
                    "" => row + " |",
                    cell => row + " " + cell + " |",
                })
                + "\n"
        };
        let mut w = row(&self.header) + "|" + &"---|".repeat(self.header.len()) + "\n";
        for cells in &self.rows {
            w += &row(cells);
        }
        w
    }
}

/// Writes `data` to `benches/results/<bench>.json` and each region's text between its
/// markers in BENCHMARKS.md (`<!-- generated: NAME -->` … `<!-- end: NAME -->`), leaving
/// everything else in the file, the other benchmark's regions too, as it is. Panics if a
/// marker is missing, after the JSON is written.
pub fn publish(bench: &str, data: &impl Serialize, regions: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = root.join(format!("benches/results/{bench}.json"));
    fs::create_dir_all(json.parent().expect("a directory")).expect("create benches/results");
    let text = serde_json::to_string_pretty(data).expect("figures as JSON") + "\n";
    fs::write(&json, text).unwrap_or_else(|e| panic!("write {}: {e}", json.display()));
    let path = root.join("BENCHMARKS.md");
    let mut md = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read BENCHMARKS.md: {e}"));
    for (name, region) in regions {
        let (begin, end) = (
            format!("<!-- generated: {name} -->\n"),
            format!("<!-- end: {name} -->"),
        );
        let start = md.find(&begin).map(|i| i + begin.len());
        let stop = start.and_then(|s| md[s..].find(&end).map(|i| s + i));
        let (Some(start), Some(stop)) = (start, stop) else {
            panic!(
                "BENCHMARKS.md has no `{begin}` … `{end}`: {bench}'s figures are only in {json:?}"
            );
        };
        md.replace_range(start..stop, &format!("\n{}\n\n", region.trim()));
    }
    fs::write(&path, md).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {} and {}", json.display(), path.display());
}
