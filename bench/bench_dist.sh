#!/usr/bin/env bash
# Data-parallel weak scaling on the CPU: `qlora train` on 1 rank and on 2
# ranks (mpirun --bind-to core), each rank one core (OMP_NUM_THREADS=1) and
# the same rows per rank per step, so the 2-rank global batch is twice the
# 1-rank one. For each model: the median step time of each, their ratio
# (1.0 = perfect weak scaling), and the share of rank 0's step spent in
# collectives (the agreement, the loss sum, the gradient reduce-scatter, the
# norm, the parameter all-gather; waiting for the other rank included), from
# metrics.jsonl's elapsed_s and comm_s; and, beside them, the same
# collectives alone on a vector of the adapter's size (build/bench_comm, 2
# ranks): the transfer without the waiting.
#
#   bench/bench_dist.sh [--build DIR] [--json PATH] [--steps N] [--reps K] [--quick]
#
# Each model runs 1 rank, 2 ranks, two independent 1-rank runs at once
# ("2 x 1": what this machine gives two busy processes, communication
# aside), and again (K times each, N steps, the first 2 of each run not
# timed), so that a change of the machine's load touches every side; the
# medians and the best steps are reported. 2/1 is the weak-scaling step-time
# ratio (1.0 is perfect); 2/2x1 the same against two independent processes,
# which takes the machine's own contention out.
#
# Models: the tiny random Llama of the tests (tests/fixtures/
# make_tiny_hf_model.py: 2 layers, hidden 64; its step is milliseconds, so
# communication is as large a share as it gets), and a SmolLM2-135M-shaped
# random Llama when ${QL_CACHE:-~/.cache/qlora}/bench-smollm2-135m-random
# exists (bench/torch_lora_step.py --write-model writes it; bench_train.sh
# does so once). Prints a table; writes JSON to PATH (default
# bench/results/dist-<hostname>.json).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build
json=""
steps=8 warm=2 reps=2
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --quick) steps=4 warm=1 reps=1; shift ;;
    *) echo "usage: bench/bench_dist.sh [--build DIR] [--json PATH] [--steps N] [--reps K] [--quick]" >&2; exit 2 ;;
    esac
done
json=${json:-$repo/bench/results/dist-$(hostname).json}
py=$repo/.venv/bin/python
qlora=$build/qlora
[ -x "$qlora" ] && [ -x "$build/bench_comm" ] || { echo "bench_dist: no $qlora or $build/bench_comm (build first)" >&2; exit 1; }
[ -x "$py" ] || { echo "bench_dist: no $py (scripts/setup.sh)" >&2; exit 1; }
big=${QL_CACHE:-$HOME/.cache/qlora}/bench-smollm2-135m-random
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
"$py" "$repo/tests/fixtures/make_tiny_hf_model.py" "$tmp/tiny" --dtype f32 >/dev/null

# name model seq rows_per_rank vocab
cases=("tiny $tmp/tiny 64 4 97")
[ -f "$big/model.safetensors" ] && cases+=("smollm2-135m-shaped $big 128 1 49152")

: >"$tmp/empty.yaml" # every key from the command line
cut -d' ' -f1-3 /proc/loadavg >"$tmp/load_before"
for c in "${cases[@]}"; do
    set -- $c
    name=$1 model=$2 seq=$3 rows=$4 vocab=$5
    # records of exactly seq tokens, one per row (no packing), random ids
    "$py" - "$tmp/$name.jsonl" "$seq" "$vocab" <<'EOF'
import json, random, sys
r = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(256):
        f.write(json.dumps({"input_ids": [r.randrange(int(sys.argv[3])) for _ in range(int(sys.argv[2]))]}) + "\n")
