# Sourced by tests/gpu/test_train_*.sh: the tiny random Llama of
# tests/fixtures/make_tiny_hf_model.py, 48 records of arithmetic progressions
# mod 97 (lengths 8..24, every third with its first half masked) and a
# 20-step config, written into the current directory as model/,
# train.jsonl and cfg.yaml (tiny_train_files). Returns non-zero when a
# file could not be written.
#
# Sourcing it also does what every such test does first: checks $QLORA (and
# exits 77 without it or without a Python with numpy and safetensors, in
# $PY), moves into a fresh temporary directory removed at exit, and defines
# bad() and $fails.
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
[ -x "$QLORA" ] || { echo "skip: $QLORA is not built"; exit 77; }
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || PY=python3
"$PY" -c 'import numpy, safetensors' 2>/dev/null || { echo "skip: no python with numpy and safetensors"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

tiny_train_files() {
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || return 1
    "$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_records.py" train.jsonl || return 1
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

# For the 2-rank tests: two emulated devices (NCCL refuses two ranks on one)
# and one OpenMP thread per rank; exits the test with 77 unless CUDA sees a
# GPU and it is the emulator or nvidia-smi lists at least 2. Needs cfg.yaml.
two_gpus_or_skip() {
    export QL_EMU_DEVICES=2 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
    "$QLORA" train cfg.yaml --dry-run --backend=cuda >dry.out 2>dry.err
    grep -q "the memory of GPU" dry.out || { echo "skip: no GPU visible to CUDA"; exit 77; }
    if ! grep -q "CUDA emulator" dry.out; then
        local gpus
        gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
        [ "${gpus:-0}" -ge 2 ] || { echo "skip: ${gpus:-0} GPU(s); 2 ranks need 2"; exit 77; }
    fi
}
