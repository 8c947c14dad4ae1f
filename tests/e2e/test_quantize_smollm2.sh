#!/usr/bin/env bash
# qlora quantize on a real model: SmolLM2-135M-Instruct as the HF directory
# that tests/e2e/test_smollm2_convert.sh caches (BF16, tied embeddings, 30
# layers). Every 4-bit byte is re-derived in numpy by check_bnb4.py.
# Skipped (77) when that directory is not cached.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
cache=${QL_CACHE:-$HOME/.cache/qlora}
hf=$cache/SmolLM2-135M-Instruct-hf
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -f "$hf/model.safetensors" ] || { echo "skip: $hf not cached"; exit 77; }
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$QLORA" quantize --model "$hf" --out "$T/q" --quiet >"$T/stdout" || exit 1
cat "$T/stdout"
grep -q '^quantized 210 linear weights to nf4 (double quant, block 64); kept 62 tensors' "$T/stdout" || { echo "FAIL: summary"; exit 1; }
grep -q '^bits/param: 4\.127 for the 4-bit linears' "$T/stdout" || { echo "FAIL: bits/param"; exit 1; }
"$PY" "$QL_SOURCE_DIR/tests/e2e/check_bnb4.py" --orig "$hf" --quant "$T/q"
