#!/usr/bin/env bash
# Installs what qlora needs on a fresh Debian 12 machine, idempotently and
# quietly: the Debian packages in scripts/debian-packages.txt, a Python venv
# (.venv) with scripts/python-requirements.txt for test fixtures and checks,
# then configures and builds into build/.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=$(grep -v '^#' scripts/debian-packages.txt | xargs)
missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $pkgs 2>/dev/null |
    awk '$1 != "ii" {print $2}' || true)
# dpkg-query prints nothing for packages it has never heard of
for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$(echo $missing)" ]; then
    echo "setup: installing Debian packages: $(echo $missing | xargs -n1 | sort -u | xargs)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $(echo $missing | xargs -n1 | sort -u) >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/python-requirements.txt; then
    echo "setup: pip could not install scripts/python-requirements.txt" >&2
    exit 1
fi

echo "setup: building into build/"
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >build/.configure.log 2>&1 ||
    { cat build/.configure.log; exit 1; }
cmake --build build -j"$(nproc)" >/dev/null || cmake --build build
echo "setup: done (binary: build/qlora)"
