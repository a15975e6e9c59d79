//! `ssh-deploy` end to end on the test bed, with the real `age` and `sops`: the host key is
//! decrypted here and installed as the host's `/var/lib/sops-nix/key.txt` (root's, 0600),
//! and the secret never shows: PATH wrappers (tests/fixtures/spy) log the argument list of
//! every ssh, sudo, sops, age, install and tee run here and, put first on the host's PATH,
//! of every sudo, install and tee run there; flakem runs with a TMPDIR of its own. None of
//! those logs, nor flakem's output, nor any file under that TMPDIR, the flake or HOME holds
//! the secret.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::e2e::{assert_no_leftovers, in_bed};
use crate::support::{Outcome, fixtures};
use crate::testbed::{Host, TestBed, output_with_deadline};

const KEY: &str = "/var/lib/sops-nix/key.txt";
const DEADLINE: Duration = Duration::from_secs(120);
/// The programs the spy wrappers stand in front of.
const SPIED: [&str; 6] = ["ssh", "sudo", "sops", "age", "install", "tee"];

/// A new age identity made by `age-keygen`, and its secret key line (what must never show).
pub struct Secret {
    pub plaintext: Vec<u8>,
    pub token: String,
}

impl Secret {
    /// A fresh host key, only in memory (age-keygen writes it on its stdout).
    pub fn new() -> Secret {
        let out = output_with_deadline(&mut Command::new("age-keygen"), DEADLINE);
        assert!(out.status.success(), "age-keygen: {out:?}");
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        let token = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a secret key line")
            .to_owned();
        Secret {
            plaintext: out.stdout,
            token,
        }
    }

    /// Encrypts the key with `age -r RECIPIENT` (ASCII-armored with `armor`) into `file`.
    pub fn encrypt_with_age(&self, recipient: &str, armor: bool, file: &Path) {
        let mut age = Command::new("age");
        if armor {
            age.arg("--armor");
        }
        age.args(["-r", recipient, "-o"]).arg(file);
        pipe_into(&mut age, &self.plaintext);
    }

    /// Encrypts the key with sops for `recipient`, as a binary file (sops's JSON).
    fn encrypt_with_sops(&self, recipient: &str, file: &Path) {
        let mut sops = Command::new("sops");
        sops.args(["--encrypt", "--age", recipient])
            .args([
                "--input-type",
                "binary",
                "--output-type",
                "json",
                "/dev/stdin",
            ])
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY");
        let encrypted = pipe_into(&mut sops, &self.plaintext);
        std::fs::write(file, encrypted).unwrap();
    }
}

/// Runs `command` with `input` on its stdin; returns its stdout, panics if it fails.
fn pipe_into(command: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    // Small outputs: no deadlock reading after the write.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
    out.stdout
}

/// An age identity of the admin (the one the host keys are encrypted to), in the bed's
/// directory; returns its path and its recipient.
pub fn identity(bed: &TestBed, name: &str) -> (PathBuf, String) {
    let dir = bed.dir().join("identities");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.txt"));
    let mut keygen = Command::new("age-keygen");
    keygen.arg("-o").arg(&path);
    let out = output_with_deadline(&mut keygen, DEADLINE);
    assert!(out.status.success(), "age-keygen -o: {out:?}");
    let mut public = Command::new("age-keygen");
    public.arg("-y").arg(&path);
    let out = output_with_deadline(&mut public, DEADLINE);
    assert!(out.status.success(), "age-keygen -y: {out:?}");
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

/// `hosts/NAME/NAME.age.key` in the bed's flake, its directory created.
pub fn key_file(bed: &TestBed, name: &str) -> PathBuf {
    let dir = bed.flake_dir().join("hosts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.age.key"))
}

/// The spy logs: here (through FLAKEM_SPY_LOG) and on each spied host.
struct Spies {
    here: PathBuf,
    hosts: Vec<PathBuf>,
}

impl Spies {
    fn new(bed: &TestBed) -> Spies {
        let here = bed.dir().join("spy-here.log");
        std::fs::write(&here, "").unwrap();
        Spies {
            here,
            hosts: Vec::new(),
        }
    }

