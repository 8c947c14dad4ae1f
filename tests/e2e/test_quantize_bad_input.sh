#!/usr/bin/env bash
# qlora quantize on broken inputs: each must exit 1 with one
# "qlora: error:" line naming the file and what is wrong, and leave neither
# the output directory nor its temporary sibling behind.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" "$T/single" --dtype bf16 || exit 1
"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" "$T/sharded" --dtype f16 --sharded || exit 1

# kind  fixture  extra-pattern (grep -E, in addition to the broken name)
cases="
truncated            single  model.safetensors: file is 5 bytes, shorter than the 8-byte header length
header_past_end      single  model.safetensors: header length [0-9]+ runs past the end of the file
overlap              single  model.safetensors: tensor '.*': data_offsets \[[0-9]+, [0-9]+\] overlap tensor
out_of_range         single  model.safetensors: tensor '.*': data_offsets \[[0-9]+, [0-9]+\] out of range: data buffer is [0-9]+ bytes
unknown_dtype        single  model.safetensors: tensor '.*': unknown dtype 'Q8'
wrong_shape          single  model.safetensors: tensor '.*': shape \[64, 100\], expected \[intermediate_size, hidden_size\] = \[100, 64\]
config_missing_field single  config.json: missing field 'hidden_size' \(integer\)
index_missing_tensor sharded model.safetensors.index.json: tensor '.*' is mapped to shard 'model-0000[12]-of-00002.safetensors', which does not contain it
missing_shard        sharded model.safetensors.index.json: shard file 'model-00002-of-00002.safetensors' .*is missing
"
while read -r kind fixture pattern; do
    [ -n "$kind" ] || continue
    src="$T/in-$kind"
    cp -r "$T/$fixture" "$src"
    what=$("$PY" "$QL_SOURCE_DIR/tests/e2e/corrupt_model.py" "$src" "$kind") || { bad "$kind: corrupt"; continue; }
    out="$T/out/$kind"
    mkdir -p "$T/out"
    "$QLORA" quantize --model "$src" --out "$out" --quiet >"$T/stdout" 2>"$T/stderr"
    rc=$?
    [ "$rc" = 1 ] || bad "$kind: exit $rc, want 1"
    lines=$(wc -l <"$T/stderr")
    [ "$lines" = 1 ] || bad "$kind: $lines lines on stderr, want 1"
    grep -qE "^qlora: error: .*$pattern" "$T/stderr" || bad "$kind: message does not match '$pattern'"
    grep -qF "$what" "$T/stderr" || bad "$kind: message does not name '$what'"
    grep -qF "$src" "$T/stderr" || bad "$kind: message does not name the directory"
    leftovers=$(ls -A "$T/out")
    [ -z "$leftovers" ] || bad "$kind: left behind: $leftovers"
    echo "$kind: $(cat "$T/stderr")"
done <<<"$cases"

# command-line errors: exit 2, nothing created
"$QLORA" quantize --model "$T/single" --out "$T/out/x" --blocksize 100 2>/dev/null
[ $? = 2 ] || bad "--blocksize 100 should exit 2"
"$QLORA" quantize --model "$T/single" --out "$T/out/x" --quant-type int4 2>/dev/null
[ $? = 2 ] || bad "--quant-type int4 should exit 2"
"$QLORA" quantize --model "$T/single" --bogus 2>/dev/null
[ $? = 2 ] || bad "--bogus should exit 2"
"$QLORA" quantize --out "$T/out/x" 2>/dev/null
[ $? = 2 ] || bad "missing --model should exit 2"
"$QLORA" quantize --model "$T/nonexistent" --out "$T/out/x" 2>"$T/stderr"
[ $? = 1 ] && grep -q "nonexistent" "$T/stderr" || bad "missing model dir should exit 1 naming it"
# an output directory whose parent does not exist
"$QLORA" quantize --model "$T/single" --out "$T/no/such/parent/x" --quiet 2>"$T/stderr"
[ $? = 1 ] && grep -q "temporary directory" "$T/stderr" || bad "missing parent should exit 1"
[ -z "$(ls -A "$T/out")" ] || bad "usage errors left files: $(ls -A "$T/out")"

# a failure after the temporary directory exists (an unreadable side file)
cp -r "$T/single" "$T/late"
rm "$T/late/tokenizer.json" && mkdir "$T/late/tokenizer.json"
"$QLORA" quantize --model "$T/late" --out "$T/out/late" --quiet 2>"$T/stderr"
[ $? = 1 ] && grep -q "tokenizer.json" "$T/stderr" || bad "unreadable tokenizer.json: $(cat "$T/stderr")"
[ -z "$(ls -A "$T/out")" ] || bad "late failure left: $(ls -A "$T/out")"

# the model directory itself is never replaced
"$QLORA" quantize --model "$T/single" --out "$T/single" --force --quiet 2>"$T/stderr"
[ $? = 1 ] && grep -q "would replace the model directory" "$T/stderr" || bad "--out = --model accepted"
[ -f "$T/single/model.safetensors" ] || bad "the model was removed"

[ "$fails" = 0 ] && echo "all bad-input cases rejected" || echo "$fails failures"
[ "$fails" = 0 ]
