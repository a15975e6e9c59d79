//! `ssh-deploy`'s secret: a host's age key, kept encrypted in the flake's repository as
//! `hosts/NAME/NAME.age.key`, decrypted only into a pipe to the host.

use std::path::{Path, PathBuf};

use crate::cmd::Cmd;
use crate::error::Error;
use crate::names::Target;

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
    /// Where `name`'s key is kept below `dir` (the flake's directory, for a local flake).
    pub fn file_of(dir: &Path, name: &Target) -> PathBuf {
        dir.join("hosts")
            .join(name.as_str())
            .join(format!("{name}.age.key"))
    }

    /// Tells from its contents how the key in `file` is encrypted. `identity` is
    /// `--identity`; `env` reads the environment.
    pub fn from_contents(
        file: PathBuf,
        bytes: &[u8],
        name: &Target,
        identity: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, Error> {
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
                argv: vec!["sops".into(), "--decrypt".into(), file.into()],
                sudo_password: false,
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

    fn read(
        text: &str,
        identity: Option<&str>,
        env: fn(&str) -> Option<String>,
    ) -> Result<Secret, Error> {
        let name = Target::parse("web1").unwrap();
        let file = Secret::file_of(Path::new("/srv/infra"), &name);
        Secret::from_contents(
            file,
            text.as_bytes(),
            &name,
            identity.map(PathBuf::from),
            env,
        )
    }

    #[test]
    fn age_and_sops_files() {
        let no_env = |_: &str| None;
        let age = "age-encryption.org/v1\n-> X25519 abc\n";
        let s = read(age, Some("/id"), no_env).unwrap();
        assert_eq!(
            s.decrypt().to_string(),
            "age --decrypt --identity /id /srv/infra/hosts/web1/web1.age.key"
        );
        let home = |k: &str| (k == "HOME").then(|| "/home/me".to_owned());
        let s = read(age, None, home).unwrap();
        assert_eq!(
            s.decrypt,
            Decrypt::Age {
                identity: "/home/me/.config/sops/age/keys.txt".into()
            }
        );
        let s = read(
            "{\"data\": \"ENC[...]\", \"sops\": {}}",
            Some("/id"),
            no_env,
        )
        .unwrap();
        assert_eq!(
            s.decrypt().to_string(),
            "SOPS_AGE_KEY_FILE=/id sops --decrypt /srv/infra/hosts/web1/web1.age.key"
        );
    }

    #[test]
    fn empty_or_unknown_keys_are_refused() {
        let no_env = |_: &str| None;
        let e = read("  \n", None, no_env).unwrap_err();
        assert!(e.to_string().ends_with("is empty"), "{e}");
        assert_eq!(e.status(), 2);
        assert!(read("plain text", None, no_env).is_err());
    }
}
