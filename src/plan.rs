//! The plan of each command: plain data computed without side effects. The executor runs it;
//! `--dry-run` prints it. Most tests check plans.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cmd::{Cmd, Value, Word, nix};
use crate::commands::{Action, Command, Placement};
use crate::day_two::{self, Act};
use crate::dialect::Dialect;
use crate::duration::Timeout;
use crate::flake;
use crate::guard::{self, Guard};
use crate::job::{GuardSettings, Job, Machine};
use crate::kind::Kind;
use crate::names::{Host, Target};
use crate::resolve::World;
use crate::secret::Secret;
use crate::ssh::{self, Connection, Sockets, Ssh};
use crate::sudo::Sudo;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A process; a non-zero status stops the plan with that status.
    Run(Cmd),
    /// Before any build: the host answers ssh without a prompt, and sudo (when used) without
    /// a prompt or with the password given, and it is not this machine when the plan
    /// `reboots` it (its machine id is printed).
    CheckHost {
        host: Host,
        sudo: Sudo,
        reboots: bool,
        cmd: Cmd,
        /// For the advice when ssh fails.
        ssh: Ssh,
    },
    /// Prints the host's boot id, the system its profile points at and its machine id:
    /// `<boot-id>` and `<system>` are remembered, and the machine flakem runs on is never
    /// rebooted.
    ReadBootState { host: Host, cmd: Cmd },
    /// Prints the system a deploy left on the host, for the summary.
    ReadSystem(Cmd),
    /// Builds `<drv>`: the last line of its output, the built system's path, becomes
    /// `<system>` in the later steps' arguments.
    Build(Cmd),
    /// `nix copy` to `host`; should it fail, `fallback` (another store URL) is tried.
    Copy {
        host: Host,
        cmd: Cmd,
        fallback: Option<Cmd>,
    },
    /// Runs `from` with its output piped into `to`, never passing through flakem.
    Pipe { from: Cmd, to: Cmd },
    /// A line for the user.
    Note(String),
    /// Asks for a reboot; the connection dying under it (ssh's 255) is success.
    Reboot(Cmd),
    /// Closes a control master; harmless when there is none.
    CloseMaster { socket: PathBuf, cmd: Cmd },
    /// Retries `attempt` (fresh connections, TCP probes in between) until the host answers
    /// with a boot id other than `<boot-id>`. The answering connection stays as the master;
    /// one that answers with the old boot id is closed with `close`.
    WaitForNewBoot {
        host: Host,
        resolve: Cmd,
        attempt: Cmd,
        close: Cmd,
        timeout: Timeout,
        /// For the advice when the host comes back refusing us.
        ssh: Ssh,
    },
    /// Prints where `/run/booted-system` and `/run/current-system` lead; both must be
    /// `<system>`.
    VerifyBooted(Cmd),
    /// `ssh-wait`: retries `attempt` until ssh connects, then ends with the remote status.
    WaitForSsh {
        host: Host,
        resolve: Cmd,
        attempt: Cmd,
        timeout: Timeout,
        /// For the advice when the host refuses us.
        ssh: Ssh,
    },
    /// The closing line of a reset: host, boot ids, deployed system, time taken.
    Report { host: Host },
    /// Prints the system a reset's host runs and its generation, before the new one is
    /// activated: `<recorded>` and `<generation>`.
    RecordSystem { host: Host, cmd: Cmd },
    /// After a reset's reboot (whose connection, opened after it, is new): each
    /// `--health-check`, over a new connection. Should one fail, `boot_back` puts back
    /// `<recorded>` and reboots into it, and the plan ends with exit 6.
    ConfirmBoot {
        host: Host,
        health_checks: Vec<Cmd>,
        boot_back: Vec<Step>,
    },
    /// Arms the guard of the activation that follows (the plan's `guard` confirms it); it
    /// prints the system it would put back.
    ArmGuard {
        host: Host,
        cmd: Cmd,
        timeout: std::time::Duration,
    },
    /// A step of `generations`, `rollback` or `gc` (day_two.rs).
    DayTwo(Act),
}

