#!/usr/bin/env bash
# Preemption and requeue on a real (private, single-node) Slurm cluster with
# slurm/single-node.sbatch: a training job of the tiny model is
#   1. sent SIGUSR1 through its batch shell (`scancel --signal=USR1 --batch`,
#      what --signal=B:USR1@120 does before the time limit): qlora writes a
#      checkpoint at the next step and exits 75, the job requeues itself;
#   2. released from the requeue's BeginTime (`scontrol update StartTime=now`),
#      resumes from that checkpoint, and is requeued by `scontrol requeue`
#      (SIGTERM to every process): checkpoint, exit 75, Slurm's own requeue;
#   3. released again, resumes and finishes: COMPLETED, two restarts, one log
#      with all three starts, and an adapter bit-identical (cmp) to an
#      uninterrupted run of the same configuration outside Slurm, with the
#      same loss for every step.
. "$QL_SOURCE_DIR/tests/e2e/slurm_lib.sh"
export OMP_NUM_THREADS=1 # one core for the job, one for the reference run
STEPS=200

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null ||
    { echo "FAIL: fixture"; exit 1; }
# 400 arithmetic progressions mod 97 of 32..96 tokens: steps of ~2000 tokens (8 rows of 256)
"$PY" - <<'EOF' || exit 1
import json, random
r = random.Random(0)
with open("train.jsonl", "w") as f:
    for i in range(400):
        n, start, step = r.randint(32, 96), r.randint(0, 96), r.randint(1, 5)
        f.write(json.dumps({"input_ids": [(start + step * t) % 97 for t in range(n)]}) + "\n")
EOF
cat >cfg.yaml <<EOF
model: model
output_dir: run
seed: 5
data:
  train: train.jsonl
  max_seq_len: 256
lora:
  r: 8
  alpha: 16
  dropout: 0.1
train:
  steps: $STEPS
  global_batch: 8
  micro_batch: 4
  lr: 5.0e-3
  warmup_steps: 5
checkpoint:
  every_steps: 40
EOF

# the uninterrupted reference, side by side with the job
"$QLORA" train cfg.yaml --output_dir=ref >ref.out 2>ref.err &
ref_pid=$!

j=$(sbatch --parsable --nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 --time=10 \
    --output="$T/job-%j.log" "$QL_SOURCE_DIR/slurm/single-node.sbatch" cfg.yaml) ||
    { echo "FAIL: sbatch"; exit 1; }
log=$T/job-$j.log

last_step() { # the last training step in run/metrics.jsonl
    local s
    s=$(grep '"loss"' run/metrics.jsonl 2>/dev/null | tail -n1 | grep -o '"step": [0-9]*' | grep -o '[0-9]*$')
    echo "${s:-0}"
}
wait_step() { # STEP: until the run has passed it (and is still running)
    for _ in $(seq 600); do
        [ "$(last_step)" -ge "$1" ] && return 0
        sleep 0.1
    done
    echo "the run did not reach step $1 in 60 s (at $(last_step), job $(job_field "$j" JobState))"
    return 1
}
wait_requeued() { # RESTARTS: until the job is pending again after that many restarts
    for _ in $(seq 300); do
        [ "$(job_field "$j" Restarts)" = "$1" ] && [ "$(job_field "$j" JobState)" = PENDING ] && return 0
        sleep 0.2
    done
    echo "job $j: $(job_field "$j" JobState), $(job_field "$j" Restarts) restarts; want PENDING after $1"
    return 1
}
latest() { cat run/checkpoints/LATEST 2>/dev/null; }
give_up() { # a stage failed: the later ones would only wait
    bad "$*"
    echo "---- job log"
    grep -v '^step ' "$log" | tail -n 60
    exit 1
}
s1="" s2=""

