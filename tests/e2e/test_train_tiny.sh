#!/usr/bin/env bash
# `qlora train` and `qlora eval` end to end on a tiny random Llama written by
# the PyPI safetensors package (tests/fixtures/make_tiny_hf_model.py):
#   - 20 steps with the issue's key names and two overrides: exit 0, the loss
#     falls, metrics.jsonl has one well-formed line per step, the progress
#     lines appear on a non-terminal stderr, config.resolved.yaml is written,
#     the adapter passes tests/e2e/check_peft.py (PyPI safetensors + json);
#   - the same seed again (started from config.resolved.yaml): the same loss
#     column and the same adapter bytes, also with activation checkpointing
#     and with one thread; another seed: a different adapter;
#   - `qlora eval` with the adapter (as run dir and as adapter dir) gives a
#     lower loss on the training data than the base model, and the final
#     JSON line has the loss to >= 9 significant digits and the target count
#     that Python counts in the data file;
#   - an existing run is refused without overwrite_output_dir; a bad config
#     and a bad data line end with their messages before the model loads;
#   - SIGINT stops at a step boundary, saves the adapter, exits 1.
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
# 48 records of arithmetic progressions mod 97 (learnable), lengths 8..24;
# every third record masks its first half with -100.
"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_records.py" train.jsonl || exit 1

cat >cfg.yaml <<'EOF'
model: model
output_dir: run1
seed: 1234
data:
  train: train.jsonl
  max_seq_len: 512
lora:
  r: 16
  alpha: 32
  dropout: 0.0
  targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
train:
  steps: 100
  global_batch: 8      # sequences per optimizer step, whatever the number of ranks
  micro_batch: 4       # sequences per rank per forward/backward; accumulation follows
  lr: 2.0e-4
  schedule: cosine     # cosine | linear | constant
  warmup_steps: 10
  weight_decay: 0.0
  max_grad_norm: 1.0
EOF
STEPS=20
OV=(--train.steps=$STEPS --lora.r=8 --train.lr=1e-2 --train.warmup_steps=2 --lora.dropout=0.1)

"$QLORA" train cfg.yaml "${OV[@]}" >train1.out 2>train1.err
rc=$?
[ $rc = 0 ] || { bad "qlora train exited $rc"; cat train1.err; }
[ -f run1/config.resolved.yaml ] || bad "no config.resolved.yaml"
grep -q '^  r: 8$' run1/config.resolved.yaml || bad "resolved config lacks the override lora.r = 8"
grep -q '^  steps: 20$' run1/config.resolved.yaml || bad "resolved config lacks train.steps = 20"
for s in 1 10 20; do
    grep -q "^step $s/$STEPS  loss " train1.err || bad "no progress line for step $s on stderr"
done
[ "$(grep -c '^step ' train1.err)" = 3 ] || bad "progress lines other than steps 1, 10, 20"
grep -q '^  records    48 read, 48 kept' train1.err || bad "no data summary"
grep -q '^adapter: run1/adapter$' train1.out || bad "summary lacks the adapter path"

"$PY" - run1/metrics.jsonl $STEPS <<'EOF' || bad "metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = int(sys.argv[2])
ok = len(rows) == steps
if not ok: print(f"{len(rows)} lines, want {steps}")
types = {"step": int, "loss": float, "lr": float, "grad_norm": float, "tokens": int,
         "targets": int, "tokens_per_s": float, "elapsed_s": float, "skipped": int}
for i, r in enumerate(rows):
    for k, t in types.items():
        if not isinstance(r.get(k), t) and not (t is float and isinstance(r.get(k), int)):
            print(f"line {i + 1}: {k} = {r.get(k)!r} is not {t.__name__}"); ok = False
    if r.get("step") != i + 1 or r.get("skipped") != 0:
        print(f"line {i + 1}: step {r.get('step')} skipped {r.get('skipped')}"); ok = False
    if r.get("targets", 0) <= 0 or r.get("tokens", 0) < r.get("targets", 0):
        print(f"line {i + 1}: tokens/targets"); ok = False
if rows[0]["lr"] != 0.0 or rows[2]["lr"] != 0.01:
    print(f"lr {rows[0]['lr']} {rows[2]['lr']}: warmup 2 then the peak"); ok = False
