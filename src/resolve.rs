//! Resolve: the only place that looks at the world before a plan exists. It evaluates the
//! flake's names, reads kinds and `ssh -G`, probes the dialect (with its cache), reads the
//! secret file and sees which programs are installed, and returns one [`World`]. Offline
//! (`--dry-run`) it starts nothing and states what it assumed instead, so that the dry run
//! and the real run build their plans from the same world.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cache;
use crate::commands::Command;
use crate::console::Console;
use crate::dialect::{self, Dialect};
use crate::error::Error;
use crate::flake::{self, Names};
use crate::job::{self, Job, Local, Machine};
use crate::kind::Kind;
use crate::names::{Host, Target};
use crate::options::DialectChoice;
use crate::password;
use crate::process;
use crate::secret::Secret;
use crate::ssh::{self, Ssh};
use crate::sudo::Sudo;

/// Everything a plan needs to know besides the job.
pub struct World {
    /// Each host of the job with its configuration and kind.
    pub machines: Vec<Machine>,
    pub ssh: Ssh,
    pub dialect: Dialect,
    /// Whether `home-manager` is installed here, for `hm-switch`.
    pub home_manager: bool,
    /// `ssh-deploy`'s key file and how to decrypt it.
    pub secret: Option<Secret>,
    /// The flake as `getFlake` takes it: a local path made absolute.
    pub flake_ref: String,
    /// A private directory for control sockets, with a subdirectory per machine (`<tmp>`
    /// offline).
    pub control_dir: PathBuf,
    /// This machine's /etc/machine-id: the machine flakem never reboots (empty offline).
    pub machine_id: String,
    /// Each machine's control socket of the user's own, if `ssh -G` shows one (a ControlPath
    /// from NIX_SSHOPTS or the ssh config): flakem's connection to the host shares it.
    pub users_masters: Vec<Option<PathBuf>>,
    /// What an offline world assumed instead of looking; the dry run prints them.
    pub assumptions: Vec<String>,
    /// Removes the private directory when the run ends.
    _private: Option<tempfile::TempDir>,
}

