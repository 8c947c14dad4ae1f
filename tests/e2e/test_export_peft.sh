#!/usr/bin/env bash
# qlora export against independent readers (issue 10's PEFT round-trip checks).
#
# The judge is tests/e2e/check_export.py: a float64 numpy forward that reads
# an adapter directory the way PEFT does (config r / lora_alpha / use_rslora /
# target_modules, PEFT's keys, y = xW^T + b + s (xA^T) B^T, not merged). It is
# first shown to agree with transformers + PEFT themselves on the adapters PEFT
# saved in tests/fixtures/peft (made by tests/fixtures/make_peft_reference.py,
# versions in versions.json), so it can stand in for PEFT where torch is not
# installed (CI). Then, on runs that qlora trains here:
#   1. adapter export: PEFT's reading of the exported directory gives qlora's
#      own logits with the run's adapter to 1e-4 (NF4-exact base, so the base
#      is the same on both sides); also with --dtype bf16; check_peft.py passes;
#   2. --merge --dtype f32: the merged model alone gives qlora's logits with the
#      adapter to 1e-4 (on an NF4-exact base; on a random base with double
#      quantization, so the merge must use the run's 4-bit round trip; from a
#      bitsandbytes 4-bit directory; from a GGUF file), and --base-weights
#      original does not (the round trip matters and is what was done);
#      `qlora eval --base-weights original` of the merged model gives the run's
#      loss with the adapter, and the default (linears rounded to 4 bits) not;
#      a run trained with quant.type none: PEFT's reading of its export on the
#      float32 base gives qlora's logits, its merge and eval take that base;
#   3. --merge (bf16): every tensor is exactly the bfloat16 rounding of the f32
#      export, the logits are within bf16 rounding (3e-2 of the largest logit: 2^-9 per weight, over the layers)
#      of qlora's; config.json has torch_dtype and no quantization_config, other
#      keys as the source; the tokenizer files are copied byte for byte;
#   4. with torch + transformers + peft importable by $QL_PEFT_PYTHON (not in
#      CI): PeftModel.from_pretrained on the export and AutoModelForCausalLM on
#      the merged directories, live, against the same qlora logits;
#   5. checkpoints: the final step's checkpoint exports to the same bytes as
#      the run's adapter/ (as a step directory, as RUN/checkpoints, and as a
#      run without adapter/); a damaged newest checkpoint is passed over for
#      the one before (and said so); a merge from a checkpoint gives that
#      step's logits;
#   6. errors: an existing --out without --force, a missing source, empty or
#      broken checkpoints, a tampered adapter, an adapter of another model,
#      bad flags; no output or temporary directory is left behind.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}" "${QL_BUILD_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
TOOL="$QL_BUILD_DIR/unit_test_peft_reference"
[ -x "$TOOL" ] || { echo "FAIL: $TOOL not built"; exit 1; }
CHK="$QL_SOURCE_DIR/tests/e2e/check_export.py"
FX="$QL_SOURCE_DIR/tests/fixtures"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
chk() { "$PY" "$CHK" "$@"; }
. "$QL_SOURCE_DIR/tests/e2e/export_lib.sh"