impl From<Act> for Step {
    fn from(act: Act) -> Step {
        match act {
            Act::Run(cmd) => Step::Run(cmd),
            Act::Arm { host, cmd, timeout } => Step::ArmGuard { host, cmd, timeout },
            act => Step::DayTwo(act),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Run for every host before any host's steps: nothing is built if one fails.
    pub checks: Vec<Step>,
    /// With `--diff`: build, copy and show the changes, for every host before any activates.
    pub prepare: Vec<Step>,
    /// The attribute whose derivation the steps build as `<drv>`: evaluated for all hosts
    /// at once before any plan runs.
    pub drv_of: Option<String>,
    pub steps: Vec<Step>,
    /// Once the steps armed it: confirm the activation over a new connection, or have the
    /// host put the recorded system back.
    pub guard: Option<Guard>,
    /// Run on every way out, success, failure or Ctrl-C: a `ControlPersist` master would
    /// otherwise outlive flakem.
    pub finally: Vec<Step>,
}

/// What a plan depends on besides the job.
pub struct Context<'a> {
    pub dialect: Dialect,
    pub ssh: &'a Ssh,
    /// A private directory for control sockets (`<tmp>` in a dry run).
    pub control_dir: PathBuf,
    /// The host's control socket of the user's own, if ssh's configuration gives it one.
    pub users_master: Option<PathBuf>,
    /// Whether a summary will show what each host runs: its system is read at the end.
    pub summary: bool,
    /// Whether the job deploys a fleet (several hosts, `@all` or `@pattern`): its systems
    /// come from one evaluation for all, and each host builds and activates its own.
    pub fleet: bool,
    /// Whether `home-manager` is installed here, for `hm-switch`.
    pub home_manager: bool,
    /// `ssh-deploy`'s key file and how to decrypt it.
    pub secret: Option<&'a Secret>,
}

/// Every host's plan, and the one evaluation of the derivations those plans build.
pub struct Plans {
    /// Evaluates every `Plan::drv_of`, in order, once every host passed its checks.
    pub eval: Option<Cmd>,
    /// One plan per machine of the world, in order.
    pub hosts: Vec<Plan>,
}

/// The plans of `job` in `world`: what the dry run prints and the run executes.
pub fn plans(job: &Job, world: &World) -> Plans {
    // Decided by what the user named, so that a dry run of `@all` plans what runs.
    let fleet = world.machines.len() > 1 || job.hosts.needs_names();
    let summary = fleet || job.json;
    let hosts: Vec<Plan> = world
        .machines
        .iter()
        .enumerate()
        .map(|(i, machine)| {
            let cx = Context {
                dialect: world.dialect,
                ssh: &world.ssh,
                control_dir: world.control_dir_of(i),
                users_master: world.users_masters[i].clone(),
                summary,
                fleet,
                home_manager: world.home_manager,
                secret: world.secret.as_ref(),
            };
            plan(job, machine, &cx)
        })
        .collect();
    let attributes: Vec<String> = hosts.iter().filter_map(|p| p.drv_of.clone()).collect();
    let eval = (!attributes.is_empty())
        .then(|| flake::eval_drvs(&world.flake_ref, &attributes, &job.rest));
    Plans { eval, hosts }
}

/// One host's plan.
pub fn plan(job: &Job, machine: &Machine, cx: &Context) -> Plan {
    let host = &machine.host;
    let sockets = Sockets::in_dir(&cx.control_dir, cx.users_master.as_deref());
    let placement = job.command.placement();
    let checks = checks(job, machine, cx, &sockets);
    let mut plan = match (placement, &machine.target) {
        (Some(placement), Some(target)) => Deploy {
            job,
            kind: machine.kind,
            placement,
            host,
            target,
            cx,
            sockets: &sockets,
        }
        .plan(),
        _ => Plan::default(),
    };
    if job.command.day_two() {
        let before = Connection::Shared(&sockets.before);
        let on = day_two::On::new(cx.ssh, before, host, job.sudo);
        plan.steps
            .extend(day_two::steps(job, &on).into_iter().map(Step::from));
        plan.guard = day_two::guard(job, &on);
    }
    let steps = &mut plan.steps;
    if job.command == Command::SshDeploy
        && let Some(secret) = cx.secret
    {
        steps.push(deploy_key(job, host, secret, cx, &sockets));
    }
    if job.command == Command::SshWait {
        steps.push(Step::WaitForSsh {
            host: host.clone(),
            resolve: cx.ssh.resolve(host),
            attempt: cx.ssh.raw(
                Connection::Fresh,
                host,
                job.rest.iter().map(Word::from).collect(),
            ),
            timeout: job.timeout,
            ssh: cx.ssh.clone(),
        });
    }
    if job.command.resets() {
        let before = Connection::Shared(&sockets.before);
        let record = guard::record(cx.ssh, before, host);
        steps.insert(
            0,
            Step::RecordSystem {
                host: host.clone(),
                cmd: record,
            },
        );
        steps.extend(reset(job, host, cx.ssh, &sockets));
    } else if cx.summary
        && placement.is_some_and(|h| h != Placement::Local)
        && let Some(link) = deployed_link(job.action)
    {
        let before = Connection::Shared(&sockets.before);
        let read = cx.ssh.script(before, host, &[&["readlink", "-f", link]]);
        steps.push(Step::ReadSystem(read));
    }
    plan.checks = checks;
    plan.finally = finally(job, &plan, host, cx.ssh, &sockets);
    plan
}

/// Before any build: the host answers, and so does a build host of a push.
fn checks(job: &Job, machine: &Machine, cx: &Context, sockets: &Sockets) -> Vec<Step> {
    if !job.check || !job.command.logs_in() {
        return Vec::new();
    }
    // Home Manager activates as the user; everything else as root.
    let roots = job.action != Action::Build
        && machine.kind != Kind::Home
        && job.command != Command::Generations;
    let sudo = if roots { job.sudo } else { Sudo::No };
    let before = Connection::Shared(&sockets.before);
    let mut checks = vec![check_host(
        cx.ssh,
        before,
        &machine.host,
        sudo,
        job.command.resets(),
    )];
    if let Some(builder) = job.build_host.as_ref().filter(|_| job.command.pushes()) {
        let conn = Connection::Shared(&sockets.builder);
        checks.push(check_host(cx.ssh, conn, builder, Sudo::No, false));
    }
    checks
}

/// One host's deploy of one configuration: what its build and activation steps need.
#[derive(Clone, Copy)]
struct Deploy<'a> {
    job: &'a Job,
    kind: Kind,
    placement: Placement,
    host: &'a Host,
    target: &'a Target,
    cx: &'a Context<'a>,
    sockets: &'a Sockets,
}

