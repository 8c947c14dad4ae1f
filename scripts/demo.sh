#!/usr/bin/env bash
# The main job: QLoRA fine-tuning of SmolLM2-135M-Instruct on the project's
# code-instruction set, and what came of it.
#   1. fetch the model (cached outside the repo, docs/models.md) and quantize
#      it to bitsandbytes NF4 (an HF directory transformers loads);
#   2. fine-tune it straight from its GGUF file on data/code/train.jsonl
#      (examples/smollm2-code.yaml): progress, the base model's answers to
#      two held-out prompts at the start and the adapter's at the end, the
#      review sheet and the PEFT adapter;
#   3. eval before and after: loss and perplexity on data/code/valid.jsonl,
#      base model and adapter side by side;
#   4. pass@1 before and after on the held-out functions that have unit tests
#      (run in a sandbox);
#   5. a generation with the adapter, streamed;
#   6. the loss plot (qlora report);
#   7. a summary of where everything is.
# The job (after set-up, build and the model download) took 2 min 9 s on an
# idle 2-vCPU VM (README.md); it prints the time of each part and the total.
# Usage: scripts/demo.sh [OUT_DIR] [--key=value ...]   (default out/; the
# overrides go to qlora train, e.g. --train.steps=10)
set -euo pipefail
cd "$(dirname "$0")/.."
out=out
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out=$1; shift; fi
Q=${QLORA:-build/qlora}
[ -x "$Q" ] || { echo "demo: $Q is missing: run scripts/setup.sh first" >&2; exit 1; }

start=$SECONDS
clock() { local s=$((SECONDS - start)); printf '%d:%02d' $((s / 60)) $((s % 60)); }
part() { printf '\n== [%s] %s\n' "$(clock)" "$*"; }

hf=$(scripts/fetch_smollm2.sh | tail -n 1)
gguf=$(dirname "$hf")/SmolLM2-135M-Instruct.Q4_1.gguf
run=$out/smollm2-code
mkdir -p "$out"
start=$SECONDS # the job itself, after the fetch (cached after the first run)

part "1/6 quantize: $hf -> $out/smollm2-135m-nf4 (bitsandbytes NF4 + double quant)"
$Q quantize --model "$hf" --out "$out/smollm2-135m-nf4" --force --quiet

part "2/6 train: QLoRA on data/code/train.jsonl (examples/smollm2-code.yaml)"
$Q train examples/smollm2-code.yaml --model="$gguf" --output_dir="$run" \
    --overwrite_output_dir=true --resume=never "$@"

part "3/6 eval on the held-out functions (data/code/valid.jsonl): before (base model) and after (adapter)"
$Q eval --model "$gguf" --adapter "$run" --data data/code/valid.jsonl --max-seq-len 256 --quiet |
    tee "$out/.demo-eval"

part "4/6 pass@1 on the held-out functions with unit tests: before and after"
$Q eval --code data/code/valid.jsonl --model "$gguf" --adapter "$run" --max-new-tokens 160 \
    --output "$run/code_eval.jsonl" --quiet | tee "$out/.demo-code"

part "5/6 a generation with the adapter (streamed as it comes)"
prompt='def count_vowels(text):
    """Return how many vowels (a, e, i, o, u) there are in text.

    >>> count_vowels("Hello World")
    3
    """'
printf '%s' "$prompt"
$Q generate --model "$gguf" --adapter "$run" --no-chat --stop-at-dedent --max-new-tokens 96 \
    --prompt "$prompt" --quiet

part "6/6 the loss plot, and the adapter for llama.cpp"
report="(qlora report is not in this build)"
if $Q report --help >/dev/null 2>&1; then
    $Q report "$run"
    report="$run/report.html and $run/loss.png"
fi
$Q export "$run" --gguf --out "$run/adapter.gguf" --force

total=$(clock)
# The numbers from the last (JSON) line of each evaluation.
num() { sed -n 's/.*"'"$2"'": *\([-0-9.e+]*\).*/\1/p' "$1" | tail -n 1; }
pass() { sed -n 's/.*"passed": {[^}]*"'"$2"'": \([0-9]*\).*/\1/p' "$1" | tail -n 1; }
n_code=$(num "$out/.demo-code" records)
cat <<EOF

== done in $total (after the model fetch)
  held-out loss      base model $(num "$out/.demo-eval" base_loss) -> adapter $(num "$out/.demo-eval" loss) (perplexity $(num "$out/.demo-eval" base_perplexity) -> $(num "$out/.demo-eval" perplexity))
  pass@1             base model $(pass "$out/.demo-code" base)/$n_code -> adapter $(pass "$out/.demo-code" adapter)/$n_code (functions with unit tests)
  adapter (PEFT)     $run/adapter/   (PeftModel.from_pretrained; qlora export $run --out DIR [--merge])
  llama.cpp adapter  $run/adapter.gguf (llama-cli -m $gguf --lora $run/adapter.gguf)
  review sheet       $run/review.md  (base vs adapter answers to held-out prompts, unit-test verdicts)
  metrics            $run/metrics.jsonl (steps, eval, samples)
  evaluation         $run/eval.json  (loss base vs adapter)
  pass@1 details     $run/code_eval.jsonl
  loss plot          $report
  quantized model    $out/smollm2-135m-nf4/ (bitsandbytes NF4, loads in transformers)
  base model         $gguf
EOF
