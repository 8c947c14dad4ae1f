#!/usr/bin/env bash
# The memory side of `qlora train` on the CPU:
#   - --dry-run on the tiny random Llama prints every line of the estimate
#     (4-bit weights, LoRA, AdamW, activations with and without
#     checkpointing, logits, workspace, total, limit), exits 0 and writes no
#     run (no metrics, no adapter);
#   - --dry-run needs the configuration only: a directory holding nothing but
#     Llama-3-8B's config.json is estimated (at 2048 tokens, with the same
#     4-bit bytes as bitsandbytes' storage counted by hand in Python);
#   - a too-small --memory-limit (or train.memory_limit_gb): exit 1, the
#     message names train.micro_batch / data.max_seq_len /
#     train.activation_checkpointing, for the dry run and for a real run,
#     which stops before the model loads and writes no adapter;
#   - a real run's metrics.jsonl has mem_peak_bytes (the CPU backend's
#     counted peak: at least the estimate's model part, at most its total)
#     and mem_rss_peak_bytes on every line.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || exit 1
"$PY" -c '
import json
with open("train.jsonl", "w") as f:
    for i in range(16):
        f.write(json.dumps({"input_ids": [(i + 3 * t) % 97 for t in range(20)]}) + "\n")
'
cat >cfg.yaml <<'EOF'
model: model
output_dir: run
backend: cpu
data:
  train: train.jsonl
  max_seq_len: 64
train:
  steps: 3
  global_batch: 4
  micro_batch: 2
EOF

"$QLORA" train cfg.yaml --dry-run >dry.out 2>dry.err
rc=$?
[ $rc = 0 ] || { bad "--dry-run exited $rc"; cat dry.err; }
for line in "base linears, 4-bit" "LoRA parameters" "LoRA gradients" "AdamW m and v" \
    "activations kept for the backward" "without checkpointing" "logits chunk" \
    "backend workspace" "total" "limit"; do
    grep -q "$line" dry.out || bad "--dry-run output lacks '$line'"
done
grep -q "^dry run: backend cpu, 1 rank" dry.out || bad "--dry-run does not end with its summary"
[ -e run/metrics.jsonl ] || [ -e run/adapter ] && bad "--dry-run wrote a run"

# The configuration alone.
mkdir l3
cat >l3/config.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
 "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
 "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
 "rope_theta": 500000.0, "tie_word_embeddings": false, "hidden_act": "silu"}
EOF
"$QLORA" train cfg.yaml --model=l3 --backend=cuda --train.micro_batch=1 --data.max_seq_len=2048 \
    --memory-limit=80 --dry-run >l3.out 2>l3.err
rc=$?
[ $rc = 0 ] || { bad "8B config-only --dry-run exited $rc"; cat l3.err; }
"$PY" - l3.out <<'EOF' || bad "8B 4-bit weights"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"base linears, 4-bit \+ double-quant absmax +([0-9.]+) GiB", text)
# bitsandbytes NF4 + double quant: 0.5 byte per weight, 1 byte of absmax per 64
# weights, a float32 per 256 blocks.
w = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
want = (w / 2 + w / 64 + 4 * w / 64 / 256) / 2**30
if not m or abs(float(m.group(1)) - want) > 0.0005:
    print(f"printed {m and m.group(1)} GiB, by hand {want:.4f}"); sys.exit(1)
if "GPU, micro-batch 1 x 2048 tokens, activations in bf16" not in text:
    print("not estimated for the GPU at 1 x 2048"); sys.exit(1)
EOF

# A mistyped 4-bit path variable is refused by name, not taken as the default.
QL_CUDA_Q4_PATH=fusd "$QLORA" train cfg.yaml --model=l3 --backend=cuda --memory-limit=80 \
    --dry-run >env.out 2>env.err
rc=$?
[ $rc != 0 ] || bad "QL_CUDA_Q4_PATH=fusd: exit 0"
grep -q 'QL_CUDA_Q4_PATH="fusd": expected fused, dequant or auto' env.err ||
    { bad "QL_CUDA_Q4_PATH=fusd: no message naming it"; cat env.err; }