impl Deploy<'_> {
    /// Whether a NixOS system is built from `<drv>` and activated by steps of flakem's own
    /// rather than by one `nixos-rebuild` that evaluates it too: with `--diff` (the changes
    /// are shown between build and activation), and in a fleet, whose evaluations would
    /// otherwise each parse the whole flake again. A third build host keeps nixos-rebuild's
    /// own `--build-host`, and `NIX_OPTIONS` keep going to nixos-rebuild, whose options
    /// they may be.
    fn by_hand(&self) -> bool {
        let job = self.job;
        job.diff || (self.cx.fleet && job.build_host.is_none() && job.rest.is_empty())
    }

    /// The build and activation of `target`: one `nixos-rebuild` when it can, else by hand
    /// from `<drv>` (with `--diff`, the build goes in `prepare`).
    fn plan(&self) -> Plan {
        let Deploy {
            job,
            kind,
            placement,
            target,
            cx,
            ..
        } = *self;
        let mut plan = Plan::default();
        let local = placement == Placement::Local;
        match kind {
            Kind::Nixos if !self.by_hand() => {
                plan.steps.extend(self.arm());
                plan.steps.push(Step::Run(self.rebuild()));
            }
            Kind::Home if local && job.action != Action::Build && cx.home_manager => {
                let mut argv = ["home-manager", "switch", "--flake"]
                    .map(str::to_owned)
                    .to_vec();
                argv.push(format!("{}#{target}", job.flake));
                argv.extend(job.rest.iter().cloned());
                plan.steps.push(Step::Run(Cmd::new(argv)));
            }
            kind => {
                let built = self.build();
                // Everything but a local `build` (one `nix build`) builds `<drv>`.
                if !local || job.action != Action::Build {
                    plan.drv_of = Some(kind.attribute(target));
                }
                let activation = self.activation();
                if job.diff {
                    plan.prepare = built;
                    plan.prepare.push(self.diff());
                } else {
                    plan.steps.extend(built);
                }
                if kind == Kind::Home && local && !activation.is_empty() {
                    plan.steps.push(Step::Note(
                        "home-manager is not installed; running the activation package's \
                         activate directly"
                            .into(),
                    ));
                }
                plan.steps.extend(self.arm());
                plan.steps.extend(activation);
            }
        }
        let unguarded = match kind {
            Kind::Darwin if job.guard.is_some() => Some("nix-darwin"),
            Kind::Home if job.action != Action::Build => Some("Home Manager"),
            _ => None,
        };
        if let (Some(what), false) = (unguarded, local) {
            plan.steps.push(Step::Note(format!(
                "{what} activations have no guard: nothing puts the previous one back should \
                 this one cut the host off"
            )));
        }
        plan.guard = self.guarded().map(|settings| {
            let (ssh, host) = (cx.ssh, self.host);
            guard::guard(
                ssh,
                host,
                job.sudo,
                settings.timeout,
                &settings.health_checks,
            )
        });
        plan
    }

    /// The guard's settings, when this activation is guarded: a NixOS `switch` or `test`
    /// on a remote host, unless `--no-rollback`.
    fn guarded(&self) -> Option<&GuardSettings> {
        let remote = self.placement != Placement::Local;
        let activates = matches!(self.job.action, Action::Switch | Action::Test);
        let nixos = self.kind == Kind::Nixos;
        self.job
            .guard
            .as_ref()
            .filter(|_| remote && activates && nixos)
    }

    /// Arms the guard, just before the activation (a plain plan's nixos-rebuild builds
    /// first: the guard waits for the activation, however long the build takes).
    fn arm(&self) -> Option<Step> {
        let settings = self.guarded()?;
        let master = Connection::Shared(&self.sockets.before);
        let (ssh, host, sudo) = (self.cx.ssh, self.host, self.job.sudo);
        let action = self.job.action.name();
        Some(Step::ArmGuard {
            host: host.clone(),
            cmd: guard::arm(ssh, master, host, sudo, settings.timeout, action),
            timeout: settings.timeout,
        })
    }
    /// Builds the configuration where the command says, as nixos-rebuild does in flake mode:
    /// build `<drv>` (evaluated here) here, or on the host after copying it there; copy the
    /// result to a host that activates it. A local `build` is one `nix build` with `./result`.
    fn build(&self) -> Vec<Step> {
        let Deploy {
            job,
            kind,
            placement,
            host,
            target,
            cx,
            sockets,
        } = *self;
        let attribute = format!("{}#{}", job.flake, kind.attribute(target));
        if placement == Placement::Local && job.action == Action::Build {
            let argv = nix(["build", attribute.as_str()]).into_iter();
            return vec![Step::Run(Cmd::new(
                argv.chain(job.rest.iter().map(Word::from)),
            ))];
        }
        // `<drv>` comes from the one evaluation of every host's derivation (`Plan::drv_of`).
        let mut steps = Vec::new();
        let (drv, system) = (Word::value(Value::Drv), Word::value(Value::System));
        let realise = vec![Word::from("nix-store"), "--realise".into(), drv.clone()];
        let realise_here = Step::Build(Cmd::new(realise.clone()));
        match placement {
            Placement::Local => steps.push(realise_here),
            Placement::Pull => {
                steps.push(self.copy(vec!["--derivation".into(), drv]));
                let before = Connection::Shared(&sockets.before);
                let realise = cx.ssh.script_of(before, host, &[realise]);
                steps.push(Step::Build(realise));
            }
            Placement::Push => {
                steps.push(realise_here);
                // ng's `--store-path` copies the system itself, through flakem's connection;
                // `--diff` needs it on the host before the activation.
                let ng_copies = kind == Kind::Nixos && cx.dialect == Dialect::Ng && !job.diff;
                if !ng_copies {
                    steps.push(self.copy(vec![system]));
                }
            }
        }
        steps
    }
    /// `nix copy` to the host's store; its ssh shares flakem's connection to the host. nix-darwin
    /// hosts get the faster `ssh-ng://`, falling back to `ssh://` where their nix lacks it.
    fn copy(&self, what: Vec<Word>) -> Step {
        let Deploy {
            kind,
            host,
            cx,
            sockets,
            ..
        } = *self;
        let sshopts = cx.ssh.handed_down(&sockets.before);
        let to = |scheme: &str| {
            let store = format!("{scheme}://{host}");
            // A system built here is unsigned: the host must not ask for signatures (it still
            // refuses a login that is not one of its trusted users).
            let mut argv = nix(["copy", "-s", "--no-check-sigs", "--to", &store]);
            argv.extend(what.iter().cloned());
            Cmd {
                env: vec![("NIX_SSHOPTS".to_owned(), sshopts.clone())],
                argv,
                sudo_password: false,
            }
        };
        let (cmd, fallback) = match kind {
            Kind::Darwin => (to("ssh-ng"), Some(to("ssh"))),
            _ => (to("ssh"), None),
        };
        Step::Copy {
            host: host.clone(),
            cmd,
            fallback,
        }
    }
    /// `--diff`: the package changes between what the host runs and `<system>`, shown there.
    fn diff(&self) -> Step {
        let Deploy {
            host, cx, sockets, ..
        } = *self;
        let mut diff = nix(["store", "diff-closures", "/run/current-system"]);
        diff.push(Word::value(Value::System));
        let script = Word::from("if [ -e /run/current-system ]; then ")
            .and(ssh::shell_line(&diff))
            .and("; else echo 'nothing runs there yet'; fi");
        let before = Connection::Shared(&sockets.before);
        Step::Run(cx.ssh.raw(before, host, vec![script]))
    }
    /// Activates `<system>` once built (and copied): what nixos-rebuild, darwin-rebuild or
    /// home-manager would run.
    fn activation(&self) -> Vec<Step> {
        let Deploy {
            job,
            kind,
            placement,
            host,
            cx,
            sockets,
            ..
        } = *self;
        let system = || Word::value(Value::System);
        let action = job.action.name();
        if job.action == Action::Build {
            return Vec::new();
        }
        if kind == Kind::Nixos && cx.dialect == Dialect::Ng {
            // ng activates a prebuilt path itself.
            let mut argv: Vec<Word> = vec!["nixos-rebuild".into(), action.into()];
            argv.extend(cx.dialect.house_flags(job.sudo).into_iter().map(Word::from));
            argv.extend(["--store-path".into(), system()]);
            argv.extend(["--target-host", host.as_str()].map(Word::from));
            let mut activate = job.sudo.feeds(Cmd::new(argv));
            activate.env = self.handed_down();
            return vec![Step::Run(activate)];
        }
        let sudo = match kind {
            Kind::Home => Sudo::No,
            _ => job.sudo,
        };
        let activate = match kind {
            Kind::Nixos => system().and("/bin/switch-to-configuration"),
            Kind::Darwin | Kind::Home => system().and("/activate"),
        };
        let mut commands: Vec<Vec<Word>> = Vec::new();
        // Setting the profile first is what makes the generation survive a reboot.
        if kind != Kind::Home && matches!(job.action, Action::Switch | Action::Boot) {
            let set = ["nix-env", "-p", PROFILE, "--set"].map(Word::from);
            commands.push([sudo.words(), set.to_vec(), vec![system()]].concat());
        }
        let args: Vec<Word> = match kind {
            Kind::Nixos => vec![action.into()],
            _ => Vec::new(),
        };
        commands.push([sudo.words(), vec![activate], args].concat());
        let before = Connection::Shared(&sockets.before);
        commands
            .into_iter()
            .map(|words| match placement {
                Placement::Local => Step::Run(Cmd::new(words)),
                _ => Step::Run(sudo.feeds(cx.ssh.script_of(before, host, &[words]))),
            })
            .collect()
    }
    /// `nixos-rebuild ACTION <house flags> [--build-host H] [--target-host H] --flake F#T ...`.
    /// What nixos-rebuild is handed so that its ssh goes through flakem's connection to the
    /// host: `NIX_SSHOPTS` (the user's options first), and for ng an empty
    /// `NIXOS_REBUILD_SSH_DEFAULT_OPTS`, so that its copies do too (an ng from before July
    /// 2026 ignores it, and its copies log in once more).
    fn handed_down(&self) -> Vec<(String, String)> {
        let sshopts = self.cx.ssh.handed_down(&self.sockets.before);
        let mut env = vec![("NIX_SSHOPTS".to_owned(), sshopts)];
        if self.cx.dialect == Dialect::Ng {
            env.push(("NIXOS_REBUILD_SSH_DEFAULT_OPTS".to_owned(), String::new()));
        }
        env
    }

    fn rebuild(&self) -> Cmd {
        let Deploy {
            job,
            placement,
            host,
            target,
            cx,
            ..
        } = *self;
        let mut argv = vec!["nixos-rebuild".to_owned(), job.action.name().to_owned()];
        argv.extend(
            cx.dialect
                .house_flags(job.sudo)
                .into_iter()
                .map(str::to_owned),
        );
        let builder = match placement {
            Placement::Pull => Some(host),
            Placement::Push => job.build_host.as_ref(),
            Placement::Local => None,
        };
        if let Some(builder) = builder {
            argv.extend(["--build-host".to_owned(), builder.to_string()]);
        }
        if placement != Placement::Local {
            argv.extend(["--target-host".to_owned(), host.to_string()]);
        }
        argv.extend(["--flake".to_owned(), job.flake_attr(target)]);
        argv.extend(job.rest.iter().cloned());
        let mut rebuild = job.sudo.feeds(Cmd::new(argv));
        // One remote host (a pull builds there too): it is reached through flakem's
        // connection. A third build host would be reached through the target's.
        if placement == Placement::Pull || (placement == Placement::Push && builder.is_none()) {
            rebuild.env = self.handed_down();
        }
        rebuild
    }
}

