//! Running the built flakem as a user would, with the stand-in `nixos-rebuild` of
//! `tests/fixtures` first on PATH and the real nix and ssh behind it.

use std::ffi::OsString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// nix settings for every test: flakes on, and nothing fetched from the network.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\n\
                              substituters =\nflake-registry =\nsandbox = false";

/// Which stand-in `nixos-rebuild` is "installed", if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    Ng,
    Legacy,
    Nothing,
}

/// One flakem run in a directory of its own, with a small flake that names configurations
/// (its values are never evaluated by flakem's check).
pub struct Run {
    pub dir: TempDir,
    pub installed: Installed,
    /// The directory the command runs in: the flake, unless a test moves it.
    pub cwd: PathBuf,
    /// Extra directories in front of PATH, and whether the system's PATH follows.
    pub path_front: Vec<PathBuf>,
    pub system_path: bool,
    pub env: Vec<(String, String)>,
}

pub const FLAKE: &str = r#"{
  outputs = { self }: {
    nixosConfigurations = {
      bigmachine = throw "flakem must not evaluate configurations to list them";
      another-machine = throw "nor this one";
      boot = throw "a host named like an action";
    };
  };
}
"#;

impl Run {
    pub fn new(installed: Installed) -> Run {
        let dir = tempfile::Builder::new()
            .prefix("flakem-cli-")
            .tempdir()
            .unwrap();
        let flake = dir.path().join("flake");
        std::fs::create_dir(&flake).unwrap();
        std::fs::write(flake.join("flake.nix"), FLAKE).unwrap();
        std::fs::create_dir(dir.path().join("calls")).unwrap();
        Run {
            cwd: flake,
            dir,
            installed,
            path_front: Vec::new(),
            system_path: true,
            env: vec![("FAKE_NIXOS_REBUILD_RECORD_ONLY".into(), "1".into())],
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A PATH holding only the stand-in (no nix, no ssh): proves what was not started.
    pub fn without_system_path(mut self) -> Run {
        self.system_path = false;
        self
    }

    fn path(&self) -> OsString {
        let mut dirs = self.path_front.clone();
        match self.installed {
            Installed::Ng => dirs.push(fixtures().join("bin-ng")),
            Installed::Legacy => dirs.push(fixtures().join("bin-legacy")),
            Installed::Nothing => {}
        }
        if self.system_path {
            dirs.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
        } else {
            // An empty directory, so that PATH is never empty (an empty PATH means "cwd").
            let empty = self.dir.path().join("empty");
            std::fs::create_dir_all(&empty).unwrap();
            dirs.push(empty);
        }
        std::env::join_paths(dirs).unwrap()
    }

    pub fn command_as(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", self.path())
            .env("HOME", self.dir.path())
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("FAKE_NIXOS_REBUILD_LOG_DIR", self.dir.path().join("calls"))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_as(Path::new(env!("CARGO_BIN_EXE_flakem")), args)
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        Outcome::from(self.command(args).output().unwrap())
    }

    /// Runs flakem through a link named `name`, as a multi-call binary.
    pub fn run_as(&self, name: &str, args: &[&str]) -> Outcome {
        let link = self.dir.path().join("links").join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        if !link.exists() {
            symlink(env!("CARGO_BIN_EXE_flakem"), &link).unwrap();
        }
        Outcome::from(self.command_as(&link, args).output().unwrap())
    }

    /// The argument lists the stand-in nixos-rebuild recorded, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("calls"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).unwrap();
                let text = String::from_utf8(bytes).unwrap();
                let mut args: Vec<String> = text.split('\0').map(str::to_owned).collect();
                assert_eq!(
                    args.pop().as_deref(),
                    Some(""),
                    "each argument ends with NUL"
                );
                args
            })
            .collect()
    }
}

pub struct Outcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(o: Output) -> Outcome {
        Outcome {
            status: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Outcome {
    #[track_caller]
    pub fn status(&self, want: i32) -> &Outcome {
        assert_eq!(self.status, Some(want), "{}", self.context());
        self
    }

    /// Everything the run said, for an assertion's message.
    pub fn context(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// The `+ ` lines: every process flakem started.
    pub fn started(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("+ "))
            .collect()
    }

    /// flakem's own message lines.
    pub fn messages(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("flakem: "))
            .collect()
    }
}

pub fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}
