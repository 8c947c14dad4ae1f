#!/usr/bin/env bash
# Builds qlora with the CUDA backend here and packs it, with every shared
# library it needs that is not glibc, CUDA's own or the compiler runtime,
# into .gpubundle/ (ignored by git), for tests/gpu/run.sh on a GPU machine
# whose image lacks MPI, HDF5, protobuf-c and the other development packages
# the CMake build needs (the device machine: ../.library/device). There
# run.sh falls back to its nvcc-only build, which has no qlora binary; with
# the bundle carried (`run` with carry [".gpubundle"]) it also runs the
# `qlora train` scripts (tests/gpu/test_train_qlora_cuda.sh and the others)
# with the bundled binary, once it has checked that the bundle was built
# from the sources it finds (a hash of them) and that the binary starts.
#
#   scripts/gpu_bundle.sh [BUILD_DIR]     (default build-bundle)
#
# Writes .gpubundle/qlora-bundle.tar.xz (about 13 MB: qlora, lib/),
# .gpubundle/MANIFEST (the commit, the source hash, the files hashed), and
# .gpubundle/py/bitsandbytes (pinned, from PyPI, its CUDA 13 libraries only:
# about 9 MB) for the PyTorch baseline. The CUDA libraries (cudart,
# cuBLASLt, NCCL) are the GPU machine's own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build-bundle}
out=.gpubundle

command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
    { echo "gpu_bundle: no nvcc here: cannot build the CUDA backend" >&2; exit 1; }
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQL_CUDA=ON -DQL_CUDA_ARCHS="90;90a" >/dev/null
cmake --build "$build" -j"$(nproc)" --target qlora >/dev/null
deps=$(ldd "$build/qlora")
grep -q libcublasLt <<<"$deps" ||
    { echo "gpu_bundle: $build/qlora has no CUDA backend (see CMake's output)" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib"
cp "$build/qlora" "$stage/"
# Everything ldd resolves except what every GPU machine brings itself.
skip='/(libc|libm|libpthread|libdl|librt|libresolv|libutil|ld-linux-x86-64|libgcc_s|libstdc\+\+)\.so'
skip+='|lib(cudart|cublas|cublasLt|nccl|cuda)\.so'
awk '$3 ~ /^\// {print $3}' <<<"$deps" | grep -v -E "$skip" |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done

# The sources the binary was built from, hashed as run.sh will hash them.
mkdir -p "$out"
git ls-files -- '*.c' '*.h' '*.cu' '*.cuh' '*.cpp' '*.proto' CMakeLists.txt 'cmake/*' |
    LC_ALL=C sort >"$stage/FILES"
hash=$(xargs -a "$stage/FILES" -d '\n' sha256sum | sha256sum | cut -c1-64)
{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- . || echo ' (dirty)')"
    echo "sources $hash"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
    # The newest glibc symbol version anything in the bundle asks for.
    echo "needs $(for f in "$stage/qlora" "$stage"/lib/*; do objdump -T "$f" 2>/dev/null; done |
        grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n -u | tail -1)"
} >"$stage/MANIFEST"
tar -C "$stage" -cJf "$out/qlora-bundle.tar.xz" qlora lib FILES MANIFEST

# bitsandbytes for bench/torch_cuda_train.py's PEFT + bitsandbytes baseline
# (the GPU image has PyTorch, transformers and PEFT but not it): the wheel's
# Python package with only its CPU and CUDA 13 libraries, into py/.
bnb=0.50.2
wheels=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_24_x86_64 -d "$wheels" "bitsandbytes==$bnb"
rm -rf "$out/py" && mkdir -p "$out/py"
python3 - "$wheels"/bitsandbytes-*.whl "$out/py" <<'PYEOF'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in z.namelist():
    if not re.search(r"libbitsandbytes_(?!cpu|cuda13)", name):
        z.extract(name, sys.argv[2])
PYEOF
rm -rf "$wheels"
cp "$stage/MANIFEST" "$stage/FILES" "$out/"
echo "gpu_bundle: $out/qlora-bundle.tar.xz ($(du -h "$out/qlora-bundle.tar.xz" | cut -f1)," \
    "$(ls "$stage/lib" | wc -l) libraries); $(sed -n 2p "$out/MANIFEST")"