/// Every control master a step of `plan` may have started, closed on any way out.
fn finally(job: &Job, plan: &Plan, host: &Host, ssh: &Ssh, sockets: &Sockets) -> Vec<Step> {
    let builder = job.build_host.as_ref().unwrap_or(host);
    let masters = [
        (&sockets.before, host, !sockets.users),
        (&sockets.after, host, true),
        (&sockets.builder, builder, true),
    ];
    let steps: Vec<&Step> = [&plan.checks, &plan.prepare, &plan.steps]
        .into_iter()
        .flatten()
        .collect();
    masters
        .into_iter()
        .filter(|(_, _, ours)| *ours)
        .filter(|(socket, _, _)| steps.iter().any(|step| step.goes_through(socket)))
        .map(|(socket, host, _)| (socket, host))
        .map(|(socket, host)| close(ssh, socket, host))
        .collect()
}

/// `ssh-deploy`: the decrypted key goes from the decryption straight into a pipe to the
/// host, never into an argument, a file or a log line.
fn deploy_key(job: &Job, host: &Host, secret: &Secret, cx: &Context, sockets: &Sockets) -> Step {
    let conn = Connection::Shared(&sockets.before);
    let to = match job.sudo {
        // The password line comes first on the key's stdin: one sudo reads it, and when
        // sudo would not ask (no password needed there, or a ticket cached), the script
        // reads it instead, so that the install gets the key and nothing else.
        Sudo::Password => {
            let script = [
                "if sudo -n true 2>/dev/null; then IFS= read -r _; fi",
                "exec sudo --stdin --prompt= sh -c \"$1\"",
            ]
            .join("; ");
            let words = ["sh", "-c", &script, "sh", INSTALL_KEY];
            job.sudo.feeds(cx.ssh.script(conn, host, &[&words]))
        }
        sudo => {
            let root = |words: &[&'static str]| [sudo.prefix(), words].concat();
            let dir = root(&["install", "-d", "-m", "700", "/var/lib/sops-nix"]);
            let key = root(&["install", "-m", "600", "/dev/stdin", KEY_FILE]);
            cx.ssh.script(conn, host, &[&dir, &key])
        }
    };
    Step::Pipe {
        from: secret.decrypt(),
        to,
    }
}

/// Where sops-nix finds the host's age key, and how a root shell puts it there from stdin.
const KEY_FILE: &str = "/var/lib/sops-nix/key.txt";
const INSTALL_KEY: &str =
    "install -d -m 700 /var/lib/sops-nix && install -m 600 /dev/stdin /var/lib/sops-nix/key.txt";

/// Where the system an action deployed can be read: the profile for `boot`, the running
/// system for `switch` and `test`.
fn deployed_link(action: Action) -> Option<&'static str> {
    match action {
        Action::Boot => Some(PROFILE),
        Action::Switch | Action::Test => Some("/run/current-system"),
        Action::DryActivate | Action::Build => None,
    }
}