    /// Copies the wrappers to a directory put first on `host`'s PATH, logging to spy.log
    /// there (sudo drops FLAKEM_SPY_LOG). The host reboots to take the new PATH.
    fn watch(&mut self, bed: &TestBed, host: &Host) {
        let dir = bed.dir().join(format!("spy-{}", host.name()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("spy/spy"), dir.join("spy")).unwrap();
        for name in SPIED {
            symlink("spy", dir.join(name)).unwrap();
        }
        std::fs::write(dir.join("spy.log"), "").unwrap();
        host.put_first_on_path(&dir);
        self.hosts.push(dir.join("spy.log"));
    }

    fn clear(&self) {
        for log in std::iter::once(&self.here).chain(&self.hosts) {
            std::fs::write(log, "").unwrap();
        }
    }

    fn here_lines(&self) -> Vec<String> {
        lines(&self.here)
    }

    fn host_lines(&self) -> Vec<String> {
        self.hosts.iter().flat_map(|l| lines(l)).collect()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A flakem run: its outcome and the TMPDIR it had.
struct Deployed {
    out: Outcome,
    tmp: PathBuf,
}

/// flakem in the bed's environment, in `cwd`, with the spy wrappers first on PATH, a fresh
/// TMPDIR, no sops variables but those in `env`.
fn flakem(
    bed: &TestBed,
    spies: &Spies,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Deployed {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let tmp = bed
        .dir()
        .join(format!("tmp-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = in_bed(bed, &tmp, env!("CARGO_BIN_EXE_flakem").as_ref(), args);
    let mut path = vec![fixtures().join("spy"), fixtures().join("bin-ng")];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    cmd.current_dir(cwd)
        .env("PATH", std::env::join_paths(path).unwrap())
        .env("FLAKEM_SPY_LOG", &spies.here)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_CMD");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = Outcome::from(output_with_deadline(&mut cmd, DEADLINE));
    assert_no_leftovers(&tmp, &out.stderr);
    Deployed { out, tmp }
}

/// The host has exactly the secret as its sops-nix key: root's, mode 0600, in a directory
/// only root can enter.
#[track_caller]
fn assert_installed(host: &Host, secret: &Secret, out: &Outcome) {
    let key = host.path(KEY);
    let content = std::fs::read(&key).unwrap_or_else(|e| {
        panic!(
            "{KEY} on {}: {e}\nstdout:\n{}\nstderr:\n{}",
            host.name(),
            out.stdout,
            out.stderr
        )
    });
    assert!(
        content == secret.plaintext,
        "{KEY} holds the decrypted key, byte for byte"
    );
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owned by root");
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode of {KEY}");
    let dir = std::fs::metadata(key.parent().unwrap()).unwrap();
    assert_eq!(dir.uid(), 0);
    assert_eq!(dir.mode() & 0o7777, 0o700, "mode of /var/lib/sops-nix");
}

/// The secret is in none of: the spy logs (every argument list), flakem's output, any file
/// (or file name) under its TMPDIR, the flake or the bed's HOME.
#[track_caller]
fn assert_never_shown(bed: &TestBed, spies: &Spies, run: &Deployed, secret: &Secret) {
    let token = secret.token.as_str();
    let here = spies.here_lines();
    assert!(!here.is_empty(), "the spies saw flakem's calls");
    for line in here.iter().chain(&spies.host_lines()) {
        assert!(
            !line.contains(token),
            "the secret in an argument list: {line}"
        );
    }
    assert!(!run.out.stdout.contains(token), "the secret on stdout");
    assert!(!run.out.stderr.contains(token), "the secret on stderr");
    let home = bed_home(bed);
    for dir in [run.tmp.as_path(), bed.flake_dir(), &home] {
        for file in files_under(dir) {
            assert!(
                !file.to_string_lossy().contains(token),
                "the secret in a file name: {}",
                file.display()
            );
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the secret in a local file: {}",
                file.display()
            );
        }
    }
}

/// The HOME flakem has on the bed.
fn bed_home(bed: &TestBed) -> PathBuf {
    bed.env()
        .into_iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| PathBuf::from(v))
        .expect("HOME in the bed's environment")
}

/// Every regular file under `dir` (symbolic links are not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    found
}

/// The spy lines of `program` (its name, then its arguments).
fn calls_of<'a>(lines: &'a [String], program: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.split(' ').next() == Some(program))
        .collect()
}

#[test]
fn an_age_encrypted_key_is_installed_and_never_shown() {
    let bed = TestBed::with_hosts(&["web1"]);
    let host = bed.host("web1");
    let mut spies = Spies::new(&bed);
    spies.watch(&bed, &host);
    let (admin, recipient) = identity(&bed, "admin");
    let file = key_file(&bed, "web1");
    let default_identity = bed_home(&bed).join(".config/sops/age/keys.txt");
    let admin_str = admin.to_string_lossy().into_owned();

    // The identity from --identity, from SOPS_AGE_KEY_FILE, and sops's default place; the
    // second one ASCII-armored.
    for (way, armor) in [
        ("--identity", false),
        ("SOPS_AGE_KEY_FILE", true),
        ("default", false),
    ] {
        let secret = Secret::new();
        secret.encrypt_with_age(&recipient, armor, &file);
        spies.clear();
        let run = match way {
            "--identity" => flakem(
                &bed,
                &spies,
                bed.flake_dir(),
                &["ssh-deploy", "--identity", &admin_str, "web1"],
                &[],
            ),
            "SOPS_AGE_KEY_FILE" => flakem(
                &bed,
                &spies,
                bed.flake_dir(),
                &["ssh-deploy", "web1"],
                &[("SOPS_AGE_KEY_FILE", &admin)],
            ),
            _ => {
                std::fs::create_dir_all(default_identity.parent().unwrap()).unwrap();
                std::fs::copy(&admin, &default_identity).unwrap();
                flakem(&bed, &spies, bed.flake_dir(), &["ssh-deploy", "web1"], &[])
            }
        };
        run.out.status(0);
        assert_installed(&host, &secret, &run.out);
        assert_never_shown(&bed, &spies, &run, &secret);

        let here = spies.here_lines();
        let ages = calls_of(&here, "age");
        let identity_used = if way == "default" {
            default_identity.to_string_lossy().into_owned()
        } else {
            admin_str.clone()
        };
        assert!(
            ages.iter().any(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                words.contains(&"--decrypt")
                    && words
                        .windows(2)
                        .any(|w| w[0] == "--identity" && w[1] == identity_used)
                    && words
                        .last()
                        .is_some_and(|w| w.ends_with("hosts/web1/web1.age.key"))
            }),
            "{way}: age --decrypt --identity {identity_used} FILE: {here:#?}"
        );
        assert!(calls_of(&here, "sops").is_empty(), "{way}: {here:#?}");
        assert!(!calls_of(&here, "ssh").is_empty(), "{way}: {here:#?}");
        let there = spies.host_lines();
        assert!(
            calls_of(&there, "install").iter().any(|l| l.contains(KEY)),
            "{way}: the key installed by install on the host: {there:#?}"
        );
        assert!(!calls_of(&there, "sudo").is_empty(), "{there:#?}");
    }
}

