//! Bounded waits: every child the test bed runs, and every poll, has a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long output is still collected after the child exited, for pipes that something it
/// left behind (an ssh control master, say) keeps open.
const LINGER: Duration = Duration::from_secs(2);

/// Runs `command` to completion with stdin closed, capturing its output. Panics, naming the
/// command, when it cannot start or is still running after `timeout` (it is killed then).
pub fn output_with_deadline(command: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let (sender, chunks) = mpsc::channel();
    forward(child.stdout.take(), Stream::Out, sender.clone());
    forward(child.stderr.take(), Stream::Err, sender);
    let status = wait_with_deadline(&mut child, timeout);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let linger_until = Instant::now() + LINGER;
    while let Ok((stream, chunk)) =
        chunks.recv_timeout(linger_until.saturating_duration_since(Instant::now()))
    {
        match stream {
            Stream::Out => stdout.extend(chunk),
            Stream::Err => stderr.extend(chunk),
        }
    }
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{shown} still running after {timeout:?}; killed it.\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Waits for `child` to exit; after `timeout` kills it, reaps it and returns `None`.
pub(super) fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Calls `probe` every 50 ms until it returns `Some`, and returns that. Panics with `what`
/// (the condition waited for) when `timeout` has passed.
pub fn poll_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Sends what `pipe` yields, chunk by chunk, until its end; the channel closes when both
/// pipes have ended.
fn forward(
    pipe: Option<impl Read + Send + 'static>,
    stream: Stream,
    sender: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    let Some(mut pipe) = pipe else { return };
    thread::spawn(move || {
        let mut buffer = [0; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            if sender.send((stream, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
}