/// Before any build: the host answers ssh without a prompt, sudo works there without a
/// password (when it is used and the login is not root), and its machine id, so that a reset
/// never reboots the machine flakem runs on.
fn check_host(ssh: &Ssh, conn: Connection, host: &Host, sudo: Sudo, reboots: bool) -> Step {
    let script = match sudo.used() {
        true => format!(
            "cat /etc/machine-id 2>/dev/null; [ \"$(id -u)\" = 0 ] || {}",
            sudo.check()
        ),
        false => "cat /etc/machine-id 2>/dev/null; true".to_owned(),
    };
    Step::CheckHost {
        host: host.clone(),
        sudo,
        reboots,
        cmd: sudo.feeds(ssh.raw(conn, host, vec![script.into()])),
        ssh: ssh.clone(),
    }
}

const PROFILE: &str = "/nix/var/nix/profiles/system";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// After `nixos-rebuild boot`: prove the reboot happened and that the host booted what was
/// deployed, and only then collect garbage.
fn reset(job: &Job, host: &Host, ssh: &Ssh, sockets: &Sockets) -> Vec<Step> {
    let after = Connection::Shared(&sockets.after);
    let sudo = job.sudo.prefix();
    let as_root = |words: &[&'static str]| [sudo, words].concat();

    let mut steps = reboot(job, host, ssh, &sockets.before, &sockets.after);
    let checks = job.guard.as_ref().map_or(&[][..], |g| &g.health_checks[..]);
    if let (Some(settings), false) = (&job.guard, checks.is_empty()) {
        let mut boot_back = vec![Step::Run(guard::boot_back(ssh, after, host, job.sudo))];
        boot_back.extend(reboot(job, host, ssh, &sockets.after, &sockets.after));
        boot_back.push(Step::Report { host: host.clone() });
        steps.push(Step::ConfirmBoot {
            host: host.clone(),
            health_checks: guard::health_checks(ssh, host, settings.timeout, checks),
            boot_back,
        });
    }
    if let Some(age) = job.gc_older_than {
        let age_args = age.nix_args();
        let gc: Vec<&str> = [sudo, &["nix-collect-garbage"]]
            .concat()
            .into_iter()
            .chain(age_args.iter().map(String::as_str))
            .collect();
        let prune = as_root(&["/run/current-system/bin/switch-to-configuration", "boot"]);
        steps.push(Step::Run(job.sudo.feeds(ssh.script(after, host, &[&gc]))));
        steps.push(Step::Run(job.sudo.feeds(ssh.script(
            after,
            host,
            &[&prune],
        ))));
    }
    if let Some(keep) = job.keep {
        let on = day_two::On::new(ssh, after, host, job.sudo);
        steps.extend(day_two::gc(keep, &on).into_iter().map(Step::from));
    }
    steps.push(close(ssh, &sockets.after, host));
    steps.push(Step::Report { host: host.clone() });
    steps
}

/// Reboots `host` over the master at `from` into the system its profile holds, and proves
/// it came back on it over a new master at `to`.
fn reboot(job: &Job, host: &Host, ssh: &Ssh, from: &Path, to: &Path) -> Vec<Step> {
    let (from_conn, to_conn) = (Connection::Shared(from), Connection::Shared(to));
    let sudo = job.sudo.prefix();
    vec![
        Step::ReadBootState {
            host: host.clone(),
            cmd: ssh.script(
                from_conn,
                host,
                &[
                    &["cat", BOOT_ID],
                    &["readlink", "-f", PROFILE],
                    &["cat", "/etc/machine-id"],
                ],
            ),
        },
        Step::Reboot(
            job.sudo
                .feeds(ssh.script(from_conn, host, &[&[sudo, &["reboot"]].concat()])),
        ),
        close(ssh, from, host),
        Step::WaitForNewBoot {
            host: host.clone(),
            resolve: ssh.resolve(host),
            attempt: ssh.script(Connection::NewMaster(to), host, &[&["cat", BOOT_ID]]),
            close: ssh.exit_master(to, host),
            timeout: job.timeout,
            ssh: ssh.clone(),
        },
        Step::VerifyBooted(ssh.script(
            to_conn,
            host,
            &[&[
                "readlink",
                "-f",
                "/run/booted-system",
                "/run/current-system",
            ]],
        )),
    ]
}

fn close(ssh: &Ssh, socket: &Path, host: &Host) -> Step {
    Step::CloseMaster {
        socket: socket.to_owned(),
        cmd: ssh.exit_master(socket, host),
    }
}

/// The dry-run form of a step: `+ ` for every process, `# ` for what the executor checks.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(cmd) | Step::CloseMaster { cmd, .. } => write!(f, "+ {cmd}"),
            Step::CheckHost {
                host, sudo, cmd, ..
            } => {
                let sudo = checked_sudo(*sudo);
                write!(
                    f,
                    "+ {cmd}\n# check: {host} answers ssh without a prompt{sudo}"
                )
            }
            Step::ReadBootState { cmd, .. } => write!(
                f,
                "+ {cmd}\n# remember <boot-id> and <system>; refuse if it is this machine"
            ),
            Step::ReadSystem(cmd) => write!(f, "+ {cmd}\n# the deployed system, for the summary"),
            Step::Build(cmd) => write!(f, "+ {cmd}\n# its last line is <system>"),
            Step::Copy { cmd, fallback, .. } => {
                write!(f, "+ {cmd}")?;
                match fallback {
                    Some(fallback) => write!(f, "\n# if that fails:\n+ {fallback}"),
                    None => Ok(()),
                }
            }
            Step::Pipe { from, to } => write!(f, "+ {from} | {to}"),
            Step::Note(note) => write!(f, "# {note}"),
            Step::Reboot(cmd) => write!(
                f,
                "+ {cmd}\n# ssh's exit 255, the connection dying with the reboot, counts as success"
            ),
            Step::WaitForNewBoot {
                host,
                resolve,
                attempt,
                close,
                timeout,
                ..
            } => {
                let until = format!("{host} answers with a boot id other than <boot-id>");
                fmt_wait(f, resolve, timeout, &until, attempt)?;
                write!(f, "\n# after a try that answers with <boot-id>:\n+ {close}")
            }
            Step::VerifyBooted(cmd) => write!(
                f,
                "+ {cmd}\n# check that both are <system>, else stop (exit 4) and collect nothing"
            ),
            Step::WaitForSsh {
                host,
                resolve,
                attempt,
                timeout,
                ..
            } => fmt_wait(f, resolve, timeout, &format!("ssh reaches {host}"), attempt),
            Step::ArmGuard { host, cmd, timeout } => write!(
                f,
                "+ {cmd}\n# the guard: unless a new connection confirms the activation within \
                 {}s after it ends, {host} puts back the system it prints here",
                timeout.as_secs()
            ),
            Step::Report { host } => write!(
                f,
                "# report: {host} rebooted from <boot-id> to <new-boot-id>, running <system>"
            ),
            Step::RecordSystem { cmd, .. } => {
                write!(f, "+ {cmd}\n# remember <recorded> and <recorded-link>")
            }
            Step::ConfirmBoot {
                host,
                health_checks,
                boot_back,
            } => fmt_confirm_boot(f, host, health_checks, boot_back),
            Step::DayTwo(act) => write!(f, "{act}"),
        }
    }
}

