#!/usr/bin/env bash
# slurm/sweep.sbatch on a real (private, single-node) Slurm cluster: a
# two-task job array over a table of learning rates x LoRA ranks trains the
# tiny model once per row into its own directory, and the summary job it
# submits writes summary.tsv once both have ended: one line per row with its
# values, "done", and the final eval loss that Python reads from that run's
# metrics.jsonl, best first.
. "$QL_SOURCE_DIR/tests/e2e/slurm_lib.sh"

make_tiny_model_and_data || { echo "FAIL: fixture"; exit 1; }
cat >cfg.yaml <<'EOF'
model: model
output_dir: unused
seed: 3
data:
  train: train.jsonl
  valid_fraction: 0.25
lora:
  r: 16
train:
  steps: 12
  global_batch: 4
  micro_batch: 4
  warmup_steps: 2
EOF
printf '# a test sweep\ntrain.lr   lora.r\n1e-2   4\n\n3e-3 8\n' >table.tsv

j=$(sbatch --parsable --array=0-1 --nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 \
    --time=5 --output="$T/sweep-%A_%a.log" "$QL_SOURCE_DIR/slurm/sweep.sbatch" cfg.yaml table.tsv \
    sweep --train.max_grad_norm=0.5) || { echo "FAIL: sbatch"; exit 1; }
for t in 0 1; do
    wait_ended "${j}_$t" 120 || bad "task $t did not end"
    [ "$(job_field "${j}_$t" JobState)" = COMPLETED ] ||
        { bad "task $t: $(job_field "${j}_$t" JobState)"; cat "$T/sweep-${j}_$t.log"; }
done
sj=$(cat "sweep/.summary-job-$j/id" 2>/dev/null) || bad "no summary job was submitted"
[ -n "$sj" ] && { wait_ended "$sj" 60 || bad "the summary job did not end"; }
[ -n "$sj" ] && [ "$(job_field "$sj" JobState)" != COMPLETED ] &&
    { bad "summary job: $(job_field "$sj" JobState)"; cat sweep/summary.log; }

for d in sweep/00-lr1e-2-r4 sweep/01-lr3e-3-r8; do
    [ -f $d/adapter/adapter_model.safetensors ] || bad "$d: no adapter"
    grep -q '^  max_grad_norm: 0.5$' $d/config.resolved.yaml || bad "$d: the sweep's own override is lost"
done
grep -q '^  r: 4$' sweep/00-lr1e-2-r4/config.resolved.yaml || bad "row 0: lora.r is not 4"
grep -q '^  lr: 0.01$' sweep/00-lr1e-2-r4/config.resolved.yaml || bad "row 0: train.lr is not 1e-2"
grep -q '^  r: 8$' sweep/01-lr3e-3-r8/config.resolved.yaml || bad "row 1: lora.r is not 8"

"$PY" - sweep <<'EOF' || bad "summary.tsv"
import json, sys, os
out = sys.argv[1]
lines = open(os.path.join(out, "summary.tsv")).read().splitlines()
rows = [l.split("\t") for l in lines]
ok = True
want_head = ["index", "train.lr", "lora.r", "status", "eval_loss", "train_loss", "steps", "run"]
if rows[0] != want_head:
    print("header", rows[0]); ok = False
runs = {"0": ("1e-2", "4", "00-lr1e-2-r4"), "1": ("3e-3", "8", "01-lr3e-3-r8")}
if len(rows) != 3:
    print(f"{len(rows) - 1} rows, want 2"); ok = False
for r in rows[1:]:
    lr, rank, name = runs[r[0]]
    evals = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl")) if "eval_loss" in l]
    steps = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl")) if '"loss"' in l]
    want = [r[0], lr, rank, "done", str(steps[-1]["step"]), os.path.join(out, name)]
    if len(r) != 8 or r[:4] + r[6:] != want or float(r[4]) != evals[-1]["eval_loss"] \
            or float(r[5]) != steps[-1]["loss"]:
        print("row", r, "want", want, evals[-1]["eval_loss"], steps[-1]["loss"]); ok = False
losses = [float(r[4]) for r in rows[1:]]
if losses != sorted(losses):
    print("not sorted by eval loss", losses); ok = False
print("summary:", [(r[1], r[2], r[4]) for r in rows[1:]])
sys.exit(0 if ok else 1)
EOF

[ $fails = 0 ] || { echo "---- logs"; tail -n 20 "$T"/*.log sweep/summary.log; cat sweep/summary.tsv; }
[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
