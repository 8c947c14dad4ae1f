#!/usr/bin/env bash
# Bitwise resume (tiny random Llama, 30 steps, a checkpoint every 3, LoRA
# dropout on), at 1 and at 4 ranks (mpirun --oversubscribe):
#   - SIGUSR1 at a random step: a checkpoint of that step, exit 75; the rerun
#     resumes from it and ends with the metrics (losses, norms, lr, tokens),
#     the adapter and the final checkpoint's params, AdamW m and v bit for bit
#     those of an uninterrupted run;
#   - SIGKILL at a random step after a checkpoint: the same after the rerun
#     (the steps after the checkpoint run again; their metrics lines are
#     replaced, not repeated);
#   - exactly-once data: three SIGUSR1 preemptions in one run (each soon
#     after its segment's first step); the sample ids each step took
#     (QL_TRACE_SAMPLES) equal the uninterrupted run's;
#   - a second SIGUSR1 ends the process at once and LATEST still names a
#     checkpoint that verifies;
#   - SIGTERM too exits 75 after a checkpoint;
#   - quant.type none (float32 base): SIGUSR1 and resume, bit for bit; a
#     resume with another quant.type is refused;
#   - checkpoint.every_minutes alone, keep_last; every_steps 0 writes none.
set -u
. "$(dirname "$0")/ckpt_lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
ckpt_setup
# 30 steps rather than the library's 12: a signal sent after step 7 must
# land well before the last step even when mpirun forwards it late on a
# loaded machine (a run that reaches its last step just finishes, exit 0).
sed -i 's/^  steps: 12$/  steps: 30/' cfg.yaml
grep -q '^  steps: 30$' cfg.yaml || { echo "FAIL: cfg.yaml has no 'steps: 12' to raise"; exit 1; }

for np in 1 4; do
    QL_TRACE_SAMPLES=1 train $np ref$np
    [ $rc = 0 ] || { bad "np $np: uninterrupted run exited $rc"; tail -n 5 ref$np.err; }

    at=$((2 + RANDOM % 6))
    interrupt $np usr$np USR1 $at
    [ $rc = 75 ] || { bad "np $np: SIGUSR1 at step $at: exit $rc, want 75"; tail -n 5 usr$np.err; }
    grep -q "^qlora: SIGUSR1: checkpoint of step [0-9]* in usr$np/checkpoints/step-[0-9]*; exit 75 (requeue to continue)$" usr$np.err ||
        bad "np $np: no exit-75 message: $(tail -n 2 usr$np.err)"
    [ -d usr$np/adapter ] && bad "np $np: a preempted run wrote the adapter"
    train $np usr$np
    [ $rc = 0 ] || { bad "np $np: resumed run exited $rc"; tail -n 5 usr$np.err; }
    grep -q "^resume: usr$np/checkpoints/step-" usr$np.err || bad "np $np: no resume line"
    f0=$fails
    same_run ref$np usr$np
    echo "np $np: SIGUSR1 at step $at, resumed: $([ $fails = $f0 ] && echo bit-identical || echo DIFFERENT)"

    at=$((3 + RANDOM % 4))
    interrupt $np kill$np KILL $at
    [ $rc != 0 ] || bad "np $np: SIGKILL: exit 0"
    train $np kill$np
    [ $rc = 0 ] || { bad "np $np: run after SIGKILL exited $rc"; tail -n 5 kill$np.err; }
    same_run ref$np kill$np
    echo "np $np: SIGKILL after step $at, resumed: checked"

    # exactly-once: three preemptions, each as soon as the segment has run a
    # step (a segment runs a few steps before its signal takes effect)
    QL_TRACE_SAMPLES=1 train $np oref$np --train.steps=24
    for k in 1 2 3; do
        QL_TRACE_SAMPLES=1 interrupt $np once$np USR1 0 --train.steps=24
        [ $rc = 75 ] || bad "np $np: preemption $k (after step $(lines once$np/metrics.jsonl)): exit $rc"
    done
    echo "np $np: preempted 3 times, the last at step $(lines once$np/metrics.jsonl)"
    QL_TRACE_SAMPLES=1 train $np once$np --train.steps=24
    [ $rc = 0 ] || bad "np $np: last segment exited $rc"
    [ "$(samples oref$np.err)" = "$(samples once$np.err)" ] ||
        bad "np $np: sample ids over 3 preemptions differ from the uninterrupted run"
    [ "$(samples oref$np.err | wc -l)" = 24 ] || bad "np $np: trace has $(samples oref$np.err | wc -l) steps"
    same_run oref$np once$np