EOF
    for run in $(seq "$reps"); do for np in 1 2 pair; do
        gb=$((rows * ${np/pair/1})) out=$tmp/$name-$np-$run
        args=(train "$tmp/empty.yaml" --model="$model" --data.train="$tmp/$name.jsonl" --output_dir="$out"
            --data.max_seq_len="$seq" --data.packing=false --data.cache=false --train.steps="$steps"
            --train.global_batch=$gb --train.micro_batch="$rows" --lora.r=16 --lora.alpha=32
            --train.warmup_steps=0 --train.lr=1e-4)
        echo "$name: $np rank(s), $rows x $seq tokens per rank per step (run $run) ..." >&2
        if [ $np = 1 ]; then
            "$qlora" "${args[@]}" >"$out.out" 2>"$out.err"
        elif [ $np = pair ]; then # two independent 1-rank runs at once: the machine's own scaling
            "$qlora" "${args[@]}" --output_dir="$out-b" >"$out-b.out" 2>"$out-b.err" &
            "$qlora" "${args[@]}" >"$out.out" 2>"$out.err" && wait $! &&
                echo "$name $np $seq $rows $out-b/metrics.jsonl" >>"$tmp/runs"
        else
            mpirun --allow-run-as-root -np 2 -x OMP_NUM_THREADS -x OMP_WAIT_POLICY \
                "$qlora" "${args[@]}" >"$out.out" 2>"$out.err"
        fi || { tail -n 5 "$out.err" >&2; exit 1; }
        echo "$name $np $seq $rows $out/metrics.jsonl" >>"$tmp/runs"
    done; done
    # the same collectives alone, on a vector of the adapter's size
    n=$("$py" -c 'import sys; from safetensors.numpy import load_file
print(sum(t.size for t in load_file(sys.argv[1]).values()))' "$tmp/$name-1-1/adapter/adapter_model.safetensors")
    mpirun --allow-run-as-root -np 2 "$build/bench_comm" --n "$n" --iters 20 |
        sed "s/^{/{\"model\": \"$name\", /" >>"$tmp/comm"
done
cut -d' ' -f1-3 /proc/loadavg >"$tmp/load_after"

"$py" - "$tmp" "$json" "$warm" <<'EOF'
import datetime, json, os, platform, statistics, sys
tmp, out, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
steps_of = {}
for line in open(os.path.join(tmp, "runs")):
    name, np, seq, rows, path = line.split()
    m = [json.loads(l) for l in open(path) if '"loss"' in l]
    el = [r["elapsed_s"] for r in m]
    d = steps_of.setdefault((name, np, int(seq), int(rows)), {"step": [], "comm": []})
    d["step"] += [b - a for a, b in zip([0.0] + el[:-1], el)][warm:]
    d["comm"] += [r.get("comm_s", 0.0) for r in m][warm:]
runs = {}
for (name, np, seq, rows), d in steps_of.items():
    step, comm = d["step"], d["comm"]
    best = min(range(len(step)), key=lambda i: step[i])
    ranks = 1 if np == "pair" else int(np)
    runs.setdefault(name, {})[np] = {
        "ranks": ranks, "seq": seq, "rows_per_rank": rows, "tokens_per_rank_per_step": seq * rows,
        "steps_timed": len(step), "step_s": step, "comm_s": comm,
        "step_s_median": statistics.median(step), "step_s_min": step[best],
        "comm_s_median": statistics.median(comm),
        "comm_share_median": statistics.median(c / s for c, s in zip(comm, step)),
        "comm_share_of_best_step": comm[best] / step[best],
        "tokens_per_s": ranks * seq * rows / statistics.median(step)}
comm = {}
for line in open(os.path.join(tmp, "comm")):
    d = json.loads(line)
    comm[d["model"]] = d
rows = []
print("%-20s %6s %9s %6s %9s %9s %9s %8s %8s %11s %9s %11s" % (
    "model", "tokens", "adapter", "step", "1 rank s", "2 ranks s", "2 x 1 s", "2/1", "2/2x1",
    "comm share", "alone s", "alone share"))
for name, r in runs.items():
    one, two, pair, alone = r["1"], r["2"], r["pair"], comm[name]
    ratio = two["step_s_median"] / one["step_s_median"]
    ratio_best = two["step_s_min"] / one["step_s_min"]
    share_alone = alone["step_comm_s"] / two["step_s_median"]
    rows.append({"model": name, "adapter_params": alone["n"], "one_rank": one, "two_ranks": two,
                 "two_independent_one_rank_runs": pair,
                 "step_time_ratio": ratio, "step_time_ratio_best": ratio_best,
                 "step_time_ratio_vs_independent": two["step_s_median"] / pair["step_s_median"],
                 "comm_share_two_ranks": two["comm_share_median"],
                 "collectives_alone": alone, "collectives_alone_share": share_alone})
    for what, a, b, p2, rt, sh in (("median", one["step_s_median"], two["step_s_median"],
                                    pair["step_s_median"], ratio, two["comm_share_median"]),
                                   ("best", one["step_s_min"], two["step_s_min"],
                                    pair["step_s_min"], ratio_best,
                                    two["comm_share_of_best_step"])):
        c = alone["step_comm_s" if what == "median" else "step_comm_s_min"]
        print("%-20s %6s %9d %6s %9.4f %9.4f %9.4f %8.3f %8.3f %10.1f%% %9.4f %10.1f%%" % (
            name, f"{one['rows_per_rank']}x{one['seq']}", alone["n"], what, a, b, p2, rt, b / p2,
            100 * sh, c, 100 * c / b))
result = {
    "benchmark": "bench/bench_dist.sh",
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "host": platform.node(), "cpu": cpu, "nproc": os.cpu_count(),
    "load_before": open(os.path.join(tmp, "load_before")).read().split(),
    "load_after": open(os.path.join(tmp, "load_after")).read().split(),
    "method": "weak scaling: 1 rank vs 2 ranks (mpirun), OMP_NUM_THREADS=1, same rows per "
              "rank; and two independent 1-rank runs at once (2 x 1: what the machine gives two "
              "processes); LoRA r 16 on all seven projections; runs interleaved 1,2,2x1,...; medians "
              "and best over the steps after %d warm-up steps of each run; comm = rank 0's time "
              "in collectives (waiting for the other rank included); alone = bench_comm, the "
              "same collectives without the model" % warm,
    "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    "results": rows,
}
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print("wrote " + out)
EOF
