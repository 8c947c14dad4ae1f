#!/usr/bin/env bash
# qlora export --gguf: llama.cpp's LoRA adapter files.
#
# The reference is llama.cpp itself: tests/fixtures/make_gguf_lora_reference.py
# converted PEFT's own adapters (tests/fixtures/peft) with llama.cpp's
# convert_lora_to_gguf.py into tests/fixtures/gguf_lora/*.gguf, and showed that
# llama.cpp, loading those files (and qlora's exports), computes the logits
# transformers + PEFT compute to < 1e-6 (index.json; llama.cpp is not built in
# CI). The judge, tests/e2e/check_gguf_lora.py, reads with the PyPI gguf
# package.
#   1. qlora's export of each PEFT adapter is the converter's file, tensor for
#      tensor and bit for bit, with its metadata; for rsLoRA alpha is
#      lora_alpha * sqrt(r) (llama.cpp scales by alpha / r; the converter's
#      lora_alpha as it is was measured wrong by 0.93 of the largest logit);
#   2. the judge's own conversion (the converter's Q/K permutation in numpy)
#      agrees with the converter's files, so it can judge what step 3 trains;
#   3. runs trained here from GGUF files (llama with GQA and double
#      quantization; qwen2, not permuted), exported from the run, from
#      RUN/checkpoints and from the final checkpoint (the same bytes), are
#      their PEFT exports converted; --dtype f16 and bf16 are the roundings;
#      read back (qlora export X.gguf --model BASE, eval --adapter X.gguf,
#      lora.init_adapter: X.gguf) they are the run's adapter again;
#   4. --merge --gguf: the merged model as one GGUF on the GGUF base: the
#      base's metadata and non-linear tensors as stored, the linears those of
#      the float32 merged directory (itself checked against PEFT by
#      test_export_peft.sh) with llama.cpp's Q/K order, in f32, f16, bf16
#      (the roundings) and q8_0 (gguf.quants' bytes); with --base-weights
#      original, untargeted linears kept as stored; from an HF base, refused;
#   5. errors: --dtype q8_0 without --merge --gguf, an existing --out without
#      --force (left as it was), a base the adapter does not fit, a directory
#      as --out, no base model to read; no temporary file is left behind.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
CHK="$QL_SOURCE_DIR/tests/e2e/check_gguf_lora.py"
FX="$QL_SOURCE_DIR/tests/fixtures"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
chk() { "$PY" "$CHK" "$@"; }
. "$QL_SOURCE_DIR/tests/e2e/export_lib.sh"

# --- 1 and 2. PEFT's adapters against llama.cpp's converter
for c in llama_all:llama:4:2:- llama_tied_rslora:llama_tied:4:2:45.254834 qwen2_bf16:qwen2:4:2:-; do
    IFS=: read -r n m h kv alpha <<<"$c"
    REF="$FX/gguf_lora/$n.gguf"
    "$QLORA" export "$FX/peft/$n/adapter" --gguf --model "$FX/llama/$m" --out "$n.gguf" >"$n.out" 2>&1 ||
        { bad "export --gguf $n"; cat "$n.out"; continue; }
    if [ "$alpha" = - ]; then
        chk same "$n.gguf" "$REF" || bad "$n: not the converter's file"
    else
        chk same "$n.gguf" "$REF" --alpha "$alpha" || bad "$n: not the converter's file (rsLoRA alpha)"
    fi
    arch=llama
    [ "$m" = qwen2 ] && arch=qwen2
    # The converter's rsLoRA alpha is lora_alpha itself, so the judge (which
    # wants alpha * sqrt(r)) is compared on the tensors only there.
    if [ "$alpha" = - ]; then
        chk from-peft "$REF" "$FX/peft/$n/adapter" "$arch" "$h" "$kv" >/dev/null ||
            bad "the judge disagrees with the converter on $n"
    else
        chk from-peft "$n.gguf" "$FX/peft/$n/adapter" "$arch" "$h" "$kv" >/dev/null ||
            bad "the judge disagrees with qlora's export on $n"
    fi
done
grep -q "^wrote     llama_all.gguf: llama.cpp LoRA adapter, 28 tensors in f32" llama_all.out ||
    bad "export summary: $(cat llama_all.out)"
grep -q "general.architecture qwen2" qwen2_bf16.out || bad "qwen2 summary: $(cat qwen2_bf16.out)"