first = sum(r["loss"] for r in rows[:5]) / 5
last = sum(r["loss"] for r in rows[-5:]) / 5
print(f"loss: first 5 steps {first:.4f}, last 5 {last:.4f}")
if not last < first - 0.3:
    print("the loss did not fall by 0.3"); ok = False
sys.exit(0 if ok else 1)
EOF
"$PY" "$QL_SOURCE_DIR/tests/e2e/check_peft.py" run1/adapter --model model --r 8 --alpha 32 \
    --base model || bad "check_peft.py rejected the adapter"

# the same run again, from the resolved configuration
"$QLORA" train run1/config.resolved.yaml --output_dir=run2 >/dev/null 2>train2.err ||
    { bad "second run failed"; cat train2.err; }
cmp -s run1/adapter/adapter_model.safetensors run2/adapter/adapter_model.safetensors ||
    bad "same seed: adapter bytes differ"
cmp -s run1/adapter/adapter_config.json run2/adapter/adapter_config.json ||
    bad "same seed: adapter_config.json differs"
loss_col() { "$PY" -c 'import json,sys; [print(repr(json.loads(l)["loss"])) for l in open(sys.argv[1])]' "$1"; }
[ "$(loss_col run1/metrics.jsonl)" = "$(loss_col run2/metrics.jsonl)" ] ||
    bad "same seed: loss columns differ"
# activation checkpointing recomputes the same numbers; the thread count changes nothing
"$QLORA" train cfg.yaml "${OV[@]}" --train.activation_checkpointing=true --output_dir=run7 \
    >/dev/null 2>&1 || bad "activation checkpointing run failed"
cmp -s run1/adapter/adapter_model.safetensors run7/adapter/adapter_model.safetensors ||
    bad "activation checkpointing: adapter bytes differ"
OMP_NUM_THREADS=1 "$QLORA" train cfg.yaml "${OV[@]}" --output_dir=run8 >/dev/null 2>&1 ||
    bad "one-thread run failed"
cmp -s run1/adapter/adapter_model.safetensors run8/adapter/adapter_model.safetensors ||
    bad "one thread: adapter bytes differ"
"$QLORA" train cfg.yaml "${OV[@]}" --seed=7 --output_dir=run3 >/dev/null 2>&1 || bad "seed 7 run failed"
cmp -s run1/adapter/adapter_model.safetensors run3/adapter/adapter_model.safetensors &&
    bad "another seed gave the same adapter"

# eval: base vs adapter on the training data
"$QLORA" eval --model model --data train.jsonl >base.out 2>base.err || { bad "eval base"; cat base.err; }
"$QLORA" eval --model model --adapter run1 --data train.jsonl --batch 3 >tuned.out 2>&1 ||
    { bad "eval adapter"; cat tuned.out; }
"$QLORA" eval --model model --adapter run1/adapter --data train.jsonl --batch 3 --quiet >tuned2.out 2>&1 ||
    bad "eval adapter dir"
[ "$(tail -n1 tuned.out)" = "$(tail -n1 tuned2.out)" ] || bad "run dir and adapter dir disagree"
"$PY" - base.out tuned.out train.jsonl <<'EOF' || bad "eval results"
import json, math, re, sys
ok = True
def last(p):
    return open(p).read().rstrip("\n").split("\n")[-1]
b, t = json.loads(last(sys.argv[1])), json.loads(last(sys.argv[2]))
n = 0
for line in open(sys.argv[3]):
    r = json.loads(line)
    lab = r.get("labels", r["input_ids"])
    n += sum(1 for y in lab[1:] if y != -100)
for name, r in (("base", b), ("tuned", t)):
    if r["tokens"] != n:
        print(f"{name}: tokens {r['tokens']}, python counts {n}"); ok = False
    if abs(r["perplexity"] - math.exp(r["loss"])) > 1e-6 * r["perplexity"]:
        print(f"{name}: perplexity is not exp(loss)"); ok = False
    digits = re.search(r'"loss": ([-0-9.e+]+)', last(sys.argv[1] if name == "base" else sys.argv[2])).group(1)
    sig = len(re.sub(r"[-.]|e.*", "", digits).lstrip("0"))
    if sig < 9:
        print(f"{name}: loss {digits} has {sig} significant digits"); ok = False
