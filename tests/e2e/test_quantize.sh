#!/usr/bin/env bash
# qlora quantize on tiny Llama models written by the PyPI safetensors package:
# the output is checked by tests/e2e/check_bnb4.py, which re-derives every
# 4-bit byte in numpy and reads the files with the safetensors package.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MK="$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py"
CHK="$QL_SOURCE_DIR/tests/e2e/check_bnb4.py"
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$PY" "$MK" "$T/f32" --dtype f32 || exit 1
"$PY" "$MK" "$T/bf16_sharded" --dtype bf16 --sharded || exit 1
"$PY" "$MK" "$T/f16_odd" --dtype f16 --odd || exit 1
"$PY" "$MK" "$T/bf16_tied" --dtype bf16 --tied --seed 7 || exit 1

# model  out  checker-flags  quantize-flags
runs="
f32          f32_nf4       |                                     |
bf16_sharded bf16_nf4      |                                     |
f16_odd      f16_odd_nf4   |                                     |
f16_odd      f16_odd_fp4   |--quant-type fp4 --no-double-quant  |--quant-type fp4 --no-double-quant
bf16_tied    tied_4096     |--blocksize 4096                     |--blocksize 4096
f32          f32_fp4_dq    |--quant-type fp4 --blocksize 128     |--quant-type=fp4 --blocksize=128
f16_odd      f16_odd_b32   |--no-double-quant --blocksize 32     |--no-double-quant --blocksize 32
bf16_sharded bf16_shards   |--shards 4                           |--max-shard-size 25KB
"
while IFS='|' read -r names cflags qflags; do
    set -- $names
    [ $# = 2 ] || continue
    model=$1 out=$2
    "$QLORA" quantize --model "$T/$model" --out "$T/$out" $qflags >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ $rc != 0 ]; then
        bad "$out: qlora quantize exited $rc: $(cat "$T/stderr")"
        continue
    fi
    "$PY" "$CHK" --orig "$T/$model" --quant "$T/$out" $cflags || bad "$out: check_bnb4 found problems"
    grep -q '^\[1/[0-9]*\] ' "$T/stderr" || bad "$out: no per-tensor progress on stderr"
    grep -q 'size: .* MiB -> .* MiB' "$T/stdout" || bad "$out: no size summary"
    ls -d "$T/$out".tmp-* "$T/$out".old-* >/dev/null 2>&1 && bad "$out: temporary directory left"
done <<<"$runs"

# the summary of the default run reports ~4.127 bits/param for the linears
"$QLORA" quantize --model "$T/f32" --out "$T/again" --quiet >"$T/stdout" 2>"$T/stderr" || bad "rerun failed"
grep -q '^bits/param: 4\.1[0-9]* for the 4-bit linears' "$T/stdout" || bad "bits/param line: $(cat "$T/stdout")"
[ -s "$T/stderr" ] && bad "--quiet still printed: $(cat "$T/stderr")"
grep -q 'quantized 14 linear weights to nf4 (double quant, block 64); kept 7 tensors' "$T/stdout" || bad "summary: $(cat "$T/stdout")"

# an existing output is refused without --force and replaced with it
"$QLORA" quantize --model "$T/f32" --out "$T/again" --quiet >/dev/null 2>"$T/stderr"
[ $? = 1 ] && grep -q "already exists" "$T/stderr" || bad "existing --out not refused"
touch "$T/again/marker"
"$QLORA" quantize --model "$T/bf16_tied" --out "$T/again" --force --quiet >/dev/null 2>"$T/stderr" || bad "--force failed: $(cat "$T/stderr")"
[ -e "$T/again/marker" ] && bad "--force kept the old directory's files"
"$PY" "$CHK" --orig "$T/bf16_tied" --quant "$T/again" || bad "--force output wrong"
ls -d "$T"/again.* >/dev/null 2>&1 && bad "--force left $(ls -d "$T"/again.*)"

# --help documents every flag
"$QLORA" quantize --help >"$T/help" || bad "--help exit status"
for f in --model --out --quant-type --no-double-quant --blocksize --force --max-shard-size; do
    grep -q -- "$f" "$T/help" || bad "--help does not mention $f"
done

# the checker itself must notice damage: flip one packed nibble
cp -r "$T/f32_nf4" "$T/damaged"
"$PY" - "$T/damaged/model.safetensors" <<'PYEOF'
import json, struct, sys
p = sys.argv[1]
raw = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
b, e = h["model.layers.0.mlp.down_proj.weight"]["data_offsets"]
raw[8 + n + b + 3] ^= 0x10
open(p, "wb").write(raw)
PYEOF
"$PY" "$CHK" --orig "$T/f32" --quant "$T/damaged" >"$T/chk" 2>&1 && bad "checker missed a flipped nibble"
grep -q "packed nibbles differ" "$T/chk" || bad "checker did not name the damage: $(cat "$T/chk")"

[ "$fails" = 0 ] && echo "quantize e2e: all runs match" || echo "$fails failures"
[ "$fails" = 0 ]
