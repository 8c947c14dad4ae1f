#!/usr/bin/env bash
# `qlora train` on the GPU end to end, on the tiny random Llama of
# tests/fixtures/make_tiny_hf_model.py (the records of test_train_tiny.sh;
# tests/gpu/tiny_train.sh writes them):
#   - backend auto picks cuda here, and --dry-run estimates against the GPU;
#   - 20 steps on cuda and on cpu from the same config: every step's loss
#     within 3e-2 relative (bf16 activations on the GPU), falling on both;
#     metrics.jsonl on cuda reports mem_peak_bytes and mem_device_used_bytes;
#   - resume, bit for bit: a run preempted by SIGUSR1 (checkpoint at the step
#     boundary, exit 75) and started again ends with the same adapter bytes
#     (cmp) and the same loss column as a run that was never interrupted;
#   - linears kept dequantized (quant.dequantized_layers) give the same
#     adapter bytes as dequantizing at every call, and so does checkpointing
#     with a layer's linears dequantized once for both of its passes;
#   - quant.type none (linears in bf16, not 4-bit): the dry run's row, and
#     4 steps within 3e-2 of the CPU's float32 base;
#   - out of device memory (the emulator's QL_EMU_DEVICE_GB) in the pass at
#     the largest micro-batch before the first step: the figures and the
#     settings to change, nothing written;
#   - a memory limit below the estimate stops before the model loads, naming
#     train.micro_batch / data.max_seq_len / checkpointing.
# QL_GPU_RESUME_STEPS (default 300) sets the resume runs' length; the CUDA
# emulator build (kernels/cuda/emu) runs 30, a checkpoint every 5.
# Exit 77 when this machine has no GPU that CUDA can use (or no Python with
# numpy and safetensors to write the model).
set -u
. "${QL_SOURCE_DIR:?}/tests/gpu/tiny_train.sh"

tiny_train_files || exit 1

"$QLORA" train cfg.yaml --dry-run >dry.out 2>dry.err
rc=$?
if ! grep -q "^dry run: backend cuda" dry.out; then
    echo "skip: the dry run did not pick backend cuda (no GPU visible to CUDA, or it failed; its last lines:)"
    cat dry.out dry.err | tail -3
    exit 77
fi
[ $rc = 0 ] || bad "--dry-run exited $rc"
grep -q "the memory of GPU 0" dry.out || bad "--dry-run does not check against the GPU's memory"
grep -q "activations kept for the backward" dry.out || bad "--dry-run lacks the activations"

# --- cuda against cpu --------------------------------------------------------------
"$QLORA" train cfg.yaml --output_dir=gpu --backend=cuda >gpu.out 2>gpu.err || {
    bad "cuda run exited $?"
    tail -20 gpu.err
}
grep -q "^4-bit layers: fused kernel below ${QL_CUDA_Q4_FUSED_MAX_T:-512} tokens a call" gpu.err ||
    [ -n "${QL_CUDA_Q4_PATH:-}" ] || bad "the cuda run does not say how its 4-bit layers run"
"$QLORA" train cfg.yaml --output_dir=cpu --backend=cpu >cpu.out 2>cpu.err || bad "cpu run exited $?"
"$PY" - gpu/metrics.jsonl cpu/metrics.jsonl <<'EOF' || bad "cuda vs cpu losses"
import json, sys
g = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
ok = len(g) == len(c) == 20
worst = 0.0
for x, y in zip(g, c):
    d = abs(x["loss"] - y["loss"]) / abs(y["loss"])
    worst = max(worst, d)
    if d > 3e-2:
        print(f"step {x['step']}: loss cuda {x['loss']:.6f} cpu {y['loss']:.6f} ({d:.2e})"); ok = False
print(f"cuda vs cpu: worst relative loss difference {worst:.2e} over {len(g)} steps")
if not (g[-1]["loss"] < g[0]["loss"] and c[-1]["loss"] < c[0]["loss"]):
    print("the loss did not fall"); ok = False