#[test]
fn a_sops_encrypted_key_is_installed_and_never_shown() {
    let bed = TestBed::with_hosts(&["web1"]);
    let host = bed.host("web1");
    let mut spies = Spies::new(&bed);
    spies.watch(&bed, &host);
    let (admin, recipient) = identity(&bed, "admin");
    let secret = Secret::new();
    let file = key_file(&bed, "web1");
    secret.encrypt_with_sops(&recipient, &file);
    let run = flakem(
        &bed,
        &spies,
        bed.flake_dir(),
        &["ssh-deploy", "web1"],
        &[("SOPS_AGE_KEY_FILE", &admin)],
    );
    run.out.status(0);
    assert_installed(&host, &secret, &run.out);
    assert_never_shown(&bed, &spies, &run, &secret);
    let here = spies.here_lines();
    assert!(
        calls_of(&here, "sops").iter().any(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            words.contains(&"--decrypt")
                && words
                    .last()
                    .is_some_and(|w| w.ends_with("hosts/web1/web1.age.key"))
        }),
        "sops --decrypt FILE: {here:#?}"
    );
    assert!(calls_of(&here, "age").is_empty(), "{here:#?}");
    let there = spies.host_lines();
    assert!(
        calls_of(&there, "install").iter().any(|l| l.contains(KEY)),
        "{there:#?}"
    );
}

