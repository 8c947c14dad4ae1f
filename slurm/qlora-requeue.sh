#!/usr/bin/env bash
# Runs qlora inside a Slurm batch job so that a preempted or timed-out job
# checkpoints, requeues itself and carries on. The templates in slurm/ source
# this file; it can also wrap any command when executed:
#
#   . slurm/qlora-requeue.sh; qlora_slurm_train CONFIG.yaml [--key=value ...]
#   slurm/qlora-requeue.sh COMMAND [ARGS...]      (in a batch script: exec it)
#
# What it does (docs/slurm.md):
#   - starts the ranks in the background (srun --mpi=pmix where Slurm has
#     PMIx, else mpirun; QLORA_LAUNCH=srun|mpirun|none chooses) and waits, so
#     that the batch shell runs its trap at once when Slurm signals it
#     (--signal=B:USR1@120) and forwards the signal to every rank;
#   - exit 75 from qlora ("checkpointed after a signal") after a SIGUSR1 or
#     SIGUSR2 requeues this job, or this array task, with `scontrol requeue`;
#     the next start resumes from OUTPUT_DIR/checkpoints/LATEST. After a
#     SIGTERM it does not: Slurm is then requeueing the job itself (scontrol
#     requeue, preemption) or ending it on purpose (scancel);
#   - 0 (done), 1 (error), 2 (usage) and deaths by a signal never requeue;
#   - after QLORA_MAX_RESTARTS restarts (SLURM_RESTART_COUNT, default 10) a
#     checkpointed job is not requeued again: it ends with 75 (FAILED in
#     Slurm) and says so, instead of looping.
# Every message starts with "qlora-slurm:" and goes to the job's output,
# which the templates open in append mode so each restart's lines follow the
# last.

QLORA=${QLORA:-qlora}
QLORA_SLURM_DIR=${QLORA_SLURM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
QLORA_MAX_RESTARTS=${QLORA_MAX_RESTARTS:-10}
QLORA_EXIT_REQUEUE=75
_qlora_child=
_qlora_sig=
_qlora_got_term=

qlora_slurm_log() { echo "qlora-slurm: $(date '+%Y-%m-%dT%H:%M:%S') $*"; }

# The job (or array task) id scontrol understands.
qlora_slurm_job() {
    if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
        echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    else
        echo "${SLURM_JOB_ID:-none}"
    fi
}

qlora_slurm_banner() {
    qlora_slurm_log "job $(qlora_slurm_job) start $((${SLURM_RESTART_COUNT:-0} + 1))" \
        "(restart ${SLURM_RESTART_COUNT:-0} of at most $QLORA_MAX_RESTARTS)" \
        "on ${SLURM_JOB_NODELIST:-$(hostname)}: ${SLURM_NTASKS:-1} task(s)," \
        "${SLURM_CPUS_PER_TASK:-?} CPU(s) each"
}

# Fills the array QLORA_LAUNCHER with the command that starts one rank per
# Slurm task. QLORA_SRUN_ARGS / QLORA_MPIRUN_ARGS add options.
qlora_slurm_launcher() {
    local mode=${QLORA_LAUNCH:-auto}
    if [ "$mode" = auto ]; then
        if srun --mpi=list 2>&1 | grep -qw pmix; then mode=srun; else mode=mpirun; fi
    fi
    case $mode in
    srun)
        QLORA_LAUNCHER=(srun)
        srun --mpi=list 2>&1 | grep -qw pmix && QLORA_LAUNCHER+=(--mpi=pmix)
        # shellcheck disable=SC2206 # word splitting of the user's options is meant
        QLORA_LAUNCHER+=(${QLORA_SRUN_ARGS:-})
        ;;
    mpirun)
        QLORA_LAUNCHER=(mpirun -n "${SLURM_NTASKS:-1}")
        [ "$(id -u)" = 0 ] && QLORA_LAUNCHER+=(--allow-run-as-root)
        # shellcheck disable=SC2206
        QLORA_LAUNCHER+=(${QLORA_MPIRUN_ARGS:-})
        ;;
    none) QLORA_LAUNCHER=() ;;
    *)
        qlora_slurm_log "QLORA_LAUNCH=$mode: expected auto, srun, mpirun or none"
        return 2
        ;;
    esac
}

# SIGUSR1/SIGUSR2 (--signal=B:USR1@120, `scancel --signal=USR1 --batch`) reach
# only the batch shell: pass them on to the launcher, which passes them on to
# every rank (srun and mpirun both do). One that arrives before the launcher
# has started is passed on as soon as it has.
_qlora_forward() {
    _qlora_sig=$1
    qlora_slurm_log "received SIG$1; passing it on to the ranks (they checkpoint at the next step)"
    [ -n "$_qlora_child" ] && kill -"$1" "$_qlora_child" 2>/dev/null
    return 0
}