print(f"eval loss: base {b['loss']:.4f}, with adapter {t['loss']:.4f}")
if not t["loss"] < b["loss"] - 0.2:
    print("the adapter does not lower the eval loss"); ok = False
sys.exit(0 if ok else 1)
EOF
grep -q '^adapter     none (base model)$' base.out || bad "eval table: no 'adapter none' row"
grep -q '^perplexity  ' base.out || bad "eval table: no perplexity row"

# an existing run is refused, then replaced on request
"$QLORA" train cfg.yaml "${OV[@]}" >/dev/null 2>again.err
[ $? = 1 ] && grep -q "qlora: error: output_dir run1 already holds a run (metrics.jsonl)" again.err ||
    bad "existing output_dir not refused: $(cat again.err)"
"$QLORA" train cfg.yaml "${OV[@]}" --train.steps=2 --overwrite_output_dir=true >/dev/null 2>&1 ||
    bad "overwrite_output_dir=true refused"
[ "$(wc -l <run1/metrics.jsonl)" = 2 ] || bad "overwritten run: metrics.jsonl not restarted"

# bad inputs end before the model loads, with their messages
"$QLORA" train cfg.yaml --lora.alpah=3 >/dev/null 2>e1.err
[ $? = 1 ] && [ "$(cat e1.err)" = "qlora: error: command line: unknown key 'lora.alpah' (did you mean 'lora.alpha'?)" ] ||
    bad "misspelt override: $(cat e1.err)"
sed 's/  r: 16/  r: 0/' cfg.yaml >bad.yaml
"$QLORA" train bad.yaml >/dev/null 2>e2.err
[ $? = 1 ] && [ "$(cat e2.err)" = "qlora: error: bad.yaml:8:6: lora.r: must be in [1, 65536], got 0" ] ||
    bad "lora.r 0: $(cat e2.err)"
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, "x"]}\n' >bad.jsonl
"$QLORA" train cfg.yaml --data.train=bad.jsonl --output_dir=run4 >/dev/null 2>e3.err
[ $? = 1 ] && grep -q '^qlora: error: bad.jsonl:2: input_ids\[1\]: expected a token id' e3.err ||
    bad "bad data line: $(cat e3.err)"
grep -q '^model:' e3.err && bad "the model was loaded before the data was checked"
printf '{"input_ids": [1, 2, 300]}\n' >oov.jsonl
"$QLORA" train cfg.yaml --data.train=oov.jsonl --output_dir=run5 >/dev/null 2>e4.err
[ $? = 1 ] && grep -q "oov.jsonl:1: input_ids\[2\] = 300 is outside the model's vocabulary (97 tokens)" e4.err ||
    bad "id out of vocabulary: $(cat e4.err)"
"$QLORA" train cfg.yaml --lora.r >/dev/null 2>&1
[ $? = 2 ] || bad "an override without a value is not a usage error"
"$QLORA" train --train.steps=3 >/dev/null 2>&1
[ $? = 2 ] || bad "no config file is not a usage error"

# SIGINT: stop at a step boundary, save the adapter, exit 1
"$QLORA" train cfg.yaml "${OV[@]}" --train.steps=100000 --output_dir=run6 >int.out 2>int.err &
pid=$!
for _ in $(seq 300); do
    [ -f run6/metrics.jsonl ] && [ "$(wc -l <run6/metrics.jsonl)" -ge 3 ] && break
    sleep 0.1
done
kill -INT $pid
wait $pid
rc=$?
[ $rc = 1 ] || bad "SIGINT: exit $rc, want 1"
grep -q '^qlora: interrupted at step [0-9]* of 100000; the adapter of that step is saved in run6/adapter$' int.err ||
    bad "SIGINT: message: $(tail -n2 int.err)"
[ -f run6/adapter/adapter_model.safetensors ] || bad "SIGINT: no adapter saved"
n=$(wc -l <run6/metrics.jsonl)
grep -q "^interrupted after $n of 100000 steps" int.out || bad "SIGINT: summary: $(cat int.out)"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
