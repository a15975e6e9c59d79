#!/bin/bash
# The naive reset (benchmark reference, not part of flakem): `$NIX_SSHOPTS` is the test
# bed's `-F <ssh config>`, split into words as nix does.
set -x
H=$1
nixos-rebuild boot --no-reexec --sudo --use-substitutes --target-host "$H" --flake ".#$H" || exit
ssh $NIX_SSHOPTS "$H" sudo reboot
sleep 1
until ssh $NIX_SSHOPTS -o ConnectTimeout=5 -o BatchMode=yes "$H" true; do :; done
ssh $NIX_SSHOPTS "$H" 'cat /proc/sys/kernel/random/boot_id; sudo nix-collect-garbage --delete-older-than 15d'