done

# quant.type none (LoRA on the weights as stored, float32): the same bitwise
# resume; its base is not the 4-bit one (other losses than ref1's), and the
# checkpoint's configuration refuses a resume with another quant.type.
train 1 nref --quant.type=none
[ $rc = 0 ] || { bad "quant none: uninterrupted run exited $rc"; tail -n 5 nref.err; }
grep -q "linears in float32 as stored" nref.err || bad "quant none: the model summary does not say float32"
at=$((2 + RANDOM % 6))
interrupt 1 nusr USR1 $at --quant.type=none
[ $rc = 75 ] || bad "quant none: SIGUSR1 at step $at: exit $rc, want 75"
train 1 nusr --quant.type=nf4
[ $rc != 0 ] && grep -q "quant.type" nusr.err || bad "quant none: resumed as nf4: exit $rc, $(tail -n 1 nusr.err)"
train 1 nusr --quant.type=none
[ $rc = 0 ] || { bad "quant none: resumed run exited $rc"; tail -n 5 nusr.err; }
f0=$fails
same_run nref nusr
echo "quant none: SIGUSR1 at step $at, resumed: $([ $fails = $f0 ] && echo bit-identical || echo DIFFERENT)"
first_loss() { "$PY" -c 'import json,sys; print(repr(json.loads(open(sys.argv[1]).readline())["loss"]))' "$1/metrics.jsonl"; }
[ "$(first_loss nref)" != "$(first_loss ref1)" ] ||
    bad "quant none: the first step's loss $(first_loss nref) is the 4-bit run's (the flag did nothing)"

# Two signals: the second ends the process at once; the last checkpoint stays good.
launch 1 twice
pid=$!
wait_for twice 4 ckpt || bad "twice: no checkpoint"
kill -USR1 $pid
kill -USR1 $pid
wait $pid
rc=$?
[ $rc = 75 ] || [ $rc = $((128 + 10)) ] || bad "twice: exit $rc"
"$QLORA" ckpt verify twice >/dev/null 2>&1 || bad "twice: LATEST does not verify after a second signal"

# SIGTERM is a preemption too.
interrupt 1 term TERM 3
[ $rc = 75 ] || bad "SIGTERM: exit $rc, want 75"
grep -q "^qlora: SIGTERM: checkpoint of step" term.err || bad "SIGTERM: message: $(tail -n 1 term.err)"

# checkpoint.every_minutes alone (every_steps 0): a tiny interval makes every
# step boundary due; keep_last 5 keeps the 5 newest.
train 1 timed --train.steps=12 --checkpoint.every_steps=0 --checkpoint.every_minutes=0.00001 --checkpoint.keep_last=5
[ $rc = 0 ] || bad "every_minutes: exit $rc"
[ "$(grep -c '^checkpoint: step' timed.err)" = 12 ] || bad "every_minutes: $(grep -c '^checkpoint: step' timed.err) checkpoints, want 12"
[ "$(ls -d timed/checkpoints/step-* | wc -l)" = 5 ] && [ -d timed/checkpoints/step-00000008 ] &&
    [ ! -d timed/checkpoints/step-00000007 ] || bad "keep_last 5: $(ls timed/checkpoints)"
train 1 never --train.steps=12 --checkpoint.every_steps=0
[ -n "$(ls never/checkpoints | grep step-)" ] && bad "every_steps 0: checkpoints written"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