# --- 0. the numpy judge agrees with transformers + PEFT on PEFT's own adapters
for c in llama_all:llama llama_tied_rslora:llama_tied qwen2_bf16:qwen2; do
    n=${c%%:*} m=${c##*:}
    chk logits "$FX/llama/$m" "$FX/peft/ref/ids.i32" 2 12 "np_$n.f32" --adapter "$FX/peft/$n/adapter" &&
        chk compare "np_$n.f32" "$FX/peft/ref/$n.logits.f32" 1e-5 "judge vs PEFT, $n" ||
        bad "the numpy judge disagrees with PEFT on $n"
done

# --- training data: arithmetic progressions (learnable), ids < 40 (every vocab here)
progressions_jsonl train.jsonl || exit 1
"$PY" -c 'import numpy as np; np.random.default_rng(9).integers(0, 40, (2, 10)).astype("<i4").tofile("ids40.i32")' || exit 1
IDS="$FX/peft/ref/ids.i32" # 2 x 12, ids < 67

train() { # name model double_quant
    cat >"$1.yaml" <<EOF
model: $2
output_dir: $1
data:
  train: train.jsonl
lora:
  r: 4
  alpha: 8
  use_rslora: true
  targets: [q_proj, v_proj, o_proj, down_proj]
train:
  steps: 6
  global_batch: 4
  micro_batch: 4
  lr: 2.0e-2
  warmup_steps: 0
quant:
  blocksize: 64
  double_quant: $3
checkpoint:
  every_steps: 2
  keep_last: 3
EOF
    "$QLORA" train "$1.yaml" >"$1.out" 2>"$1.err" || { bad "qlora train $1"; tail -5 "$1.err"; }
}
logits() { # model adapter|- ids batch seq out [--double-quant]
    "$TOOL" --logits "$@" || bad "qlora logits for $*"
}

# --- 1. adapter export on an NF4-exact base
train run "$FX/llama/llama" false
"$QLORA" export run --out exp >exp.out 2>exp.err || { bad "export run"; cat exp.err; }
grep -q "^wrote     exp: PEFT adapter, 16 tensors in f32" exp.out || bad "export summary: $(cat exp.out)"
"$PY" "$QL_SOURCE_DIR/tests/e2e/check_peft.py" exp --model "$FX/llama/llama" --r 4 --alpha 8 \
    --targets q_proj,v_proj,o_proj,down_proj --base "$FX/llama/llama" --rslora ||
    bad "check_peft.py rejected the export"
logits "$FX/llama/llama" run/adapter "$IDS" 2 12 q_run.f32
logits "$FX/llama/llama" - "$IDS" 2 12 q_base.f32
chk logits "$FX/llama/llama" "$IDS" 2 12 np_exp.f32 --adapter exp &&
    chk compare np_exp.f32 q_run.f32 1e-4 "PEFT reading of the export vs qlora with the adapter" ||
    bad "exported adapter: logits differ from qlora's"
chk differ q_base.f32 q_run.f32 1e-3 "the adapter changes the logits" || bad "the trained adapter does nothing"
"$QLORA" export run/adapter --out exp16 --dtype bf16 --base-model-name org/tiny >/dev/null 2>&1 || bad "export --dtype bf16"
grep -q '"base_model_name_or_path": "org/tiny"' exp16/adapter_config.json || bad "--base-model-name not written"
grep -q '"dtype":"BF16"' exp16/adapter_model.safetensors || bad "--dtype bf16: tensors not BF16"
logits "$FX/llama/llama" exp16 "$IDS" 2 12 q_exp16.f32
chk logits "$FX/llama/llama" "$IDS" 2 12 np_exp16.f32 --adapter exp16 &&
    chk compare np_exp16.f32 q_exp16.f32 1e-4 "bf16 adapter: PEFT reading vs qlora" || bad "bf16 adapter export"

# --- 2/3. merged, NF4-exact base (no double quant)
"$QLORA" export run --merge --dtype f32 --out m32 >m32.out 2>&1 || { bad "export --merge f32"; cat m32.out; }
grep -q "the run's settings" m32.out || bad "merge did not take the run's 4-bit settings: $(cat m32.out)"
chk logits m32 "$IDS" 2 12 np_m32.f32 && chk compare np_m32.f32 q_run.f32 1e-4 "merged f32 vs qlora with the adapter" ||
    bad "merged f32 model: logits differ"
"$QLORA" export run --merge --out m16 >/dev/null 2>&1 || bad "export --merge (bf16)"
chk bf16-of m32 m16 || bad "bf16 merge is not the rounding of the f32 merge"
chk merged-config m16 bfloat16 "$FX/llama/llama" || bad "merged config.json (bf16)"
chk merged-config m32 float32 "$FX/llama/llama" || bad "merged config.json (f32)"
chk logits m16 "$IDS" 2 12 np_m16.f32 && chk compare np_m16.f32 q_run.f32 3e-2 "merged bf16 vs qlora with the adapter" ||
    bad "merged bf16 model beyond bf16 rounding"

# --- 2/3. a random (not NF4-exact) base with double quantization, and its tokenizer files
"$PY" "$FX/make_tiny_hf_model.py" rnd --dtype f32 --seed 11 >/dev/null || exit 1
printf '{"version": "1.0", "model": {"type": "BPE"}}\n' >rnd/tokenizer.json
printf '{"model_max_length": 2048}\n' >rnd/tokenizer_config.json
printf '{"eos_token": "</s>"}\n' >rnd/special_tokens_map.json
printf '{"bos_token_id": 1, "eos_token_id": 2}\n' >rnd/generation_config.json
train rrun rnd true
logits rnd rrun/adapter "$IDS" 2 12 q_rrun.f32 --double-quant
"$QLORA" export rrun --merge --dtype f32 --out r32 >r32.out 2>&1 || { bad "export --merge (double quant)"; cat r32.out; }
grep -q "nf4, block 64, double quant; the run's settings" r32.out || bad "double-quant settings: $(cat r32.out)"
grep -q "tokenizer 4 files copied" r32.out || bad "tokenizer files not reported: $(cat r32.out)"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json; do
    cmp -s "rnd/$f" "r32/$f" || bad "$f not copied byte for byte"
done
chk logits r32 "$IDS" 2 12 np_r32.f32 && chk compare np_r32.f32 q_rrun.f32 1e-4 "merged (double quant) vs qlora" ||
    bad "merge does not reproduce qlora's double-quantized base + adapter"
"$QLORA" export rrun --merge --dtype f32 --base-weights original --out r32o >/dev/null 2>&1 || bad "--base-weights original"
chk logits r32o "$IDS" 2 12 np_r32o.f32 && chk differ np_r32o.f32 q_rrun.f32 1e-3 "merged into the original weights differs" ||
    bad "--base-weights original: indistinguishable from the round trip (the test cannot tell them apart)"

# --- qlora itself on the merged model: with --base-weights original its loss is
# the run's (base as trained + adapter); the default rounds the merged linears
# to 4 bits, which loses the update (the check can tell the two apart)
l_ad=$(evloss ev_ad.out --model rnd --adapter rrun --no-save)
l_mo=$(evloss ev_mo.out --model r32 --base-weights original --out evo)
l_mq=$(evloss ev_mq.out --model r32 --no-save)
"$PY" - "$l_ad" "$l_mo" "$l_mq" <<'EOF' || bad "eval of the merged model: adapter $l_ad, merged as stored $l_mo, merged in 4 bits $l_mq"
import sys
ad, mo, mq = map(float, sys.argv[1:])
assert abs(mo - ad) <= 1e-5 * ad, "merged, --base-weights original, is not the run's loss"
# 6 steps on random weights move the loss little (about 2e-3 here): 4-bit
# rounding must miss by far more than the as-stored load does.
assert abs(mq - ad) > max(1e-4 * ad, 100 * abs(mo - ad)), "merged, rounded to 4 bits, is still the run's loss"
EOF
grep -q "^model       r32 (base weights as stored, not rounded to 4 bits by qlora)" ev_mo.out || bad "eval does not say the weights are as stored: $(head -1 ev_mo.out)"
grep -q '"base_weights": "original"' evo/eval.json || bad "eval.json: base_weights not original"
"$QLORA" eval --model r32 --base-weights original --data train.jsonl --no-save 2>ev_mo2.err >/dev/null
grep -q "linears in float32 as stored, not quantized" ev_mo2.err || bad "the model summary does not say float32: $(grep parameters ev_mo2.err)"
grep -q "^evaluate  qlora eval --model r32 --base-weights original" r32.out || bad "merge summary: no eval hint: $(cat r32.out)"
"$QLORA" eval --model r32 --data train.jsonl --baseline evo --no-save >ev_bl.out 2>&1
grep -q "the baseline's were as stored" ev_bl.out || bad "drift check: a baseline with other base weights is not said: $(grep baseline ev_bl.out)"
for c in eval generate; do
    "$QLORA" $c --model r32 --base-weights fp8 --data x --prompt x >bw.out 2>&1
    [ $? = 2 ] && grep -q "base-weights must be quantized or original, not 'fp8'" bw.out || bad "$c --base-weights fp8: $(cat bw.out)"
done

# --- a run trained on the weights as stored (quant.type none): PEFT's reading
# of its export on the float32 base (the numpy judge, no quantization) gives
# qlora's logits with the linears as stored, not the 4-bit ones; its merge
# skips the round trip; eval holds the base as the run trained
sed -e 's/^output_dir: rrun$/output_dir: nrun/' -e 's/^quant:$/quant:\n  type: none/' \
    -e 's/^  train: train.jsonl$/  train: train.jsonl\n  valid_fraction: 0.25/' rrun.yaml >nrun.yaml
grep -q "^  type: none" nrun.yaml && grep -q "^  valid_fraction: 0.25" nrun.yaml || bad "nrun.yaml: $(cat nrun.yaml)"
"$QLORA" train nrun.yaml >nrun.out 2>nrun.err || { bad "qlora train nrun (quant none)"; tail -5 nrun.err; }
logits rnd nrun/adapter "$IDS" 2 12 q_nrun.f32 --base-original
logits rnd nrun/adapter "$IDS" 2 12 q_nrun4.f32 --double-quant
"$QLORA" export nrun --out nexp >/dev/null 2>&1 || bad "export nrun"
chk logits rnd "$IDS" 2 12 np_nexp.f32 --adapter nexp &&
    chk compare np_nexp.f32 q_nrun.f32 1e-4 "quant none: PEFT reading of the export on the float base vs qlora" ||
    bad "quant none: the exported adapter on the float base differs from qlora's logits"
chk differ q_nrun4.f32 q_nrun.f32 1e-3 "quant none: the 4-bit base gives other logits" ||
    bad "quant none: the float and 4-bit bases are indistinguishable (the check cannot fail)"
"$QLORA" export nrun --merge --dtype f32 --out n32 >n32.out 2>&1 || { bad "export nrun --merge"; cat n32.out; }
grep -q '"base_weights": "original"' nrun/eval.json || bad "quant none: the run's eval.json does not say base_weights original"
grep -q "as the run trained: quant.type none" n32.out || bad "quant none merge summary: $(cat n32.out)"
chk logits n32 "$IDS" 2 12 np_n32.f32 && chk compare np_n32.f32 q_nrun.f32 1e-4 "quant none: merged vs qlora" ||
    bad "quant none: the merge took a 4-bit round trip"
l_n=$(evloss ev_n.out --model rnd --adapter nrun --no-save)
l_no=$(evloss ev_no.out --model rnd --adapter nrun --base-weights original --no-save)
l_nq=$(evloss ev_nq.out --model rnd --adapter nrun --base-weights quantized --no-save)
[ "$l_n" = "$l_no" ] && [ "$l_n" != "$l_nq" ] || bad "eval of a quant none run: $l_n, as stored $l_no, 4-bit $l_nq"
grep -q "^model       rnd (base weights as stored, as the run trained: quant.type none)" ev_n.out ||
    bad "eval of a quant none run: $(head -1 ev_n.out)"

# --- from a bitsandbytes 4-bit directory (as stored) and from a GGUF file
"$QLORA" quantize --model rnd --out rnd4 --quiet >/dev/null || bad "quantize"
train brun rnd4 true
logits rnd4 brun/adapter "$IDS" 2 12 q_brun.f32 --double-quant
"$QLORA" export brun --merge --dtype f32 --out b32 >/dev/null 2>&1 || bad "export --merge from bnb-4bit"
chk logits b32 "$IDS" 2 12 np_b32.f32 && chk compare np_b32.f32 q_brun.f32 1e-4 "merged from bnb-4bit vs qlora" ||
    bad "merge from a bitsandbytes 4-bit directory"
chk merged-config b32 float32 rnd4 || bad "merged config.json from bnb-4bit"
G="$FX/gguf/tiny_llama.gguf"
train grun "$G" true
logits "$G" grun/adapter ids40.i32 2 10 q_grun.f32 --double-quant
"$QLORA" export grun --merge --dtype f32 --out g32 >g32.out 2>&1 || { bad "export --merge from GGUF"; cat g32.out; }
grep -q "no tokenizer.json (a GGUF file)" g32.out || bad "GGUF: missing tokenizer not reported"
chk logits g32 ids40.i32 2 10 np_g32.f32 && chk compare np_g32.f32 q_grun.f32 1e-4 "merged from GGUF vs qlora" ||
    bad "merge from a GGUF file"

# --- 4. live transformers + PEFT (optional: QL_PEFT_PYTHON=/path/to/python with torch, transformers, peft)
LIVE=${QL_PEFT_PYTHON:-}
if [ -n "$LIVE" ] && "$LIVE" -c "import torch, transformers, peft" 2>/dev/null; then
    "$LIVE" "$CHK" peft "$FX/llama/llama" "$IDS" 2 12 peft_exp.f32 --adapter exp 2>/dev/null &&
        chk compare peft_exp.f32 q_run.f32 1e-4 "LIVE PeftModel.from_pretrained(export) vs qlora" ||
        bad "live PEFT on the export"
    "$LIVE" "$CHK" peft "$FX/llama/llama" "$IDS" 2 12 peft_exp16.f32 --adapter exp16 2>/dev/null &&
        chk compare peft_exp16.f32 q_exp16.f32 1e-4 "LIVE PEFT on the bf16 export vs qlora" ||
        bad "live PEFT on the bf16 export"
    # m16 twice: upcast to float32 (bf16 weights only: 3e-2) and as it is, in
    # bfloat16 arithmetic (activations rounded too: 6e-2).
    for m in m32:q_run:1e-4:float32 r32:q_rrun:1e-4:float32 m16:q_run:3e-2:float32 m16:q_run:6e-2:auto; do
        IFS=: read -r d ref tol dt <<<"$m"
        "$LIVE" "$CHK" hf "$d" "$IDS" 2 12 "hf_$d.f32" "$dt" 2>/dev/null &&
            chk compare "hf_$d.f32" "$ref.f32" "$tol" "LIVE AutoModelForCausalLM($d, $dt) vs qlora" ||
            bad "live transformers on $d ($dt)"
    done
else
    echo "live transformers+PEFT check skipped (set QL_PEFT_PYTHON to a python with torch, transformers, peft)"
fi

# --- 5. checkpoints (steps 2, 4, 6 of `run`)
CK=run/checkpoints
for src in $CK/step-00000006 $CK; do
    rm -rf ck
    "$QLORA" export "$src" --out ck >ck.out 2>&1 || { bad "export $src"; cat ck.out; }
    grep -q "checkpoint .*step 6 (r 4, alpha 8, rsLoRA" ck.out || bad "export $src: summary $(head -1 ck.out)"
    cmp -s ck/adapter_model.safetensors exp/adapter_model.safetensors ||
        bad "export $src: tensors differ from the run's final adapter"
    cmp -s ck/adapter_config.json exp/adapter_config.json || bad "export $src: adapter_config.json differs"
done
cp -r run run2 && rm -rf run2/adapter
"$QLORA" export run2 --out ck2 >ck2.out 2>&1 && grep -q "step 6" ck2.out &&
    cmp -s ck2/adapter_model.safetensors exp/adapter_model.safetensors || bad "a run without adapter/: $(cat ck2.out)"
"$PY" - run2/checkpoints/step-00000006/shard-00000-of-00001.h5 <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0xFF
open(p, "wb").write(bytes(b))
EOF
"$QLORA" export run2 --out ck4 >ck4.out 2>ck4.err || { bad "fallback to step 4"; cat ck4.err; }
grep -q "step 4" ck4.out || bad "damaged step 6: not step 4: $(cat ck4.out)"
grep -q "step-00000006 does not verify" ck4.err || bad "the damaged checkpoint was not named: $(cat ck4.err)"
cmp -s ck4/adapter_model.safetensors exp/adapter_model.safetensors && bad "step 4 exported the same tensors as step 6"
"$QLORA" export $CK/step-00000004 --merge --dtype f32 --out c32 >/dev/null 2>&1 || bad "merge from a checkpoint"
logits "$FX/llama/llama" ck4 "$IDS" 2 12 q_ck4.f32
chk logits c32 "$IDS" 2 12 np_c32.f32 && chk compare np_c32.f32 q_ck4.f32 1e-4 "merged from checkpoint 4 vs qlora" ||
    bad "merge from a checkpoint: logits"

# --- 6. errors
expect_fail 1 "exp already exists" run --out exp
"$QLORA" export run --out exp --force >/dev/null 2>&1 || bad "--force did not replace"
expect_fail 1 "nowhere: no such directory" nowhere --out x1
mkdir -p empty/checkpoints broken/checkpoints/step-00000002
touch broken/checkpoints/step-00000002/manifest.pb
expect_fail 1 "no committed checkpoint" empty --out x2
expect_fail 1 "manifest.pb" broken/checkpoints/step-00000002 --out x3
cp -r exp tampered
"$PY" - <<'EOF'
from safetensors.numpy import load_file, save_file
t = load_file("tampered/adapter_model.safetensors")
k = sorted(t)[0]
t[k.replace("layers.0", "layers.0.extra")] = t.pop(k)
save_file(t, "tampered/adapter_model.safetensors", metadata={"format": "pt"})
EOF
expect_fail 1 "layers.0.extra" tampered --out x4
expect_fail 1 "expected \[4, 32\]" run --merge --model "$G" --out x5
expect_fail 2 "--dtype must be" run --out x6 --dtype f8
expect_fail 2 "--out is required" run
expect_fail 2 "unknown flag" run --out x7 --frobnicate
for x in x1 x2 x3 x4 x5 x6 x7; do [ -e $x ] && bad "a failed export left $x"; done
ls -a | grep -q '\.tmp-' && bad "a temporary directory was left behind: $(ls -a | grep '\.tmp-')"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
