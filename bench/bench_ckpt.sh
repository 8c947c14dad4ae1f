#!/usr/bin/env bash
# Checkpoint benchmark: bench_ckpt at 1 rank and at 4 ranks (mpirun
# --oversubscribe), a Llama-3-8B-sized adapter (42M parameters; params, AdamW
# m and v: 504 MB), against plain fwrite+fsync / fread of the same bytes.
#
#   bench/bench_ckpt.sh [--build DIR] [--json PATH] [--params N] [--reps K] [--dir DIR]
#
# --dir: where the files go (default /tmp; put it on the file system the
# checkpoints will live on). Prints each run's table; writes JSON to PATH
# (default bench/results/ckpt-<hostname>.json).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build json="" params=42000000 reps=3 dir=/tmp
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --params) params=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "usage: bench/bench_ckpt.sh [--build DIR] [--json PATH] [--params N] [--reps K] [--dir DIR]" >&2; exit 2 ;;
    esac
done
json=${json:-$repo/bench/results/ckpt-$(hostname).json}
bin=$build/bench_ckpt
[ -x "$bin" ] || { echo "bench_ckpt: no $bin (build first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$bin" --params "$params" --reps "$reps" --dir "$dir" | tee "$tmp/1.out"
mpirun -np 4 --allow-run-as-root --oversubscribe "$bin" --params "$params" --reps "$reps" \
    --dir "$dir" | tee "$tmp/4.out"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$tmp" "$json" "$load_before" "$load_after" "$dir" <<'EOF'
import datetime, json, os, platform, subprocess, sys
tmp, out, lb, la, d = sys.argv[1:6]
rows = []
for n in ("1", "4"):
    for l in open(os.path.join(tmp, n + ".out")):
        if l.startswith("{"):
            rows.append(json.loads(l))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
fs = subprocess.run(["df", "-T", d], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
doc = {
    "benchmark": "checkpoint write/read (bench/bench_ckpt.sh)",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
    "dir": d, "filesystem": fs,
    "loadavg_before": lb, "loadavg_after": la,
    "goal": "write and read within 1.5x of plain fwrite+fsync / fread of the same bytes",
    "runs": rows,
}
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(doc, open(out, "w"), indent=1)
print(f"wrote {out}")
EOF
