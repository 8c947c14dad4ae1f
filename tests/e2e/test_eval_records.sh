#!/usr/bin/env bash
# qlora eval reads every record format through the model's tokenizer, as
# qlora train does: prompt/completion (loss on the completion only), the same
# functions as plain text (loss on every token), and a bad record named by
# file:line. Uses the cached SmolLM2 GGUF (exit 77 when it is absent).
set -euo pipefail
gguf=${QL_CACHE:-$HOME/.cache/qlora}/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || { echo "no cached SmolLM2 GGUF: skipped"; exit 77; }
py=$QL_SOURCE_DIR/.venv/bin/python
[ -x "$py" ] || py=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }

head -n 3 "$QL_SOURCE_DIR/data/code/valid.jsonl" >"$tmp/pc.jsonl"
"$py" - "$tmp/pc.jsonl" "$tmp/text.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as g:
    for line in f:
        r = json.loads(line)
        g.write(json.dumps({"text": r["prompt"] + r["completion"]}) + "\n")
PY
ev() { "$QLORA" eval --model "$gguf" --data "$1" --max-seq-len 512 --quiet | tail -n 1; }
pc=$(ev "$tmp/pc.jsonl")
tx=$(ev "$tmp/text.jsonl")
echo "prompt/completion: $pc"
echo "text:              $tx"
field() { "$py" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
check "finite losses" '[ "$("$py" -c "import math,sys; print(all(math.isfinite(float(x)) for x in sys.argv[1:]))" "$(field "$pc" loss)" "$(field "$tx" loss)")" = True ]'
check "text has loss on more tokens" '[ "$(field "$tx" tokens)" -gt "$(field "$pc" tokens)" ]'
check "completion-only loss differs from whole-text loss" '[ "$(field "$pc" loss)" != "$(field "$tx" loss)" ]'

printf '{"prompt": "def f():\\n", "completion": "    return 1\\n"}\n{"prompt": 3}\n' >"$tmp/bad.jsonl"
if out=$("$QLORA" eval --model "$gguf" --data "$tmp/bad.jsonl" --quiet 2>&1); then rc=0; else rc=$?; fi
echo "bad record: rc $rc: $out"
check "bad record exits 1" '[ "$rc" = 1 ]'
check "bad record named by file:line" 'echo "$out" | grep -q "bad.jsonl:2"'
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