for k in ("mem_peak_bytes", "mem_device_used_bytes", "mem_rss_peak_bytes"):
    if not all(isinstance(x.get(k), int) and x[k] > 0 for x in g):
        print(f"cuda metrics lack {k}"); ok = False
sys.exit(0 if ok else 1)
EOF
grep -q "loaded in .* s: reading" gpu.err || bad "no load timing on stderr"

# quant.type none: the linears held as stored (bf16 on the GPU, float32 on
# the CPU): the dry run counts them, and 4 steps follow the CPU's losses.
"$QLORA" train cfg.yaml --quant.type=none --dry-run >ndry.out 2>&1 || bad "quant none --dry-run exited $?"
grep -q "base linears, bf16 (quant.type none)" ndry.out || bad "quant none --dry-run: $(grep 'base linears' ndry.out)"
for be in cuda cpu; do
    "$QLORA" train cfg.yaml --quant.type=none --train.steps=4 --output_dir=none_$be --backend=$be \
        >none_$be.out 2>none_$be.err || { bad "quant none on $be exited $?"; tail -5 none_$be.err; }
done
grep -q "linears as stored, in bf16, not quantized" none_cuda.err || bad "quant none on cuda: $(grep parameters none_cuda.err)"
"$PY" - none_cuda/metrics.jsonl none_cpu/metrics.jsonl gpu/metrics.jsonl <<'EOF' || bad "quant none: cuda vs cpu losses"
import json, sys
g, c, q = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:4])
worst = max(abs(x - y) / abs(y) for x, y in zip(g, c))
print(f"quant none, cuda vs cpu: worst relative loss difference {worst:.2e} over {len(g)} steps")
sys.exit(0 if len(g) == len(c) == 4 and worst <= 3e-2 and g[0] != q[0] else 1)
EOF

# Products cuBLASLt has no algorithm for run on the tiled kernel and the run
# says so at its end. On the emulator, a cuBLASLt whose kernels need 512-byte
# alignment has none for any of them. (On a GPU, this model's odd sizes,
# vocab 97, may need it too: gpu.err's last lines say.)
if grep -q "emulator" dry.out; then
    QL_EMU_CUBLASLT_MIN_ALIGN=512 "$QLORA" train cfg.yaml --output_dir=gpu_fb --backend=cuda \
        --train.steps=2 >gpu_fb.out 2>gpu_fb.err || bad "the run without cuBLASLt algorithms exited $?"
    grep -q "^note: [1-9][0-9]* matrix products ran on qlora's plain tiled kernel.*the first: \[" gpu_fb.err ||
        bad "a run whose products took the tiled kernel does not say so"
    ! grep -q "matrix products ran on" gpu.err || bad "the emulated cuBLASLt left products to the tiled kernel"

    # A device too small for the run (30 MB; the limit raised past the
    # start-up check's estimate): the pass at the largest micro-batch runs
    # out of memory before the first step, the error gives the figures and
    # the settings to change, and no adapter or checkpoint is written.
    QL_EMU_DEVICE_GB=0.03 "$QLORA" train cfg.yaml --output_dir=oom --backend=cuda \
        --memory-limit=2 >oom.out 2>oom.err
    rc=$?
    [ $rc = 1 ] || bad "out of device memory: exit $rc, want 1"
    grep -q "^qlora: error: a pass at the largest micro-batch (2 x [0-9]* tokens): out of GPU memory: [0-9]* bytes ([0-9.]* MiB) asked for while qlora held" oom.err ||
        bad "out of device memory: the error lacks the figures: $(tail -2 oom.err)"
    grep -q "^hint: a step needs less GPU memory with a smaller train.micro_batch (a rank runs 2 rows at a time now)" oom.err ||
        bad "out of device memory: no hint names the settings: $(tail -2 oom.err)"
    [ -e oom/adapter ] || [ -e oom/checkpoints ] || [ -e oom/metrics.jsonl ] &&
        bad "out of device memory: something was written: $(ls oom)"
