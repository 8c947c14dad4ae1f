#!/usr/bin/env bash
# Running `qlora train` again on a run directory, as a requeued or repeated
# job does (tiny random Llama of ckpt_lib.sh, 6 steps, a checkpoint every 3):
#   - a finished run (its last checkpoint is the last step, adapter/ there):
#     "nothing to train", exit 0, nothing loaded, metrics.jsonl,
#     config.resolved.yaml and the adapter unchanged;
#   - the same with adapter/ gone, or older than the checkpoint, or with
#     resume: PATH: resumed at the last step, no step run, the adapter
#     written again with the same bytes, no loss line of NaNs;
#   - a resume a checkpoint refuses (lora.r changed): exit 1, the message
#     names the checkpoint and the key, before the data is read, and the
#     run's config.resolved.yaml keeps its bytes (eval and export read it);
#     so it does when the refusal comes after loading (other data);
#   - a start that stopped before its first step leaves a metrics.jsonl with
#     no step in it (a preemption while loading): the next start runs;
#     one with steps and no checkpoint is still refused;
#   - a resume from a checkpoint older than metrics.jsonl's last step says
#     which steps run again;
#   - eval --adapter of a run with checkpoints and no adapter/ says how to
#     export it, and that works;
#   - a missing model is named as such before anything else (train, eval);
#     a model without a tokenizer, for records that need one, says so; so
#     do a directory given as data and a file given as output_dir.
set -u
. "$(dirname "$0")/ckpt_lib.sh"
T=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
cd "$T" || exit 1
ckpt_setup
OV=(--train.steps=6)

train 1 run "${OV[@]}"
[ $rc = 0 ] || { bad "first run exited $rc"; tail -n 5 run.err; }
[ -d run/checkpoints/step-00000006 ] || bad "no checkpoint of step 6: $(ls run/checkpoints)"
cp run/metrics.jsonl metrics.before
cp run/config.resolved.yaml resolved.before
cp run/adapter/adapter_model.safetensors adapter.before

# --- a finished run
"$QLORA" train cfg.yaml --output_dir=run "${OV[@]}" >again.out 2>again.err
rc=$?
[ $rc = 0 ] || bad "finished run again: exit $rc: $(tail -n 3 again.err)"
grep -q "^nothing to train: the checkpoint to resume from is of step 6 (train.steps: 6)" again.out ||
    bad "finished run again: no 'nothing to train' line: $(cat again.out)"
grep -q "^data:\|^model:" again.err && bad "finished run again: loaded the data or the model"
cmp -s run/metrics.jsonl metrics.before || bad "finished run again: metrics.jsonl changed"
cmp -s run/config.resolved.yaml resolved.before || bad "finished run again: config.resolved.yaml changed"

# --- an adapter older than the last checkpoint (saved by an interrupt before
# the run went on, then killed before its final save): not "nothing to
# train"; the run resumes at its last step and writes that step's adapter
cp -r run stale
touch -d '2001-01-01' stale/adapter/adapter_model.safetensors
"$QLORA" train cfg.yaml --output_dir=stale "${OV[@]}" >stale.out 2>stale.err
rc=$?
[ $rc = 0 ] || bad "stale adapter: exit $rc: $(tail -n 3 stale.err)"
grep -q "^nothing to train: resumed at step 6 of 6; the adapter is saved again$" stale.out ||
    bad "stale adapter: not saved again: $(cat stale.out)"
cmp -s stale/adapter/adapter_model.safetensors adapter.before || bad "stale adapter: other bytes"
# resume: PATH names a checkpoint: resumed from it even when an adapter is there
"$QLORA" train cfg.yaml --output_dir=run "${OV[@]}" --resume=run/checkpoints/step-00000006 >path.out 2>path.err
rc=$?
[ $rc = 0 ] && grep -q "^nothing to train: resumed at step 6 of 6" path.out ||
    bad "resume: PATH on a finished run: exit $rc: $(cat path.out)"

# --- a finished run whose adapter is gone
rm -r run/adapter
"$QLORA" train cfg.yaml --output_dir=run "${OV[@]}" >noad.out 2>noad.err
rc=$?
[ $rc = 0 ] || bad "finished run without adapter: exit $rc: $(tail -n 3 noad.err)"
grep -q "^nothing to train: resumed at step 6 of 6; the adapter is saved again$" noad.out ||
    bad "finished run without adapter: $(cat noad.out)"
grep -qi "nan" noad.out && bad "finished run without adapter prints NaN: $(cat noad.out)"
cmp -s run/adapter/adapter_model.safetensors adapter.before ||
    bad "finished run without adapter: the adapter written again differs"
[ "$(grep -c '"loss"' run/metrics.jsonl)" = 6 ] ||
    bad "finished run without adapter: $(grep -c '"loss"' run/metrics.jsonl) step lines, want 6"

# --- eval of a run that has checkpoints and no adapter/ yet (preempted):
# the message says how to get the adapter, and that way works
cp -r run preempted && rm -r preempted/adapter
"$QLORA" eval --model model --data train.jsonl --adapter preempted >/dev/null 2>pre.err
rc=$?
[ $rc = 1 ] && grep -q "preempted: a run directory with no adapter/ yet.*qlora export preempted --out DIR" pre.err ||
    bad "eval of a preempted run: exit $rc: $(cat pre.err)"
