#!/usr/bin/env bash
# `qlora train` on 1, 2 and 4 ranks (mpirun --oversubscribe, one thread per
# rank) on the tiny random Llama of test_train_tiny.sh, same global batch:
#   - per-step losses and gradient norms of 2 and 4 ranks equal 1 rank's to
#     1e-6 relative, and so does every adapter tensor (L2 norm of the
#     difference <= 1e-6 x the tensor's), also with a validation set (eval
#     loss) and with the micro-batch capped by the rank's share;
#   - 4 ranks with one micro-batch each give 1 rank's bytes exactly (the
#     rank-ordered sum is the single process's accumulation order);
#   - the same 4-rank run twice: the same adapter bytes and loss column;
#   - rank 0 alone prints progress and writes metrics.jsonl (one line per
#     step, with "world": 4) and the adapter;
#   - a global batch the ranks cannot split, and a bad override, end every
#     rank with exit 1 and one message that says what would work;
#   - dist/comm.h's own checks (tests/mpi/test_comm.c) at 3 and 4 ranks.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}" "${QL_BUILD_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
MPI=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS -x OMP_WAIT_POLICY)

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || exit 1
# 96 records of arithmetic progressions mod 97, lengths 8..24; every third
# masks its first half. Packed into rows of 48 tokens: about 30 rows.
"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_records.py" train.jsonl 96 || exit 1
cat >cfg.yaml <<'EOF'
model: model
seed: 1234
data:
  train: train.jsonl
  max_seq_len: 48
  cache: false
lora:
  r: 8
  alpha: 16
train:
  steps: 20
  global_batch: 8
  micro_batch: 2
  lr: 1.0e-2
  warmup_steps: 2
  max_grad_norm: 1.0
  log_every: 10
EOF

train() { # NP OUT [overrides...]
    local np=$1 out=$2
    shift 2
    if [ "$np" = 1 ]; then
        "$QLORA" train cfg.yaml --output_dir="$out" "$@" >"$out.out" 2>"$out.err"
    else
        timeout 120 "${MPI[@]}" -np "$np" "$QLORA" train cfg.yaml --output_dir="$out" "$@" \
            >"$out.out" 2>"$out.err"
    fi
    local rc=$?
    [ $rc = 0 ] || { bad "$np ranks ($out): exit $rc"; tail -n 5 "$out.err"; }
}

