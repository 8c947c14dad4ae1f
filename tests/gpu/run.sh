#!/usr/bin/env bash
# GPU checks and benchmarks in one go, for a machine with one H100/H200
# (about 5-7 minutes; every step has its own timeout, and the optional ones
# are skipped when the 8-minute budget is running out):
#
#   1. build into build-gpu/ only what the GPU run needs, -j$(nproc), CUDA
#      targets sm_90 and sm_90a: CMake (Release) when the project configures;
#      otherwise (an image without MPI/HDF5/protobuf-c/OpenBLAS development
#      files) nvcc + cc directly on the few sources the GPU programs use
#      (build-gpu/min/);
#   2. every tests/gpu/test_*.c program (each CUDA op against cpu-ref, the
#      dequantize and quantize bit for bit, QLoRA steps against the CPU backend
#      and a simulated restart bit for bit, generation with the KV cache in
#      device memory, the NCCL communicator on one GPU) and, with the CMake build or a carried bundle (below), every
#      tests/gpu/test_*.sh (qlora train on the GPU: cuda vs cpu losses,
#      SIGUSR1 -> exit 75 -> resume with the same adapter bytes);
#   3. the CUDA benchmarks: bench_cuda_dequant (NF4+DQ vs device copy),
#      bench_cuda_q4gemm (4-bit + LoRA linear vs cuBLASLt bf16, Llama-3-8B
#      shapes), bench_cuda_lora (the dropout-masked LoRA products vs the
#      mask written + cuBLASLt), bench_cuda_attn (attention fwd+bwd vs the
#      cuBLASLt rate),
#      bench_cuda_train (the whole QLoRA step on a Llama-3-8B-shaped model,
#      with and without activation checkpointing: tokens/s, MFU, peak
#      memory) and, where torch + transformers + peft import,
#      bench/torch_cuda_train.py on the same shapes with the tokens/s ratio;
#   4. JSON: bench/results/gpu-<gpu>-<time>-<bench>.json for each benchmark
#      and bench/results/gpu-run-<gpu>-<time>.json (GPU, driver, date, commit,
#      test results, every figure), all copied to $OUT when it is set; then a
#      short table, last.
#
# Without a GPU (no nvidia-smi, or CUDA sees no device) it builds, says so and
# exits 0. Otherwise the exit status is 0 when every test passed and every
# benchmark ran (goals missed are reported, not failures).
#
# Environment: QL_GPU_RUN_MIN=1 forces the nvcc-only build; QL_GPU_RUN_CPU=1
# also builds and runs the CPU unit tests and bench_cpu (full build only);
# QL_GPU_QUICK=1 runs one shape per benchmark (and 4 layers in the training
# benchmark); QL_GPU_TRAIN_LAYERS (default 16) is the training benchmark's
# layer count (MFU is per layer; 32 is the whole 8B model); QL_GPU_TORCH=0
# skips the PyTorch comparison; QL_GPU_BUILD_DIR (default build-gpu) is the
# build directory; QL_GIT_COMMIT names the commit measured when the tree has
# no .git (a copied working tree).
#
# The bundle: an image without those development files cannot build qlora
# itself. scripts/gpu_bundle.sh builds it here with its shared libraries
# into .gpubundle/ (git-ignored; about 15 MB); carried with the call
# (carry [".gpubundle"]), the nvcc-only run uses that binary for the
# tests/gpu/test_*.sh scripts when the sources it was built from hash to
# those present and it starts there. The JSON's "qlora_bundle" says what
# happened.
#
# A rehearsal without a GPU: QL_GPU_RUN_EMU=1 builds the same targets on the
# CUDA emulator (kernels/cuda/emu, -DQL_CUDA_EMU=ON; default build dir
# build-gpu-emu), runs every test, the benchmarks with --tiny and no PyTorch,
# and writes the JSON ("emulated": true) under <build>/results-emu/, never
# bench/results/; its tests get 720 s each and its budget is three times
# 480 s, not counting the build. About 5 minutes on 2 cores after the build:
#
#   QL_GPU_RUN_EMU=1 QL_GPU_BUILD_DIR=/tmp/b OUT=/tmp/b/out bash tests/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
root=$(pwd)
emu=${QL_GPU_RUN_EMU:-0}
build="${QL_GPU_BUILD_DIR:-build-gpu}"
[ "$emu" = 1 ] && build="${QL_GPU_BUILD_DIR:-build-gpu-emu}"
jobs=$(nproc 2>/dev/null || echo 4)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=bench/results
[ "$emu" = 1 ] && results=$build/results-emu
mkdir -p "$results" "$build"
log=$build/run-$stamp.log
: >"$log"
# A previous run's logs would stand in the table for a step skipped this time.
rm -f "$build"/test_*.log "$build"/bench_*.log "$build"/torch_cuda_train.log "$build"/ctest-unit.log
say() { echo "run.sh: $*" | tee -a "$log"; }
# This run's logs reach $OUT on every exit, a failed build's included.
save_logs() {
    [ -n "${OUT:-}" ] || return
    mkdir -p "$OUT" && cp "$log" "$OUT/"
    find "$build" -maxdepth 1 -name '*.log' ! -name 'run-*' -exec cp {} "$OUT/" \;
}
trap save_logs EXIT
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
t0=$(date +%s)

