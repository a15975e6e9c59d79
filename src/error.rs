//! flakem's errors: each one line for the user, each with the exit status docs/PRODUCT.md gives it.

use std::process::{ExitCode, ExitStatus};

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The invocation was refused before anything ran.
    #[error("{0}")]
    Usage(String),
    /// A program flakem needs is not installed.
    #[error("`{program}` not found on PATH: {hint}")]
    MissingProgram { program: String, hint: &'static str },
    /// A step failed; flakem exits with that step's status.
    #[error("`{program}` failed with exit status {status}")]
    StepFailed { program: String, status: u8 },
    /// `nix copy` to a host failed; the usual reason is a login nix does not trust.
    #[error(
        "copying to {host} failed (exit status {status}); a login other than root must be one \
         of the host's nix trusted-users (nix.settings.trusted-users), or nix refuses the paths"
    )]
    CopyFailed { host: String, status: u8 },
    /// A step was ended by a signal it did not get from us.
    #[error("`{program}` was killed by signal {signal}")]
    StepKilled { program: String, signal: i32 },
    /// A wait ran past its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A host came back wrong or refuses us: key refused, another host key, or it booted
    /// another system.
    #[error("{0}")]
    CameBackWrong(String),
    /// The host put back the system it ran before: the new one was not confirmed.
    #[error("{host} was rolled back to {running}: {why}")]
    RolledBack {
        host: String,
        why: String,
        running: String,
    },
    /// A check before the build failed.
    #[error("{0}")]
    Check(String),
    /// Some hosts of several failed; the summary says which.
    #[error("{0}")]
    HostsFailed(String),
    /// `--confirm` was answered no.
    #[error("nothing was activated: the answer was no")]
    Declined,
    #[error("interrupted")]
    Interrupted,
    /// Anything else that went wrong on this machine (a temp dir, a pipe).
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub fn status(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::MissingProgram { .. } => 127,
            Error::StepFailed { status, .. } | Error::CopyFailed { status, .. } => *status,
            Error::StepKilled { signal, .. } => 128u8.saturating_add(*signal as u8),
            Error::Timeout(_) => 3,
            Error::CameBackWrong(_) => 4,
            Error::Check(_) => 5,
            Error::RolledBack { .. } => 6,
            Error::HostsFailed(_) => 1,
            Error::Declined => 1,
            Error::Interrupted => 130,
            Error::Io(_) => 1,
        }
    }

    /// A child's exit status as flakem takes it: success, or the error that stops the plan
    /// with that status.
    pub fn of_status(program: &str, status: ExitStatus) -> Result<(), Error> {
        use std::os::unix::process::ExitStatusExt;
        let program = program.to_owned();
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(Error::StepFailed {
                program,
                status: code as u8,
            }),
            (None, Some(signal)) => Err(Error::StepKilled { program, signal }),
            (None, None) => Err(Error::StepFailed { program, status: 1 }),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.status())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