QL_CUDA_Q4_FUSED_MAX_T=lots "$QLORA" train cfg.yaml --model=l3 --backend=cuda --memory-limit=80 \
    --dry-run >env.out 2>env.err
[ $? != 0 ] && grep -q 'QL_CUDA_Q4_FUSED_MAX_T="lots"' env.err ||
    { bad "QL_CUDA_Q4_FUSED_MAX_T=lots: not refused by name"; cat env.err; }

# quant.type none: the linears in float32 on the CPU, in bf16 on a GPU with
# the LoRA padding: at Llama-3-8B's shapes and r <= 16, 32 layers of
# (4112² + 1040·4112)·2 + 14352·4112·3 = 219,416,320 elements, 2 bytes
# each: 14,042,644,480 bytes = 13.078 GiB (by hand).
"$QLORA" train cfg.yaml --dry-run --quant.type=none >none.out 2>none.err || bad "--quant.type=none --dry-run: $(cat none.err)"
grep -q "base linears, float32 (quant.type none)" none.out || bad "--dry-run, quant none: no float32 row: $(cat none.out)"
"$QLORA" train cfg.yaml --model=l3 --backend=cuda --memory-limit=80 --train.micro_batch=1 \
    --data.max_seq_len=2048 --quant.type=none --dry-run >nc.out 2>nc.err || bad "--quant.type=none on cuda: $(cat nc.err)"
grep -q "base linears, bf16 (quant.type none) *13.078 GiB" nc.out ||
    bad "--quant.type=none on cuda, Llama-3-8B shapes: not 13.078 GiB of bf16 linears: $(grep 'base linears' nc.out)"

# Too small: the dry run and the real run.
"$QLORA" train cfg.yaml --dry-run --memory-limit=0.0012 >small.out 2>small.err
rc=$?
[ $rc = 1 ] || bad "--dry-run --memory-limit=0.0012: exit $rc, want 1"
grep -q "does not fit\|DOES NOT FIT" small.out || bad "the dry run's table does not say it does not fit"
grep -q "train.memory_limit_gb = 0.0012" small.err || bad "the limit is not named: $(cat small.err)"
grep -Eq "train.micro_batch=|data.max_seq_len=|train.activation_checkpointing=true" small.err ||
    bad "no knob named: $(cat small.err)"
"$QLORA" train cfg.yaml --output_dir=small --train.memory_limit_gb=0.0012 >run.out 2>run.err
rc=$?
[ $rc = 1 ] || bad "a real run over the limit: exit $rc, want 1"
grep -q "memory: the estimate for one rank" run.err || bad "no memory error: $(tail -2 run.err)"
grep -q "^model:" run.err && bad "the model was loaded before the memory check"
[ -e small/adapter ] && bad "an adapter was written"
"$QLORA" train cfg.yaml --memory-limit >/dev/null 2>flag.err
[ $? = 2 ] || bad "--memory-limit without a value is not a usage error"

# A real run reports its memory.
"$QLORA" train cfg.yaml >train.out 2>train.err || { bad "qlora train exited $?"; tail -5 train.err; }
"$PY" - run/metrics.jsonl dry.out <<'EOF' || bad "memory fields in metrics.jsonl"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = len(rows) == 3
for r in rows:
    for k in ("mem_peak_bytes", "mem_rss_peak_bytes"):
        if not isinstance(r.get(k), int) or r[k] <= 0:
            print(f"step {r.get('step')}: {k} = {r.get(k)!r}"); ok = False
    if "mem_device_used_bytes" in r:
        print("a CPU run reports device memory"); ok = False
# The dry run's total (KiB or MiB) bounds the counted peak from above.
m = re.search(r"^  total +([0-9.]+) (KiB|MiB|GiB)", open(sys.argv[2]).read(), re.M)
total = float(m.group(1)) * {"KiB": 1024, "MiB": 2**20, "GiB": 2**30}[m.group(2)]
peak = max(r["mem_peak_bytes"] for r in rows)
# The run's rows are the data's longest (20 tokens), not max_seq_len (64): less.
if not (0 < peak <= total * 1.05):
    print(f"counted peak {peak} vs dry-run total {total:.0f}"); ok = False
sys.exit(0 if ok else 1)
EOF

[ $fails = 0 ] && echo "all passed"
exit $((fails > 0))
