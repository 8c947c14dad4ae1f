# Sourced by tests/gpu/test_train_*.sh: the tiny random Llama of
# tests/fixtures/make_tiny_hf_model.py, 48 records of arithmetic progressions
# mod 97 (lengths 8..24, every third with its first half masked) and a
# 20-step config, written into the current directory as model/,
# train.jsonl and cfg.yaml. Needs $PY (numpy, safetensors) and
# $QL_SOURCE_DIR. Returns non-zero when a file could not be written.
tiny_train_files() {
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || return 1
    "$PY" - <<'PYEOF' || return 1
import json, random
r = random.Random(0)
with open("train.jsonl", "w") as f:
    for i in range(48):
        n, start, step = r.randint(8, 24), r.randint(0, 96), 3
        ids = [(start + step * t) % 97 for t in range(n)]
        rec = {"input_ids": ids}
        if i % 3 == 0:
            rec["labels"] = [-100] * (n // 2) + ids[n // 2:]
        f.write(json.dumps(rec) + "\n")
PYEOF
    cat >cfg.yaml <<'CFGEOF'
model: model
output_dir: run
seed: 1234
backend: auto
data:
  train: train.jsonl
  max_seq_len: 32
lora:
  r: 8
  alpha: 32
  dropout: 0.1
train:
  steps: 20
  global_batch: 8
  micro_batch: 2
  lr: 1.0e-2
  warmup_steps: 2
  log_every: 1
checkpoint:
  every_steps: 0
CFGEOF
}
