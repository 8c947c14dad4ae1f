#!/usr/bin/env bash
# Installs Slurm (slurmctld, slurmd, the client commands) and munge from
# Debian, quietly and only when missing, for slurm/local/cluster.sh. The
# packages start no Slurm daemon: there is no /etc/slurm/slurm.conf, and the
# test cluster never writes one (it keeps its configuration in its own state
# directory). scripts/setup.sh installs the same packages
# (scripts/debian-packages.txt).
set -euo pipefail
pkgs="slurm-wlm munge"
missing=
for p in $pkgs; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install.sh: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