/// A wait for a host: how its address is found, then each try until it answers.
fn fmt_wait(
    f: &mut fmt::Formatter<'_>,
    resolve: &Cmd,
    timeout: &Timeout,
    until: &str,
    attempt: &Cmd,
) -> fmt::Result {
    write!(
        f,
        "+ {resolve}\n# wait ({timeout}) until {until}, probing its ssh port in between; each \
         try:\n+ {attempt}"
    )
}

/// What the check before the build proves of sudo, for the dry run.
fn checked_sudo(sudo: Sudo) -> &'static str {
    match sudo {
        Sudo::No => "",
        Sudo::Plain => ", sudo works without a password",
        Sudo::Password => ", sudo takes the password given once for every host",
    }
}

/// A reset's confirmation, and the boot back that runs only if it fails.
fn fmt_confirm_boot(
    f: &mut fmt::Formatter<'_>,
    host: &Host,
    health_checks: &[Cmd],
    boot_back: &[Step],
) -> fmt::Result {
    write!(
        f,
        "# confirm the new boot: each --health-check, over a new connection:"
    )?;
    health_checks
        .iter()
        .try_for_each(|c| write!(f, "\n+ {c}"))?;
    write!(
        f,
        "\n# if one fails, boot {host} back into <recorded> and prove it (exit 6), with these \
         steps:"
    )?;
    boot_back.iter().try_for_each(|s| write!(f, "\n{s}"))?;
    write!(f, "\n# (end of the steps if a check fails)")
}

