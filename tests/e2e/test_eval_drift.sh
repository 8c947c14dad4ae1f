#!/usr/bin/env bash
# qlora eval side by side, eval.json and drift detection, on a tiny model:
#   - with --adapter, one call gives the base model's loss and the adapter's:
#     the base loss equals a separate base-model eval to the last digit, the
#     adapter's equals an eval with --no-base, and loss_change is their
#     difference; a trained adapter lowers the loss on its training data;
#   - --adapter RUN stores RUN/eval.json (keys, values, the data file's
#     SHA-256 and the target count as Python computes them); --out DIR stores
#     DIR/eval.json; --no-save stores nothing;
#   - --baseline RUN on the same data: relative change 0, exit 0, and the
#     baseline file is not overwritten; on data the adapter fits worse: exit 3,
#     "drift" on stderr, drifted true in the JSON line and in the new
#     eval.json; the threshold is applied exactly (just above the measured
#     change: exit 0; just below: exit 3); --baseline takes a file too;
#   - errors: a missing or empty baseline, a malformed eval.json, a bad
#     threshold.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
M="$QL_SOURCE_DIR/tests/fixtures/llama/llama"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
field() { "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(repr(v) if isinstance(v,float) else v)' "$1" "$2"; }

"$PY" - <<'EOF' || exit 1
import json, random
r = random.Random(3)
with open("train.jsonl", "w") as f:
    for i in range(24):
        n, start = r.randint(8, 16), r.randint(0, 39)
        rec = {"input_ids": [(start + 3 * t) % 40 for t in range(n)]}
        if i % 4 == 0:
            rec["labels"] = [-100] * (n // 2) + rec["input_ids"][n // 2:]
        f.write(json.dumps(rec) + "\n")
with open("other.jsonl", "w") as f:  # no progression: the adapter's pattern does not help
    for i in range(12):
        f.write(json.dumps({"input_ids": [r.randint(0, 66) for _ in range(12)]}) + "\n")
EOF
cat >cfg.yaml <<EOF
model: $M
output_dir: run
data:
  train: train.jsonl
lora:
  r: 4
  alpha: 8
train:
  steps: 12
  global_batch: 4
  micro_batch: 4
  lr: 2.0e-2
  warmup_steps: 0
EOF
"$QLORA" train cfg.yaml >train.out 2>train.err || { echo "FAIL: qlora train"; cat train.err; exit 1; }

# --- side by side
"$QLORA" eval --model "$M" --adapter run --data train.jsonl --quiet >both.out 2>both.err || bad "eval side by side: $(cat both.err)"
"$QLORA" eval --model "$M" --data train.jsonl --quiet >base.out 2>&1 || bad "eval base"
"$QLORA" eval --model "$M" --adapter run/adapter --data train.jsonl --no-base --quiet >ad.out 2>&1 || bad "eval --no-base"
B=$(tail -n1 both.out) BA=$(tail -n1 base.out) AD=$(tail -n1 ad.out)
echo "side by side: $B"
[ "$(field "$B" base_loss)" = "$(field "$BA" loss)" ] || bad "base_loss $(field "$B" base_loss) != base eval $(field "$BA" loss)"
[ "$(field "$B" loss)" = "$(field "$AD" loss)" ] || bad "loss $(field "$B" loss) != --no-base eval $(field "$AD" loss)"
[ "$(field "$AD" base_loss)" = None ] || bad "--no-base still reports base_loss"
"$PY" - "$B" <<'EOF' || bad "side-by-side numbers"
import json, math, sys
j = json.loads(sys.argv[1])
ok = abs(j["loss_change"] - (j["loss"] - j["base_loss"])) < 1e-8
ok &= abs(j["base_perplexity"] - math.exp(j["base_loss"])) < 1e-6 * j["base_perplexity"]
ok &= j["loss"] < j["base_loss"] - 0.05  # trained on this data
sys.exit(0 if ok else 1)
EOF
grep -Eq '^            base model +with adapter +change$' both.out || bad "no side-by-side header: $(cat both.out)"
grep -Eq '^loss        [0-9.]+ +[0-9.]+ +-[0-9.e-]+ \(-[0-9.]+%\)$' both.out || bad "loss row: $(grep ^loss both.out)"
grep -q "^stored      run/eval.json" both.out || bad "run/eval.json not reported"

# --- eval.json
"$PY" - run/eval.json train.jsonl "$B" <<'EOF' || bad "run/eval.json content"
import hashlib, json, sys
e = json.load(open(sys.argv[1]))
text = open(sys.argv[1]).read()
j = json.loads(sys.argv[3])
n = 0
for line in open(sys.argv[2]):
    r = json.loads(line)
    lab = r.get("labels", r["input_ids"])
    n += sum(1 for y in lab[1:] if y != -100)
want = {"version": 1, "adapter": "run/adapter", "data": "train.jsonl", "records": 24, "tokens": n,
        "data_sha256": hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()}
bad = [k for k, v in want.items() if e.get(k) != v]
bad += [k for k in ("loss", "base_loss") if abs(e[k] - j[k]) > 1e-9 * abs(j[k])]
if text != json.dumps(e, indent=2, sort_keys=True) + "\n":
    bad.append("layout (json.dumps indent 2, sorted keys, newline)")
if "baseline" in e:
    bad.append("baseline without --baseline")
print("eval.json: " + ("ok" if not bad else f"wrong: {bad} in {e}"))
sys.exit(1 if bad else 0)
EOF
"$QLORA" eval --model "$M" --data train.jsonl --out store --quiet >/dev/null 2>&1 && [ -f store/eval.json ] ||
    bad "--out did not store eval.json"
cp run/eval.json keep.json
"$QLORA" eval --model "$M" --adapter run --data other.jsonl --no-save --quiet >/dev/null 2>&1 || bad "--no-save"
cmp -s run/eval.json keep.json || bad "--no-save changed run/eval.json"

# --- drift
"$QLORA" eval --model "$M" --adapter run --data train.jsonl --baseline run --quiet >same.out 2>same.err
rc=$?
[ $rc = 0 ] || bad "same data vs its baseline: exit $rc"
S=$(tail -n1 same.out)
[ "$(field "$S" relative_change)" = 0 ] && [ "$(field "$S" drifted)" = False ] || bad "same data: $S"
grep -q "is the baseline compared with" same.err || bad "no note about keeping the baseline"
cmp -s run/eval.json keep.json || bad "the baseline was overwritten"

"$QLORA" eval --model "$M" --adapter run --data other.jsonl --baseline run --out new --quiet >drift.out 2>drift.err
rc=$?
D=$(tail -n1 drift.out)
echo "other data: $D"
[ $rc = 3 ] || bad "drift: exit $rc, want 3"
grep -q "qlora eval: drift: loss .* above the baseline .*(run/eval.json)" drift.err || bad "drift message: $(cat drift.err)"
[ "$(field "$D" drifted)" = True ] || bad "drift JSON: $D"
grep -q "(other data than the baseline's)" drift.out || bad "other data not noted"
"$PY" -c 'import json,sys; b=json.load(open("new/eval.json"))["baseline"]; sys.exit(0 if b["drifted"] is True and b["path"]=="run/eval.json" and b["threshold"]==0.05 and b["same_data"] is False else 1)' ||
    bad "new/eval.json lacks the baseline verdict: $(cat new/eval.json)"
REL=$(field "$D" relative_change)
for f in 1.001:0 0.999:3; do
    thr=$("$PY" -c "print(repr($REL * ${f%%:*}))")
    "$QLORA" eval --model "$M" --adapter run --data other.jsonl --baseline run/eval.json \
        --drift-threshold "$thr" --no-save --no-base --quiet >/dev/null 2>&1
    rc=$?
    [ $rc = "${f##*:}" ] || bad "threshold $thr against a change of $REL: exit $rc, want ${f##*:}"
done

# --- errors
ev_fail() { # code pattern args...
    local code=$1 pat=$2
    shift 2
    "$QLORA" eval --model "$M" --data train.jsonl --quiet "$@" >err.out 2>&1
    local rc=$?
    [ $rc = "$code" ] || bad "eval $*: exit $rc, want $code"
    grep -q -- "$pat" err.out || bad "eval $*: message lacks '$pat': $(cat err.out)"
}
ev_fail 1 "nowhere: no such file or directory" --baseline nowhere
mkdir emptyrun
ev_fail 1 "emptyrun: no stored evaluation" --baseline emptyrun
echo '{"loss": "x"}' >broken.json
ev_fail 1 'broken.json: "loss": expected a number' --baseline broken.json
ev_fail 2 "--drift-threshold must be a number >= 0" --baseline run --drift-threshold -1

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
