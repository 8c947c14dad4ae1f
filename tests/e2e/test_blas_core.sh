#!/usr/bin/env bash
# On a CPU with AVX2 and FMA, `qlora` must end up running OpenBLAS's AVX2
# kernels, or its AVX-512 ones where the CPU has AVX-512, even where OpenBLAS
# misdetects the CPU (launcher/blas_tune.c); a user's OPENBLAS_CORETYPE must
# be left alone.
set -euo pipefail
if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
    echo "CPU without AVX2/FMA: skipped"
    exit 77
fi
# OPENBLAS_VERBOSE=2 prints "Core: X" each time the library loads: the first
# line is OpenBLAS' own choice, the last the one qlora ran with.
cores() { OPENBLAS_VERBOSE=2 "$@" 2>&1 >/dev/null | grep '^Core:'; }
all=$(cores "$QLORA" version)
first=$(head -n 1 <<<"$all") got=$(tail -n 1 <<<"$all")
echo "OpenBLAS chose: $first; qlora runs on: $got"
[ "$got" != "Core: Prescott" ] || { echo "FAIL: still on the SSE3 kernels"; exit 1; }
if [ "$first" = "Core: Prescott" ]; then
    want="Core: Haswell"
    avx512=1
    for f in avx512f avx512bw avx512dq avx512vl avx512cd; do grep -qw $f /proc/cpuinfo || avx512=0; done
    [ $avx512 = 0 ] || want="Core: SkylakeX"
    [ "$got" = "$want" ] || { echo "FAIL: restarted on $got, want $want"; exit 1; }
else
    [ "$got" = "$first" ] || { echo "FAIL: OpenBLAS' own choice $first was replaced by $got"; exit 1; }
fi
forced=$(cores env OPENBLAS_CORETYPE=Prescott "$QLORA" version | tail -n 1)
echo "with OPENBLAS_CORETYPE=Prescott: $forced"
[ "$forced" = "Core: Prescott" ] || { echo "FAIL: the user's OPENBLAS_CORETYPE was overridden"; exit 1; }
"$QLORA" version | grep -q '^qlora ' || { echo "FAIL: version after restart"; exit 1; }
echo "4 passed, 0 failed"