impl Step {
    /// Whether the step connects through the control master at `socket`, and so may start
    /// it: by its own ssh, or by the ssh options it hands down.
    fn goes_through(&self, socket: &Path) -> bool {
        let path = format!("ControlPath={}", socket.display());
        let names = |cmd: &Cmd| {
            cmd.argv.iter().any(|w| w.shown() == path)
                || cmd.env.iter().any(|(_, v)| v.split(' ').any(|w| w == path))
        };
        match self {
            Step::Run(cmd)
            | Step::Build(cmd)
            | Step::ReadSystem(cmd)
            | Step::Reboot(cmd)
            | Step::VerifyBooted(cmd)
            | Step::ReadBootState { cmd, .. }
            | Step::CheckHost { cmd, .. }
            | Step::Copy { cmd, .. }
            | Step::Pipe { to: cmd, .. }
            | Step::ArmGuard { cmd, .. }
            | Step::RecordSystem { cmd, .. }
            | Step::WaitForNewBoot { attempt: cmd, .. } => names(cmd),
            Step::ConfirmBoot { boot_back, .. } => boot_back.iter().any(|s| s.goes_through(socket)),
            Step::DayTwo(act) => act.cmd().is_some_and(names),
            _ => false,
        }
    }

    /// Puts `learnt` where the plan holds the placeholder of `value`: in the argument lists
    /// of the steps that run what an earlier step learnt.
    pub fn fill(&mut self, value: Value, learnt: &str) {
        let fill = |cmd: &mut Cmd| cmd.fill(value, learnt);
        match self {
            Step::Run(cmd) | Step::Build(cmd) => fill(cmd),
            Step::Copy { cmd, fallback, .. } => {
                fill(cmd);
                fallback.iter_mut().for_each(fill);
            }
            Step::DayTwo(act) => act.fill(value, learnt),
            _ => {}
        }
    }