impl World {
    /// Looks at the world: starts the names evaluation, `ssh -G` and the dialect probe as
    /// needed, printing each through `console`.
    pub fn online(job: &Job, console: &Console) -> Result<World, Error> {
        if job.confirm && !std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "--confirm asks on the terminal, and stdin is not one; --diff shows the changes \
                 without asking"
                    .into(),
            ));
        }
        // A dialect given outright is refused before anything runs.
        let given = match job.dialect {
            DialectChoice::Legacy => Some(Dialect::Legacy),
            _ => None,
        };
        refuse_password_with(job, given, job.kind != Some(Kind::Darwin))?;
        if job.sudo == Sudo::Password {
            password::terminal()?;
        }
        let ssh = ssh_options()?;
        let flake_ref = flake_ref(&job.flake)?;
        let machines = machines(job, &flake_ref, &ssh, console)?;
        let rebuilds = machines.iter().any(|m| m.kind == Kind::Nixos) && job.command.system_kinds();
        let dialect = match job.dialect {
            DialectChoice::Ng => Dialect::Ng,
            DialectChoice::Legacy => Dialect::Legacy,
            DialectChoice::Auto if rebuilds => detect_dialect(console)?,
            DialectChoice::Auto => Dialect::Ng,
        };
        refuse_password_with(job, Some(dialect), rebuilds)?;
        // Bad input refuses before anything more runs.
        let secret = secret(job, &machines)?;
        let private = private_dir(machines.len())?;
        let users_masters = users_masters(job, &machines, &ssh, console)?;
        Ok(World {
            users_masters,
            secret,
            home_manager: home_manager(job),
            control_dir: private.path().to_owned(),
            _private: Some(private),
            machines,
            ssh,
            dialect,
            flake_ref,
            machine_id: std::fs::read_to_string("/etc/machine-id").unwrap_or_default(),
            assumptions: Vec::new(),
        })
    }

    /// The world as a dry run sees it: nothing started, every guess stated.
    pub fn offline(job: &Job) -> Result<World, Error> {
        let mut assumptions = Vec::new();
        let (dialect, why) = match job.dialect {
            DialectChoice::Ng => (Dialect::Ng, "given"),
            DialectChoice::Legacy => (Dialect::Legacy, "given"),
            DialectChoice::Auto => (
                Dialect::Ng,
                "assumed; --dialect or FLAKEM_DIALECT would say otherwise",
            ),
        };
        if job.command.system_kinds() && job.kind != Some(Kind::Darwin) {
            assumptions.push(format!("dialect: {dialect} ({why})"));
            refuse_password_with(job, Some(dialect), true)?;
        }
        // Without an evaluation, @all and @pattern stand for hosts known only at run time.
        let mut machines = if job.hosts.needs_names() {
            assumptions.push(format!(
                "hosts: {}, from {}#nixosConfigurations (one nix eval); each as <host>:",
                job.hosts, job.flake
            ));
            vec![Machine {
                host: Host::placeholder(),
                target: (job.command != Command::SshWait).then(Target::placeholder),
                kind: Kind::Nixos,
            }]
        } else {
            job.machines(&[])?
        };
        if job.kind == Some(Kind::Darwin) {
            machines.iter_mut().for_each(|m| m.kind = Kind::Darwin);
        }
        if job.command.logs_in() {
            assumptions.push(
                "ssh: no host has a ControlPath of its own (assumed; `ssh -G HOST` tells)".into(),
            );
        }
        Ok(World {
            users_masters: vec![None; machines.len()],
            secret: secret(job, &machines)?,
            home_manager: home_manager(job),
            ssh: ssh_options()?,
            flake_ref: flake_ref(&job.flake)?,
            control_dir: PathBuf::from("<tmp>"),
            _private: None,
            machine_id: String::new(),
            machines,
            dialect,
            assumptions,
        })
    }

    /// The private directory of the `i`th machine's control sockets.
    pub fn control_dir_of(&self, i: usize) -> PathBuf {
        self.control_dir.join(i.to_string())
    }
}

