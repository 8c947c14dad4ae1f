#!/usr/bin/env bash
# qlora report RUN: the plot in RUN/report.html must say what metrics.jsonl
# says. tests/e2e/check_report.py parses the inline SVG with Python's XML
# parser, recovers the value scale from the tick labels (their positions and
# printed values, not from anything else the report states) and maps every
# vertex of the training and eval polylines back to (step, loss), which must
# equal the metrics lines to within the drawing's rounding. It also decodes
# RUN/loss.png with Python's zlib (a second, independent decoder of our
# deflate), checks its size and palette and that the pixel under every
# plotted point has that series' colour.
#   - a hand-made metrics.jsonl: null losses left out, a step repeated by a
#     resume (the later line wins), eval lines, other records and a line cut
#     short by a crash passed over and counted, the table's numbers;
#   - a real training run with a validation set (train.eval_every);
#   - 5000 steps: thinned to at most 2001 vertices, and said so;
#   - no script, no external file; nothing left behind; errors.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
CHK="$QL_SOURCE_DIR/tests/e2e/check_report.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# --- hand-made metrics
mkdir hand
"$PY" - <<'EOF'
import json, math
with open("hand/metrics.jsonl", "w") as f:
    w = lambda o: f.write(json.dumps(o) + "\n")
    for s in range(1, 31):
        loss = 3.0 * math.exp(-s / 12) + 0.8 + 0.05 * math.sin(s)
        w({"step": s, "loss": None if s == 7 else loss, "lr": 1e-3, "grad_norm": 1.0,
           "tokens": 1000, "targets": 900, "tokens_per_s": 500.0, "elapsed_s": 2.0 * s,
           "skipped": 1 if s == 7 else 0})
        if s % 10 == 0:
            w({"step": s, "eval_loss": loss + 0.3, "eval_perplexity": math.exp(loss + 0.3),
               "eval_targets": 50, "eval_tokens": 60, "eval_s": 0.1})
    w({"step": 30, "sample": "def f(x): return x"})
    # a resume from step 28: steps 29 and 30 again, with other losses
    for s in (29, 30):
        w({"step": s, "loss": 0.5 + s / 100, "lr": 1e-3, "grad_norm": 1.0, "tokens": 1000,
           "targets": 900, "tokens_per_s": 400.0, "elapsed_s": 2.0 * s + 1, "skipped": 0})
    f.write('{"step": 31, "loss": 0.7')  # cut short
EOF
"$QLORA" report hand >hand.out 2>hand.err || { bad "report hand"; cat hand.err; }
cat hand.out
grep -q "^steps   1 to 30: training loss 3.6022 -> 0.8000; eval loss " hand.out || bad "summary: $(head -1 hand.out)"
grep -q "^note    1 line(s) of metrics.jsonl not understood" hand.out || bad "the cut line is not counted"
"$PY" "$CHK" hand --expect-eval 3 || bad "hand-made run: the plot does not match metrics.jsonl"
grep -q "tokens</th><td>30000 in 0:01:01: 492 tokens/s on average" hand/report.html ||
    bad "tokens row: $(grep -o '<th>tokens</th><td>[^<]*' hand/report.html)"
grep -q "3.6022 at step 1 -&gt; 0.8000 at step 30" hand/report.html || bad "training loss row"
grep -Eiq "<script|src=|<link|href=|url\(" hand/report.html && bad "report.html refers to something outside itself"
ls -a hand | grep -q 'tmp' && bad "temporary files left: $(ls -a hand)"

# --- a real run with a validation set
"$PY" - <<'EOF'
import json, random
r = random.Random(2)
with open("train.jsonl", "w") as f:
    for i in range(40):
        n, start = r.randint(8, 16), r.randint(0, 39)
        f.write(json.dumps({"input_ids": [(start + 3 * t) % 40 for t in range(n)]}) + "\n")
EOF
cat >cfg.yaml <<EOF
model: $QL_SOURCE_DIR/tests/fixtures/llama/llama
output_dir: run
data:
  train: train.jsonl
  valid_fraction: 0.2
  packing: false
lora:
  r: 4
  alpha: 8
train:
  steps: 16
  global_batch: 4
  micro_batch: 4
  lr: 1.0e-2
  eval_every: 5
EOF
"$QLORA" train cfg.yaml >train.out 2>train.err || { bad "qlora train"; tail -3 train.err; }
"$QLORA" report run --quiet >q.out 2>&1 || bad "report run: $(cat q.out)"
[ -s q.out ] && bad "--quiet printed: $(cat q.out)"
"$PY" "$CHK" run --expect-eval 4 || bad "real run: the plot does not match metrics.jsonl"

# --- many steps
mkdir long
"$PY" -c '
import json
with open("long/metrics.jsonl", "w") as f:
    for s in range(1, 5001):
        f.write(json.dumps({"step": s, "loss": 2 + 1 / s, "tokens": 10, "elapsed_s": s / 10}) + "\n")
'
"$QLORA" report long --quiet || bad "report long"
"$PY" "$CHK" long --thinned || bad "5000 steps: plot"
grep -q "every 3-th logged step is drawn" long/report.html || bad "thinning not said"

# --- errors
"$QLORA" report nowhere >/dev/null 2>err.txt; rc=$?
[ $rc = 1 ] && grep -q "nowhere/metrics.jsonl: no such file" err.txt || bad "missing run: exit $rc, $(cat err.txt)"
mkdir empty && echo '{"step": 1, "eval_loss": 2.0}' >empty/metrics.jsonl
"$QLORA" report empty >/dev/null 2>err.txt; rc=$?
[ $rc = 1 ] && grep -q "no training step" err.txt || bad "no steps: exit $rc, $(cat err.txt)"
[ -e empty/report.html ] && bad "a failed report left report.html"
"$QLORA" report >/dev/null 2>&1; [ $? = 2 ] || bad "no argument: not exit 2"
"$QLORA" report hand --frobnicate >/dev/null 2>&1; [ $? = 2 ] || bad "bad flag: not exit 2"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
