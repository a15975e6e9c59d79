//! What a configuration deploys, and where the flake keeps configurations of that kind.

use crate::names::Target;

/// What a configuration deploys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nixos,
    Darwin,
    Home,
}

impl Kind {
    /// The flake output holding configurations of this kind.
    pub fn output(self) -> &'static str {
        match self {
            Kind::Nixos => "nixosConfigurations",
            Kind::Darwin => "darwinConfigurations",
            Kind::Home => "homeConfigurations",
        }
    }

    /// The attribute that builds `target`: `nixosConfigurations."T".config.system.build.toplevel`.
    pub fn attribute(self, target: &Target) -> String {
        let inner = match self {
            Kind::Nixos => "config.system.build.toplevel",
            Kind::Darwin => "system",
            Kind::Home => "activationPackage",
        };
        format!("{}.\"{target}\".{inner}", self.output())
    }
}
