#!/usr/bin/env bash
# Crash consistency across ranks: 2 ranks under mpirun save checkpoints in a
# loop (unit_test_ckpt_crash --writer) and are killed with SIGKILL at random
# instants, one rank (mpirun then ends the other) or both, KILLS times
# (default 24; scripts/ckpt_crash_soak.sh runs more). After each kill,
# unit_test_ckpt_crash --check: every committed step directory verifies,
# LATEST names one of them, the next start resumes from it (no fallback)
# and reads back exactly its step's values; committed work never goes
# backwards.
set -u
: "${QL_BUILD_DIR:?}"
W="$QL_BUILD_DIR/unit_test_ckpt_crash"
[ -x "$W" ] || { echo "skip: $W not built"; exit 77; }
command -v mpirun >/dev/null || { echo "skip: no mpirun"; exit 77; }
KILLS=${KILLS:-24}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
root=$T/checkpoints
fails=0 last=0 one=0 all=0
export OMP_NUM_THREADS=1
for k in $(seq "$KILLS"); do
    mpirun -np 2 --allow-run-as-root --oversubscribe "$W" --writer "$root" >"$T/w.out" 2>&1 &
    mp=$!
    # mpirun starts the ranks in ~0.2 s; a save takes tens of ms.
    sleep "0.$(printf '%03d' $((200 + RANDOM % 500)))"
    ranks=$(pgrep -P $mp -f unit_test_ckpt_crash)
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
    for p in $ranks; do kill -KILL "$p" 2>/dev/null; done
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
