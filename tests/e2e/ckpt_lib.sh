# Shared by the checkpoint e2e tests (sourced): the tiny random Llama of
# tests/fixtures/make_tiny_hf_model.py, 48 records of arithmetic progressions
# mod 97 packed into rows of 32 tokens, and helpers that run, preempt, kill
# and compare training runs.
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
[ -x "$QLORA" ] || { echo "skip: $QLORA is not built"; exit 77; }
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
"$PY" -c 'import h5py, numpy' 2>/dev/null || { echo "skip: h5py missing in .venv (scripts/setup.sh)"; exit 77; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

ckpt_setup() {
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || exit 1
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_records.py" train.jsonl || exit 1
    cat >cfg.yaml <<'EOF'
model: model
output_dir: run
seed: 1234
data:
  train: train.jsonl
  max_seq_len: 32
lora:
  r: 8
  alpha: 32
  dropout: 0.1
train:
  steps: 12
  global_batch: 8
  micro_batch: 2
  lr: 1.0e-2
  warmup_steps: 2
  log_every: 1
checkpoint:
  every_steps: 3
  keep_last: 20
EOF
}

# launch NP OUT [--key=value ...]: qlora train in the background; $! is the
# process (mpirun for NP > 1).
launch() {
    local np=$1 out=$2
    shift 2
    if [ "$np" = 1 ]; then
        "$QLORA" train cfg.yaml --output_dir="$out" "$@" >>"$out.out" 2>>"$out.err" &
    else
        "${MPIRUN[@]}" -np "$np" "$QLORA" train cfg.yaml --output_dir="$out" "$@" \
            >>"$out.out" 2>>"$out.err" &
    fi
}

# train NP OUT [--key=value ...]: to the end (or to its exit); $rc.
train() {
    launch "$@"
    wait $!
    rc=$?
}

# lines FILE: its number of lines (0 when missing).
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# wait_for OUT STEPS [ckpt] [PID]: until OUT/metrics.jsonl has STEPS lines
# (and, with ckpt, OUT/checkpoints/LATEST exists); at most 60 s, and not
# after process PID has ended.
wait_for() {
    for _ in $(seq 1200); do
        if [ "$(lines "$1/metrics.jsonl")" -ge "$2" ] &&
            { [ "${3:-}" != ckpt ] || [ -f "$1/checkpoints/LATEST" ]; }; then return 0; fi
        [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null && return 1
        sleep 0.05
    done
    return 1
}

# interrupt NP OUT SIG AT [--key=value ...]: starts a run, sends SIG once AT
# steps are done and this run has done one at least (SIGKILL: also once a
# checkpoint exists; to every rank), waits; $rc is the exit status.
interrupt() {
    local np=$1 out=$2 sig=$3 at=$4
    shift 4
    local before
    before=$(lines "$out/metrics.jsonl")
    [ "$at" -gt "$before" ] || at=$((before + 1))
    launch "$np" "$out" "$@"
    local pid=$!
    if [ "$sig" = KILL ]; then wait_for "$out" "$at" ckpt $pid; else wait_for "$out" "$at" - $pid; fi ||
        bad "$out: step $at never came"
    if [ "$sig" = KILL ] && [ "$np" != 1 ]; then
        kill -KILL $(pgrep -P $pid) 2>/dev/null
    else
        kill -"$sig" $pid
    fi
    wait $pid
    rc=$?
}

# same_run A B [from-step]: metrics (all but timings) equal line by line,
# the adapter's bytes equal, and the final checkpoints' params, adam_m,
# adam_v (reassembled from their shards) and AdamW's step count equal bit
# for bit.
same_run() {
    cmp -s "$1/adapter/adapter_model.safetensors" "$2/adapter/adapter_model.safetensors" ||
        bad "$1 vs $2: adapter bytes differ"
    "$PY" - "$1" "$2" "$QL_SOURCE_DIR/proto" <<'EOF' || bad "$1 vs $2: state differs"
import json, os, sys, subprocess, tempfile
import h5py, numpy as np
a, b, proto = sys.argv[1:4]
skip = {"tokens_per_s", "elapsed_s", "comm_s", "eval_s"}
def rows(d):
    return [{k: v for k, v in json.loads(l).items() if k not in skip and not k.startswith("mem_")}
            for l in open(d + "/metrics.jsonl")]
ra, rb = rows(a), rows(b)
ok = ra == rb
if not ok:
    for i, (x, y) in enumerate(zip(ra, rb)):
        if x != y:
            print(f"metrics line {i + 1}: {x} != {y}"); break
    if len(ra) != len(rb): print(f"{len(ra)} vs {len(rb)} metrics lines")
def state(d):
    root = d + "/checkpoints"
    step = open(root + "/LATEST").read().strip()
    files = sorted(f for f in os.listdir(f"{root}/{step}") if f.endswith(".h5"))
    out = {}
    for name in ("params", "adam_m", "adam_v"):
        parts = []
        for f in files:
            with h5py.File(f"{root}/{step}/{f}", "r") as h:
                parts.append((int(h.attrs["offset"]), h[name][:]))
        out[name] = np.concatenate([p for _, p in sorted(parts, key=lambda t: t[0])])
    return step, out
sa, xa = state(a)
sb, xb = state(b)
if sa != sb:
    print(f"LATEST {sa} vs {sb}"); ok = False
for k in xa:
    if xa[k].tobytes() != xb[k].tobytes():
        print(f"{k} differs in {int((xa[k] != xb[k]).sum())} elements"); ok = False
sys.exit(0 if ok else 1)
EOF
}

# samples ERRFILE...: "step=g:row ..." lines of QL_TRACE_SAMPLES, the last
# occurrence of each step (a step run again after a kill counts once).
samples() {
    cat "$@" | "$PY" -c '
import sys
last = {}
for l in sys.stdin:
    if l.startswith("samples step "):
        head, ids = l.split(":", 1)
        last[int(head.split()[2])] = ids.split()
for s in sorted(last): print(s, " ".join(last[s]))'
}
