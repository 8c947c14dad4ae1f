#!/usr/bin/env bash
# Training-step benchmark: qlora's QLoRA step (bench_train, the "cpu" backend)
# next to a PyTorch LoRA step (bench/torch_lora_step.py: transformers + PEFT
# where they import, else a hand-written Llama), fp32, on the same
# SmolLM2-135M-shaped model with random weights and the same tokens per step.
#
#   bench/bench_train.sh [--build DIR] [--json PATH] [--quick]
#
# Env: QL_TORCH_PYTHON  the Python with torch (default /usr/bin/python3);
#      QL_CACHE         where the random model is written once
#                       (default ~/.cache/qlora/bench-smollm2-135m-random).
# Each side of each shape runs in its own process, so each peak resident
# memory (VmHWM) is its own. Prints a table; writes JSON to PATH (default
# bench/results/train-<hostname>.json).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build
json=""
steps=5 warmup=2
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --quick) steps=3 warmup=1; shift ;;
    *) echo "usage: bench/bench_train.sh [--build DIR] [--json PATH] [--quick]" >&2; exit 2 ;;
    esac
done
json=${json:-$repo/bench/results/train-$(hostname).json}
py=${QL_TORCH_PYTHON:-/usr/bin/python3}
model=${QL_CACHE:-$HOME/.cache/qlora}/bench-smollm2-135m-random
bin=$build/bench_train
[ -x "$bin" ] || { echo "bench_train: no $bin (build first)" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null || { echo "bench_train: no torch in $py (set QL_TORCH_PYTHON)" >&2; exit 1; }
if [ ! -f "$model/model.safetensors" ]; then
    echo "writing the random SmolLM2-135M-shaped model to $model" >&2
    "$py" "$repo/bench/torch_lora_step.py" --write-model "$model"
fi

# bench_train does not restart itself as qlora does (launcher/blas_tune.c):
# it gets the kernels qlora would run with, unless the caller chose.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x "$build/qlora" ]; then
    core=$(OPENBLAS_VERBOSE=2 "$build/qlora" version 2>&1 >/dev/null | sed -n 's/^Core: //p' | tail -n 1)
    [ -z "$core" ] || export OPENBLAS_CORETYPE=$core
fi

threads=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cut -d' ' -f1-3 /proc/loadavg >"$tmp/load_before"
for shape in "1 256" "4 256"; do
    set -- $shape
    echo "batch $1 x seq $2: qlora ..." >&2
    "$bin" --model "$model" --batch "$1" --seq "$2" --steps $steps --warmup $warmup >>"$tmp/rows"
    echo "batch $1 x seq $2: torch ..." >&2
    "$py" "$repo/bench/torch_lora_step.py" --model "$model" --batch "$1" --seq "$2" \
        --steps $steps --warmup $warmup --threads "$threads" 2>"$tmp/torch.err" >>"$tmp/rows" ||
        { cat "$tmp/torch.err" >&2; exit 1; }
done
cut -d' ' -f1-3 /proc/loadavg >"$tmp/load_after"

"$py" - "$tmp" "$json" "$model" <<'EOF'
import datetime, json, os, platform, sys
tmp, out, model = sys.argv[1:4]
rows = [json.loads(l) for l in open(os.path.join(tmp, "rows")) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
GOAL_SPEED, GOAL_MEM = 1.2, 0.5
pairs = []
for q, t in zip(rows[0::2], rows[1::2]):
    speed = q["tokens_per_s"] / t["tokens_per_s"]
    mem = q["peak_rss_mb"] / t["peak_rss_mb"]
    pairs.append({"batch": q["batch"], "seq": q["seq"], "qlora": q, "torch": t,
                  "speed_ratio": speed, "memory_ratio": mem,
                  "speed_ok": speed >= GOAL_SPEED, "memory_ok": mem <= GOAL_MEM})
hdr = ("tokens", "side", "step ms", "best ms", "tokens/s", "peak RSS MB", "train-phase MB", "loss")
print("%-8s %-26s %10s %10s %10s %12s %14s %8s" % hdr)
for p in pairs:
    for side in ("qlora", "torch"):
        r = p[side]
        name = r["impl"] + (" " + r.get("torch", "") if side == "torch" else "")
        print("%-8s %-26s %10.1f %10.1f %10.1f %12.0f %14s %8.3f" % (
            f"{p['batch']}x{p['seq']}", name[:26], r["step_ms"], r["step_ms_min"], r["tokens_per_s"],
            r["peak_rss_mb"],
            "%.0f" % r["peak_rss_train_mb"] if r["peak_rss_train_mb"] is not None else "-",
            r["loss_first"]))
    print("%-8s %-26s tokens/s ratio %.2f (goal >= %.1f: %s); peak memory ratio %.2f (goal <= %.1f: %s)" % (
        "", "qlora / torch", p["speed_ratio"], GOAL_SPEED, "ok" if p["speed_ok"] else "NOT MET",
        p["memory_ratio"], GOAL_MEM, "ok" if p["memory_ok"] else "NOT MET"))
result = {
    "benchmark": "bench/bench_train.sh",
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "host": platform.node(), "cpu": cpu, "nproc": os.cpu_count(),
    "load_before": open(os.path.join(tmp, "load_before")).read().split(),
    "load_after": open(os.path.join(tmp, "load_after")).read().split(),
    "model": "random SmolLM2-135M-shaped Llama (BF16 safetensors), " + model,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all seven projections"},
    "optimizer": "AdamW lr 2e-4 on the LoRA parameters",
    "goals": {"speed_ratio_min": GOAL_SPEED, "memory_ratio_max": GOAL_MEM},
    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
    "pairs": pairs,
}
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print("wrote " + out)
EOF
