//! flakem's integration tests: one binary. `support` runs flakem with a stand-in
//! `nixos-rebuild`; `testbed` starts NixOS-like hosts (sshd in namespaces) for end-to-end tests.

mod cli;
mod darwin_home;
mod day_two;
mod demo;
mod e2e;
mod fleet;
mod guard;
mod layers;
mod one_login;
mod packaging;
mod plan_vs_trace;
mod regressions;
mod ssh_deploy;
mod sudo_password;
mod support;
mod testbed;
mod testbed_smoke;