#[test]
fn the_key_file_is_named_by_hostname_in_the_flakes_directory() {
    let bed = TestBed::with_hosts(&["web1"]);
    let host = bed.host("web1");
    let spies = Spies::new(&bed);
    let (admin, recipient) = identity(&bed, "admin");
    let admin = admin.to_string_lossy().into_owned();
    let file = key_file(&bed, "web1");

    // A login with a user: the host part names the key.
    let secret = Secret::new();
    secret.encrypt_with_age(&recipient, false, &file);
    let run = flakem(
        &bed,
        &spies,
        bed.flake_dir(),
        &["ssh-deploy", "--identity", &admin, "root@web1"],
        &[],
    );
    run.out.status(0);
    assert_installed(&host, &secret, &run.out);

    // An address with HOSTNAME, from another directory: the key is the flake's.
    let secret = Secret::new();
    secret.encrypt_with_age(&recipient, false, &file);
    let elsewhere = bed.dir().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let flake = bed.flake_dir().to_string_lossy().into_owned();
    let address = host.address().to_string();
    let run = flakem(
        &bed,
        &spies,
        &elsewhere,
        &[
            "ssh-deploy",
            "--identity",
            &admin,
            "--flake",
            &flake,
            &address,
            "web1",
        ],
        &[],
    );
    run.out.status(0);
    assert_installed(&host, &secret, &run.out);
    assert_never_shown(&bed, &spies, &run, &secret);
}

#[test]
fn a_missing_or_empty_key_file_is_refused_before_anything_runs() {
    let bed = TestBed::with_hosts(&["web1"]);
    let host = bed.host("web1");
    let spies = Spies::new(&bed);
    let (admin, _) = identity(&bed, "admin");
    let admin = admin.to_string_lossy().into_owned();
    for case in ["missing", "empty"] {
        if case == "empty" {
            std::fs::write(key_file(&bed, "web1"), "").unwrap();
        }
        spies.clear();
        let run = flakem(
            &bed,
            &spies,
            bed.flake_dir(),
            &["ssh-deploy", "--identity", &admin, "web1"],
            &[],
        );
        run.out.status(2);
        assert_eq!(
            run.out.stderr.lines().count(),
            1,
            "{case}: one line: {}",
            run.out.stderr
        );
        assert!(
            run.out.stderr.contains("web1.age.key"),
            "{case}: it names the file: {}",
            run.out.stderr
        );
        assert!(
            spies.here_lines().is_empty(),
            "{case}: nothing ran: {:#?}",
            spies.here_lines()
        );
        assert!(!host.path(KEY).exists());
    }
}

/// A failing step stops the plan (docs/PRODUCT.md): when the key cannot be decrypted, nothing
/// reaches the host, and a key it already has stays as it was (an empty key.txt would leave
/// sops-nix unable to decrypt anything at the next activation).
#[test]
fn a_failed_decryption_installs_nothing() {
    let bed = TestBed::with_hosts(&["web1"]);
    let host = bed.host("web1");
    let spies = Spies::new(&bed);
    let (_, recipient) = identity(&bed, "admin");
    let (stranger, _) = identity(&bed, "stranger");
    // The host already has a key; a failed deploy must leave it as it was.
    let key = host.path(KEY);
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "the previous key\n").unwrap();
    let file = key_file(&bed, "web1");
    let stranger_str = stranger.to_string_lossy().into_owned();
    for tool in ["age", "sops"] {
        spies.clear();
        let secret = Secret::new();
        let run = if tool == "age" {
            secret.encrypt_with_age(&recipient, false, &file);
            flakem(
                &bed,
                &spies,
                bed.flake_dir(),
                &["ssh-deploy", "--identity", &stranger_str, "web1"],
                &[],
            )
        } else {
            secret.encrypt_with_sops(&recipient, &file);
            flakem(
                &bed,
                &spies,
                bed.flake_dir(),
                &["ssh-deploy", "web1"],
                &[("SOPS_AGE_KEY_FILE", &stranger)],
            )
        };
        assert!(
            !matches!(run.out.status, Some(0) | Some(2)),
            "{tool}: the decryption fails: {}",
            run.out.stderr
        );
        let here = spies.here_lines();
        assert!(
            !calls_of(&here, tool).is_empty(),
            "{tool}: it was tried: {here:#?}"
        );
        assert_eq!(
            std::fs::read_to_string(&key).unwrap(),
            "the previous key\n",
            "{tool}: the host's key is untouched: {}",
            run.out.stderr
        );
    }
}