fi
grep -q "^memory: a pass at the largest micro-batch (2 x [0-9]* tokens) took" gpu.err ||
    bad "the cuda run does not report its pass at the largest micro-batch"

# The dequantize + cuBLASLt path through the trainer (the rule takes it from
# QL_CUDA_Q4_FUSED_MAX_T tokens a call; 1 forces it here): 5 steps against
# a 5-step cpu run's (the schedule depends on the step count).
"$QLORA" train cfg.yaml --output_dir=cpu5 --backend=cpu --train.steps=5 >cpu5.out 2>cpu5.err ||
    bad "5-step cpu run exited $?"
QL_CUDA_Q4_FUSED_MAX_T=1 "$QLORA" train cfg.yaml --output_dir=gpu_dq --backend=cuda \
    --train.steps=5 >gpu_dq.out 2>gpu_dq.err || { bad "dequant-path run exited $?"; tail -5 gpu_dq.err; }
grep -q "^4-bit layers: fused kernel below 1 tokens a call" gpu_dq.err ||
    [ -n "${QL_CUDA_Q4_PATH:-}" ] || bad "QL_CUDA_Q4_FUSED_MAX_T=1 was not taken"
"$PY" - gpu_dq/metrics.jsonl cpu5/metrics.jsonl <<'EOF' || bad "dequant path vs cpu losses"
import json, sys
g = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(g, c))
print(f"dequant path vs cpu: worst relative loss difference {worst:.2e} over {len(g)} steps")
sys.exit(0 if len(g) == len(c) == 5 and worst <= 3e-2 else 1)
EOF

# Linears kept dequantized (quant.dequantized_layers) change memory and speed,
# not results: the same 5 dequant-path steps with layer 0's linears kept, then
# every layer's, end with the adapter bytes of the run that dequantizes at
# every call; the load summary and --dry-run say what the copies hold. The
# CPU backends say they keep none.
for kept in 1 100; do
    QL_CUDA_Q4_FUSED_MAX_T=1 "$QLORA" train cfg.yaml --output_dir=gpu_dq$kept --backend=cuda \
        --train.steps=5 --quant.dequantized_layers=$kept >gpu_dq$kept.out 2>gpu_dq$kept.err ||
        { bad "run with $kept layers kept dequantized exited $?"; tail -5 gpu_dq$kept.err; }
    cmp -s gpu_dq/adapter/adapter_model.safetensors gpu_dq$kept/adapter/adapter_model.safetensors ||
        bad "$kept layers kept dequantized: the adapter differs from the run that dequantizes each call"
    grep -q "^  kept dequantized: the linears of $([ $kept = 1 ] && echo 1 || echo 2) layers, " \
        gpu_dq$kept.err || bad "the load summary does not say what $kept layers kept dequantized hold"
done
# Checkpointing recomputes each layer's forward pass with a layer's linears
# dequantized once and lent to both of its passes (model/llama_step.c): the
# same 5 dequant-path steps end with the adapter bytes of the run without
# checkpointing, and the load summary and --dry-run count the lent copies.
QL_CUDA_Q4_FUSED_MAX_T=1 "$QLORA" train cfg.yaml --output_dir=gpu_dqck --backend=cuda \
    --train.steps=5 --train.activation_checkpointing=true >gpu_dqck.out 2>gpu_dqck.err ||
    { bad "checkpointed dequant-path run exited $?"; tail -5 gpu_dqck.err; }
cmp -s gpu_dq/adapter/adapter_model.safetensors gpu_dqck/adapter/adapter_model.safetensors ||
    bad "checkpointing (with lent copies): the adapter differs from the run without it"
grep -q "^  dequantized while a layer runs (checkpointing): one layer's linears, " gpu_dqck.err ||
    bad "the load summary does not count the lent copies"
