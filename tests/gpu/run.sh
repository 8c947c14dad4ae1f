#!/usr/bin/env bash
# GPU checks and benchmarks in one go, for a machine with one H100/H200:
#
#   1. configure + build (Release, CUDA on) into build-gpu/;
#   2. ctest -L gpu, then the CPU unit tests (ctest -L unit);
#   3. bench_cuda_dequant (NF4+DQ dequantize vs cudaMemcpy D2D, same run) and
#      bench_cpu (cpu backend vs memcpy / cblas_sgemm);
#   4. JSON results under bench/results/ (and copied to $OUT when set), then a
#      short summary table.
#
# If the full configure fails (the GPU image may lack MPI, HDF5, protobuf-c or
# OpenBLAS headers), the CUDA test and CUDA benchmark are built directly with
# nvcc and cc from the few sources they need (build-gpu/min/), and the CPU
# parts are reported as skipped.
#
# Without a GPU (no nvidia-smi, or no device visible to CUDA) it builds, says
# so and exits 0. Exit status otherwise: 0 when every test that ran passed.
# Meant to finish well within 8 minutes (each step has its own timeout).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
root=$(pwd)
build="build-gpu"
jobs=$(nproc 2>/dev/null || echo 4)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=bench/results
mkdir -p "$results" "$build"
log=$build/run-$stamp.log
: >"$log"
say() { echo "run.sh: $*" | tee -a "$log"; }
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH

# --- build ---------------------------------------------------------------------
# QL_GPU_RUN_MIN=1 skips the full build (to try the fallback path).
mode=full
t0=$(date +%s)
if [ "${QL_GPU_RUN_MIN:-0}" != 1 ] &&
    timeout 120 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQL_CUDA=ON >>"$log" 2>&1 &&
    timeout 300 cmake --build "$build" -j"$jobs" >>"$log" 2>&1; then
    say "built $build (full project) in $(($(date +%s) - t0)) s"
    gpu_test=$build/gpu_test_q4_dequant_cuda
    bench_cuda=$build/bench_cuda_dequant
    bench_cpu=$build/bench_cpu
    [ -x "$gpu_test" ] || mode=nocuda
