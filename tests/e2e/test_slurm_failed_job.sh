#!/usr/bin/env bash
# slurm/single-node.sbatch on a real (private, single-node) Slurm cluster:
#   - training that fails on bad input ends FAILED with exit code 1, the
#     error in the job's log, and is not requeued;
#   - the requeue logic of slurm/qlora-requeue.sh with a stand-in for qlora
#     that exits 75 ("checkpointed, requeue me") on SIGUSR1 or SIGTERM:
#     `scancel --signal=USR1 --batch` reaches it through the batch shell's
#     trap and srun, the job requeues itself (SLURM_RESTART_COUNT 0 -> 1),
#     its log keeps both starts (append mode), and at QLORA_MAX_RESTARTS=1 it
#     ends FAILED with 75 instead of looping; after `scancel` it stays
#     CANCELLED; after `scontrol requeue` Slurm's own requeue stands;
#   - the same stand-in exiting 0 ends COMPLETED without a requeue.
. "$QL_SOURCE_DIR/tests/e2e/slurm_lib.sh"
TPL=$QL_SOURCE_DIR/slurm/single-node.sbatch
# the local node has 2 CPUs and 2 stand-in GPUs: one task, one of each
SB=(sbatch --parsable --nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 --time=5)

make_tiny_model_and_data || { echo "FAIL: fixture"; exit 1; }
cat >cfg.yaml <<'EOF'
model: model
output_dir: run
seed: 1
data:
  train: train.jsonl
lora:
  r: 4
train:
  steps: 5
  global_batch: 4
  micro_batch: 4
EOF
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, "x"]}\n' >bad.jsonl

# 1. bad input: FAILED, the message in the log, no requeue
j=$("${SB[@]}" --output="$T/fail-%j.log" "$TPL" cfg.yaml --data.train=bad.jsonl) ||
    { echo "FAIL: sbatch"; exit 1; }
wait_ended "$j" 90 || bad "bad input: the job did not end"
sleep 3 # a requeue would show now
[ "$(job_field "$j" JobState)" = FAILED ] || bad "bad input: state $(job_field "$j" JobState), want FAILED"
[ "$(job_field "$j" ExitCode)" = 1:0 ] || bad "bad input: exit code $(job_field "$j" ExitCode), want 1:0"
[ "$(job_field "$j" Restarts)" = 0 ] || bad "bad input: restarted $(job_field "$j" Restarts) times"
log=$T/fail-$j.log
grep -q '^qlora: error: bad.jsonl:2: input_ids\[1\]: expected a token id' "$log" ||
    bad "bad input: the error is not in the job's log"
grep -q '^qlora-slurm: .* failed (exit 1): not requeued$' "$log" || bad "bad input: no 'not requeued' line"
grep -q 'requeueing' "$log" && bad "bad input: the job tried to requeue itself"
[ "$(grep -c '^qlora-slurm: .* start ' "$log")" = 1 ] || bad "bad input: the job started more than once"

# 2. a stand-in for qlora that checkpoints (exit 75) when signalled, as
#    qlora train does on SIGUSR1/SIGTERM
cat >fake-qlora <<'EOF'
#!/bin/bash
trap 'echo "fake qlora: SIGUSR1"; exit 75' USR1
trap 'echo "fake qlora: SIGTERM"; exit 75' TERM
echo "fake qlora $* (restart ${SLURM_RESTART_COUNT:-0})"
sleep 300 &
wait
EOF
chmod +x fake-qlora
# wait_log FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN
wait_log() {
    local n
    for _ in $(seq 300); do
        n=$(grep -c "$2" "$1" 2>/dev/null)
        [ "${n:-0}" -ge "$3" ] && return 0
        sleep 0.2
    done
    echo "$1: no '$2' (x$3) after 60 s"
    return 1
}
submit_fake() { QLORA=$T/fake-qlora QLORA_MAX_RESTARTS=1 "${SB[@]}" --output="$T/$1-%j.log" "$TPL" cfg.yaml; }

# 2a. SIGUSR1 to the batch shell (the time-limit signal): passed on to the
#     rank, exit 75, the job requeues itself; at the cap it ends FAILED
j=$(submit_fake usr1) || { echo "FAIL: sbatch"; exit 1; }
log=$T/usr1-$j.log
wait_log "$log" '^fake qlora train' 1 || bad "usr1: the stand-in did not start"
scancel --signal=USR1 --batch "$j"
for _ in $(seq 300); do
    [ "$(job_field "$j" Restarts)" = 1 ] && [ "$(job_field "$j" JobState)" = PENDING ] && break
    sleep 0.2