/// Refuses `--ask-sudo-password` with the legacy nixos-rebuild, when the job `rebuilds`
/// NixOS systems: the shell script has no way to be given a sudo password.
fn refuse_password_with(job: &Job, dialect: Option<Dialect>, rebuilds: bool) -> Result<(), Error> {
    match (job.sudo, dialect, rebuilds) {
        (Sudo::Password, Some(Dialect::Legacy), true) => Err(Error::Usage(
            "--ask-sudo-password needs nixos-rebuild ng: the legacy nixos-rebuild (the shell \
             script) has no way to be given a sudo password; allow passwordless sudo or log in \
             as root there instead"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Who and where flakem runs: the defaults of the local commands.
pub fn local() -> Local {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .unwrap_or_else(user_of_uid);
    Local {
        host: name.split('.').next().unwrap_or_default().to_owned(),
        user,
    }
}

/// The name of the user running flakem, from the password database, for when the
/// environment does not say.
fn user_of_uid() -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes it is given; `name`
    // is read only when it reports a match.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let uid = libc::getuid();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        uid.to_string()
    }
}

/// flakem's ssh options: the words of `NIX_SSHOPTS`, as nixos-rebuild takes them.
fn ssh_options() -> Result<Ssh, Error> {
    Ssh::from_nix_sshopts(std::env::var("NIX_SSHOPTS").ok().as_deref()).map_err(Error::Usage)
}

/// Whether `flake` is a path here rather than a flake reference.
fn is_local(flake: &str) -> bool {
    flake.starts_with('.') || flake.starts_with('/')
}

/// The flake as `getFlake` takes it: a local path made absolute (it takes no relative ones).
pub fn flake_ref(flake: &str) -> Result<String, Error> {
    if !is_local(flake) {
        return Ok(flake.to_owned());
    }
    let path = std::env::current_dir()?.join(flake);
    Ok(path.canonicalize().unwrap_or(path).display().to_string())
}

fn home_manager(job: &Job) -> bool {
    job.command == Command::HmSwitch && which::which("home-manager").is_ok()
}

/// The job's machines with their configurations and kinds, from one evaluation of the
/// flake's names (none for `ssh-wait`, nor for `ssh-deploy` and the day-two commands to
/// hosts named outright).
fn machines(job: &Job, flake: &str, ssh: &Ssh, console: &Console) -> Result<Vec<Machine>, Error> {
    let evaluates =
        !matches!(job.command, Command::SshWait | Command::SshDeploy) && !job.command.day_two();
    // Hosts named outright are known (and each checked to come once) before anything runs.
    let named = match job.hosts.needs_names() {
        true => None,
        false => Some(job.machines(&[])?),
    };
    let names = match evaluates || named.is_none() {
        true => read_names(flake, &job.flake, console)?,
        false => Names::default(),
    };
    let mut machines = match named {
        Some(machines) => machines,
        None => job.machines(&names.nixos)?,
    };
    if !evaluates {
        return Ok(machines);
    }
    for machine in &mut machines {
        locate(job, machine, &names, ssh, console)?;
        job.refuse_kind(machine)?;
    }
    // An address may have turned out to be a configuration named already.
    job::each_once(machines)
}

/// Each host's control socket of the user's own (`ssh -G`), for the commands that log in.
fn users_masters(
    job: &Job,
    machines: &[Machine],
    ssh: &Ssh,
    console: &Console,
) -> Result<Vec<Option<PathBuf>>, Error> {
    machines
        .iter()
        .map(|machine| {
            if !job.command.logs_in() {
                return Ok(None);
            }
            let out = process::traced(console, &ssh.resolve(&machine.host))?;
            let config = String::from_utf8_lossy(&out.stdout);
            Ok(out
                .status
                .success()
                .then(|| ssh::users_master(&config))
                .flatten())
        })
        .collect()
}

/// Runs the names evaluation of `flake` (shown to the user as `shown`).
fn read_names(flake: &str, shown: &str, console: &Console) -> Result<Names, Error> {
    let out = process::reported(console, &flake::eval_names(flake))?;
    if !out.status.success() {
        return Err(Error::Check(format!(
            "cannot read the flake {shown} (nix eval exited with {}; its message is above)",
            out.status
        )));
    }
    flake::parse_names(&String::from_utf8_lossy(&out.stdout))
}

/// Sets a machine's configuration and kind from the flake's names.
fn locate(
    job: &Job,
    machine: &mut Machine,
    names: &Names,
    ssh: &Ssh,
    console: &Console,
) -> Result<(), Error> {
    let Some(target) = machine.target.clone() else {
        return Ok(());
    };
    if job.command.home() {
        machine.target = Some(names.home_target(&target, &job.flake)?);
        return Ok(());
    }
    let unknown = match names.system_kind(&target, job.kind, &job.flake) {
        Ok(kind) => {
            machine.kind = kind;
            return Ok(());
        }
        Err(unknown) => unknown,
    };
    // An address (or another name) for a host: the configuration ssh resolves alike.
    let kinds = job
        .kind
        .map_or(vec![Kind::Nixos, Kind::Darwin], |k| vec![k]);
    let systems: Vec<String> = kinds.iter().flat_map(|k| names.of(*k)).cloned().collect();
    let found = match job.target {
        None => find_by_hostname(&machine.host, &systems, ssh, console)?,
        Some(_) => None,
    };
    let found = found.ok_or(unknown)?;
    machine.kind = names.system_kind(&found, job.kind, &job.flake)?;
    machine.target = Some(found);
    Ok(())
}

/// For a host that names no configuration (an address, say): the one configuration whose
/// ssh-resolved hostname is the host's own. `None` when none matches; an error when several do.
fn find_by_hostname(
    host: &Host,
    names: &[String],
    ssh: &Ssh,
    console: &Console,
) -> Result<Option<Target>, Error> {
    let resolve = |name: &Host| -> Result<Option<String>, Error> {
        let out = process::traced(console, &ssh.resolve(name))?;
        Ok(out
            .status
            .success()
            .then(|| ssh::config_value(&String::from_utf8_lossy(&out.stdout), "hostname"))
            .flatten())
    };
    let Some(wanted) = resolve(host)? else {
        return Ok(None);
    };
    let mut matching = Vec::new();
    for name in names {
        if let Ok(candidate) = Host::parse(name)
            && resolve(&candidate)?.as_deref() == Some(wanted.as_str())
        {
            matching.push(name.as_str());
        }
    }
    match matching.as_slice() {
        [] => Ok(None),
        [one] => {
            console.say(&format!("{host} is `{one}`: ssh resolves both to {wanted}"));
            Target::parse(one).map(Some)
        }
        several => Err(Error::Usage(format!(
            "{host} ({wanted}) could be any of {}: name the configuration after the host",
            flake::backticked(several)
        ))),
    }
}

/// `ssh-deploy`'s key: in the flake's directory for a local flake, else here.
fn secret(job: &Job, machines: &[Machine]) -> Result<Option<Secret>, Error> {
    let (Command::SshDeploy, [machine]) = (job.command, machines) else {
        return Ok(None);
    };
    let Some(name) = &machine.target else {
        return Ok(None);
    };
    let cwd = std::env::current_dir()?;
    let dir = match is_local(&job.flake) {
        true => cwd.join(&job.flake).canonicalize().unwrap_or(cwd),
        false => cwd,
    };
    let file = Secret::file_of(&dir, name);
    let bytes = std::fs::read(&file).map_err(|e| {
        Error::Usage(format!(
            "no key for {name}: cannot read {} ({e})",
            file.display()
        ))
    })?;
    let env = |key: &str| std::env::var(key).ok();
    Secret::from_contents(file, &bytes, name, job.identity.clone(), env).map(Some)
}

/// Finds out which nixos-rebuild is on PATH: from its store path when that tells, else from
/// the answer cached for that very file, else by the probe. Called once per run.
fn detect_dialect(console: &Console) -> Result<Dialect, Error> {
    let found = which::which("nixos-rebuild").map_err(|_| process::missing("nixos-rebuild"))?;
    let resolved = found.canonicalize().unwrap_or(found);
    if let Some(d) = Dialect::from_store_path(&resolved.to_string_lossy()) {
        return Ok(d);
    }
    let key = dialect_key(&resolved);
    match key
        .as_deref()
        .and_then(cache::read)
        .as_deref()
        .map(str::trim)
    {
        Some("ng") => return Ok(Dialect::Ng),
        Some("legacy") => return Ok(Dialect::Legacy),
        _ => {}
    }
    let out = process::traced(console, &dialect::probe())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dialect = Dialect::from_probe(out.status.code(), &stderr).ok_or_else(|| {
        Error::Check(format!(
            "cannot tell which nixos-rebuild {} is (the probe exited with {}: {}); \
             say it with --dialect ng or --dialect legacy",
            resolved.display(),
            out.status,
            stderr.trim().lines().last().unwrap_or("no message"),
        ))
    })?;
    if let Some(key) = key {
        cache::write(&key, &dialect.to_string());
    }
    Ok(dialect)
}

/// The cache key of the probe's answer for this file: its path, size and modification time,
/// so an upgrade (a new store path, or a file replaced in place) is probed again.
fn dialect_key(resolved: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(resolved).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (resolved, meta.len(), meta.modified().ok()).hash(&mut hasher);
    Some(format!("dialect-{:016x}", hasher.finish()))
}

/// A private directory for control sockets, short enough for a socket path, with one
/// subdirectory per machine.
fn private_dir(machines: usize) -> Result<tempfile::TempDir, Error> {
    let short = std::env::temp_dir().as_os_str().len() < 60;
    let dir = if short {
        std::env::temp_dir()
    } else {
        PathBuf::from("/tmp")
    };
    let private = tempfile::Builder::new().prefix("flakem-").tempdir_in(dir)?;
    for i in 0..machines {
        std::fs::create_dir(private.path().join(i.to_string()))?;
    }
    Ok(private)
}
