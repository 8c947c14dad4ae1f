#!/usr/bin/env bash
# `qlora train --backend=cuda` on 2 ranks under mpirun, the gradients going
# through the NCCL device communicator (dist/comm_nccl.c), on the tiny model
# and records of test_train_qlora_cuda.sh (tests/gpu/tiny_train.sh), without
# dropout (each rank draws its own masks):
#   - rank 0 says the gradients go through NCCL over 2 ranks;
#   - against the 1-rank cuda run of the same global batch: the same steps,
#     every loss within 1e-4 relative (the fp32 gradients are summed in
#     another order: per rank, then across ranks);
#   - the 2-rank run twice: the same adapter bytes and the same losses;
#   - on the emulator, rank 1 out of device memory after the start-up pass
#     (its first cudaMalloc after it fails: QL_EMU_FAIL_MALLOC): both ranks
#     stop, with the failing rank's message, rank 0's hint naming the
#     settings and no step, checkpoint or adapter written.
# Runs on the CUDA emulator (kernels/cuda/emu: each rank an MPI process with
# its own emulated device, NCCL over MPI) or on a machine whose nvidia-smi
# lists at least 2 GPUs; exit 77 elsewhere, or without mpirun or a Python
# with numpy and safetensors.
set -u
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
. "${QL_SOURCE_DIR:?}/tests/gpu/tiny_train.sh"
tiny_train_files || exit 1

two_gpus_or_skip
MPI=(mpirun --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES -x OMP_NUM_THREADS
    -x OMP_WAIT_POLICY -np 2)

A=(--backend=cuda --train.steps=6 --lora.dropout=0)
"$QLORA" train cfg.yaml --output_dir=one "${A[@]}" >one.out 2>one.err || {
    bad "1-rank run exited $?"
    tail -5 one.err
}
for run in two again; do
    timeout 300 "${MPI[@]}" "$QLORA" train cfg.yaml --output_dir=$run "${A[@]}" >$run.out 2>$run.err || {
        bad "2-rank run ($run) exited $?"
        tail -20 $run.err
    }
done
grep -q "^gradients: NCCL over 2 ranks" two.err ||
    bad "the 2-rank run does not say it reduces over NCCL: $(grep -E 'gradients|note' two.err)"

"$PY" - one/metrics.jsonl two/metrics.jsonl <<'EOF' || bad "1 rank vs 2 ranks"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
ok = len(a) == len(b) == 6
if not ok:
    print(f"{len(a)} and {len(b)} steps, want 6")
worst = 0.0
for x, y in zip(a, b):
    d = abs(x["loss"] - y["loss"]) / abs(x["loss"])
    worst = max(worst, d)
    if x["step"] != y["step"] or d > 1e-4:
        print(f"step {x['step']}/{y['step']}: loss 1 rank {x['loss']:.8f}, 2 ranks {y['loss']:.8f}")
        ok = False
    if y.get("world") != 2:
        print(f"step {y['step']}: world {y.get('world')}, want 2"); ok = False
print(f"1 vs 2 ranks: worst relative loss difference {worst:.2e} over {len(b)} steps")
sys.exit(0 if ok else 1)
EOF
cmp -s two/adapter/adapter_model.safetensors again/adapter/adapter_model.safetensors ||
    bad "two 2-rank runs wrote different adapters"
"$PY" - two/metrics.jsonl again/metrics.jsonl <<'EOF' || bad "two 2-rank runs differ"
import json, sys
col = lambda p: [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, open(p))]
a, b = col(sys.argv[1]), col(sys.argv[2])
if a != b:
    print("first difference:", next(((x, y) for x, y in zip(a, b) if x != y), (len(a), len(b))))
    sys.exit(1)
EOF

# Rank 1 out of memory after the pass at the largest micro-batch. Its
# allocations up to then are counted in a run that stops it right there
# (QL_FAULT_INJECT at "load", which follows the pass); the next one fails.
if grep -q "CUDA emulator" dry.out; then
    MPMD=(mpirun --allow-run-as-root --oversubscribe -x QL_EMU_DEVICES -x OMP_NUM_THREADS
        -x OMP_WAIT_POLICY)
    timeout 300 "${MPMD[@]}" -np 1 "$QLORA" train cfg.yaml --output_dir=count "${A[@]}" : \
        -np 1 env QL_EMU_TRACE_MALLOC=1 QL_FAULT_INJECT=rank=1,kind=error,where=load \
        "$QLORA" train cfg.yaml --output_dir=count "${A[@]}" >count.out 2>count.err
    n=$(grep -c "^emulator: cudaMalloc #" count.err)
    grep -q "injected fault (QL_FAULT_INJECT): error at load" count.err && [ "$n" -gt 0 ] ||
        bad "the counting run did not stop rank 1 at load: $(tail -3 count.err)"
    timeout 300 "${MPMD[@]}" -np 1 "$QLORA" train cfg.yaml --output_dir=oom "${A[@]}" : \
        -np 1 env QL_EMU_FAIL_MALLOC=$((n + 1)) "$QLORA" train cfg.yaml --output_dir=oom "${A[@]}" \
        >oom.out 2>oom.err
    rc=$?
    [ $rc = 1 ] || bad "rank 1 out of memory after the pass: exit $rc, want 1 (124: a rank hung)"
    grep -q "rank 1.*out of GPU memory: [0-9]* bytes" oom.err ||
        bad "rank 1 out of memory after the pass: no message from it: $(grep -m3 -i error oom.err)"
    grep -q "^hint: a step needs less GPU memory with a smaller train.micro_batch" oom.err ||
        bad "rank 1 out of memory after the pass: rank 0 gives no hint: $(tail -3 oom.err)"
    # The run directory is set up by then (its lock, an empty metrics file);
    # no adapter, checkpoint or step may be there.
    [ -e oom/adapter ] || [ -n "$(ls oom/checkpoints 2>/dev/null)" ] || [ -s oom/metrics.jsonl ] &&
        bad "rank 1 out of memory after the pass: something was written: $(ls -R oom)"
    echo "rank 1 out of memory at its allocation $((n + 1)) (after the pass): exit $rc"
fi

[ $fails = 0 ] && echo "all passed"
exit $((fails > 0))
