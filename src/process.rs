//! Starting processes: every child flakem starts goes through here, registered with the
//! signal handler (`signals`), so that Ctrl-C stops exactly what was started and a missing
//! program gets one clear line.

use std::process::{Command, ExitStatus, Output, Stdio};

use crate::cmd::Cmd;
use crate::console::{Console, Stream};
use crate::error::Error;
use crate::password;
use crate::signals::{self, Running};

/// The `std::process::Command` of `cmd`, its streams left to the caller.
pub fn command(cmd: &Cmd) -> Command {
    let mut c = Command::new(cmd.program());
    c.args(cmd.args()).envs(cmd.env.iter().map(|(k, v)| (k, v)));
    c
}

/// Starts `command` (made from `cmd`) as a registered child. A `cmd` whose sudo reads the
/// password gets it on its stdin, then end of file, and runs without a controlling
/// terminal (a session of its own), so that nothing it starts can prompt there: ng, asked
/// for the password, then reads it from stdin, as Python's getpass does without a terminal.
pub fn spawn(cmd: &Cmd, command: &mut Command) -> Result<Running, Error> {
    let fed = cmd.sudo_password;
    if fed {
        command.stdin(Stdio::piped());
    }
    let mut running = Running::spawn(command, fed).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(cmd.program()),
        _ => Error::Io(format!("cannot start `{}`: {e}", cmd.program())),
    })?;
    // Taken only from a fed child: another's stdin is its caller's to write (a pipe).
    if let Some(mut stdin) = fed.then(|| running.child().stdin.take()).flatten() {
        // A child that ended before reading it (a broken pipe) says so by its status.
        password::feed(&mut stdin).ok();
    }
    Ok(running)
}

/// Runs `cmd` with its output read by flakem and nothing printed; stdin is closed.
pub fn output(cmd: &Cmd) -> Result<Output, Error> {
    let out = spawn(cmd, signals::capturing(&mut command(cmd)))?.wait_with_output()?;
    not_interrupted()?;
    Ok(out)
}

/// [`output`] after the `+ ` line of `cmd`: for a child whose stderr flakem reads for its
/// own message (a probe, `ssh -G`).
pub fn traced(console: &Console, cmd: &Cmd) -> Result<Output, Error> {
    console.trace(cmd);
    output(cmd)
}

/// [`traced`], with the child's stderr then passed on through `console`: an evaluation,
/// a remote read whose errors the user should see.
pub fn reported(console: &Console, cmd: &Cmd) -> Result<Output, Error> {
    start(console, cmd)?.finish(console)
}

/// A child whose output is read later: an evaluation that runs alongside other work.
pub struct Started(Running);

/// Starts `cmd` after its `+ ` line, its output read by flakem once [`Started::finish`]
/// asks for it.
pub fn start(console: &Console, cmd: &Cmd) -> Result<Started, Error> {
    console.trace(cmd);
    Ok(Started(spawn(cmd, signals::capturing(&mut command(cmd)))?))
}

impl Started {
    /// Waits for its end, as [`reported`] does.
    pub fn finish(self, console: &Console) -> Result<Output, Error> {
        let out = self.0.wait_with_output()?;
        not_interrupted()?;
        console.pass(Stream::Err, &out.stderr);
        Ok(out)
    }

    /// Stops it: its result is no longer wanted.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// A step's status, or `Interrupted` after Ctrl-C whatever the child made of it.
pub fn check(cmd: &Cmd, status: ExitStatus) -> Result<(), Error> {
    not_interrupted()?;
    Error::of_status(cmd.program(), status)
}

/// `Interrupted` once Ctrl-C came: a child's end then says nothing about the step.
pub fn not_interrupted() -> Result<(), Error> {
    match signals::interrupted() {
        true => Err(Error::Interrupted),
        false => Ok(()),
    }
}

/// A program flakem needs is not installed: what to do about it.
pub fn missing(program: &str) -> Error {
    let hint = match program {
        "nixos-rebuild" => {
            "it comes with NixOS; elsewhere try `nix shell nixpkgs#nixos-rebuild-ng`, or use the flakem package, which carries its own"
        }
        "nix" => "install Nix (on Debian: apt-get install nix-bin)",
        "ssh" => "install the OpenSSH client (on Debian: apt-get install openssh-client)",
        _ => "install it, or put it on PATH",
    };
    Error::MissingProgram {
        program: program.to_owned(),
        hint,
    }
}
