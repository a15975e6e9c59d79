//! `ssh-deploy`'s secret: a host's age key, kept encrypted in the flake's repository as
//! `hosts/NAME/NAME.age.key`, decrypted only into a pipe to the host.

use std::path::{Path, PathBuf};

use crate::commands::Command;
use crate::error::Error;
use crate::job::{Job, Machine};
use crate::names::Target;
use crate::plan::Cmd;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub file: PathBuf,
    pub decrypt: Decrypt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decrypt {
    /// A sops file: sops finds its own keys (`SOPS_AGE_KEY_FILE`, set from `--identity`).
    Sops { identity: Option<PathBuf> },
    /// An age file, decrypted with this identity.
    Age { identity: PathBuf },
}

impl Secret {
    /// `ssh-deploy`'s key: in the flake's directory for a local flake, else here.
    pub fn of_job(job: &Job, machines: &[Machine]) -> Result<Option<Secret>, Error> {
        let (Command::SshDeploy, [machine]) = (job.command, machines) else {
            return Ok(None);
        };
        let Some(name) = &machine.target else {
            return Ok(None);
        };
        let cwd = std::env::current_dir()?;
        let local = job.flake.starts_with('.') || job.flake.starts_with('/');
        let dir = match local {
            true => cwd.join(&job.flake).canonicalize().unwrap_or(cwd),
            false => cwd,
        };
        let env = |key: &str| std::env::var(key).ok();
        Secret::locate(&dir, name, job.identity.clone(), env).map(Some)
    }

    /// Finds `name`'s key below `dir` (the flake's directory, for a local flake) and tells
    /// how it is encrypted. `identity` is `--identity`; `env` reads the environment.
    pub fn locate(
        dir: &Path,
        name: &Target,
        identity: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, Error> {
        let file = dir
            .join("hosts")
            .join(name.as_str())
            .join(format!("{name}.age.key"));
        let bytes = std::fs::read(&file).map_err(|e| {
            Error::Usage(format!(
                "no key for {name}: cannot read {} ({e})",
                file.display()
            ))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Usage(format!(
                "no key for {name}: {} is empty",
                file.display()
            )));
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
        let decrypt = if text.starts_with("age-encryption.org/")
            || text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
        {
            let identity = identity
                .or_else(|| env("SOPS_AGE_KEY_FILE").map(PathBuf::from))
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config/sops/age/keys.txt")))
                .ok_or_else(|| Error::Usage("no age identity: pass --identity FILE".into()))?;
            Decrypt::Age { identity }
        } else if text.contains("sops") {
            Decrypt::Sops { identity }
        } else {
            return Err(Error::Usage(format!(
                "{} is neither an age file nor a sops file",
                file.display()
            )));
        };
        Ok(Secret { file, decrypt })
    }

    /// The decryption, printing the key on its stdout (a pipe).
    pub fn decrypt(&self) -> Cmd {
        let file = self.file.display().to_string();
        match &self.decrypt {
            Decrypt::Sops { identity } => Cmd {
                env: identity
                    .iter()
                    .map(|i| ("SOPS_AGE_KEY_FILE".to_owned(), i.display().to_string()))
                    .collect(),
                argv: vec!["sops".into(), "--decrypt".into(), file],
            },
            Decrypt::Age { identity } => Cmd::new(vec![
                "age".into(),
                "--decrypt".into(),
                "--identity".into(),
                identity.display().to_string(),
                file,
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(text: &str) -> (tempfile::TempDir, Target) {
        let dir = tempfile::tempdir().unwrap();
        let name = Target::parse("web1").unwrap();
        std::fs::create_dir_all(dir.path().join("hosts/web1")).unwrap();
        std::fs::write(dir.path().join("hosts/web1/web1.age.key"), text).unwrap();
        (dir, name)
    }

    #[test]
    fn age_and_sops_files() {
        let no_env = |_: &str| None;
        let (dir, name) = key_file("age-encryption.org/v1\n-> X25519 abc\n");
        let s = Secret::locate(dir.path(), &name, Some("/id".into()), no_env).unwrap();
        assert_eq!(
            s.decrypt().to_string(),
            format!("age --decrypt --identity /id {}", s.file.display())
        );
        let home = |k: &str| (k == "HOME").then(|| "/home/me".to_owned());
        let s = Secret::locate(dir.path(), &name, None, home).unwrap();
        assert_eq!(
            s.decrypt,
            Decrypt::Age {
                identity: "/home/me/.config/sops/age/keys.txt".into()
            }
        );

        let (dir, name) = key_file("{\"data\": \"ENC[...]\", \"sops\": {}}");
        let s = Secret::locate(dir.path(), &name, Some("/id".into()), no_env).unwrap();
        assert_eq!(
            s.decrypt().to_string(),
            format!("SOPS_AGE_KEY_FILE=/id sops --decrypt {}", s.file.display())
        );
    }

    #[test]
    fn missing_empty_or_unknown_keys_are_refused() {
        let no_env = |_: &str| None;
        let (dir, name) = key_file("  \n");
        let e = Secret::locate(dir.path(), &name, None, no_env).unwrap_err();
        assert!(e.to_string().ends_with("is empty"), "{e}");
        assert_eq!(e.status(), 2);
        let other = Target::parse("db").unwrap();
        let e = Secret::locate(dir.path(), &other, None, no_env).unwrap_err();
        assert!(
            e.to_string().starts_with("no key for db: cannot read"),
            "{e}"
        );
        let (dir, name) = key_file("plain text");
        assert!(Secret::locate(dir.path(), &name, None, no_env).is_err());
    }
}
