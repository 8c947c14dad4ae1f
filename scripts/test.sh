#!/usr/bin/env bash
# Runs the whole test suite: the format check, every CTest label in the
# release build (build/, made by scripts/setup.sh; GPU tests skip without a
# GPU), then the unit tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/), then the GPU tests on the CUDA
# emulator (build-emu/: kernels/cuda/*.cu run on the CPU, kernels/cuda/emu),
# and, where nvcc is, the nvcc-only build of tests/gpu/run.sh (what a GPU
# machine without our Debian packages builds; it must compile and link).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# Tests that need the fixture model may fetch it from PyPI (QL_NET=0 skips them).
export QL_NET=${QL_NET:-1}
# ctest runs tests side by side; OpenMP threads that spin while they wait
# would steal the cores from the neighbouring test.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

scripts/check-format.sh

echo "== release build: all tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" >/dev/null || cmake --build build
(cd build && ctest --output-on-failure -j"$jobs")

echo "== sanitizer build (ASan + UBSan): unit tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQL_SANITIZE=ON -DQL_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null || cmake --build build-asan
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest -L unit --output-on-failure -j"$jobs")

echo "== CUDA emulator build: the GPU tests with kernels/cuda on the CPU"
cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DQL_CUDA_EMU=ON -DQL_CUDA=OFF >/dev/null
cmake --build build-emu -j"$jobs" >/dev/null || cmake --build build-emu
(cd build-emu && ctest -L gpu --output-on-failure -j"$jobs")

if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "== tests/gpu/run.sh's nvcc-only build (QL_GPU_RUN_MIN=1; no GPU here: build only)"
    QL_GPU_RUN_MIN=1 QL_GPU_BUILD_DIR=build-gpu-min bash tests/gpu/run.sh
fi
