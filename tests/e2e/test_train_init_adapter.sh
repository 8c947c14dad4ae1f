#!/usr/bin/env bash
# qlora train from an existing LoRA adapter (lora.init_adapter), on the
# NF4-exact tiny Llama of tests/fixtures/llama (so qlora's 4-bit base is the
# float32 model transformers ran) and the adapters PEFT itself saved in
# tests/fixtures/peft (tests/fixtures/make_peft_reference.py; versions.json):
#   1. PEFT's llama_all adapter as the start, train.lr 0 (the update is
#      exactly zero, so the run's adapter is its start): the lora.* keys come
#      from adapter_config.json; the run's own evaluation at the end equals
#      the cross-entropy of transformers + PEFT's logits with that adapter
#      (ref/llama_all.logits.f32) to 1e-5 and not the base model's
#      (ref/llama_all.base.f32); the saved tensors equal PEFT's bit for bit;
#      `qlora eval` of the fixture and of the run give the same line; the run
#      leaves report.html, loss.png and eval.json (named in the summary), and
#      `qlora eval --baseline RUN` compares with it;
#   2. from a trained run (run dir): with lr 0 the run's evaluation equals the
#      earlier run's, digit for digit; with lr > 0 it goes on lowering the
#      loss, from where the earlier run stopped;
#   3. a checkpoint takes precedence: a run resumed with another init
#      adapter continues bit for bit as the uninterrupted run (the
#      checkpoint's weights, not the adapter's);
#   4. errors: an explicit lora.r other than the adapter's (both named), an
#      adapter_config.json whose r does not match its tensors, a path that is
#      no adapter; each ends before training;
#   5. two ranks (mpirun, when there): every rank starts from the adapter.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
FX="$QL_SOURCE_DIR/tests/fixtures"
M="$FX/llama/llama"
AD="$FX/peft/llama_all/adapter" # r 4, lora_alpha 8, all seven projections
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
export OMP_NUM_THREADS=1

# train: arithmetic progressions (learnable), ids < 40, and held-out ones
# (valid.jsonl); ref.jsonl: the two rows of 12 ids PEFT's reference logits
# were computed on.
"$PY" - "$FX/peft/ref/ids.i32" <<'EOF' || exit 1
import json, random, sys
import numpy as np
r = random.Random(5)
for name, n_rec in (("train.jsonl", 32), ("valid.jsonl", 6)):
    with open(name, "w") as f:
        for i in range(n_rec):
            n, start = r.randint(8, 16), r.randint(0, 39)
            f.write(json.dumps({"input_ids": [(start + 3 * t) % 40 for t in range(n)]}) + "\n")
ids = np.fromfile(sys.argv[1], dtype="<i4").reshape(2, 12)
with open("ref.jsonl", "w") as f:
    for row in ids:
        f.write(json.dumps({"input_ids": [int(x) for x in row]}) + "\n")
EOF
cat >base.yaml <<EOF
model: $M
data:
  train: train.jsonl
  valid: valid.jsonl
train:
  global_batch: 4
  micro_batch: 4
  warmup_steps: 0
  schedule: constant
quant:
  double_quant: false  # the NF4-exact base: transformers' float32 model
review:
  prompts: 0
  samples: 0
EOF
eval_loss() { # RUN: the last eval_loss of its metrics.jsonl, repr
    "$PY" -c 'import json,sys; print([repr(json.loads(l)["eval_loss"]) for l in open(sys.argv[1]) if "eval_loss" in l][-1])' "$1/metrics.jsonl"
}
losses() { # RUN FROM TO: the loss column of those steps
    "$PY" -c 'import json,sys; [print(repr(r["loss"])) for r in map(json.loads, open(sys.argv[1])) if "loss" in r and int(sys.argv[2]) <= r["step"] <= int(sys.argv[3])]' "$@"
}

# --- 1. PEFT's adapter as the start, lr 0
cat base.yaml - >peft.yaml <<EOF
output_dir: p0
lora:
  init_adapter: $AD
EOF
sed -i 's/  valid: valid.jsonl/  valid: ref.jsonl/' peft.yaml
"$QLORA" train peft.yaml --train.steps=1 --train.lr=0 >p0.out 2>p0.err ||
    { bad "train from PEFT's adapter"; tail -5 p0.err; }
grep -q "^init adapter: $AD (r 4, alpha 8, \[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj\]: 28 tensors); AdamW starts from zero$" p0.err ||
    bad "no init adapter line: $(grep -i adapter p0.err)"
"$PY" - p0/config.resolved.yaml <<'EOF' || bad "resolved lora.* are not the adapter's"
import sys
t = open(sys.argv[1]).read()
for want in ("  r: 4\n", "  alpha: 8.0\n", "  use_rslora: false\n",
             "  targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]\n"):
    if want not in t: print(f"missing {want!r}"); sys.exit(1)