# 1. SIGUSR1 to the batch shell
wait_step 40 || give_up "before the first preemption"
scancel --signal=USR1 --batch "$j" || bad "scancel --signal=USR1 --batch"
if wait_requeued 1; then
    s1=$(sed -n 's/^qlora: SIGUSR1: checkpoint of step \([0-9]*\) .*exit 75.*/\1/p' "$log")
    [ -n "$s1" ] && [ "$s1" -ge 40 ] && [ "$s1" -lt $STEPS ] || bad "SIGUSR1: no checkpoint message ($s1)"
    [ "$(latest)" = "$(printf 'step-%08d' "${s1:-0}")" ] || bad "SIGUSR1: LATEST is '$(latest)', want step $s1"
    grep -q "checkpointed (exit 75): requeueing job $j (restart 1 of at most" "$log" ||
        bad "SIGUSR1: the job did not requeue itself"
    for _ in $(seq 50); do # (the reason is set at the next scheduling pass)
        [ "$(job_field "$j" Reason)" = BeginTime ] && break
        sleep 0.2
    done
    [ "$(job_field "$j" Reason)" = BeginTime ] || bad "requeued job waits on $(job_field "$j" Reason), not BeginTime"
    release_job "$j" || bad "scontrol update StartTime=now"
else
    give_up "SIGUSR1: not requeued"
fi

# 2. scontrol requeue: SIGTERM to every process of the job
wait_step $((s1 + 40)) || give_up "after the first resume"
grep -q "^resume: run/checkpoints/step-$(printf '%08d' "${s1:-0}"): step ${s1:-0}," "$log" ||
    bad "the second start did not resume from step $s1"
scontrol requeue "$j" || bad "scontrol requeue"
if wait_requeued 2; then
    s2=$(sed -n 's/^qlora: SIGTERM: checkpoint of step \([0-9]*\) .*exit 75.*/\1/p' "$log")
    [ -n "$s2" ] && [ "$s2" -gt "${s1:-0}" ] && [ "$s2" -lt $STEPS ] || bad "SIGTERM: no checkpoint message ($s2)"
    [ "$(latest)" = "$(printf 'step-%08d' "${s2:-0}")" ] || bad "SIGTERM: LATEST is '$(latest)', want step $s2"
    grep -q "checkpointed (exit 75); Slurm requeues job $j itself (restart 2)" "$log" ||
        bad "SIGTERM: no message about Slurm's requeue"
    release_job "$j" || bad "scontrol update StartTime=now"
else
    give_up "scontrol requeue: not requeued"
fi

# 3. the last start finishes
wait_ended "$j" 120 || bad "the job did not finish"
[ "$(job_field "$j" JobState)" = COMPLETED ] || bad "state $(job_field "$j" JobState), want COMPLETED"
[ "$(job_field "$j" ExitCode)" = 0:0 ] || bad "exit code $(job_field "$j" ExitCode)"
[ "$(job_field "$j" Restarts)" = 2 ] || bad "$(job_field "$j" Restarts) restarts, want 2"
[ "$(grep -c '^qlora-slurm: .* start [123] (restart [012] of' "$log")" = 3 ] || bad "the log does not hold three starts"
grep -q "^resume: run/checkpoints/step-$(printf '%08d' "${s2:-0}"): step ${s2:-0}," "$log" ||
    bad "the third start did not resume from step $s2"
grep -q "^trained $STEPS of $STEPS steps" "$log" || bad "no 'trained' line"

wait $ref_pid || { bad "the reference run failed"; cat ref.err; }
cmp run/adapter/adapter_model.safetensors ref/adapter/adapter_model.safetensors ||
    bad "the adapter of the preempted job differs from the uninterrupted run's"
cmp run/adapter/adapter_config.json ref/adapter/adapter_config.json || bad "adapter_config.json differs"
"$PY" - run/metrics.jsonl ref/metrics.jsonl $STEPS <<'EOF' || bad "metrics.jsonl"
import json, sys
def steps(p):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, open(p)) if "loss" in r]
a, b, n = steps(sys.argv[1]), steps(sys.argv[2]), int(sys.argv[3])
if [s for s, _, _ in a] != list(range(1, n + 1)):
    print("the job's metrics do not hold steps 1..%d once each" % n); sys.exit(1)
if a != b:
    d = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
    print("first difference at step", a[d][0], a[d], b[d]); sys.exit(1)
print(f"{n} steps, losses identical to the uninterrupted run (last {a[-1][1]:.6f})")
EOF

[ $fails = 0 ] || { echo "---- job log"; grep -v '^step ' "$log" | tail -n 60; }
[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