QL_CUDA_Q4_FUSED_MAX_T=1 "$QLORA" train cfg.yaml --dry-run --backend=cuda \
    --train.activation_checkpointing=true >dry_ck.out 2>&1 || bad "--dry-run with checkpointing exited $?"
grep -q "one layer's linears dequantized while it runs" dry_ck.out ||
    bad "--dry-run does not count the lent copies: $(cat dry_ck.out)"
"$QLORA" train cfg.yaml --dry-run --quant.dequantized_layers=1 >dry_k.out 2>&1 ||
    bad "--dry-run with a layer kept dequantized exited $?"
grep -q "base linears kept dequantized, bf16 .*quant.dequantized_layers: 1" dry_k.out ||
    bad "--dry-run does not count the dequantized copies: $(cat dry_k.out)"
"$QLORA" train cfg.yaml --output_dir=cpu_k --backend=cpu --train.steps=1 \
    --quant.dequantized_layers=1 >cpu_k.out 2>cpu_k.err || bad "cpu run with the key exited $?"
grep -q "^note: quant.dequantized_layers is for the cuda backend" cpu_k.err ||
    bad "the cpu backend does not say it ignores quant.dequantized_layers"

# --- resume bit for bit on the GPU ---------------------------------------------------
steps=${QL_GPU_RESUME_STEPS:-300}
R=(--backend=cuda --train.steps="$steps" --checkpoint.every_steps=$((steps / 6)) --checkpoint.keep_last=20)
"$QLORA" train cfg.yaml --output_dir=straight "${R[@]}" >straight.out 2>straight.err || bad "straight run exited $?"
"$QLORA" train cfg.yaml --output_dir=pre "${R[@]}" >pre.out 2>pre.err &
pid=$!
for _ in $(seq 600); do
    [ -f pre/metrics.jsonl ] && [ "$(wc -l <pre/metrics.jsonl)" -ge 7 ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
done
kill -USR1 $pid 2>/dev/null
wait $pid
rc=$?
done_at=$(wc -l <pre/metrics.jsonl 2>/dev/null || echo 0)
if [ $rc = 75 ]; then
    echo "preempted after step $done_at"
    "$QLORA" train cfg.yaml --output_dir=pre "${R[@]}" >>pre.out 2>>pre.err || bad "resumed run exited $?"
    grep -q "resum" pre.err || bad "the second run does not say it resumed"
else
    bad "SIGUSR1: exit $rc, want 75 (the run ended after $done_at steps)"
fi
cmp -s straight/adapter/adapter_model.safetensors pre/adapter/adapter_model.safetensors ||
    bad "resumed adapter differs from the uninterrupted run's"
"$PY" - straight/metrics.jsonl pre/metrics.jsonl <<'EOF' || bad "resumed metrics differ"
import json, sys
def col(p):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, open(p)) if "loss" in r]
a, b = col(sys.argv[1]), col(sys.argv[2])
if a != b:
    print(f"{len(a)} vs {len(b)} lines; first difference:",
          next(((x, y) for x, y in zip(a, b) if x != y), None)); sys.exit(1)
EOF

# --- a limit the run cannot meet -----------------------------------------------------
"$QLORA" train cfg.yaml --output_dir=small --backend=cuda --memory-limit=0.01 >small.out 2>small.err
rc=$?
[ $rc = 1 ] || bad "--memory-limit=0.01: exit $rc, want 1"
grep -q "train.memory_limit_gb = 0.01" small.err || bad "the limit is not named: $(cat small.err)"
grep -Eq "train.micro_batch|data.max_seq_len|train.activation_checkpointing" small.err ||
    bad "the error names no knob: $(cat small.err)"
grep -q "^model:" small.err && bad "the model was loaded before the memory check"
[ -d small/adapter ] && bad "an adapter was written"

[ $fails = 0 ] && echo "all passed"
exit $((fails > 0))
