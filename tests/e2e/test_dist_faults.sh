#!/usr/bin/env bash
# A rank that fails ends the whole job, non-zero, within the documented
# bound (docs/distributed.md, "Failures and hangs"); 4 ranks under mpirun,
# QL_FAULT_INJECT (dist/fault.h) choosing rank 1 and step 3:
#   - kind=error: every rank exits 1; the error, "rank 1 (HOST): ...", is
#     printed by rank 0 and rank 1 (twice, no more); no adapter; two
#     metrics lines (steps 1 and 2);
#   - kind=error at where=load (before training): the same, no metrics;
#   - kind=kill (SIGKILL, no message): mpirun ends the job non-zero, naming
#     the killed rank, within 30 s;
#   - kind=hang with QL_DIST_TIMEOUT_S=3: the other ranks' watchdogs name the
#     collective they waited in ("agree during step 3") and abort the job,
#     within 3 s + 30 s;
#   - a malformed QL_FAULT_INJECT is an error naming the variable.
# Every run is under `timeout`, so a hang fails the test instead of CI.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || exit 1
"$PY" - <<'EOF' || exit 1
import json
with open("train.jsonl", "w") as f:
    for i in range(64):
        f.write(json.dumps({"input_ids": [(i + 5 * t) % 97 for t in range(12 + i % 9)]}) + "\n")
EOF
cat >cfg.yaml <<'EOF'
model: model
seed: 7
data:
  train: train.jsonl
  max_seq_len: 32
  cache: false
lora:
  r: 4
train:
  steps: 8
  global_batch: 8
  micro_batch: 2
  log_every: 1
EOF

# run NAME FAULT [env...]: 4 ranks; sets rc and secs
run() {
    local name=$1 fault=$2
    shift 2
    local t0 t1
    t0=$(date +%s.%N)
    env QL_FAULT_INJECT="$fault" "$@" timeout 120 mpirun --allow-run-as-root --oversubscribe \
        -x OMP_NUM_THREADS -x OMP_WAIT_POLICY -x QL_FAULT_INJECT -x QL_DIST_TIMEOUT_S \
        -np 4 "$QLORA" train cfg.yaml --output_dir="$name" >"$name.out" 2>"$name.err"
    rc=$?
    t1=$(date +%s.%N)
    secs=$("$PY" -c "print(round($t1 - $t0, 1))")
    echo "$name: exit $rc after $secs s"
    [ $rc = 124 ] && bad "$name: still running after 120 s (killed by timeout)"
}
within() { "$PY" -c "import sys; sys.exit(0 if $1 <= $2 else 1)"; }

# a clean run first: the bound below is measured against it
run ok ""
[ $rc = 0 ] || { bad "clean run: exit $rc"; tail -n 5 ok.err; }
base=$secs

run err "rank=1,step=3,kind=error"
[ $rc != 0 ] || bad "error: exit 0"
msg='^qlora: error: rank 1 ([^)]*): injected fault (QL_FAULT_INJECT): error at step 3$'
[ "$(grep -c "$msg" err.err)" = 2 ] || bad "error: want the message twice (ranks 0 and 1): $(grep qlora: err.err)"
[ "$(grep -c '^qlora: error' err.err)" = 2 ] || bad "error: other error lines: $(grep '^qlora: error' err.err)"
[ -e err/adapter ] && bad "error: an adapter was saved"
[ "$(wc -l <err/metrics.jsonl)" = 2 ] || bad "error: metrics.jsonl has $(wc -l <err/metrics.jsonl) lines, want 2"
within "$secs" "$base + 30" || bad "error: took $secs s (clean run $base s)"

run load "rank=2,kind=error,where=load"
[ $rc != 0 ] || bad "load error: exit 0"
grep -q '^qlora: error: rank 2 ([^)]*): injected fault (QL_FAULT_INJECT): error at load$' load.err ||
    bad "load error: $(grep qlora: load.err)"
grep -q '^step ' load.err && bad "load error: training started"

run kill "rank=1,step=3,kind=kill"
[ $rc != 0 ] || bad "kill: exit 0"
grep -q 'process rank 1 .* exited on signal 9' kill.err || bad "kill: mpirun did not name rank 1: $(tail -n 5 kill.err)"
[ -e kill/adapter ] && bad "kill: an adapter was saved"
within "$secs" "$base + 30" || bad "kill: took $secs s (clean run $base s)"

run hang "rank=1,step=3,kind=hang" QL_DIST_TIMEOUT_S=3
[ $rc != 0 ] || bad "hang: exit 0"
grep -q '^qlora: error: rank [023] ([^)]*): waited 3.[0-9] s in agree during step 3 for the other ranks (the limit is 3 s: dist.timeout_s or QL_DIST_TIMEOUT_S); a rank is stuck or has died; aborting the job$' hang.err ||
    bad "hang: no watchdog message: $(grep -v '^step\|^  ' hang.err | head -n 8)"
[ -e hang/adapter ] && bad "hang: an adapter was saved"
within "$secs" "$base + 3 + 30" || bad "hang: took $secs s (clean run $base s, limit 3 s)"

run malformed "rank=1,step=3,kind=explode"
[ $rc != 0 ] || bad "malformed QL_FAULT_INJECT: exit 0"
grep -q "QL_FAULT_INJECT = 'rank=1,step=3,kind=explode': kind must be error, kill or hang" malformed.err ||
    bad "malformed QL_FAULT_INJECT: $(grep qlora: malformed.err)"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