# --- 3. runs trained from GGUF files
progressions_jsonl train.jsonl || exit 1
train() { # name model rslora [targets]
    cat >"$1.yaml" <<YEOF
model: $2
output_dir: $1
data:
  train: train.jsonl
lora:
  r: 4
  alpha: 8
  use_rslora: $3
  targets: ${4:-all-linear}
train:
  steps: 4
  global_batch: 4
  micro_batch: 4
  lr: 2.0e-2
checkpoint:
  every_steps: 2
YEOF
    "$QLORA" train "$1.yaml" >"$1.trn" 2>&1 || { bad "qlora train $1"; tail -5 "$1.trn"; }
}
train lrun "$FX/gguf/tiny_llama.gguf" true
train qrun "$FX/gguf/tiny_qwen2.gguf" false "[q_proj, v_proj, down_proj]"
for c in lrun:llama qrun:qwen2; do
    IFS=: read -r run arch <<<"$c"
    "$QLORA" export "$run" --gguf --out "$run.gguf" >"$run.out" 2>&1 || { bad "export $run --gguf"; cat "$run.out"; }
    "$QLORA" export "$run" --out "$run.peft" >/dev/null 2>&1 || bad "export $run (PEFT)"
    chk from-peft "$run.gguf" "$run.peft" "$arch" 4 2 || bad "$run: not its PEFT adapter converted"
    for d in f16 bf16; do
        "$QLORA" export "$run" --gguf --dtype $d --out "$run.$d.gguf" >/dev/null 2>&1 || bad "export $run --gguf --dtype $d"
        chk rounding "$run.gguf" "$run.$d.gguf" $d || bad "$run --dtype $d"
    done
done
"$QLORA" export lrun/checkpoints --gguf --out ck.gguf >ck.out 2>&1 || { bad "export checkpoints --gguf"; cat ck.out; }
grep -q "step 4" ck.out || bad "checkpoints: not step 4: $(cat ck.out)"
cmp -s ck.gguf lrun.gguf || bad "the final checkpoint's GGUF differs from the run's"
"$QLORA" export lrun/checkpoints/step-00000002 --gguf --out ck2.gguf >/dev/null 2>&1 || bad "export step 2 --gguf"
cmp -s ck2.gguf lrun.gguf && bad "step 2 exported the same tensors as step 4"

# --- 3b. GGUF adapters as input: `qlora export X.gguf --model BASE` gives the
# run's PEFT tensors byte for byte (q/k rows un-permuted; kv heads for k under
# GQA; qwen2 not permuted); eval --adapter X.gguf gives the run's loss; a run
# starting from it (lora.init_adapter, lr 0) keeps its values
for c in lrun:tiny_llama qrun:tiny_qwen2; do
    IFS=: read -r run base <<<"$c"
    "$QLORA" export "$run.gguf" --model "$FX/gguf/$base.gguf" --out "$run.back" >"$run.back.out" 2>&1 ||
        { bad "export $run.gguf (a GGUF adapter) to PEFT"; cat "$run.back.out"; }
    cmp -s "$run.back/adapter_model.safetensors" "$run.peft/adapter_model.safetensors" ||
        bad "$run.gguf read back: tensors differ from the run's PEFT export"
    a=$(evloss "$run.ev1" --model "$FX/gguf/$base.gguf" --adapter "$run" --no-save)
    b=$(evloss "$run.ev2" --model "$FX/gguf/$base.gguf" --adapter "$run.gguf" --no-save)
    [ -n "$a" ] && [ "$a" = "$b" ] || bad "$run: eval with the GGUF adapter $b, with the run $a"
done
grep -q "^adapter   lrun.gguf (r 4, alpha 16," lrun.back.out || bad "GGUF adapter summary: $(head -1 lrun.back.out)"
cat >irun.yaml <<YEOF
model: $FX/gguf/tiny_llama.gguf
output_dir: irun
data:
  train: train.jsonl
lora:
  init_adapter: lrun.gguf
train:
  steps: 1
  global_batch: 4
  micro_batch: 4
  lr: 0.0
YEOF
"$QLORA" train irun.yaml >irun.trn 2>&1 || { bad "train from a GGUF adapter"; tail -5 irun.trn; }
cmp -s irun/adapter/adapter_model.safetensors lrun.back/adapter_model.safetensors ||
    bad "lora.init_adapter: X.gguf with lr 0 did not keep its values"
"$QLORA" eval --model "$FX/gguf/tiny_llama.gguf" --adapter "$FX/gguf/tiny_llama.gguf" --data train.jsonl >ga.out 2>&1
[ $? = 1 ] && grep -q "tiny_llama.gguf: metadata key 'general.type' is missing: not a llama.cpp LoRA adapter" ga.out ||
    bad "a base model given as a GGUF adapter: $(tail -1 ga.out)"
"$QLORA" eval --model "$FX/gguf/tiny_llama3.gguf" --adapter lrun.gguf --data train.jsonl >gw.out 2>&1
[ $? = 1 ] && grep -q "lrun.gguf: tensor 'blk.0.attn_q.weight.lora_b' has ne {4, 32}, expected {4, 16}" gw.out ||
    bad "a GGUF adapter on a model it does not fit: $(tail -1 gw.out)"
expect_fail 1 "give the base with --model PATH" lrun.gguf --out nomodel

