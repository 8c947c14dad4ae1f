#!/usr/bin/env bash
# The main job: fetch SmolLM2-135M-Instruct (cached outside the repo, see
# docs/models.md), quantize it to bitsandbytes NF4 (an HF directory that
# transformers loads), then QLoRA-fine-tune it on the project's code
# instructions (examples/smollm2-code.yaml, data/code/) straight from its GGUF
# file and evaluate the adapter on the held-out functions.
# Usage: scripts/demo.sh [OUT_DIR] [--key=value ...]   (default out/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=out
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out=$1; shift; fi
hf=$(scripts/fetch_smollm2.sh | tail -n 1)
gguf=$(dirname "$hf")/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$out"

echo "== quantize: $hf -> $out/smollm2-135m-nf4"
build/qlora quantize --model "$hf" --out "$out/smollm2-135m-nf4" --force --quiet

echo "== train: examples/smollm2-code.yaml"
build/qlora train examples/smollm2-code.yaml --model="$gguf" --output_dir="$out/smollm2-code" \
    --overwrite_output_dir=true "$@"

echo "== eval on data/code/valid.jsonl: base model, then with the adapter"
build/qlora eval --model "$gguf" --data data/code/valid.jsonl --max-seq-len 256 | tail -n 1
build/qlora eval --model "$gguf" --adapter "$out/smollm2-code" --data data/code/valid.jsonl \
    --max-seq-len 256 | tail -n 1
echo "demo: adapter (PEFT format) in $out/smollm2-code/adapter, metrics in $out/smollm2-code/metrics.jsonl"
