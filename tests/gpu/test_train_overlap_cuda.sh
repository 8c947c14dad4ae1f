#!/usr/bin/env bash
# The gradient reduction overlapped with the backward pass (train/optim.h,
# ql_optim_grads_ready) gives the bits of the reduction after it:
# `qlora train --backend=cuda` on 2 ranks over the NCCL device communicator,
# once with QL_OVERLAP=0 and once with a bucket per layer
# (QL_OVERLAP_BUCKET_BYTES=1, so every layer's range is reduced on its own as
# soon as its backward is queued): the same adapter bytes, the same losses
# and gradient norms. Gradient accumulation (2 micro-batches per rank) checks
# that only the last micro-batch starts the reduction. The same runs check
# the all-gather's overlap with the next step's forward pass
# (ql_optim_params_needed: 64 parts, joined layer by layer): on the emulator
# a collective's result lands only when the program waits for it, so a
# missing or short wait leaves stale parameters and a different adapter,
# and a write to a collective's input or output before the wait that
# orders it stops the run (kernels/cuda/emu/README.md, "Inputs and outputs
# are watched").
# Runs on the CUDA emulator (kernels/cuda/emu) or where nvidia-smi lists at
# least 2 GPUs; exit 77 elsewhere, or without mpirun or a Python with numpy
# and safetensors.
set -u
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
. "${QL_SOURCE_DIR:?}/tests/gpu/tiny_train.sh"
tiny_train_files || exit 1

two_gpus_or_skip

A=(--backend=cuda --train.steps=4 --lora.dropout=0 --train.global_batch=8 --train.micro_batch=2)
run() { # name, then VAR=value settings for both ranks
    local name=$1
    shift
    local xs=()
    for kv in "$@"; do xs+=(-x "$kv"); done
    timeout 300 mpirun --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES -x OMP_NUM_THREADS \
        -x OMP_WAIT_POLICY "${xs[@]}" -np 2 "$QLORA" train cfg.yaml --output_dir="$name" "${A[@]}" \
        >"$name.out" 2>"$name.err" || {
        bad "$name exited $?"
        grep -m3 "CUDA emulator" "$name.err" # a race report, before MPI's backtrace
        tail -20 "$name.err"
    }
}
run after QL_OVERLAP=0
run overlapped QL_OVERLAP=1 QL_OVERLAP_BUCKET_BYTES=1
cmp -s after/adapter/adapter_model.safetensors overlapped/adapter/adapter_model.safetensors ||
    bad "the overlapped reduction wrote a different adapter"
"$PY" - after/metrics.jsonl overlapped/metrics.jsonl <<'PYEOF' || bad "metrics differ"
import json, sys
def col(p):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, open(p)) if "loss" in r]
a, b = col(sys.argv[1]), col(sys.argv[2])
if len(a) != 4 or a != b:
    print(f"{len(a)} vs {len(b)} steps; first difference:",
          next(((x, y) for x, y in zip(a, b) if x != y), None))
    sys.exit(1)
PYEOF
# A rank failing with parts in flight (the fault point follows the step's
# backward pass, which started its reduce-scatter parts): every rank ends
# with the agreed error, having waited for them before freeing the buffers
# they use (no hang, no crash).
timeout 300 mpirun --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES -x OMP_NUM_THREADS \
    -x OMP_WAIT_POLICY -x QL_OVERLAP=1 -x QL_OVERLAP_BUCKET_BYTES=1 \
    -x QL_FAULT_INJECT="rank=1,step=3,kind=error" -np 2 "$QLORA" train cfg.yaml \
    --output_dir=fault "${A[@]}" >fault.out 2>fault.err
rc=$?
[ $rc = 1 ] || { bad "a rank's fault with overlapped parts in flight: exit $rc, want 1"; tail -5 fault.err; }
grep -q "injected fault (QL_FAULT_INJECT): error at step 3" fault.err ||
    { bad "the injected fault is not reported"; tail -5 fault.err; }
[ $fails = 0 ] && echo "all passed"
exit $((fails > 0))