done
[ "$(job_field "$j" Restarts)" = 1 ] || bad "usr1: not requeued (state $(job_field "$j" JobState))"
release_job "$j" || bad "scontrol update StartTime=now"
wait_log "$log" '^fake qlora train' 2 || bad "usr1: no second start"
scancel --signal=USR1 --batch "$j"
wait_ended "$j" 60 || bad "usr1: the requeued job did not end"
sleep 3
[ "$(job_field "$j" JobState)" = FAILED ] || bad "restart cap: state $(job_field "$j" JobState), want FAILED"
[ "$(job_field "$j" ExitCode)" = 75:0 ] || bad "restart cap: exit code $(job_field "$j" ExitCode), want 75:0"
[ "$(job_field "$j" Restarts)" = 1 ] || bad "restart cap: $(job_field "$j" Restarts) restarts, want 1"
[ "$(grep -c '^fake qlora: SIGUSR1$' "$log")" = 2 ] || bad "usr1: the signal did not reach the rank twice"
grep -q '^fake qlora train cfg.yaml (restart 1)$' "$log" || bad "usr1: SLURM_RESTART_COUNT not 1 at the second start"
grep -q "checkpointed (exit 75): requeueing job $j (restart 1 of at most 1)" "$log" ||
    bad "usr1: no requeue line"
grep -q "has been restarted 1 times (QLORA_MAX_RESTARTS=1): not requeued" "$log" ||
    bad "restart cap: no message"

# 2b. scancel (SIGTERM to every process): checkpointed, but cancelled stays
#     cancelled; 2c. scontrol requeue (SIGTERM too): Slurm requeues by itself
a=$(submit_fake cancel) && b=$(submit_fake requeue) || { echo "FAIL: sbatch"; exit 1; }
wait_log "$T/cancel-$a.log" '^fake qlora train' 1 && wait_log "$T/requeue-$b.log" '^fake qlora train' 1 ||
    bad "cancel/requeue: the stand-ins did not start"
scancel "$a"
scontrol requeue "$b" || bad "scontrol requeue $b"
wait_ended "$a" 60 || bad "cancel: the job did not end"
wait_log "$T/requeue-$b.log" 'Slurm requeues job' 1 || bad "requeue: no message"
sleep 3
[ "$(job_field "$a" JobState)" = CANCELLED ] || bad "cancel: state $(job_field "$a" JobState)"
[ "$(job_field "$a" Restarts)" = 0 ] || bad "cancel: the job was requeued"
grep -q '^fake qlora: SIGTERM$' "$T/cancel-$a.log" || bad "cancel: the rank got no SIGTERM"
grep -q "checkpointed (exit 75) after Slurm ended job $a .*: not requeued" "$T/cancel-$a.log" ||
    bad "cancel: no 'not requeued' message"
[ "$(job_field "$b" JobState)" = PENDING ] && [ "$(job_field "$b" Restarts)" = 1 ] ||
    bad "requeue: state $(job_field "$b" JobState), restarts $(job_field "$b" Restarts)"
grep -q "Slurm requeues job $b itself (restart 1)" "$T/requeue-$b.log" || bad "requeue: message"
scancel "$b"

# 3. success never requeues
printf '#!/bin/bash\necho "fake qlora done"\n' >fake-ok
chmod +x fake-ok
j=$(QLORA=$T/fake-ok "${SB[@]}" --output="$T/ok-%j.log" "$TPL" cfg.yaml) || { echo "FAIL: sbatch"; exit 1; }
wait_ended "$j" 60 || bad "success: the job did not end"
sleep 2
[ "$(job_field "$j" JobState)" = COMPLETED ] || bad "success: state $(job_field "$j" JobState)"
[ "$(job_field "$j" Restarts)" = 0 ] || bad "success: restarted"
grep -q '^qlora-slurm: .* finished (exit 0)$' "$T/ok-$j.log" || bad "success: no 'finished' line"

[ $fails = 0 ] || { echo "---- logs"; tail -n 20 "$T"/*.log; }
[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
