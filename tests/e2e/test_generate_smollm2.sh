#!/usr/bin/env bash
# qlora generate, qlora eval --code and the review of qlora train on the real
# fixture model, SmolLM2-135M-Instruct (GGUF, NF4 on load):
#   - greedy generation is deterministic (two runs, same text), and the same
#     with --batch 2 as one prompt at a time; what is streamed to stdout is
#     the completion --output records; sampling with a seed repeats;
#   - every greedy token is the argmax of an independent numpy forward pass
#     (tests/e2e/check_generate_numpy.py) over the same NF4 weights;
#   - --chat renders the prompt as SmolLM2's own chat template does with
#     add_generation_prompt=True (the text written out by hand from the
#     template in tokenizer_config.json, fed with --no-chat, gives the same
#     answer);
#   - bad flags exit 2, a bad prompt file names FILE:LINE;
#   - qlora eval --code: the table, the JSON line and the --output lines for
#     base and adapter, on two records with tests;
#   - qlora train with a validation set: samples in metrics.jsonl at step 0
#     (base) and at the last step (adapter) and review.md; each sample's
#     completion equals what qlora generate writes for the same prompt
#     without and with the adapter.
# Skipped (77) when the model is not cached and QL_NET is not 1.
set -uo pipefail
src=${QL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
qlora=${QLORA:-$src/build/qlora}
cache=${QL_CACHE:-$HOME/.cache/qlora}
py=${QL_PYTHON:-$src/.venv/bin/python}

if [ ! -f "$cache/.SmolLM2-135M-Instruct-hf.done" ] && [ "${QL_NET:-0}" != 1 ]; then
    echo "skip: SmolLM2 not cached in $cache (QL_NET=1 to fetch it)"
    exit 77
fi
if [ ! -x "$py" ]; then
    echo "skip: no Python at $py (run scripts/setup.sh)"
    exit 77
fi
if ! hf=$(QL_PYTHON=$py "$src/scripts/fetch_smollm2.sh" "$cache" | tail -n1) ||
    [ ! -f "$hf/model.safetensors" ]; then
    echo "FAIL: scripts/fetch_smollm2.sh"
    exit 1
fi
gguf=$(dirname "$hf")/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# Most checks run on a bitsandbytes directory (loaded as stored, no
# quantization at each start); the review's run on the GGUF it trained from.
"$qlora" quantize --model "$hf" --out "$tmp/q" --no-double-quant --quiet || bad "quantize"
gen() { "$qlora" generate --model "$tmp/q" --quiet "$@"; }

# --- greedy: deterministic, batched == one at a time, stream == output
p='def add(a, b):
    """Return the sum of a and b."""'
gen --no-chat --max-new-tokens 24 --prompt "$p" >"$tmp/g1" || bad "generate exit $?"
gen --no-chat --max-new-tokens 24 --prompt "$p" >"$tmp/g2"
cmp -s "$tmp/g1" "$tmp/g2" || bad "two greedy runs differ"
[ -s "$tmp/g1" ] || bad "no text generated"
printf '{"prompt": "The capital of France is"}\n{"messages": [{"role": "user", "content": "Name a color."}]}\n{"text": "1, 2, 3,"}\n' >"$tmp/p.jsonl"
gen --max-new-tokens 16 --prompts "$tmp/p.jsonl" --output "$tmp/b1.jsonl" >"$tmp/s1" || bad "generate --prompts exit $?"
gen --max-new-tokens 16 --prompts "$tmp/p.jsonl" --output "$tmp/b2.jsonl" --batch 2 >/dev/null || bad "generate --batch 2 exit $?"
"$py" - "$tmp/b1.jsonl" "$tmp/b2.jsonl" "$tmp/s1" <<'EOF' || bad "batched/streamed output"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == 3 and [r["completion"] for r in a] == [r["completion"] for r in b], (a, b)
assert all(r["new_tokens"] > 0 and r["stop"] in ("eos", "length") for r in a), a
streamed = open(sys.argv[3], encoding="utf-8").read()
want = "".join("### %d\n%s\n" % (i + 1, r["completion"]) for i, r in enumerate(a))
assert streamed == want, (streamed, want)
EOF
gen --temperature 0.9 --top-k 40 --top-p 0.95 --seed 5 --max-new-tokens 24 --prompt "Tell me a story." >"$tmp/t1"
gen --temperature 0.9 --top-k 40 --top-p 0.95 --seed 5 --max-new-tokens 24 --prompt "Tell me a story." >"$tmp/t2"
cmp -s "$tmp/t1" "$tmp/t2" || bad "sampling with one seed differs between runs"

# --- greedy tokens against a numpy forward pass of the same NF4 weights
# (bitsandbytes directory without double quantization, dequantized in numpy)
gen --no-chat --max-new-tokens 16 --prompt "$p" --output "$tmp/q.jsonl" >/dev/null ||
    bad "generate on the bitsandbytes directory"
pids=$("$qlora" tokenize --model "$tmp/q" "$p" | sed -n 2p)
gids=$("$py" -c 'import json,sys; print(*json.load(open(sys.argv[1]))["ids"])' "$tmp/q.jsonl")
"$py" "$src/tests/e2e/check_generate_numpy.py" "$tmp/q" "$pids" "$gids" || bad "greedy tokens vs numpy"

# --- the chat template: SmolLM2's template with add_generation_prompt=True,
# written out from its text ({% if loop.first and messages[0]['role'] != 'system' %}
# the default system turn ... '<|im_start|>assistant\n').
chat=$'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n'
gen --max-new-tokens 20 --prompt "What is 2 + 2?" >"$tmp/c1"
gen --max-new-tokens 20 --no-chat --prompt "$chat" >"$tmp/c2"
cmp -s "$tmp/c1" "$tmp/c2" || bad "--chat differs from the template written by hand: $(cat "$tmp/c1") | $(cat "$tmp/c2")"

# --- bad input
rc=0; gen --prompt x --top-p 0 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || bad "--top-p 0: exit $rc, want 2"
rc=0; gen >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || bad "no prompt: exit $rc, want 2"
printf '{"prompt": "a"}\n{"completion": "b"}\n' >"$tmp/badp.jsonl"
rc=0; gen --prompts "$tmp/badp.jsonl" 2>"$tmp/err" >/dev/null || rc=$?
[ "$rc" = 1 ] && grep -q "badp.jsonl:2" "$tmp/err" || bad "bad prompt file: exit $rc, $(cat "$tmp/err")"

# --- a short training run with a validation set: samples and review.md
# three records with tests (prompts of 50 to 150 tokens) and one without
sed -n '8p;29p;10p;1p' "$src/data/code/valid.jsonl" >"$tmp/valid.jsonl"
"$py" -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert [x["source"] for x in r] == ["_collections_abc.py:146", "difflib.py:184", "difflib.py:222", "pickle.py:354"], r
assert ["test" in x for x in r] == [False, True, True, True]' "$tmp/valid.jsonl" || bad "valid subset"
run=$tmp/run
rc=0
"$qlora" train "$src/examples/smollm2-code.yaml" --model="$gguf" --output_dir="$run" \
    --data.train="$src/data/code/train.jsonl" --data.valid="$tmp/valid.jsonl" --train.steps=2 \
    --train.global_batch=2 --train.micro_batch=2 --train.warmup_steps=0 \
    --review.prompts=4 --review.samples=2 --review.max_new_tokens=24 >"$tmp/train.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { bad "qlora train exit $rc"; tail -n 30 "$tmp/train.out"; }
grep -q "^review: the base model's answers to 4 held-out prompts" "$tmp/train.out" || bad "no review note"
grep -q -- "--- sample 2/2, adapter" "$tmp/train.out" || bad "no adapter sample printed"
[ -s "$run/review.md" ] || bad "no review.md"
grep -q '^| \[4\](#4) | `_collections_abc.py:146` | – | – |$' "$run/review.md" ||
    bad "review.md has no row for the record without a test"
grep -q "<th>base model</th><th>adapter</th>" "$run/review.md" || bad "review.md: no side-by-side table"
"$py" - "$run/metrics.jsonl" "$tmp/valid.jsonl" >"$tmp/samples" <<'EOF' || bad "sample lines in metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = [r for r in rows if "sample" in r]
assert [(r["step"], r["sample"], r["model"]) for r in s] == [
    (0, 1, "base"), (0, 2, "base"), (2, 1, "adapter"), (2, 2, "adapter")], s
recs = [json.loads(l) for l in open(sys.argv[2])]
order = [1, 2, 3, 0]  # the review takes records with tests first, in file order
for r in s:
    k = order[r["sample"] - 1]
    assert r["prompt"] == recs[k]["prompt"], r
    assert r["test"] in ("pass", "fail", "timeout", "memory"), r
    # one line per sample for the shell: model, record line, completion as JSON
    print(r["model"], k + 1, json.dumps(r["completion"]))
EOF
# The same answers from qlora generate (prompt without its trailing newline,
# as the review and qlora eval --code feed it; the answer shown leaves off
# the newline the model writes again), both samples in one call per model.
"$py" - "$tmp/valid.jsonl" >"$tmp/sp.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
for k in (1, 2):  # the first two reviewed records: the first two with tests
    print(json.dumps({"prompt": recs[k]["prompt"].rstrip()}))
EOF
for model in base adapter; do
    extra=(--model "$gguf")
    [ "$model" = adapter ] && extra+=(--adapter "$run")
    gen "${extra[@]}" --no-chat --stop-at-dedent --max-new-tokens 24 --prompts "$tmp/sp.jsonl" \
        --output "$tmp/$model.jsonl" >/dev/null || bad "generate for the $model samples"
done
"$py" - "$tmp/samples" "$tmp/base.jsonl" "$tmp/adapter.jsonl" <<'EOF' || bad "samples differ from qlora generate"
import json, sys
got = {m: [json.loads(l)["completion"] for l in open(p)]
       for m, p in (("base", sys.argv[2]), ("adapter", sys.argv[3]))}
for line in open(sys.argv[1]):
    model, k, comp = line.split(" ", 2)
    c = got[model][int(k) - 2]  # record lines 2 and 3 of valid.jsonl
    c = c[1:] if c.startswith("\n") else c
    assert json.loads(comp) == c, (model, k, json.loads(comp), c)
EOF

# --- qlora eval --code on two records with tests, base and adapter
rc=0
"$qlora" eval --code "$tmp/valid.jsonl" --model "$gguf" --adapter "$run" --limit 2 \
    --max-new-tokens 32 --output "$tmp/code.jsonl" --quiet >"$tmp/code.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { bad "eval --code exit $rc"; cat "$tmp/code.out"; }
"$py" - "$tmp/code.out" "$tmp/code.jsonl" <<'EOF' || bad "eval --code output"
import json, sys
out = open(sys.argv[1]).read().splitlines()
j = json.loads(out[-1])
assert j["records"] == 2 and set(j["pass@1"]) == {"base", "adapter"}, j
assert any(l.startswith("pass@1") for l in out), out
lines = [json.loads(l) for l in open(sys.argv[2])]
assert [(r["source"], r["model"]) for r in lines] == [
    ("difflib.py:184", "base"), ("difflib.py:184", "adapter"),
    ("difflib.py:222", "base"), ("difflib.py:222", "adapter")], lines
assert all(r["verdict"] in ("pass", "fail", "timeout", "memory") for r in lines), lines
for m in ("base", "adapter"):
    assert j["passed"][m] == sum(r["verdict"] == "pass" for r in lines if r["model"] == m)
EOF
rc=0; "$qlora" eval --code "$src/tests/fixtures/smollm2/train.jsonl" --model "$gguf" >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] || bad "eval --code on a file without tests: exit $rc ($(cat "$tmp/err"))"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "generate, eval --code and the training review: all checks passed"