EOF
"$PY" - p0/metrics.jsonl "$FX/peft/ref" "$AD" p0/adapter <<'EOF' || bad "PEFT's adapter as the start"
import json, sys
import numpy as np
from safetensors.numpy import load_file
ok = True
rows = [json.loads(l) for l in open(sys.argv[1])]
got = [r["eval_loss"] for r in rows if "eval_loss" in r][-1]
ids = np.fromfile(sys.argv[2] + "/ids.i32", dtype="<i4").reshape(2, 12)
def ce(path):  # mean next-token cross-entropy of transformers' logits [2, 12, 67]
    z = np.fromfile(path, dtype="<f4").reshape(2, 12, -1).astype(np.float64)[:, :-1]
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    return float((lse - np.take_along_axis(z, ids[:, 1:, None], -1)[..., 0]).mean())
ref, base = ce(sys.argv[2] + "/llama_all.logits.f32"), ce(sys.argv[2] + "/llama_all.base.f32")
print(f"eval loss: qlora from PEFT's adapter {got:.8f}, transformers + PEFT {ref:.8f}, base {base:.8f}")
if abs(got - ref) > 1e-5 * abs(ref): print("differs from PEFT's"); ok = False
if abs(got - base) < 1e-3: print("the adapter makes no difference"); ok = False
a, b = load_file(sys.argv[3] + "/adapter_model.safetensors"), load_file(sys.argv[4] + "/adapter_model.safetensors")
if sorted(a) != sorted(b): print("other tensor names"); ok = False
elif any(not np.array_equal(a[k].astype(np.float32), b[k]) for k in a):
    print("lr 0: the saved adapter is not PEFT's"); ok = False
sys.exit(0 if ok else 1)
EOF
"$QLORA" eval --model "$M" --adapter "$AD" --data ref.jsonl --no-save --quiet >e_bare.out 2>&1 || bad "eval fixture"
# eval --adapter RUN holds the base as the run did (double_quant false here):
# PEFT's adapter inside a run with p0's configuration gives p0's result, and
# the bare adapter directory (qlora's defaults: double quantization) not.
mkdir fixrun && cp -r "$AD" fixrun/adapter && cp p0/config.resolved.yaml fixrun/
"$QLORA" eval --model "$M" --adapter fixrun --data ref.jsonl --no-save --quiet >e_fix.out 2>&1 || bad "eval fixture in a run"
"$QLORA" eval --model "$M" --adapter p0 --data ref.jsonl --no-save --quiet >e_p0.out 2>&1 || bad "eval p0"
[ "$(tail -n1 e_fix.out)" = "$(tail -n1 e_p0.out)" ] ||
    bad "qlora eval: PEFT's adapter and the run from it differ: $(tail -n1 e_fix.out) / $(tail -n1 e_p0.out)"
[ "$(tail -n1 e_bare.out)" != "$(tail -n1 e_p0.out)" ] ||
    bad "qlora eval --adapter RUN: the run's double_quant false was not used (the same as qlora's defaults)"
for f in report.html loss.png eval.json; do
    [ -s p0/$f ] || bad "no p0/$f"
done
grep -q '^report: p0/report.html$' p0.out && grep -q '^loss plot: p0/loss.png$' p0.out &&
    grep -q '^eval file: p0/eval.json$' p0.out || bad "summary lacks the report/plot/eval paths: $(cat p0.out)"
"$QLORA" eval --model "$M" --adapter "$AD" --data ref.jsonl --baseline p0 --no-save --quiet >bl.out 2>&1
rc=$?
[ $rc = 0 ] && grep -q '"drifted": false' bl.out || bad "eval --baseline p0: exit $rc: $(tail -n2 bl.out)"

# --- 2. from a trained run
cat base.yaml - >a.yaml <<EOF
output_dir: A
lora:
  r: 4
  alpha: 8
  targets: all-linear
EOF
"$QLORA" train a.yaml --train.steps=8 --train.lr=2e-2 >A.out 2>A.err || { bad "run A"; tail -5 A.err; }
"$QLORA" train base.yaml --output_dir=A0 --lora.init_adapter=A --train.steps=1 --train.lr=0 \
    >A0.out 2>A0.err || { bad "run A0 (from A, lr 0)"; tail -5 A0.err; }
[ "$(eval_loss A)" = "$(eval_loss A0)" ] ||
    bad "eval at the end of A $(eval_loss A) != eval of the run started from it $(eval_loss A0)"
