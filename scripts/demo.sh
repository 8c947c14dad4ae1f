#!/usr/bin/env bash
# The main job as it stands: fetch SmolLM2-135M-Instruct (cached outside the
# repo, see docs/models.md), turn it into a Hugging Face model directory, and
# quantize it with `qlora quantize` to bitsandbytes NF4 + double quantization.
# Usage: scripts/demo.sh [OUT_DIR]   (default out/smollm2-135m-nf4)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/smollm2-135m-nf4}
model=$(scripts/fetch_smollm2.sh | tail -n 1)
mkdir -p "$(dirname "$out")"
build/qlora quantize --model "$model" --out "$out" --force
echo "demo: quantized model in $out"
