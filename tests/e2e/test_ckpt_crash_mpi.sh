#!/usr/bin/env bash
# Crash consistency across ranks: 2 ranks under mpirun save checkpoints in a
# loop (unit_test_ckpt_crash --writer) and are killed with SIGKILL at random
# instants, one rank (mpirun then ends the other) or both, KILLS times
# (default 20; scripts/ckpt_crash_soak.sh runs more). After each kill,
# unit_test_ckpt_crash --check: every committed step directory verifies,
# LATEST names one of them, the next start resumes from it (no fallback)
# and reads back exactly its step's values; committed work never goes
# backwards.
set -u
: "${QL_BUILD_DIR:?}"
W="$QL_BUILD_DIR/unit_test_ckpt_crash"
[ -x "$W" ] || { echo "skip: $W not built"; exit 77; }
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
KILLS=${KILLS:-20}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
root=$T/checkpoints
fails=0 last=0 one=0 all=0
export OMP_NUM_THREADS=1
for k in $(seq "$KILLS"); do
    # leftovers of the last kill (the writers would remove them themselves)
    rm -rf "$root"/*.tmp-* 2>/dev/null
    mpirun -np 2 --allow-run-as-root --oversubscribe "$W" --writer "$root" >"$T/w.out" 2>&1 &
    mp=$!
    # Once the writers are saving (a temporary directory appears; starting
    # takes 0.2 s to seconds on a busy machine), a random instant within
    # the next few saves (each takes tens of milliseconds).
    for _ in $(seq 1000); do
        ls "$root" 2>/dev/null | grep -q '\.tmp-' && break
        kill -0 $mp 2>/dev/null || break
        sleep 0.01
    done
    sleep "0.$(printf '%03d' $((RANDOM % 600)))"
    ranks=$(pgrep -P $mp -f "unit_test_ckpt_crash --writer $root")
    if [ $((RANDOM % 2)) = 0 ]; then
        victim=$(echo "$ranks" | shuf -n1)
        [ -n "$victim" ] && kill -KILL $victim 2>/dev/null
        one=$((one + 1))
    else
        [ -n "$ranks" ] && kill -KILL $ranks 2>/dev/null
        all=$((all + 1))
    fi
    # mpirun ends the surviving rank; bounded, in case it does not.
    for _ in $(seq 100); do kill -0 $mp 2>/dev/null || break; sleep 0.05; done
    kill -KILL $mp 2>/dev/null
    wait $mp 2>/dev/null
    # nothing of this job may still write while the checks run
    for _ in $(seq 100); do
        left=$(pgrep -f "^$W --writer $root") || break
        kill -KILL $left 2>/dev/null
        sleep 0.05
    done
    out=$("$W" --check "$root" 2>&1)
    if [ $? != 0 ]; then
        echo "FAIL after kill $k: $out"
        fails=$((fails + 1))
    fi
    step=$(echo "$out" | sed -n 's/.*resumes from step \([0-9]*\).*/\1/p' | tail -n1)
    step=${step:-0}
    if [ "$step" -lt "$last" ]; then
        echo "FAIL after kill $k: resumed step went back from $last to $step"
        fails=$((fails + 1))
    fi
    last=$step
done
echo "$KILLS kills ($one of one rank, $all of both); the writers reached step $last"
[ "$last" -gt 0 ] || { echo "FAIL: no checkpoint was ever committed"; fails=$((fails + 1)); }
[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
