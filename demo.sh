#!/usr/bin/env bash
# The real thing in a sandbox: flakem deploys to two throwaway NixOS-like hosts of the test
# bed (sshd in namespaces on loopback addresses, the real nix and OpenSSH), reboots one and
# proves it came back on the new system, deploys both at once, then deploys a configuration
# that locks the deploy user out, which the host rolls back by itself. Each command is shown
# before it runs. Every host stops and everything made is removed on any way out.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $(id -u) != 0 ]]; then
  echo "demo.sh: the demo's hosts need root (network, mount and pid namespaces); run: sudo bash demo.sh" >&2
  exit 1
fi

source scripts/prerequisites.sh
install_missing "${BED_NEEDS[@]}"

cargo build --quiet --bin flakem --example demo
exec target/debug/examples/demo target/debug/flakem
