//! The sudo password of `--ask-sudo-password`: asked once on the terminal with echo off,
//! held here in memory for the run, written only into the stdin of the children whose
//! command says so (`Cmd::sudo_password`, fed by `process`), and zeroed when the run ends.
//! It never reaches an argument list, an environment, a plan, a log or a file.
//!
//! The terminal is read with termios (libc) rather than a crate: the prompt runs while
//! flakem's own Ctrl-C handler is installed, so reading the keys raw (no echo, no signals)
//! is what lets a Ctrl-C typed at the prompt restore the terminal and end the run with
//! status 130 instead of waiting for Enter.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use crate::error::Error;

/// The longest password taken: its buffer never grows, so it is never copied by a
/// reallocation before it is zeroed.
const LONGEST: usize = 1024;

/// A password in memory, zeroed when dropped; its `Debug` shows nothing of it.
pub struct Password(Vec<u8>);

impl Drop for Password {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        self.0.resize(capacity, 0);
        for byte in self.0.iter_mut() {
            // SAFETY: a write to a byte this vector owns; volatile so it is not optimised
            // away as a write nobody reads.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// The password of this run, once asked.
static HELD: Mutex<Option<Password>> = Mutex::new(None);

/// Keeps `password` for the children that need it.
pub fn hold(password: Password) {
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(password);
}

/// Zeroes the password: the run is over.
pub fn forget() {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Writes the held password and a newline (one line, as `sudo --stdin` and ng read it) to a
/// child's stdin; nothing when none is held, so that sudo finds no password.
pub fn feed(stdin: &mut impl Write) -> io::Result<()> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(password) = held.as_ref() {
        stdin.write_all(&password.0)?;
        stdin.write_all(b"\n")?;
    }
    stdin.flush()
}

/// Asks for a password on the terminal (`/dev/tty`), echo off, after `prompt`. Ctrl-C
/// there ends the run (`Interrupted`); without a terminal it is a refused invocation.
pub fn ask(prompt: &str) -> Result<Password, Error> {
    let tty = terminal()?;
    let quiet = Quiet::on(&tty)?;
    (&tty).write_all(prompt.as_bytes())?;
    let read = read_line(&tty);
    drop(quiet);
    (&tty).write_all(b"\n")?;
    read
}

/// The terminal to ask on; without one, `--ask-sudo-password` is a refused invocation.
pub fn terminal() -> Result<File, Error> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Error::Usage(
                "--ask-sudo-password asks on the terminal, and there is none (no /dev/tty)".into(),
            )
        })
}

/// Reads keys until Enter: backspace and Ctrl-U edit, Ctrl-C interrupts, Ctrl-D on an
/// empty line gives up.
fn read_line(mut tty: &File) -> Result<Password, Error> {
    let mut password = Password(Vec::with_capacity(LONGEST));
    let mut key = [0u8; 1];
    loop {
        let n = tty.read(&mut key)?;
        match (n, key[0]) {
            (0, _) | (_, 0x04) if password.0.is_empty() => {
                return Err(Error::Usage("no sudo password was given".into()));
            }
            (0, _) | (_, b'\r' | b'\n') => return Ok(password),
            (_, 0x03) => return Err(Error::Interrupted),
            (_, 0x7f | 0x08) => {
                if let Some(last) = password.0.last_mut() {
                    *last = 0;
                    password.0.pop();
                }
            }
            (_, 0x15) => {
                password.0.iter_mut().for_each(|b| *b = 0);
                password.0.clear();
            }
            (_, 0x04) => {}
            (_, byte) if password.0.len() < LONGEST => password.0.push(byte),
            _ => {
                return Err(Error::Usage(format!(
                    "the sudo password is longer than {LONGEST} bytes"
                )));
            }
        }
    }
}

/// The terminal with echo, line editing and signal keys off, put back as it was when
/// dropped, on every way out.
struct Quiet<'a> {
    tty: &'a File,
    saved: libc::termios,
}

impl<'a> Quiet<'a> {
    fn on(tty: &'a File) -> io::Result<Quiet<'a>> {
        let fd = tty.as_raw_fd();
        // SAFETY: tcgetattr and tcsetattr on an open terminal, with a termios this function
        // owns.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut quiet = saved;
            quiet.c_lflag &= !(libc::ECHO | libc::ICANON | libc::ISIG);
            quiet.c_cc[libc::VMIN] = 1;
            quiet.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Quiet { tty, saved })
        }
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        // SAFETY: puts back the settings read from this very terminal.
        unsafe {
            libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSAFLUSH, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_password_is_fed_as_one_line_and_hidden_from_debug() {
        let password = Password(b"hunter2".to_vec());
        assert_eq!(format!("{password:?}"), "Password(<hidden>)");
        hold(password);
        let mut stdin = Vec::new();
        feed(&mut stdin).unwrap();
        assert_eq!(stdin, b"hunter2\n");
        forget();
        let mut stdin = Vec::new();
        feed(&mut stdin).unwrap();
        assert!(stdin.is_empty());
    }
}
