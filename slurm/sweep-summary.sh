#!/usr/bin/env bash
# Writes OUTDIR/summary.tsv for a sweep run by slurm/sweep.sbatch: one line per
# row of TABLE with its values, how the run ended and its final losses, sorted
# by the final eval loss (runs without one last). The sweep submits this as a
# job that starts when every array task has ended; it can also be run by hand.
#
#   slurm/sweep-summary.sh TABLE OUTDIR
#
# Columns: index, the table's keys, status (done | failed(exit N) |
# checkpointed: ended at the restart cap | incomplete: never ended by itself),
# eval_loss (the last "eval_loss" in metrics.jsonl: the end-of-training
# evaluation on data.valid or data.valid_fraction; "-" without validation
# data), train_loss and steps (of the last step), run (the output directory).
set -u
[ $# = 2 ] || { echo "usage: sweep-summary.sh TABLE OUTDIR" >&2; exit 2; }
table=$1 outdir=$2
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/qlora-requeue.sh" || exit 1
[ -r "$table" ] || { echo "sweep-summary.sh: cannot read $table" >&2; exit 1; }
[ -d "$outdir" ] || { echo "sweep-summary.sh: no directory $outdir" >&2; exit 1; }

# the value of "KEY" in the last line of FILE that has it
json_last() { grep "\"$2\": " "$1" 2>/dev/null | tail -n1 | grep -o "\"$2\": [^,}]*" | sed 's/.*: //'; }
# the value of "KEY" in the last line of FILE that has "OTHER"
json_last_with() { grep "\"$3\": " "$1" 2>/dev/null | tail -n1 | grep -o "\"$2\": [^,}]*" | sed 's/.*: //'; }

n=$(qlora_sweep_rows "$table")
keys=$(awk '/^[ \t]*(#|$)/ { next } { $1 = $1; gsub(/ /, "\t"); print; exit }' "$table")
nk=$(printf '%s\n' "$keys" | awk -F'\t' '{print NF}')
col=$((nk + 3)) # eval_loss
T=$'\t'
tmp="$outdir/.summary.tsv.$$"

rows() {
    local i rc status m ev tl st vals run
    for ((i = 0; i < n; i++)); do
        mapfile -t row < <(qlora_sweep_row "$table" "$i")
        run=$outdir/$(qlora_sweep_name "$i" "${row[@]}")
        status=incomplete
        if [ -s "$run/slurm-exit" ]; then
            rc=$(awk '{print $1; exit}' "$run/slurm-exit")
            case $rc in
            0) status="done" ;;
            75) status=checkpointed ;;
            *) status="failed(exit $rc)" ;;
            esac
        fi
        m=$run/metrics.jsonl
        ev=$(json_last "$m" eval_loss)
        tl=$(json_last "$m" loss)
        st=$(json_last_with "$m" step loss)
        vals=$(printf '%s\n' "${row[@]}" | sed 's/^[^=]*=//' | paste -sd "$T" -)
        printf '%d\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$vals" "$status" "${ev:--}" "${tl:--}" \
            "${st:--}" "$run"
    done
}

{
    printf 'index\t%s\tstatus\teval_loss\ttrain_loss\tsteps\trun\n' "$keys"
    # by eval loss, lowest first; runs without one ("-", null) last
    rows | awk -F'\t' -v c=$col -v none="$tmp.none" \
        '$c == "-" || $c == "null" { print > none; next } { print }' |
        sort -t "$T" -s -k "$col,${col}g"
    [ -f "$tmp.none" ] && cat "$tmp.none"
    true
} >"$tmp" && mv -f "$tmp" "$outdir/summary.tsv" || { rm -f "$tmp" "$tmp.none"; exit 1; }
rm -f "$tmp.none"
echo "sweep-summary.sh: wrote $outdir/summary.tsv ($n runs)"
column -t -s "$T" "$outdir/summary.tsv" 2>/dev/null || cat "$outdir/summary.tsv"
