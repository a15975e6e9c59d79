//! Where one host's output goes. A single host talks to the terminal directly. Several hosts
//! each get a `[host] ` prefix, their children's output piped through whole lines under one
//! lock (two hosts never mix within a line), stdin closed, and the last lines kept for the
//! summary. `--log-dir` adds a copy per host; `--json` keeps stdout for the summary.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::cmd::Cmd;
use crate::names::Host;

/// One lock for both streams, so that lines come out whole and in order.
static OUTPUT: Mutex<()> = Mutex::new(());

/// How many of a host's last lines the summary shows when it failed.
const TAIL: usize = 8;
/// How many of a child's last stderr lines `pump` keeps: ssh's warning about a changed host
/// key takes 15.
const STDERR_TAIL: usize = 20;

/// Writes flakem's own results (a plan, a summary) on stdout. A reader that went away
/// (`| head`) is not an error worth a message.
pub fn print_stdout(text: &str) {
    let _whole = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
    io::stdout().write_all(text.as_bytes()).ok();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

pub struct Console {
    prefix: String,
    /// Children's output goes through flakem (prefixed, logged) instead of to the terminal.
    piped: bool,
    /// Several hosts: children get no stdin.
    shared: bool,
    /// stdout is the JSON summary's: children's stdout goes to stderr.
    json: bool,
    log: Option<Log>,
    tail: Mutex<VecDeque<String>>,
}

impl Console {
    /// The console of `host`; `shared` when several hosts run.
    pub fn new(
        host: &Host,
        shared: bool,
        json: bool,
        log_dir: Option<&Path>,
    ) -> io::Result<Console> {
        let log = match log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Some(Log(Mutex::new(File::create(
                    dir.join(format!("{host}.log")),
                )?)))
            }
            None => None,
        };
        Ok(Console {
            prefix: if shared {
                format!("[{host}] ")
            } else {
                String::new()
            },
            piped: shared || log.is_some(),
            shared,
            json,
            log,
            tail: Mutex::new(VecDeque::new()),
        })
    }

    /// A console for flakem's own lines before any host is known.
    pub fn plain() -> Console {
        Console {
            prefix: String::new(),
            piped: false,
            shared: false,
            json: false,
            log: None,
            tail: Mutex::new(VecDeque::new()),
        }
    }

    pub fn line(&self, stream: Stream, line: &str) {
        self.lines(stream, line);
    }

    /// The lines of `text`, together: another host's lines never come between them.
    pub fn lines(&self, stream: Stream, text: &str) {
        let prefixed: String = text
            .lines()
            .map(|line| format!("{}{line}\n", self.prefix))
            .collect();
        {
            let _whole = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
            match stream {
                Stream::Out if !self.json => io::stdout().write_all(prefixed.as_bytes()).ok(),
                _ => io::stderr().write_all(prefixed.as_bytes()).ok(),
            };
        }
        for line in text.lines() {
            if let Some(log) = &self.log {
                log.line(line);
            }
            let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }

    /// The `+ ` line of a process, just before it starts.
    pub fn trace(&self, cmd: &Cmd) {
        self.line(Stream::Err, &format!("+ {cmd}"));
    }

    /// A line of flakem's own.
    pub fn say(&self, message: &str) {
        self.line(Stream::Err, &format!("flakem: {message}"));
    }

    /// Passes bytes a child wrote on through this console, line by line.
    pub fn pass(&self, stream: Stream, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            self.line(stream, line);
        }
    }

    /// The last lines this console showed.
    pub fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Sets up the standard streams of a child whose output the user sees.
    pub fn attach(&self, command: &mut Command) {
        if self.piped {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else if self.json {
            command.stdout(io::stderr());
        }
        if self.shared {
            command.stdin(Stdio::null());
        }
    }

    /// Copies a child's piped output through this console until it closes; returns the last
    /// lines of its stderr (at most [`STDERR_TAIL`]), enough for what ssh says when it fails.
    pub fn pump(
        &self,
        stdout: Option<impl Read + Send>,
        stderr: Option<impl Read + Send>,
    ) -> String {
        std::thread::scope(|s| {
            if let Some(out) = stdout {
                s.spawn(move || self.copy(Stream::Out, out));
            }
            stderr
                .map(|err| self.copy(Stream::Err, err))
                .unwrap_or_default()
        })
    }

    fn copy(&self, stream: Stream, from: impl Read) -> String {
        let mut tail = VecDeque::new();
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            self.line(stream, &line);
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Vec::from(tail).join("\n")
    }
}

/// A host's `--log-dir` file, written by its stdout and stderr threads at once.
struct Log(Mutex<File>);

impl Log {
    /// One write under one lock: a line is never split from its newline by the other
    /// thread's line.
    fn line(&self, line: &str) {
        let whole = format!("{line}\n");
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(whole.as_bytes()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads, as a host's stdout and stderr are, each writing lines into one log:
    /// every line of the log is whole.
    #[test]
    fn a_log_gets_whole_lines_from_two_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web1.log");
        let log = Log(Mutex::new(File::create(&path).unwrap()));
        let (out, err) = ("o".repeat(100), "e".repeat(100));
        std::thread::scope(|s| {
            s.spawn(|| (0..20000).for_each(|_| log.line(&out)));
            s.spawn(|| (0..20000).for_each(|_| log.line(&err)));
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 40000);
        assert!(
            text.lines().all(|l| l == out || l == err),
            "a line was split"
        );
    }
}