gpu_tests=(test_q4_dequant_cuda test_q4_quantize_cuda test_ops_cuda test_train_cuda test_generate_cuda)
full_tests=(test_nccl_comm)          # need MPI: CMake build only
# need the qlora binary: CMake build only (the 2-rank ones skip on one GPU)
gpu_scripts=(test_train_qlora_cuda test_train_multirank_cuda test_train_overlap_cuda)
benches=(bench_cuda_train bench_cuda_dequant bench_cuda_q4gemm bench_cuda_lora bench_cuda_attn)
budget=480
left() { echo $((budget - ($(date +%s) - t0))); }

# --- build -------------------------------------------------------------------------
build_full() {
    local targets=()
    for t in "${gpu_tests[@]}" "${full_tests[@]}"; do targets+=("gpu_$t"); done
    targets+=("${benches[@]}" qlora)
    if [ "${QL_GPU_RUN_CPU:-0}" = 1 ]; then targets=(all); fi
    local cuda=(-DQL_CUDA=ON -DQL_CUDA_ARCHS="90;90a") limit=360
    [ "$emu" = 1 ] && cuda=(-DQL_CUDA_EMU=ON -DQL_CUDA=OFF) limit=3600
    timeout 120 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "${cuda[@]}" >>"$log" 2>&1 &&
        grep -q "CUDA backend ON" "$log" &&
        timeout $limit cmake --build "$build" -j"$jobs" --target "${targets[@]}" >>"$log" 2>&1
}

# The GPU programs need only these C sources besides their own: the ops
# against cpu-ref, and for the training test and benchmark the model, LoRA,
# generated weights, the memory estimate and the optimizer, with
# tests/gpu/min/ standing in for jansson.h, MPI and the model readers.
min_c_srcs="core/status.c core/dtype.c core/rng.c kernels/rope.c kernels/cpu/quant4.c
    kernels/cuda_q4_path.c kernels/cuda_lora_plan.c kernels/cpu/cpu_mem.c kernels/cpu/cpu_vec.c
    kernels/cpu/ref_add.c kernels/cpu/ref_attn.c kernels/cpu/ref_linear.c kernels/cpu/ref_loss.c
    kernels/cpu/ref_norm.c kernels/cpu/ref_backend.c
    model/llama_load.c model/llama_step.c model/lora.c model/random_source.c model/llama_mem.c
    model/llama_generate.c
    train/optim.c train/clip.c tests/gpu/min/min_stubs.c"

