#!/usr/bin/env bash
# Perplexity of the real fixture model, SmolLM2-135M-Instruct, on ordinary
# English prose (the GPL-3 preamble, tests/fixtures/smollm2/eval.jsonl, made by
# tests/fixtures/make_smollm2_text.py):
#   - `qlora eval --model HF_DIR` and `qlora eval --model GGUF` each give a
#     perplexity in the range a 135M model has on prose (3 < ppl < 100: tens,
#     not thousands, which a wrong RoPE, norm or tokenizer would give);
#   - the two agree within 5 % (both come from the same Q4_1 weights; the HF
#     directory adds a bf16 rounding before NF4, which flips some NF4 codes);
#   - each matches an independent numpy forward pass
#     (tests/e2e/smollm2_reference_ppl.py: check_hf_forward's float32 forward
#     on weights taken through check_bnb4's numpy NF4 + double quant) to
#     2e-3 in mean loss;
#   - the unquantized float32 numpy perplexity is in range too; how far NF4
#     moves it is printed (about +48 %: NF4 on top of the GGUF's Q4_1 costs a
#     135M model a lot).
# Skipped (77) when the model is not cached and QL_NET is not 1.
set -uo pipefail
src=${QL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
qlora=${QLORA:-$src/build/qlora}
cache=${QL_CACHE:-$HOME/.cache/qlora}
py=${QL_PYTHON:-$src/.venv/bin/python}
data=$src/tests/fixtures/smollm2/eval.jsonl
gguf=$cache/SmolLM2-135M-Instruct.Q4_1.gguf

if [ ! -f "$cache/.SmolLM2-135M-Instruct-hf.done" ] && [ "${QL_NET:-0}" != 1 ]; then
    echo "skip: SmolLM2 not cached in $cache (QL_NET=1 to fetch it)"
    exit 77
fi
if [ ! -x "$py" ]; then
    echo "skip: no Python at $py (run scripts/setup.sh)"
    exit 77
fi
if ! hf=$(QL_PYTHON=$py "$src/scripts/fetch_smollm2.sh" "$cache" | tail -n1) ||
    [ ! -f "$hf/model.safetensors" ] || [ ! -f "$gguf" ]; then
    echo "FAIL: scripts/fetch_smollm2.sh"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# Last line of `qlora eval` is {"loss": ..., "perplexity": ..., "tokens": ...}.
run_eval() { # name model
    local t0 t1 rc=0
    t0=$(date +%s%N)
    "$qlora" eval --model "$2" --data "$data" >"$tmp/$1.out" 2>"$tmp/$1.err" || rc=$?
    if [ "$rc" != 0 ]; then
        bad "qlora eval --model $2 exited with $rc"
        cat "$tmp/$1.err" "$tmp/$1.out"
        return 1
    fi
    t1=$(date +%s%N)
    tail -n1 "$tmp/$1.out" >"$tmp/$1.json"
    echo "$1: $(cat "$tmp/$1.json") ($(((t1 - t0) / 1000000)) ms)"
}

# The numpy references (tests/e2e/smollm2_reference_ppl.py): float32, and
# with the linears taken through NF4 + double quant as qlora loads them.
ref() { # name args...
    local name=$1
    shift
    if "$py" "$src/tests/e2e/smollm2_reference_ppl.py" "$@" --data "$data" >"$tmp/$name.json"; then
        echo "$name: $(cat "$tmp/$name.json")"
    else
        bad "numpy reference $name"
    fi
}
ref numpy_f32 --model "$hf"
ref numpy_nf4 --model "$hf" --nf4
ref numpy_nf4_gguf --gguf "$gguf" --nf4

run_eval hf "$hf"
run_eval gguf "$gguf"

# Every comparison in one place, so the numbers are printed together.
"$py" - "$tmp" <<'EOF'
import json, os, sys
tmp = sys.argv[1]

def load(name):
    p = os.path.join(tmp, name + ".json")
    try:
        with open(p) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None

r = {k: load(k) for k in ("hf", "gguf", "numpy_f32", "numpy_nf4", "numpy_nf4_gguf")}
passed = failed = 0

def check(cond, what):
    global passed, failed
    print(("ok: " if cond else "FAIL: ") + what)
    passed += bool(cond)
    failed += not cond

if r["numpy_f32"]:
    ppl = r["numpy_f32"]["perplexity"]
    check(3 < ppl < 100, f"numpy float32 (unquantized): perplexity {ppl:.3f} in (3, 100)")
for k, ref in (("hf", "numpy_nf4"), ("gguf", "numpy_nf4_gguf")):
    if r[k] is None:
        check(False, f"{k}: no final JSON line from qlora eval")
        continue
    ppl = r[k]["perplexity"]
    check(3 < ppl < 100, f"{k}: perplexity {ppl:.3f} in (3, 100)")
    if r[ref]:
        check(r[k]["tokens"] == r[ref]["tokens"],
              f"{k}: {r[k]['tokens']} target tokens (numpy {r[ref]['tokens']})")
        d = r[k]["loss"] - r[ref]["loss"]
        check(abs(d) < 2e-3, f"{k}: loss {r[k]['loss']:.6f} vs numpy NF4 {r[ref]['loss']:.6f}: "
              f"{d:+.2e} (limit 2e-3)")
    if r["numpy_f32"]:
        print(f"info: {k}: perplexity {100 * (ppl / r['numpy_f32']['perplexity'] - 1):+.1f} % "
              f"vs the unquantized float32 model (NF4 on top of Q4_1)")
if r["hf"] and r["gguf"]:
    rel = r["gguf"]["perplexity"] / r["hf"]["perplexity"] - 1
    check(abs(rel) < 0.05, f"GGUF vs HF dir perplexity: {100 * rel:+.2f} % (limit 5 %)")
with open(os.path.join(tmp, "counts"), "w") as f:
    f.write(f"{passed} {failed}\n")
EOF
if [ -f "$tmp/counts" ]; then
    read -r p f <"$tmp/counts"
    pass=$((pass + p)) fail=$((fail + f))
else
    fail=$((fail + 1))
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
