#!/bin/bash
# Boot the host's own root under systemd-nspawn, with systemd as the guest's PID 1 (issue 21,
# tests/booted_systemd/RESEARCH.md §1b/§5). Run it as
#     unshare --mount --propagation private bash boot.sh WORK DIST NSPAWN_ARGS...
# The mounts below live only in that private mount namespace: they vanish with systemd-nspawn,
# which this script becomes (exec), so a killed test leaves nothing mounted on the host.
#   WORK  an empty directory; a tmpfs on it holds the overlay's upper layer (every write the guest
#         makes: the RPM payload, its journals, accounts), so the host's / is never written
#   DIST  a host directory, read-only at /dist in the guest (the RPM, the test's files)
set -euo pipefail
work=$1 dist=$2
shift 2
mount -t tmpfs -o mode=0755,size=2G booted "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
root=$work/root
# An empty machine-id would come out as the host's (nspawn ignores --uuid= here); a fresh one gives
# the guest journal directories of its own.
systemd-id128 new >"$root/etc/machine-id"
echo booted >"$root/etc/hostname"
# EL9's preset policy (99-default-disable.preset of its release package), instead of Debian's
# "enable everything": the package's %post preset must leave its units disabled, as on EL9.
mkdir -p "$root/etc/systemd/system-preset"
echo 'disable *' >"$root/etc/systemd/system-preset/99-default-disable.preset"
# basic.target, not multi-user.target: the host's enabled services (PostgreSQL, slapd, Prometheus
# on CI) must not start in the guest. --private-network: only lo, so the guest's scheduler on
# 127.0.0.1:8082 cannot meet the test suite's servers.
exec systemd-nspawn -D "$root" "$@" --console=passive --private-network --bind-ro="$dist:/dist" \
    -b systemd.unit=basic.target