    /// What the summary calls this step when a host fails at it.
    pub fn name(&self) -> String {
        match self {
            // A remote command is named by its program: nix-collect-garbage, ...
            Step::Run(cmd) if cmd.program() == "ssh" => {
                let script = cmd.argv.last().map(Word::shown).unwrap_or_default();
                let words = shell_words::split(&script).unwrap_or_default();
                let program = words
                    .iter()
                    .find(|w| !Sudo::Password.prefix().contains(&w.as_str()))
                    .map_or("ssh", String::as_str);
                program.rsplit('/').next().unwrap_or(program).to_owned()
            }
            Step::Run(cmd) => cmd.program().to_owned(),
            Step::Copy { .. } => "nix copy".into(),
            Step::Pipe { .. } => "install key".into(),
            Step::Note(_) => "note".into(),
            Step::CheckHost { .. } => "check".into(),
            Step::ReadBootState { .. } => "read boot id".into(),
            Step::ReadSystem(_) => "read system".into(),
            Step::Build(_) => "build".into(),
            Step::Reboot(_) => "reboot".into(),
            Step::CloseMaster { .. } => "close ssh".into(),
            Step::WaitForNewBoot { .. } => "wait for new boot".into(),
            Step::VerifyBooted(_) => "verify boot".into(),
            Step::WaitForSsh { .. } => "ssh-wait".into(),
            Step::Report { .. } => "report".into(),
            Step::ArmGuard { .. } => "arm guard".into(),
            Step::RecordSystem { .. } => "record system".into(),
            Step::ConfirmBoot { .. } => "confirm boot".into(),
            Step::DayTwo(act) => act.name(),
        }
    }
}

/// The dry-run form of the whole plan.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.checks
            .iter()
            .try_for_each(|step| writeln!(f, "{step}"))?;
        self.fmt_after_checks(f)
    }
}

impl Plan {
    /// The dry-run form of everything after the checks: what runs once every host passed
    /// them.
    pub fn fmt_after_checks(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for step in &self.prepare {
            writeln!(f, "{step}")?;
        }
        if !self.prepare.is_empty() {
            writeln!(f, "# (every host is prepared before any is activated)")?;
        }
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        if let Some(guard) = &self.guard {
            write!(f, "{guard}")?;
        }
        if !self.finally.is_empty() {
            writeln!(
                f,
                "# on any way out, each control master still open is closed:"
            )?;
        }
        self.finally
            .iter()
            .try_for_each(|step| writeln!(f, "{step}"))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod day_two_tests;
