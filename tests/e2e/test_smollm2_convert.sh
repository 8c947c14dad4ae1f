#!/usr/bin/env bash
# The fixture model: scripts/fetch_smollm2.sh turns the SmolLM2-135M-Instruct
# Q4_1 GGUF into an HF directory, and scripts/check_hf_forward.py runs a numpy
# forward pass on it (chat prompt "What is the capital of France?" must be
# continued with "Paris"; logits must match a forward pass on the GGUF's own
# layout with interleaved RoPE, which catches a wrong Q/K un-permutation).
# Skipped (77) when the model is not cached and QL_NET is not 1 (fetching
# needs PyPI).  Cache: ${QL_CACHE:-$HOME/.cache/qlora}.
set -uo pipefail
src=${QL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cache=${QL_CACHE:-$HOME/.cache/qlora}
py=${QL_PYTHON:-$src/.venv/bin/python}
marker=$cache/.SmolLM2-135M-Instruct-hf.done

if [ ! -f "$marker" ] && [ "${QL_NET:-0}" != 1 ]; then
    echo "skip: SmolLM2 not cached in $cache (QL_NET=1 to fetch it)"
    exit 77
fi
if [ ! -x "$py" ]; then
    echo "skip: no Python at $py (run scripts/setup.sh)"
    exit 77
fi

pass=0 fail=0
if hf=$(QL_PYTHON=$py "$src/scripts/fetch_smollm2.sh" "$cache" | tail -n1) &&
    [ -f "$hf/model.safetensors" ]; then
    echo "ok: fetch -> $hf"
    pass=$((pass + 1))
else
    echo "FAIL: scripts/fetch_smollm2.sh"
    echo "$pass passed, $((fail + 2)) failed"
    exit 1
fi

if "$py" "$src/scripts/check_hf_forward.py" "$hf" \
    --gguf "$cache/SmolLM2-135M-Instruct.Q4_1.gguf"; then
    pass=$((pass + 1))
else
    echo "FAIL: scripts/check_hf_forward.py"
    fail=$((fail + 1))
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
