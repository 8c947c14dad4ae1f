#!/usr/bin/env bash
# The checkpoint crash-consistency tests at soak length: SIGKILL at random
# instants while checkpoints are being written, N times in one process
# (default 500) and M times at 2 ranks under mpirun, one rank or both
# (default 100). See tests/unit/test_ckpt_crash.c and
# tests/e2e/test_ckpt_crash_mpi.sh for what is checked after every kill.
#
#   scripts/ckpt_crash_soak.sh [--build DIR] [N] [M]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build
if [ "${1:-}" = --build ]; then build=$2; shift 2; fi
n=${1:-500}
m=${2:-100}
bin=$build/unit_test_ckpt_crash
[ -x "$bin" ] || { echo "no $bin: cmake --build $build --target unit_test_ckpt_crash" >&2; exit 1; }
echo "== $n kills of one process"
"$bin" "$n" | tail -n 2
echo "== $m kills at 2 ranks"
KILLS=$m QL_BUILD_DIR=$build bash "$repo/tests/e2e/test_ckpt_crash_mpi.sh" | tail -n 2