build_min() {
    local m=$build/min ok=1
    mkdir -p "$m"
    local cflags="-O2 -std=c11 -D_GNU_SOURCE -DQL_HAVE_CUDA=1 -DQL_GPU_MIN_BUILD=1 -ffp-contract=off -I$root -I$root/tests -I$root/tests/gpu/min"
    local gencode="-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90a,code=sm_90a"
    # CUDA sources in parallel (they are the slow part), C ones after.
    ls kernels/cuda/*.cu | xargs -P "$jobs" -I{} sh -c \
        'timeout 300 nvcc -O3 -std=c++17 '"$gencode"' --fmad=false -I'"$root"' -c {} -o '"$m"'/$(basename {} .cu).cu.o' \
        >>"$log" 2>&1 || ok=0
    for c in $min_c_srcs; do
        cc $cflags -c "$c" -o "$m/$(echo "$c" | tr / _ | sed 's/\.c$/.o/')" >>"$log" 2>&1 || ok=0
    done
    local objs
    objs=$(ls "$m"/*.o | grep -v -e '/gpu_' -e '/bench_' | tr '\n' ' ')
    for t in "${gpu_tests[@]}"; do
        cc $cflags -c "tests/gpu/$t.c" -o "$m/gpu_$t.main.o" >>"$log" 2>&1 &&
            nvcc $gencode -o "$m/gpu_$t" "$m/gpu_$t.main.o" $objs -lcublasLt -lm -lpthread >>"$log" 2>&1 || ok=0
    done
    for b in "${benches[@]}"; do
        cc $cflags -c "bench/$b.c" -o "$m/bench_$b.main.o" >>"$log" 2>&1 &&
            nvcc $gencode -o "$m/$b" "$m/bench_$b.main.o" $objs -lcublasLt -lm -lpthread >>"$log" 2>&1 || ok=0
    done
    return $((1 - ok))
}

mode=full
if [ "${QL_GPU_RUN_MIN:-0}" != 1 ] && build_full; then
    bindir=$build
    say "built $build (CMake, GPU targets) in $(($(date +%s) - t0)) s"
elif [ "$emu" != 1 ] && command -v nvcc >/dev/null; then
    mode=min
    [ "${QL_GPU_RUN_MIN:-0}" = 1 ] || say "CMake build not possible here (see $log); nvcc-only build"
    if ! build_min; then
        grep -E "error|Error" "$log" | head -30
        say "nvcc-only build failed (see $log)"
        exit 1
    fi
    bindir=$build/min
    say "built the GPU tests and benchmarks in $bindir in $(($(date +%s) - t0)) s"
else
    tail -30 "$log"
    say "build failed and there is no nvcc for the fallback"
    exit 1
fi
tbuild=$(($(date +%s) - t0))

# --- the qlora binary of scripts/gpu_bundle.sh, where CMake could not build one ---------
# Used only when its source hash is that of the files here and it starts
# (the bundled libraries are Debian 12's: an older glibc refuses them).
qlora_bin=""
[ $mode = full ] && qlora_bin=$bindir/qlora
bundle_note=""
if [ $mode = min ] && [ -s .gpubundle/qlora-bundle.tar.xz ]; then
    ub=$build/bundle
    rm -rf "$ub" && mkdir -p "$ub" && tar -C "$ub" -xJf .gpubundle/qlora-bundle.tar.xz >>"$log" 2>&1
    want=$(sed -n 's/^sources //p' "$ub/MANIFEST" 2>/dev/null)
    have=$(xargs -a "$ub/FILES" -d '\n' sha256sum 2>/dev/null | sha256sum | cut -c1-64)
    # The CUDA libraries: the loader's, or the toolkit's, or PyTorch's wheels.
    cudalibs=""
    for f in libcudart.so.13 libcublasLt.so.13 libnccl.so.2; do
        p=$(ldconfig -p 2>/dev/null | awk -v f="$f" '$1 == f {print $NF; exit}')
        [ -n "$p" ] || p=$(find /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/lib \
            $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
            -name "$f" 2>/dev/null | head -1)
        [ -n "$p" ] && cudalibs=$cudalibs${cudalibs:+:}$(dirname "$p")
    done
    if [ -z "$want" ]; then
        bundle_note="could not be unpacked (see $log)"
    elif [ "$want" != "$have" ]; then
        bundle_note="stale (built from other sources: rerun scripts/gpu_bundle.sh)"
    elif LD_LIBRARY_PATH=$ub/lib:$cudalibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "$ub/qlora" --version >>"$log" 2>&1; then
        qlora_bin=$ub/qlora
        export LD_LIBRARY_PATH=$ub/lib:$cudalibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        bundle_note="used ($(sed -n 1p "$ub/MANIFEST"))"
    else
        bundle_note="does not start here ($(sed -n 's/^needs //p' "$ub/MANIFEST") wanted, $(ldd --version 2>/dev/null | head -1); see $log)"
    fi
    say "qlora bundle: $bundle_note"
fi

# --- is there a GPU? ---------------------------------------------------------------
gpu_name=none
driver=none
tlimit=240 # per test
if [ "$emu" = 1 ]; then
    gpu_name="qlora CUDA emulator (CPU)"
    driver=emulator
    # The emulator's 2-core build says nothing about a GPU run's budget; its
    # tests and tiny benchmarks are slower than a GPU's full ones.
    budget=$((budget * 3 + tbuild)) tlimit=720
    export QL_GPU_RESUME_STEPS=${QL_GPU_RESUME_STEPS:-30} QL_GPU_TORCH=0
elif command -v nvidia-smi >/dev/null 2>&1; then
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
if [ "$gpu_name" = none ] || [ -z "$gpu_name" ]; then
    say "no GPU (nvidia-smi absent or silent): built only, nothing to run"
    exit 0
fi
say "GPU: $gpu_name, driver $driver"

# --- tests ---------------------------------------------------------------------------
status=0
test_json=""
run_tests=("${gpu_tests[@]}")
[ $mode = full ] && run_tests+=("${full_tests[@]}")
for t in "${run_tests[@]}"; do
    tl=$build/$t.log
    s0=$(date +%s)
    timeout $tlimit "$bindir/gpu_$t" >"$tl" 2>&1
    rc=$?
    case $rc in
    0) r=passed ;;
    77) r=skipped ;;
    124) r=timeout status=1 ;;
    *) r=failed status=1 ;;
    esac
    counts=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$tl" | tail -1)
    why=$counts
    [ -z "$why" ] && [ $r = skipped ] && why=$(tail -1 "$tl")
    say "$t: $r ($why, $(($(date +%s) - s0)) s)"
    [ $r = passed ] || [ $r = skipped ] ||
        { grep -E "CHECK failed|: element|differ|error" "$tl" || tail -3 "$tl"; } | head -20 | tee -a "$log"
    test_json+="${test_json:+, }{\"name\": \"$t\", \"result\": \"$r\", \"counts\": \"$counts\"}"
done
if ! grep -q '"result": "[pf]' <<<"$test_json" && ! grep -q timeout <<<"$test_json"; then
    say "nvidia-smi sees '$gpu_name' but CUDA sees no device (every test skipped): built only"
    exit 0
fi
# qlora itself on the GPU (the CMake build's, or the bundle's).
if [ -n "$qlora_bin" ]; then
    for t in "${gpu_scripts[@]}"; do
        tl=$build/$t.log
        s0=$(date +%s)
        case $build in /*) bdir=$build ;; *) bdir=$root/$build ;; esac
        case $qlora_bin in /*) qb=$qlora_bin ;; *) qb=$root/$qlora_bin ;; esac
        QLORA=$qb QL_SOURCE_DIR=$root QL_BUILD_DIR=$bdir \
            timeout $tlimit bash "tests/gpu/$t.sh" >"$tl" 2>&1
        rc=$?
        case $rc in
        0) r=passed ;;
        77) r=skipped ;;
        124) r=timeout status=1 ;;
        *) r=failed status=1 ;;
        esac
        say "$t: $r ($(($(date +%s) - s0)) s)"
        [ $r = passed ] || grep -E "FAIL|skip|error" "$tl" | head -20 | tee -a "$log"
        test_json+="${test_json:+, }{\"name\": \"$t\", \"result\": \"$r\", \"counts\": \"\"}"
    done
else
    for t in "${gpu_scripts[@]}"; do
        say "$t: not run (the nvcc-only build has no qlora binary; bundle: ${bundle_note:-none})"
        test_json+="${test_json:+, }{\"name\": \"$t\", \"result\": \"not built\", \"counts\": \"\"}"
    done
fi
unit_tests=skipped
if [ "${QL_GPU_RUN_CPU:-0}" = 1 ] && [ $mode = full ]; then
    if (cd "$build" && timeout 240 ctest -L unit -j"$jobs" --output-on-failure) >"$build/ctest-unit.log" 2>&1; then
        unit_tests=passed
    else
        unit_tests=failed
        status=1
    fi
    say "cpu unit tests: $unit_tests"
fi

# --- benchmarks ----------------------------------------------------------------------------
slug=$(echo "$gpu_name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | sed 's/-\+/-/g; s/-$//')
quick=()
[ "${QL_GPU_QUICK:-0}" = 1 ] && quick=(--quick)
tiny=()
[ "$emu" = 1 ] && tiny=(--tiny)
declare -A bench_json
train_layers=${QL_GPU_TRAIN_LAYERS:-16}
torch_json=""
# The same training step through transformers + PEFT, where they import.
torch_compare() {
    local tj=$results/gpu-$slug-$stamp-torch_train.json tlayers=$train_layers lim
    [ "${QL_GPU_QUICK:-0}" = 1 ] && tlayers=4
    lim=$(($(left) - 60))
    [ $lim -gt 150 ] && lim=150
    if [ $lim -lt 45 ]; then
        say "torch_cuda_train: skipped (the 8-minute budget is spent)"
        return
    fi
    # bitsandbytes carried by scripts/gpu_bundle.sh: PEFT + bitsandbytes QLoRA.
    [ -d .gpubundle/py/bitsandbytes ] && export PYTHONPATH=$root/.gpubundle/py${PYTHONPATH:+:$PYTHONPATH}
    timeout $lim python3 bench/torch_cuda_train.py --layers "$tlayers" --json "$tj" \
        --qlora-json "${bench_json[bench_cuda_train]}" >"$build/torch_cuda_train.log" 2>&1
    local rc=$?
    case $rc in
    0) torch_json=$tj; say "torch_cuda_train: done" ;;
    77) say "torch_cuda_train: skipped ($(grep -m1 skip "$build/torch_cuda_train.log"))" ;;
    *) say "torch_cuda_train failed (exit $rc; see $build/torch_cuda_train.log)"
       tail -3 "$build/torch_cuda_train.log" | tee -a "$log" ;;
    esac
}
# The training benchmark first (the issue's measure), then the PyTorch
# comparison, then the kernel benchmarks with what is left of the budget.
for b in "${benches[@]}"; do
    j=$results/gpu-$slug-$stamp-${b#bench_cuda_}.json
    s0=$(date +%s)
    args=(--json "$j" "${tiny[@]}")
    [ "$b" != bench_cuda_dequant ] && args+=("${quick[@]}")
    lim=$(($(left) - 10))
    [ $lim -gt 200 ] && lim=200
    if [ "$b" = bench_cuda_train ]; then
        lim=$(($(left) - 100))
        [ $lim -gt 200 ] && lim=200
        # --budget bounds the timed steps; the four loads come on top.
        args+=(--layers "$train_layers" --budget $((lim - 80)))
    fi
    if [ "$lim" -lt 40 ]; then
        say "$b: skipped (the 8-minute budget is spent)"
        status=1
        continue
    fi
    if timeout "$lim" "$bindir/$b" "${args[@]}" >"$build/$b.log" 2>&1 && [ -s "$j" ]; then
        bench_json[$b]=$j
        say "$b: done in $(($(date +%s) - s0)) s"
    else
        say "$b failed (see $build/$b.log)"
        tail -5 "$build/$b.log" | tee -a "$log"
        status=1
    fi
    if [ "$b" = bench_cuda_train ] && [ "${QL_GPU_TORCH:-1}" != 0 ] && [ -n "${bench_json[$b]:-}" ]; then
        torch_compare
    fi
done
if [ "${QL_GPU_RUN_CPU:-0}" = 1 ] && [ $mode = full ]; then
    timeout 180 "$build/bench_cpu" --json "$results/cpu-$(hostname)-$stamp.json" >"$build/bench_cpu.log" 2>&1 ||
        say "bench_cpu failed"
fi

# --- results ---------------------------------------------------------------------------------
summary=$results/gpu-run-$slug-$stamp.json
{
    echo "{"
    echo "  \"date\": \"$stamp\","
    echo "  \"gpu\": \"$gpu_name\","
    echo "  \"driver\": \"$driver\","
    echo "  \"emulated\": $([ "$emu" = 1 ] && echo true || echo false),"
    echo "  \"git_commit\": \"$(git rev-parse HEAD 2>/dev/null || echo "${QL_GIT_COMMIT:-unknown}")\","
    echo "  \"git_dirty\": $(git diff --quiet HEAD -- kernels tests/gpu bench 2>/dev/null && echo false || echo true),"
    echo "  \"build\": \"$mode\","
    echo "  \"qlora_bundle\": \"${bundle_note:-not used}\","
    echo "  \"build_seconds\": $tbuild,"
    echo "  \"total_seconds\": $(($(date +%s) - t0)),"
    echo "  \"gpu_tests\": [$test_json],"
    echo "  \"cpu_unit_tests\": \"$unit_tests\","
    echo -n "  \"torch_train\": "
    if [ -n "$torch_json" ]; then sed 's/^/  /' "$torch_json" | sed '1s/^  //' | sed '$ s/$/,/'; else echo "null,"; fi
    n=0
    for b in "${benches[@]}"; do
        n=$((n + 1))
        sep=","
        [ $n = ${#benches[@]} ] && sep=""
        echo -n "  \"${b#bench_}\": "
        if [ -n "${bench_json[$b]:-}" ]; then
            sed 's/^/  /' "${bench_json[$b]}" | sed '1s/^  //' | sed "\$ s/\$/$sep/"
        else
            echo "null$sep"
        fi
    done
    echo "}"
} >"$summary"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$summary" "$OUT/"
    for b in "${benches[@]}"; do [ -n "${bench_json[$b]:-}" ] && cp "${bench_json[$b]}" "$OUT/"; done
    [ -n "$torch_json" ] && cp "$torch_json" "$OUT/"
fi

echo
echo "== summary: $gpu_name, driver $driver, $stamp, build $mode ${tbuild} s, total $(($(date +%s) - t0)) s"
for t in "${run_tests[@]}"; do
    printf "%-24s %s\n" "$t" "$({ grep -E "^[0-9]+ passed, [0-9]+ failed" "$build/$t.log" ||
        tail -1 "$build/$t.log"; } 2>/dev/null | tail -1)"
done
for t in "${gpu_scripts[@]}"; do
    [ -s "$build/$t.log" ] && printf "%-24s %s\n" "$t" "$(tail -1 "$build/$t.log")"
done
for b in "${benches[@]}"; do
    [ -s "$build/$b.log" ] || { echo "-- $b: not run"; continue; }
    [ -n "${bench_json[$b]:-}" ] || { echo "-- $b: failed (see $build/$b.log)"; continue; }
    echo "-- $b"
    case $b in
    bench_cuda_dequant) sed -n '/^shape/,$p' "$build/$b.log" | grep -v '^wrote' ;;
    bench_cuda_q4gemm) sed -n '/^shape/,$p' "$build/$b.log" | grep -v '^wrote' ;;
    bench_cuda_lora) sed -n '/^product/,$p' "$build/$b.log" | grep -v '^wrote' ;;
    bench_cuda_attn) grep -E "^cuBLASLt" "$build/$b.log"; sed -n '/^ *batch/,$p' "$build/$b.log" | grep -v '^wrote' ;;
    bench_cuda_train) grep -E "^(device|model):" "$build/$b.log"; sed -n '/^checkpointing/,$p' "$build/$b.log" | grep -v '^wrote' ;;
    esac
done
[ -s "$build/torch_cuda_train.log" ] && { echo "-- torch_cuda_train"; grep -E "^(versions|torch|qlora|skip)" "$build/torch_cuda_train.log"; }
echo "results: $summary${OUT:+ (copied to $OUT)}"
exit $status