"$QLORA" export preempted --out pre-adapter >/dev/null 2>&1 || bad "export of a preempted run failed"
"$QLORA" eval --model model --data train.jsonl --adapter pre-adapter >/dev/null 2>&1 ||
    bad "eval of the exported adapter of a preempted run failed"

# --- a resume from a checkpoint older than the metrics (an extended run
# whose last checkpoint is gone): it says which steps run again
cp -r run older && rm -r older/checkpoints/step-00000006
"$QLORA" train cfg.yaml --output_dir=older --train.steps=8 >/dev/null 2>older.err
rc=$?
[ $rc = 0 ] || bad "older checkpoint: exit $rc: $(tail -n 2 older.err)"
grep -q "^resume: metrics.jsonl goes on to step 6, past this checkpoint: steps 4-6 run again" older.err ||
    bad "older checkpoint: no note of the steps run again: $(grep resume older.err)"
[ "$(grep -c '"loss"' older/metrics.jsonl)" = 8 ] || bad "older checkpoint: $(grep -c '"loss"' older/metrics.jsonl) step lines, want 8"

# --- a resume the checkpoint refuses, before the data is read
"$QLORA" train cfg.yaml --output_dir=run "${OV[@]}" --lora.r=4 >refused.out 2>refused.err
rc=$?
[ $rc = 1 ] || bad "changed lora.r: exit $rc, want 1"
grep -q "cannot resume from run/checkpoints/step-00000006: lora.r is 8 in the checkpoint and 4 now" refused.err ||
    bad "changed lora.r: message: $(cat refused.err)"
grep -q "^data:" refused.err && bad "changed lora.r: refused only after reading the data"
cmp -s run/config.resolved.yaml resolved.before ||
    bad "changed lora.r: a refused start rewrote config.resolved.yaml"

# --- a resume refused once the data is read (other data: the checkpoint's
# cursor would point at other samples), also leaving the run's files alone
head -n 40 train.jsonl >other.jsonl
"$QLORA" train cfg.yaml --output_dir=run --train.steps=9 --data.train=other.jsonl >/dev/null 2>data.err
rc=$?
[ $rc = 1 ] && grep -q "the training data differs from the checkpoint's" data.err ||
    bad "other data: exit $rc: $(tail -n 2 data.err)"
cmp -s run/config.resolved.yaml resolved.before ||
    bad "other data: a refused resume rewrote config.resolved.yaml"

# --- a start that stopped before its first step
mkdir early && : >early/metrics.jsonl
train 1 early "${OV[@]}" --train.steps=2
[ $rc = 0 ] || bad "after a start with an empty metrics.jsonl: exit $rc: $(tail -n 3 early.err)"
[ "$(grep -c '"loss"' early/metrics.jsonl)" = 2 ] || bad "after an empty metrics.jsonl: not trained"
mkdir stepped && head -n 1 metrics.before >stepped/metrics.jsonl
"$QLORA" train cfg.yaml --output_dir=stepped "${OV[@]}" >/dev/null 2>stepped.err
rc=$?
[ $rc = 1 ] && grep -q "output_dir stepped already holds a run (metrics.jsonl) and no checkpoint" stepped.err ||
    bad "a run's metrics without checkpoints: not refused (exit $rc): $(cat stepped.err)"

# --- a missing model
"$QLORA" train cfg.yaml --output_dir=nomodel --model=no/such/model >/dev/null 2>nomodel.err
rc=$?
[ $rc = 1 ] && grep -q "model: no/such/model: no such file or directory" nomodel.err ||
    bad "missing model: exit $rc: $(cat nomodel.err)"
[ -e nomodel ] && bad "missing model: output_dir created"
mkdir adir && touch afile
"$QLORA" train cfg.yaml --output_dir=dtrain --data.train=adir >/dev/null 2>dtrain.err
grep -q "adir: cannot read: it is a directory, not a file" dtrain.err || bad "data.train a directory: $(cat dtrain.err)"
"$QLORA" train cfg.yaml --output_dir=afile >/dev/null 2>afile.err
grep -q "output_dir afile exists and is not a directory" afile.err || bad "output_dir a file: $(cat afile.err)"
"$QLORA" eval --model no/such/model --data train.jsonl >/dev/null 2>evnomodel.err
rc=$?
[ $rc = 1 ] && grep -q "^qlora: error: --model no/such/model: no such file or directory$" evnomodel.err ||
    bad "eval, missing model: exit $rc: $(cat evnomodel.err)"
# A model directory without a tokenizer, for records that need one: the
# message says which record needed it and why there is none.
mkdir notok && cp model/config.json model/*.safetensors notok/
printf '{"prompt": "1 2 3", "completion": " 4"}\n' >pc.jsonl
"$QLORA" eval --model notok --data pc.jsonl >/dev/null 2>notok.err
rc=$?
[ $rc = 1 ] && grep -q "pc.jsonl:1: a prompt/completion record needs the model's tokenizer.*; the tokenizer of --model notok: .*no tokenizer.json" notok.err ||
    bad "eval, no tokenizer: exit $rc: $(cat notok.err)"
"$QLORA" train cfg.yaml --output_dir=notokrun --model=notok --data.train=pc.jsonl >/dev/null 2>notokt.err
rc=$?
[ $rc = 1 ] && grep -q "pc.jsonl:1: a prompt/completion record needs the model's tokenizer.*; the tokenizer of model notok: .*tokenizer.json" notokt.err ||
    bad "train, no tokenizer: exit $rc: $(cat notokt.err)"

[ $fails = 0 ] && echo "ok" && exit 0
exit 1
