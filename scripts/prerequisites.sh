# Sourced by test.sh and demo.sh: installs, from Debian's packages, what the test bed and
# the tests need and this machine lacks. Each argument is `program:package`; a program given
# by its path (/usr/bin/python3) must be that one.
install_missing() {
  local missing=() need
  for need in "$@"; do
    command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need#*:}")
  done
  if ((${#missing[@]})); then
    echo "${0##*/}: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

# What every run of the test bed needs: real nix, real OpenSSH, sudo, namespaces, and
# Debian's python3 by its path: the nixos-rebuild stand-in parses ng's arguments with that
# one when it is there (a python3 earlier on PATH may be a slow shim, such as pyenv's).
BED_NEEDS=(pkill:procps nix:nix-bin sshd:openssh-server ssh:openssh-client sudo:sudo ip:iproute2 unshare:util-linux /usr/bin/python3:python3)
