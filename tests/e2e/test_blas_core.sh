#!/usr/bin/env bash
# On a CPU with AVX2 and FMA, `qlora` must end up running OpenBLAS's AVX2
# kernels even where OpenBLAS misdetects the CPU (launcher/blas_tune.c), and a
# user's OPENBLAS_CORETYPE must be left alone.
set -euo pipefail
if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
    echo "CPU without AVX2/FMA: skipped"
    exit 77
fi
last_core() { OPENBLAS_VERBOSE=2 "$@" 2>&1 >/dev/null | grep '^Core:' | tail -n 1; }
got=$(last_core "$QLORA" version)
echo "qlora runs on: $got"
[ "$got" != "Core: Prescott" ] || { echo "FAIL: still on the SSE3 kernels"; exit 1; }
forced=$(OPENBLAS_CORETYPE=Prescott last_core "$QLORA" version)
echo "with OPENBLAS_CORETYPE=Prescott: $forced"
[ "$forced" = "Core: Prescott" ] || { echo "FAIL: the user's OPENBLAS_CORETYPE was overridden"; exit 1; }
"$QLORA" version | grep -q '^qlora ' || { echo "FAIL: version after restart"; exit 1; }
echo "3 passed, 0 failed"
