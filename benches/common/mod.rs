//! What the two benchmarks (benches/reset.rs, benches/fleet.rs) share: running a deployer
//! with its stderr lines timestamped as they arrive, the shims they put first on PATH, the
//! statistics, and BENCHMARKS.md: its layout (the reset benchmark's part, then the fleet
//! benchmark's section), its tables and the machine a benchmark ran on. Each benchmark
//! includes it as `mod common`; everything here is used by both.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

/// Runs `command` with stdout and stderr piped. Each stderr line is timestamped as it arrives
/// and handed at once to `on_line` (on the thread that reads them); stdout is kept whole.
/// Kills it and panics if it is still running after `deadline`.
pub fn run_timed(
    mut command: Command,
    deadline: Duration,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Timed {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let give_up = Instant::now() + deadline;
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
        if Instant::now() > give_up {
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

/// The program `name` on this process's PATH (the real one a shim execs).
pub fn on_path(name: &str) -> PathBuf {
    first_in(
        name,
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    )
}

/// PATH for the runs: `first` (shim directories), then the stand-in nixos-rebuild of
/// tests/fixtures/bin-ng, then this process's PATH.
pub fn search_path(first: &[&Path]) -> OsString {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = first.iter().map(|d| d.to_path_buf()).collect();
    dirs.push(fixtures.join("bin-ng"));
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

/// A figure the statistics below take: a number, or a duration.
pub trait Figure: Copy + PartialOrd {
    /// What the statistics of no values are.
    const NONE: Self;
    fn halfway(self, other: Self) -> Self;
}

impl Figure for f64 {
    const NONE: f64 = f64::NAN;
    fn halfway(self, other: f64) -> f64 {
        (self + other) / 2.0
    }
}

impl Figure for Duration {
    const NONE: Duration = Duration::ZERO;
    fn halfway(self, other: Duration) -> Duration {
        (self + other) / 2
    }
}

/// `values` in order, without those that compare with nothing (NaN).
fn sorted<T: Figure>(values: &[T]) -> Vec<T> {
    let mut values: Vec<T> = values
        .iter()
        .copied()
        .filter(|v| v.partial_cmp(v).is_some())
        .collect();
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN left"));
    values
}

/// The middle value; with an even number of them, halfway between the two middle ones.
pub fn median<T: Figure>(values: &[T]) -> T {
    let values = sorted(values);
    let n = values.len();
    match n {
        0 => T::NONE,
        _ if n % 2 == 1 => values[n / 2],
        _ => values[n / 2 - 1].halfway(values[n / 2]),
    }
}

pub fn max<T: Figure>(values: &[T]) -> T {
    sorted(values).last().copied().unwrap_or(T::NONE)
}

pub fn min<T: Figure>(values: &[T]) -> T {
    sorted(values).first().copied().unwrap_or(T::NONE)
}

/// The markers around the fleet benchmark's section.
const FLEET_BEGIN: &str =
    "<!-- fleet benchmark: begin (written by `cargo bench --bench fleet`) -->";
const FLEET_END: &str = "<!-- fleet benchmark: end -->";

/// The parts of BENCHMARKS.md: the reset benchmark's (from the top), then the fleet
/// benchmark's section (between its markers, which are not part of it).
pub struct Parts {
    pub reset: String,
    pub fleet: String,
    /// Whatever follows the fleet section's end marker.
    after: String,
}

impl Parts {
    fn parse(text: &str) -> Parts {
        let begin = text.find(FLEET_BEGIN);
        let end = text.find(FLEET_END);
        match (begin, end) {
            (Some(begin), Some(end)) if end > begin => {
                let after = &text[end + FLEET_END.len()..];
                Parts {
                    reset: text[..begin].to_owned(),
                    fleet: text[begin + FLEET_BEGIN.len()..end].trim().to_owned(),
                    after: after.strip_prefix('\n').unwrap_or(after).to_owned(),
                }
            }
            _ => Parts {
                reset: text.to_owned(),
                fleet: String::new(),
                after: String::new(),
            },
        }
    }

    fn text(&self) -> String {
        let mut text = match self.reset.trim_end() {
            "" => "# Benchmarks".to_owned(),
            reset => reset.to_owned(),
        };
        text.push('\n');
        if !self.fleet.trim().is_empty() {
            let _ = write!(
                text,
                "\n{FLEET_BEGIN}\n\n{}\n{FLEET_END}\n{}",
                self.fleet.trim_end(),
                self.after
            );
        }
        text
    }
}

/// Rewrites BENCHMARKS.md at the repository root with `update` applied to its parts (a
/// benchmark replaces its own and keeps the other's); returns its path.
pub fn update_benchmarks(update: impl FnOnce(&mut Parts)) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let mut parts = Parts::parse(&fs::read_to_string(&path).unwrap_or_default());
    update(&mut parts);
    fs::write(&path, parts.text()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The list items that start a benchmark's "Machine and run": the date, the CPUs, the
/// kernel and the versions `versions` (shell commands) print, flakem's commit.
pub fn write_machine(w: &mut String, versions: &[&str]) {
    let versions: Vec<String> = versions.iter().map(|v| shell(v)).collect();
    let _ = writeln!(w, "- date: {}", shell("date -u '+%Y-%m-%d %H:%M UTC'"));
    let _ = writeln!(
        w,
        "- nproc: {}; CPU: {}",
        nproc(),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'")
    );
    let _ = writeln!(
        w,
        "- kernel {}; {}",
        shell("uname -sr"),
        versions.join("; ")
    );
    let git = concat!("git -C ", env!("CARGO_MANIFEST_DIR"));
    let _ = writeln!(
        w,
        "- flakem at commit {}{} (built by `cargo bench`, release profile)",
        shell(&format!(
            "{git} rev-parse --short HEAD 2>/dev/null || echo unknown"
        )),
        if shell(&format!(
            "{git} status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null"
        ))
        .is_empty()
        {
            ""
        } else {
            ", with uncommitted changes under src/ or to Cargo.toml (others' work in progress)"
        }
    );
}

/// A markdown table: `header`, the separator, `rows`, then an empty line. An empty cell is
/// written `| |`.
pub fn write_table<const N: usize>(
    w: &mut String,
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) {
    let _ = writeln!(w, "{}", table_row(header));
    let _ = writeln!(w, "|{}", "---|".repeat(N));
    for cells in rows {
        let _ = writeln!(w, "{}", table_row(cells.iter().map(String::as_str)));
    }
    let _ = writeln!(w);
}

fn table_row<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut row = "|".to_owned();
    for cell in cells {
        match cell {
            "" => row.push_str(" |"),
            cell => {
                let _ = write!(row, " {cell} |");
            }
        }
    }
    row
}

pub fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}