# --- 4. merged GGUF models
# tiny_llama3 holds a tensor with no Hugging Face counterpart (rope_freqs)
train l3run "$FX/gguf/tiny_llama3.gguf" false
for c in lrun:tiny_llama qrun:tiny_qwen2 l3run:tiny_llama3; do
    IFS=: read -r run base <<<"$c"
    "$QLORA" export "$run" --merge --dtype f32 --out "$run.m32" >/dev/null 2>&1 || bad "export $run --merge f32"
    types="f32 f16 bf16 q8_0"
    [ "$run" = l3run ] && types="f32 f16 bf16" # o_proj has 16 columns: Q8_0 blocks are 32
    for d in $types; do
        "$QLORA" export "$run" --merge --gguf --dtype $d --out "$run.m.$d.gguf" >"$run.m.out" 2>&1 ||
            { bad "export $run --merge --gguf --dtype $d"; cat "$run.m.out"; continue; }
        chk merged "$run.m.$d.gguf" "$FX/gguf/$base.gguf" "$run.m32" $d || bad "$run: merged GGUF ($d)"
    done
    "$QLORA" export "$run" --merge --gguf --out "$run.m.gguf" >"$run.m.out" 2>&1 || bad "export $run --merge --gguf"
    cmp -s "$run.m.gguf" "$run.m.f16.gguf" || bad "$run: a merged GGUF is not f16 by default"
    "$QLORA" export "$run" --merge --dtype f32 --base-weights original --out "$run.o32" >/dev/null 2>&1 &&
        "$QLORA" export "$run" --merge --gguf --dtype f32 --base-weights original --out "$run.o.gguf" \
            >/dev/null 2>&1 || bad "export $run --merge --base-weights original"
    chk merged "$run.o.gguf" "$FX/gguf/$base.gguf" "$run.o32" f32 original || bad "$run: merged GGUF, original base"
done
# a base laid out on 64 bytes (general.alignment): the merged file must be too
chk rewrite "$FX/gguf/tiny_llama.gguf" al64.gguf --alignment 64 || exit 1
train arun al64.gguf false
"$QLORA" export arun --merge --dtype f32 --out arun.m32 >/dev/null 2>&1 || bad "export arun --merge f32"
"$QLORA" export arun --merge --gguf --dtype f32 --out arun.m.gguf >/dev/null 2>&1 || bad "export arun --merge --gguf"
chk merged arun.m.gguf al64.gguf arun.m32 f32 || bad "merged GGUF of a base aligned on 64 bytes"

grep -q "^wrote     qrun.m.gguf: merged GGUF model, .* (3 with the adapter added; " qrun.m.out ||
    bad "merged GGUF summary: $(cat qrun.m.out)"
# qrun targets q, v and down: with the original base its 4 other linears are kept as stored
"$PY" - "$FX/gguf/tiny_qwen2.gguf" qrun.o.gguf qrun.m.f32.gguf <<'PYEOF' ||
import sys
import numpy as np
from gguf import GGUFReader
base, orig, quant = ({t.name: t for t in GGUFReader(p).tensors} for p in sys.argv[1:])
same = lambda a, b: a.tensor_type == b.tensor_type and np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes()
for proj in ("attn_k", "attn_output", "ffn_gate", "ffn_up"):
    n = f"blk.0.{proj}.weight"
    assert same(orig[n], base[n]), f"{n}: not kept as stored with the original base"
    assert not same(quant[n], base[n]), f"{n}: kept as stored without --base-weights original"
for proj in ("attn_q", "attn_v", "ffn_down"):
    assert not same(orig[f"blk.0.{proj}.weight"], base[f"blk.0.{proj}.weight"]), f"{proj}: not merged"
PYEOF
    bad "--base-weights original: untargeted linears not kept as stored, or targeted ones not merged"
expect_fail 1 "16 columns, not a multiple of Q8_0's 32; use --dtype f16" l3run --merge --gguf --dtype q8_0 --out l3.gguf
train hrun "$FX/llama/llama" false
expect_fail 1 "is not a GGUF file" hrun --merge --gguf --out h.gguf
[ ! -e h.gguf ] || bad "a refused merged GGUF left h.gguf"

# --- 5. errors
expect_fail 2 "q8_0 is for a merged GGUF" lrun --gguf --dtype q8_0 --out x.gguf
cp ck2.gguf keep.gguf
expect_fail 1 "keep.gguf already exists" lrun --gguf --out keep.gguf
cmp -s ck2.gguf keep.gguf || bad "a refused export changed the existing file"
"$QLORA" export lrun --gguf --out keep.gguf --force >/dev/null 2>&1 && cmp -s keep.gguf lrun.gguf ||
    bad "--force did not replace the file"
expect_fail 1 "tiny_llama3.gguf with r 4 on these targets has 14" lrun --gguf --model "$FX/gguf/tiny_llama3.gguf" --out w.gguf
[ ! -e w.gguf ] || bad "an adapter written against a base it does not fit"
mkdir adir
expect_fail 1 "adir is a directory" lrun --gguf --out adir --force
cp -r lrun.peft lone && sed -i 's|"base_model_name_or_path": "[^"]*"|"base_model_name_or_path": "org/not-here"|' lone/adapter_config.json
expect_fail 1 "give it with --model PATH" lone --gguf --out lone.gguf
[ ! -e lone.gguf ] || bad "a failed export left lone.gguf"
left=$(find . -name '*.tmp-*' | head -3)
[ -z "$left" ] || bad "temporary files left behind: $left"

[ $fails = 0 ] && echo "PASS test_export_gguf" || { echo "$fails failure(s)"; exit 1; }