# SIGTERM is how Slurm ends a job (scancel, scontrol requeue, preemption, the
# time limit): it sends it to every process of the job, the ranks included,
# and SIGKILL KillWait seconds later. The batch shell only notes it and
# outlives it to report how the ranks ended. It is not passed on: the ranks
# have it already, and srun answers a SIGTERM of its own by killing the step.
_qlora_term() {
    _qlora_got_term=1
    qlora_slurm_log "received SIGTERM: Slurm is ending the job; the ranks checkpoint at the next step"
    return 0
}

# Runs COMMAND in the background with the signals handled and returns its
# exit status once it has really ended (a trap interrupts `wait`).
qlora_slurm_run() {
    local rc again
    trap '_qlora_forward USR1' USR1
    trap '_qlora_forward USR2' USR2
    trap '_qlora_term' TERM
    "$@" &
    _qlora_child=$!
    [ -n "$_qlora_sig" ] && kill -"$_qlora_sig" "$_qlora_child" 2>/dev/null
    while :; do
        wait "$_qlora_child"
        rc=$?
        [ $rc -gt 128 ] || break # an exit status of the command
        kill -0 "$_qlora_child" 2>/dev/null && continue # a trap interrupted the wait
        # gone: a second wait yields its own status unless the first one did
        wait "$_qlora_child" 2>/dev/null
        again=$?
        [ $again = 127 ] || rc=$again
        break
    done
    _qlora_child=
    return $rc
}

# Restarts Slurm counts for this job now: more than SLURM_RESTART_COUNT when
# Slurm itself is requeueing it (scontrol requeue, preemption with
# PreemptMode=REQUEUE).
_qlora_restarts_now() {
    scontrol show job "${SLURM_JOB_ID:-}" 2>/dev/null | sed -n 's/.* Restarts=\([0-9]*\).*/\1/p' | head -n1
}

# Decides what the job's exit status means and ends the batch script.
qlora_slurm_finish() {
    local rc=$1 restarts=${SLURM_RESTART_COUNT:-0} job now out
    job=$(qlora_slurm_job)
    case $rc in
    0)
        qlora_slurm_log "finished (exit 0)"
        exit 0
        ;;
    "$QLORA_EXIT_REQUEUE")
        now=$(_qlora_restarts_now)
        if [ -n "$now" ] && [ "$now" -gt "$restarts" ]; then
            qlora_slurm_log "checkpointed (exit 75); Slurm requeues job $job itself" \
                "(restart $now); the next start resumes from the checkpoint"
            exit "$rc"
        fi
        if [ -n "$_qlora_got_term" ]; then
            # scancel, the time limit, or preemption that cancels: the job
            # was ended on purpose, and a requeue would undo a cancel
            qlora_slurm_log "checkpointed (exit 75) after Slurm ended job $job (scancel, time" \
                "limit or preemption): not requeued; submit it again to continue from the checkpoint"
            exit "$rc"
        fi
        if [ "$restarts" -ge "$QLORA_MAX_RESTARTS" ]; then
            qlora_slurm_log "checkpointed (exit 75), but job $job has been restarted $restarts" \
                "times (QLORA_MAX_RESTARTS=$QLORA_MAX_RESTARTS): not requeued; submit it again" \
                "to continue from the checkpoint"
            exit "$rc"
        fi
        qlora_slurm_log "checkpointed (exit 75): requeueing job $job" \
            "(restart $((restarts + 1)) of at most $QLORA_MAX_RESTARTS)"
        if out=$(scontrol requeue "$job" 2>&1); then
            qlora_slurm_log "requeued; the next start resumes from the checkpoint"
        else
            # not requeueable (no --requeue, JobRequeue=0): the job ends
            # FAILED with 75 and can be submitted again
            qlora_slurm_log "scontrol requeue $job failed: ${out:-no message}"
        fi
        exit "$rc"
        ;;
    *)
        if [ "$rc" -gt 128 ]; then
            qlora_slurm_log "ended by signal $((rc - 128)) (exit $rc): not requeued"
        else
            qlora_slurm_log "failed (exit $rc): not requeued"
        fi
        exit "$rc"
        ;;
    esac
}