elif command -v nvcc >/dev/null; then
    mode=min
    say "full CMake build not done or failed (see $log); building the CUDA test and benchmark alone"
    m=$build/min
    mkdir -p "$m"
    cflags="-O2 -std=c11 -D_GNU_SOURCE -DQL_HAVE_CUDA=1 -ffp-contract=off -fopenmp -I$root -I$root/tests"
    gencode="-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90a,code=sm_90a"
    ok=1
    for c in core/status.c core/dtype.c kernels/cpu/quant4.c; do
        cc $cflags -c "$c" -o "$m/$(basename "$c" .c).o" >>"$log" 2>&1 || ok=0
    done
    for c in kernels/cuda/*.cu; do
        timeout 300 nvcc -O3 -std=c++17 $gencode --fmad=false -I"$root" -c "$c" \
            -o "$m/$(basename "$c" .cu).cu.o" >>"$log" 2>&1 || ok=0
    done
    cc $cflags -c tests/gpu/test_q4_dequant_cuda.c -o "$m/test.o" >>"$log" 2>&1 || ok=0
    cc $cflags -c bench/bench_cuda_dequant.c -o "$m/bench.o" >>"$log" 2>&1 || ok=0
    objs="$m/status.o $m/dtype.o $m/quant4.o $(ls "$m"/*.cu.o 2>/dev/null | tr '\n' ' ')"
    for t in test:gpu_test_q4_dequant_cuda bench:bench_cuda_dequant; do
        nvcc $gencode -Xcompiler -fopenmp -o "$m/${t#*:}" "$m/${t%%:*}.o" $objs -lm >>"$log" 2>&1 || ok=0
    done
    if [ $ok = 0 ]; then
        tail -30 "$log"
        say "minimal CUDA build failed"
        exit 1
    fi
    say "built the CUDA test and benchmark in $m in $(($(date +%s) - t0)) s"
    gpu_test=$m/gpu_test_q4_dequant_cuda
    bench_cuda=$m/bench_cuda_dequant
    bench_cpu=
else
    tail -30 "$log"
    say "build failed and there is no nvcc for the fallback"
    exit 1
fi

# --- is there a GPU? ---------------------------------------------------------------
gpu_name=none
driver=none
if command -v nvidia-smi >/dev/null 2>&1; then
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
if [ "$gpu_name" = none ] || [ -z "$gpu_name" ]; then
    say "no GPU (nvidia-smi absent or silent): built only, nothing to run"
    exit 0
fi
if [ $mode = nocuda ]; then
    say "GPU '$gpu_name' present but this build has no CUDA backend (nvcc not found?)"
    exit 1
fi
probe=$("$gpu_test" 2>&1 | head -1)
if echo "$probe" | grep -q "skipped"; then
    say "nvidia-smi sees '$gpu_name' but CUDA sees no device ($probe): built only"
    exit 0
fi
say "GPU: $gpu_name, driver $driver"

# --- tests -----------------------------------------------------------------------------
status=0
gpu_tests=skipped
unit_tests=skipped
if [ $mode = full ]; then
    if (cd "$build" && timeout 180 ctest -L gpu -V) >"$build/ctest-gpu.log" 2>&1; then
        gpu_tests=passed
    else
        gpu_tests=failed
        status=1
    fi
    if (cd "$build" && timeout 240 ctest -L unit -j"$jobs" --output-on-failure) >"$build/ctest-unit.log" 2>&1; then
        unit_tests=passed
    else
        unit_tests=failed
        status=1
    fi
    tail -3 "$build/ctest-gpu.log" | tee -a "$log"
else
    if timeout 180 "$gpu_test" >"$build/ctest-gpu.log" 2>&1; then gpu_tests=passed; else gpu_tests=failed; status=1; fi
fi
grep -E "passed, .* failed|dequantize runs" "$build/ctest-gpu.log" | tee -a "$log"
say "gpu tests: $gpu_tests; cpu unit tests: $unit_tests"

# --- benchmarks -------------------------------------------------------------------------
slug=$(echo "$gpu_name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | sed 's/-\+/-/g; s/-$//')
cuda_json=$results/gpu-$slug-$stamp.json
cpu_json=$results/cpu-$(hostname)-$stamp.json
timeout 180 "$bench_cuda" --json "$cuda_json" >"$build/bench-cuda.log" 2>&1 || {
    say "bench_cuda_dequant failed"
    status=1
}
if [ -n "$bench_cpu" ]; then
    timeout 180 "$bench_cpu" --json "$cpu_json" >"$build/bench-cpu.log" 2>&1 || {
        say "bench_cpu failed"
        status=1
    }
fi

# --- results ------------------------------------------------------------------------------
summary=$results/gpu-run-$slug-$stamp.json
{
    echo "{"
    echo "  \"date\": \"$stamp\","
    echo "  \"gpu\": \"$gpu_name\","
    echo "  \"driver\": \"$driver\","
    echo "  \"git_commit\": \"$(git rev-parse HEAD 2>/dev/null || echo unknown)\","
    echo "  \"build\": \"$mode\","
    echo "  \"gpu_tests\": \"$gpu_tests\","
    echo "  \"cpu_unit_tests\": \"$unit_tests\","
    echo -n "  \"cuda_dequant\": "
    if [ -s "$cuda_json" ]; then sed 's/^/  /' "$cuda_json" | sed '1s/^  //' | sed '$ s/$/,/'; else echo "null,"; fi
    echo -n "  \"cpu\": "
    if [ -s "$cpu_json" ]; then sed 's/^/  /' "$cpu_json" | sed '1s/^  //'; else echo "null"; fi
    echo "}"
} >"$summary"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$summary" "$OUT/"
    [ -s "$cuda_json" ] && cp "$cuda_json" "$OUT/"
    [ -s "$cpu_json" ] && cp "$cpu_json" "$OUT/"
    cp "$log" "$build"/ctest-*.log "$build"/bench-*.log "$OUT/" 2>/dev/null
fi

echo
echo "== summary ($gpu_name, driver $driver, $stamp; total $(($(date +%s) - t0)) s)"
echo "gpu tests: $gpu_tests   cpu unit tests: $unit_tests   build: $mode"
sed -n '/^shape/,$p' "$build/bench-cuda.log" | grep -v '^wrote'
[ -s "$build/bench-cpu.log" ] && sed -n '/^op /,/^total/p' "$build/bench-cpu.log"
echo "results: $summary${OUT:+ (copied to $OUT)}"
exit $status