"$QLORA" eval --model "$M" --adapter A --data valid.jsonl --no-save --quiet >e_A.out 2>&1
"$QLORA" eval --model "$M" --adapter A0 --data valid.jsonl --no-save --quiet >e_A0.out 2>&1
[ "$(tail -n1 e_A.out)" = "$(tail -n1 e_A0.out)" ] || bad "qlora eval: A and A0 differ"
# the configuration may repeat the adapter's values
"$QLORA" train a.yaml --output_dir=B --lora.init_adapter=A --train.steps=8 --train.lr=2e-2 \
    >B.out 2>B.err || { bad "run B (from A)"; tail -5 B.err; }
"$PY" - A/metrics.jsonl B/metrics.jsonl <<'EOF' || bad "training from A does not go on lowering the loss"
import json, sys
def rows(p): return [json.loads(l) for l in open(p)]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
la = [r["loss"] for r in a if "loss" in r]; lb = [r["loss"] for r in b if "loss" in r]
ea = [r["eval_loss"] for r in a if "eval_loss" in r][-1]; eb = [r["eval_loss"] for r in b if "eval_loss" in r][-1]
print(f"train loss A {la[0]:.4f} -> {la[-1]:.4f}, B {lb[0]:.4f} -> {lb[-1]:.4f}; eval A {ea:.4f}, B {eb:.4f}")
ok = eb < ea - 0.05 and lb[0] < la[0] - 0.5 and sum(lb[-3:]) < sum(la[-3:])
sys.exit(0 if ok else 1)
EOF

# --- 3. a checkpoint takes precedence over lora.init_adapter
"$QLORA" train base.yaml --output_dir=D --lora.init_adapter=A --train.steps=6 --train.lr=2e-2 \
    >D.out 2>D.err || { bad "run D"; tail -5 D.err; }
"$QLORA" train base.yaml --output_dir=C --lora.init_adapter=A --train.steps=4 --train.lr=2e-2 \
    --checkpoint.every_steps=2 >C.out 2>C.err || { bad "run C"; tail -5 C.err; }
# resumed with PEFT's adapter (the same layout: r 4, alpha 8, all seven) named instead
"$QLORA" train base.yaml --output_dir=C --lora.init_adapter="$AD" --train.steps=6 --train.lr=2e-2 \
    --checkpoint.every_steps=2 >C2.out 2>C2.err || { bad "run C resumed"; tail -5 C2.err; }
grep -q '^resume: C/checkpoints/step-00000004' C2.err || bad "C did not resume from step 4: $(grep resume C2.err)"
grep -q '^init adapter:' C2.err && bad "a resumed run loaded lora.init_adapter"
[ "$(losses C/metrics.jsonl 1 6)" = "$(losses D/metrics.jsonl 1 6)" ] && [ "$(eval_loss C)" = "$(eval_loss D)" ] ||
    bad "the resumed run is not the uninterrupted one (the init adapter replaced the checkpoint?)"

# --- 4. errors, before training
"$QLORA" train peft.yaml --output_dir=E1 --lora.r=8 >/dev/null 2>e1.err
[ $? = 1 ] && [ "$(cat e1.err)" = "qlora: error: lora.r is 8, but lora.init_adapter $AD/adapter_config.json has r 4: the adapter sets lora.r; leave lora.r out or make it 4" ] ||
    bad "conflicting lora.r: $(cat e1.err)"
[ -e E1 ] && bad "a refused configuration created its output_dir"
cp -r "$AD" bad_r && sed -i 's/"r": 4,/"r": 8,/' bad_r/adapter_config.json
"$QLORA" train peft.yaml --output_dir=E2 --lora.init_adapter=bad_r >/dev/null 2>e2.err
[ $? = 1 ] && grep -q "^qlora: error: lora.init_adapter: bad_r/adapter_model.safetensors: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape \[4, 64\], expected \[8, 64\]$" e2.err ||
    bad "adapter_config.json r 8 over r-4 tensors: $(tail -n1 e2.err)"
grep -q '^step 1/' e2.err && bad "trained with a mismatching adapter"
"$QLORA" train peft.yaml --output_dir=E3 --lora.init_adapter=nowhere >/dev/null 2>e3.err
[ $? = 1 ] && grep -q "^qlora: error: lora.init_adapter: nowhere: not an adapter directory" e3.err ||
    bad "missing adapter: $(cat e3.err)"

# --- 5. two ranks: every rank starts from the adapter
if command -v mpirun >/dev/null; then
    mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS "$QLORA" train peft.yaml \
        --output_dir=p2 --train.steps=1 --train.lr=0 >p2.out 2>p2.err || { bad "2 ranks"; tail -5 p2.err; }
    cmp -s p0/adapter/adapter_model.safetensors p2/adapter/adapter_model.safetensors ||
        bad "2 ranks: the adapter is not the start"
    [ "$(eval_loss p0)" = "$(eval_loss p2)" ] || bad "2 ranks: eval $(eval_loss p2), 1 rank $(eval_loss p0)"
else
    echo "note: no mpirun: the two-rank case not run"
fi

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