# One training run: CONFIG.yaml [--key=value ...], one rank per Slurm task.
qlora_slurm_train() {
    [ $# -ge 1 ] || { qlora_slurm_log "usage: qlora_slurm_train CONFIG.yaml [--key=value ...]"; exit 2; }
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    qlora_slurm_banner
    qlora_slurm_launcher || exit 2
    qlora_slurm_log "${QLORA_LAUNCHER[*]} $QLORA train $*"
    qlora_slurm_run "${QLORA_LAUNCHER[@]}" "$QLORA" train "$@"
    qlora_slurm_finish $?
}

# The sweep table: the first line that is neither blank nor a comment names
# the config keys, each following line holds one run's values (whitespace-
# separated). Prints "key=value" lines of row $2 (from 0); fails past the end.
qlora_sweep_row() {
    awk -v want="$2" '
        /^[ \t]*(#|$)/ { next }
        !keys { n = split($0, k); keys = 1; next }
        row++ == want {
            if (NF != n) { printf "%s: row %d has %d values for %d keys\n", FILENAME, want, NF, n > "/dev/stderr"; exit 3 }
            for (i = 1; i <= n; i++) print k[i] "=" $i; found = 1; exit 0 }
        END { if (!found) exit 1 }' "$1"
}

qlora_sweep_rows() { awk '/^[ \t]*(#|$)/ { next } !h { h = 1; next } { n++ } END { print n + 0 }' "$1"; }

# The run directory name of a row: its index and values, e.g. 01-lr2e-4-r16.
qlora_sweep_name() {
    local name kv key
    name=$(printf '%02d' "$1")
    shift
    for kv in "$@"; do
        key=${kv%%=*}
        name="$name-${key##*.}${kv#*=}"
    done
    printf '%s' "$name" | tr -c 'A-Za-z0-9._+-' '_'
}

# One array task of a sweep: CONFIG TABLE OUTDIR [--key=value ...].
qlora_slurm_sweep() {
    [ $# -ge 3 ] || { qlora_slurm_log "usage: sbatch --array=0-N slurm/sweep.sbatch CONFIG.yaml TABLE OUTDIR [--key=value ...]"; exit 2; }
    local cfg=$1 table=$2 outdir=$3 idx=${SLURM_ARRAY_TASK_ID:-0} rows kv run
    shift 3
    [ -r "$table" ] || { qlora_slurm_log "sweep table $table: cannot read it"; exit 1; }
    rows=$(qlora_sweep_rows "$table")
    local -a row=() ov=()
    mapfile -t row < <(qlora_sweep_row "$table" "$idx") || true
    if [ ${#row[@]} = 0 ]; then
        qlora_slurm_log "sweep table $table has $rows rows (0-$((rows - 1))); array index $idx has none"
        exit 2
    fi
    for kv in "${row[@]}"; do ov+=("--$kv"); done
    run=$outdir/$(qlora_sweep_name "$idx" "${row[@]}")
    mkdir -p "$outdir" || exit 1
    qlora_slurm_log "sweep task $idx of $rows: ${row[*]} -> $run"
    _qlora_sweep_summary_job "$table" "$outdir"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    qlora_slurm_banner
    qlora_slurm_launcher || exit 2
    qlora_slurm_run "${QLORA_LAUNCHER[@]}" "$QLORA" train "$cfg" "$@" "${ov[@]}" --output_dir="$run"
    local rc=$?
    # what the summary reports for this row (a requeued task writes it again)
    mkdir -p "$run" && echo "$rc $(qlora_slurm_job) $(date '+%Y-%m-%dT%H:%M:%S')" >"$run/slurm-exit"
    qlora_slurm_finish $rc
}

# Submits, once per sweep, the job that writes OUTDIR/summary.tsv after every
# task of the array has ended (afterany: failed tasks are reported too).
_qlora_sweep_summary_job() {
    local table=$1 outdir=$2 id lock
    [ -n "${SLURM_ARRAY_JOB_ID:-}" ] || return 0
    lock=$outdir/.summary-job-$SLURM_ARRAY_JOB_ID
    mkdir "$lock" 2>/dev/null || return 0 # another task of this array did it
    if id=$(sbatch --parsable --dependency="afterany:$SLURM_ARRAY_JOB_ID" \
        --job-name="${SLURM_JOB_NAME:-qlora-sweep}-summary" --nodes=1 --ntasks=1 \
        --cpus-per-task=1 --time=10 --open-mode=append --output="$outdir/summary.log" \
        ${QLORA_SUMMARY_SBATCH_ARGS:-} \
        --wrap="bash '$QLORA_SLURM_DIR/sweep-summary.sh' '$table' '$outdir'" 2>&1); then
        echo "$id" >"$lock/id"
        qlora_slurm_log "summary job $id writes $outdir/summary.tsv when the sweep has ended"
    else
        rmdir "$lock"
        qlora_slurm_log "could not submit the summary job ($id); run" \
            "slurm/sweep-summary.sh $table $outdir when the sweep has ended"
    fi
}

# Executed rather than sourced: wrap the command given.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    [ $# -ge 1 ] || { echo "usage: qlora-requeue.sh COMMAND [ARGS...]" >&2; exit 2; }
    qlora_slurm_banner
    qlora_slurm_run "$@"
    qlora_slurm_finish $?
fi
