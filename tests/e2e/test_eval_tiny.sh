#!/usr/bin/env bash
# `qlora eval` on a tiny random Llama:
#   - against tests/e2e/check_eval_numpy.py (numpy dequantization of a
#     bitsandbytes 4-bit directory + scripts/check_hf_forward.py's float32
#     forward + PEFT's merge W + s*B@A), base and with a trained adapter:
#     loss within 1e-5 relative, the same target count;
#   - the batch size does not change the result beyond float rounding;
#   - --max-seq-len truncates (and says so);
#   - bad flags exit 2; a missing adapter, an adapter of another model, and a
#     data file without targets exit 1 with messages naming them.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}" "${QL_BUILD_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 --seed 3 >/dev/null || exit 1
"$QLORA" quantize --model model --out q --no-double-quant --quiet >/dev/null || exit 1
"$PY" - <<'EOF' || exit 1
import json, random
r = random.Random(1)
with open("data.jsonl", "w") as f:
    for i in range(20):
        n = r.randint(3, 30)
        ids = [(r.randint(0, 96) if i % 4 == 0 else (7 * t + i) % 97) for t in range(n)]
        rec = {"input_ids": ids}
        if i % 5 == 1:
            rec["labels"] = [-100] * (n - 2) + ids[n - 2:]
        f.write(json.dumps(rec) + "\n")
EOF
cat >cfg.yaml <<'EOF'
model: q
output_dir: run
data:
  train: data.jsonl
lora:
  r: 4
  alpha: 16
  targets: [q_proj, v_proj, down_proj]
train:
  steps: 8
  global_batch: 4
  micro_batch: 2
  lr: 1.0e-2
EOF
"$QLORA" train cfg.yaml >/dev/null 2>train.err || { bad "qlora train"; cat train.err; }

compare() { # name qlora-json numpy-json
    "$PY" - "$1" "$2" "$3" <<'EOF'
import json, sys
name, q, n = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rel = abs(q["loss"] / n["loss"] - 1)
print(f"{name}: qlora {q['loss']:.9f}, numpy {n['loss']:.9f}, rel {rel:.1e}; tokens {q['tokens']} / {n['tokens']}")
sys.exit(0 if rel < 1e-5 and q["tokens"] == n["tokens"] else 1)
EOF
}
for ad in "" run/adapter; do
    name=${ad:-base}
    q=$("$QLORA" eval --model q --data data.jsonl ${ad:+--adapter $ad} --quiet | tail -n1)
    n=$("$PY" "$QL_SOURCE_DIR/tests/e2e/check_eval_numpy.py" q data.jsonl ${ad:+--adapter $ad})
    compare "$name" "$q" "$n" || bad "$name: qlora eval and numpy disagree"
done

# batch size: same tokens, same loss up to rounding
b1=$("$QLORA" eval --model q --data data.jsonl --adapter run --batch 1 --quiet | tail -n1)
b7=$("$QLORA" eval --model q --data data.jsonl --adapter run --batch=7 --quiet | tail -n1)
compare "batch 1 vs 7" "$b1" "$b7" || bad "--batch changes the result"

# truncation
"$QLORA" eval --model q --data data.jsonl --max-seq-len 10 --quiet >trunc.out || bad "--max-seq-len 10"
grep -Eq '^data        data.jsonl: [0-9]+ records( of 20 read)?, [0-9]+ truncated to 10 tokens' trunc.out ||
    bad "truncation not reported: $(sed -n 3p trunc.out)"

# bad command lines: exit 2
for args in "--data data.jsonl" "--model q" "--model q --data data.jsonl --batch 0" \
    "--model q --data data.jsonl --frobnicate" "--model q --data data.jsonl --max-seq-len x"; do
    "$QLORA" eval $args >/dev/null 2>err.txt
    [ $? = 2 ] || bad "'$args' is not a usage error"
done
grep -q "qlora eval: --max-seq-len must be an integer >= 2, not 'x'" err.txt || bad "message: $(cat err.txt)"

# bad inputs: exit 1 with a message
"$QLORA" eval --model q --data data.jsonl --adapter nowhere >/dev/null 2>err.txt
[ $? = 1 ] && grep -q "qlora: error: nowhere: not an adapter directory" err.txt || bad "missing adapter: $(cat err.txt)"
"$QL_BUILD_DIR/unit_test_peft" --write other >/dev/null || bad "unit_test_peft --write"
"$QLORA" eval --model q --data data.jsonl --adapter other --quiet >/dev/null 2>err.txt
[ $? = 1 ] && grep -q "other/adapter_model.safetensors: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape \[4, 8\], expected \[4, 64\]" err.txt ||
    bad "adapter of another model: $(cat err.txt)"
printf '{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}\n' >none.jsonl
"$QLORA" eval --model q --data none.jsonl --quiet >/dev/null 2>err.txt
[ $? = 1 ] && grep -q "none.jsonl: none of the 1 records is usable" err.txt || bad "no targets: $(cat err.txt)"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
