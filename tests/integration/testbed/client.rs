//! The client side of a test bed: the test's own ssh key, ssh config and known hosts, a
//! nix.conf and a HOME, so that nothing of this machine's user is read or written.

use super::host::set_mode;
use super::process::output_with_deadline;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Variables of the test process that would change what nix or ssh do.
const REMOVED_VARIABLES: &[&str] = &["NIX_REMOTE", "NIX_USER_CONF_FILES", "SSH_AUTH_SOCK"];

pub(super) struct Client {
    pub(super) ssh_config: PathBuf,
    pub(super) known_hosts: PathBuf,
    pub(super) public_key: String,
    key: PathBuf,
    env: Vec<(String, String)>,
}

impl Client {
    pub(super) fn create(dir: &Path) -> Client {
        let home = dir.join("home");
        let nix = dir.join("nix");
        for sub in [&home, &nix] {
            fs::create_dir_all(sub).expect("create client directory");
        }
        set_mode(dir, 0o755);
        let key = dir.join("id_ed25519");
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "flakem-test-client",
                "-f",
            ])
            .arg(&key);
        let output = output_with_deadline(&mut keygen, Duration::from_secs(30));
        assert!(output.status.success(), "ssh-keygen: {output:?}");
        let public_key = fs::read_to_string(key.with_extension("pub")).expect("client public key");

        fs::write(nix.join("registry.json"), "{\"flakes\":[],\"version\":2}\n")
            .expect("write registry");
        fs::write(
            nix.join("nix.conf"),
            format!(
                "experimental-features = nix-command flakes\n\
                 substituters =\n\
                 sandbox = false\n\
                 flake-registry = {}\n",
                nix.join("registry.json").display()
            ),
        )
        .expect("write client nix.conf");

        let ssh_config = dir.join("ssh_config");
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, "").expect("write known_hosts");
        let home_str = home.to_string_lossy().into_owned();
        let env = vec![
            ("NIX_SSHOPTS".into(), format!("-F {}", ssh_config.display())),
            ("NIX_CONF_DIR".into(), nix.to_string_lossy().into_owned()),
            ("NIX_PATH".into(), String::new()),
            ("HOME".into(), home_str.clone()),
            ("XDG_CONFIG_HOME".into(), format!("{home_str}/.config")),
            ("XDG_CACHE_HOME".into(), format!("{home_str}/.cache")),
            ("XDG_DATA_HOME".into(), format!("{home_str}/.local/share")),
            ("XDG_STATE_HOME".into(), format!("{home_str}/.local/state")),
        ];
        Client {
            ssh_config,
            known_hosts,
            public_key,
            key,
            env,
        }
    }

    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    pub(super) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for name in REMOVED_VARIABLES {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Writes the ssh config: one alias per host, the client key and known hosts for all,
    /// and a refusal for any destination outside the bed's loopback block.
    pub(super) fn write_ssh_config(&self, hosts: &[(String, Ipv4Addr)], net: u8, strict: bool) {
        let mut config = String::from(
            "# flakem test bed: one alias per test host. Used as NIX_SSHOPTS=\"-F <this file>\".\n",
        );
        for (name, address) in hosts {
            config.push_str(&format!("\nHost {name}\n  HostName {address}\n"));
        }
        config.push_str(&format!(
            "\nHost *\n\
             \x20 User root\n\
             \x20 Port 22\n\
             \x20 IdentityFile {key}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 UserKnownHostsFile {known_hosts}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking {strict}\n\
             \x20 CheckHostIP no\n\
             \x20 # Half the time of the default post-quantum exchange on a small machine.\n\
             \x20 KexAlgorithms curve25519-sha256\n\
             \n\
             # Nothing leaves the bed: any other destination fails.\n\
             Match host *,!127.0.{net}.*\n\
             \x20 ProxyCommand /bin/sh -c 'echo \"flakem test bed: %h is not a test host\" >&2; exit 1'\n",
            key = self.key.display(),
            known_hosts = self.known_hosts.display(),
            strict = if strict { "yes" } else { "accept-new" },
        ));
        fs::write(&self.ssh_config, config).expect("write ssh config");
    }
}