# compare.py REF OTHER: losses, grad norms, eval losses and adapter tensors.
cat >compare.py <<'EOF'
import json, sys
import numpy as np
from safetensors.numpy import load_file
ref, other = sys.argv[1], sys.argv[2]
ok = True
def rows(run):
    return [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
a, b = rows(ref), rows(other)
if len(a) != len(b):
    print(f"{other}: {len(b)} metrics lines, {ref} has {len(a)}"); sys.exit(1)
worst = 0.0
for x, y in zip(a, b):
    for k in ("loss", "grad_norm", "eval_loss"):
        if k in x:
            worst = max(worst, abs(x[k] - y[k]) / abs(x[k]))
            if x["step"] != y["step"] or k not in y:
                print(f"{other}: line for step {y.get('step')} lacks {k}"); ok = False
if worst > 1e-6:
    print(f"{other}: per-step values differ from {ref} by {worst:.3g} relative (> 1e-6)"); ok = False
A = load_file(f"{ref}/adapter/adapter_model.safetensors")
B = load_file(f"{other}/adapter/adapter_model.safetensors")
if sorted(A) != sorted(B):
    print(f"{other}: other tensors"); sys.exit(1)
wt = max(np.linalg.norm((A[k] - B[k]).astype(np.float64)) /
         np.linalg.norm(A[k].astype(np.float64)) for k in A)
if wt > 1e-6:
    print(f"{other}: an adapter tensor differs from {ref}'s by {wt:.3g} relative (> 1e-6)"); ok = False
print(f"{other} vs {ref}: per-step {worst:.2g}, adapter {wt:.2g} relative")
sys.exit(0 if ok else 1)
EOF

train 1 r1
train 2 r2
train 4 r4
train 4 r4b
for r in r2 r4; do "$PY" compare.py r1 $r || bad "$r differs from one rank"; done
cmp -s r1/adapter/adapter_model.safetensors r4/adapter/adapter_model.safetensors ||
    bad "4 ranks of one micro-batch each: adapter bytes differ from one rank's"
cmp -s r4/adapter/adapter_model.safetensors r4b/adapter/adapter_model.safetensors ||
    bad "4 ranks twice: adapter bytes differ"
loss_col() { "$PY" -c 'import json,sys; [print(repr(json.loads(l)["loss"])) for l in open(sys.argv[1])]' "$1"; }
[ "$(loss_col r4/metrics.jsonl)" = "$(loss_col r4b/metrics.jsonl)" ] || bad "4 ranks twice: loss columns differ"

# rank 0 alone prints and writes
[ "$(wc -l <r4/metrics.jsonl)" = 20 ] || bad "4 ranks: metrics.jsonl has $(wc -l <r4/metrics.jsonl) lines, want 20"
grep -q '"world": 4, "comm_s": ' r4/metrics.jsonl || bad "4 ranks: no world/comm_s in metrics.jsonl"
grep -q '"world"' r1/metrics.jsonl && bad "1 rank: world in metrics.jsonl"
[ "$(grep -c '^step ' r4.err)" = 3 ] || bad "4 ranks: $(grep -c '^step ' r4.err) progress lines, want 3 (rank 0's)"
[ "$(grep -c '^training: ' r4.err)" = 1 ] || bad "4 ranks: the plan is printed more than once"
grep -q '^training: 20 steps of 8 packed rows on 4 ranks (2 per rank: 1 micro-batch of up to 2)' r4.err ||
    bad "4 ranks: plan line: $(grep '^training' r4.err)"
[ "$(grep -c '^trained 20 of 20 steps' r4.out)" = 1 ] || bad "4 ranks: summary not printed once"
grep -q '^ranks: 4; rank 0 spent ' r4.out || bad "4 ranks: no collectives line"

# the micro-batch capped by the rank's share (4 > 8/4), a validation set
# (a smaller lr: Adam turns last-bit differences of near-zero gradients into
# whole steps, and the first steps of B = 0 have many)
V=(--train.micro_batch=4 --data.valid_fraction=0.25 --train.eval_every=10 --train.lr=2e-3)
train 1 v1 "${V[@]}"
train 4 v4 "${V[@]}"
"$PY" compare.py v1 v4 || bad "4 ranks with a validation set differ from one rank"
[ "$(grep -c eval_loss v4/metrics.jsonl)" = 2 ] || bad "4 ranks: eval lines"

# an impossible split: every rank ends, one message
timeout 60 "${MPI[@]}" -np 3 "$QLORA" train cfg.yaml --output_dir=e3 >e3.out 2>e3.err
rc=$?
[ $rc = 1 ] || bad "global_batch 8 on 3 ranks: exit $rc, want 1"
[ "$(grep -c '^qlora: error: ' e3.err)" = 1 ] &&
    grep -q "^qlora: error: rank 0 ([^)]*): train.global_batch = 8 cannot be split over 3 ranks: every rank takes an equal share of each global batch, so it must be a multiple of 3 (e.g. --train.global_batch=6 or 9), or run on a number of ranks that divides 8 (1, 2, 4, 8)$" e3.err ||
    bad "global_batch 8 on 3 ranks: $(cat e3.err)"
[ -e e3/metrics.jsonl ] && bad "global_batch 8 on 3 ranks: a metrics file was written"
timeout 60 "${MPI[@]}" -np 2 "$QLORA" train cfg.yaml --lora.alpah=3 >e4.out 2>e4.err
rc=$?
[ $rc = 1 ] && [ "$(grep -c . e4.err)" -ge 1 ] &&
    [ "$(grep -c "unknown key 'lora.alpah'" e4.err)" = 1 ] || bad "misspelt key on 2 ranks: exit $rc: $(cat e4.err)"

# the communicator's own checks at odd and even sizes
for np in 3 4; do
    timeout 60 "${MPI[@]}" -np $np "$QL_BUILD_DIR/mpi_test_comm" >comm$np.out 2>&1 ||
        { bad "mpi_test_comm on $np ranks"; tail -n 5 comm$np.out; }
done

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
