# Sourced by tests/e2e/test_slurm_*.sh: starts a private single-node Slurm
# cluster for this test (slurm/local/cluster.sh: its own state directory and
# ports, so tests running side by side do not meet) and stops it, with every
# job and process it ran, when the test exits, pass or fail. Skips (77) with
# the reason when Slurm cannot run here. Sets T (a temporary directory, the
# working directory), SLURM_CONF, and helpers for jobs.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
CLUSTER_SH="$QL_SOURCE_DIR/slurm/local/cluster.sh"
T=$(mktemp -d)
CLUSTER=
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

slurm_test_cleanup() {
    local rc=$?
    if [ -n "$CLUSTER" ]; then
        if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
            echo "---- slurm logs (the test failed)"
            tail -n 30 "$CLUSTER"/log/slurmctld.log "$CLUSTER"/log/slurmd.log 2>/dev/null
        fi
        "$CLUSTER_SH" stop "$CLUSTER"
    fi
    rm -rf "$T"
    exit "$rc"
}
trap slurm_test_cleanup EXIT
trap 'exit 143' TERM INT # ctest's timeout: still stop the cluster

CLUSTER=$("$CLUSTER_SH" start --gpus 2 --owner $$ 2>"$T/cluster.err")
case $? in
0) ;;
77) echo "skip: $(sed 's/^cluster.sh: //' "$T/cluster.err")"; CLUSTER=; exit 77 ;;
*) cat "$T/cluster.err"; CLUSTER=; echo "FAIL: could not start the local Slurm cluster"; exit 1 ;;
esac
# shellcheck disable=SC1091
. "$CLUSTER/env"
export SLURM_CONF
cd "$T" || exit 1

# job_field JOB KEY: one field of `scontrol show job`, e.g. JobState, Restarts
job_field() {
    scontrol -o show job "$1" 2>/dev/null | head -n1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}
# wait_state JOB SECONDS STATE...: until the job is in one of the states
wait_state() {
    local j=$1 t=$2 s
    shift 2
    for _ in $(seq $((t * 5))); do
        s=$(job_field "$j" JobState)
        for w in "$@"; do [ "$s" = "$w" ] && return 0; done
        sleep 0.2
    done
    echo "job $j: state ${s:-unknown} after ${t}s, waited for $*"
    return 1
}
# wait_ended JOB SECONDS: until the job has ended one way or another
wait_ended() {
    wait_state "$1" "$2" COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL BOOT_FAIL \
        DEADLINE PREEMPTED
}

# release JOB: let a requeued job start now instead of after its BeginTime
# (about two minutes). slurmd refuses a job whose new credential dates from
# the second in which it revoked the old one ("Job credential revoked", the
# job ends FAILED), so wait until that second has passed.
release_job() {
    sleep 2
    scontrol update jobid="$1" StartTime=now
}

# The tiny random Llama of tests/fixtures/make_tiny_hf_model.py and 48
# records of arithmetic progressions mod 97 (as test_train_tiny.sh).
make_tiny_model_and_data() {
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || return 1
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_records.py" train.jsonl 48 --no-labels
}
