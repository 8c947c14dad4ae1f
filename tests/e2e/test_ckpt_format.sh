#!/usr/bin/env bash
# The checkpoint format as docs/checkpoint-format.md describes it, read by
# an independent reader (scripts/read_checkpoint.py: h5py, and protobuf from
# proto/manifest.proto alone): a 2-rank run's last checkpoint decodes, its
# manifest and shard checksums match (Python's hashlib), the shards'
# attributes agree with the manifest, the tensors it reassembles from the
# flat vector equal bit for bit those of the run's PEFT adapter
# (safetensors), and step, world, cursor and AdamW t agree with
# `qlora ckpt inspect`; protoc-c --decode prints the manifest as text; a
# flipped byte makes the reader fail.
set -u
. "$(dirname "$0")/ckpt_lib.sh"
"$PY" -c 'import google.protobuf, safetensors' 2>/dev/null || { echo "skip: protobuf/safetensors missing in .venv"; exit 77; }
command -v protoc-c >/dev/null || { echo "skip: protoc-c missing"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
ckpt_setup
READ=("$PY" "$QL_SOURCE_DIR/scripts/read_checkpoint.py" --proto "$QL_SOURCE_DIR/proto/manifest.proto")

train 2 run
[ $rc = 0 ] || { bad "training exit $rc"; tail -n 5 run.err; }
ck=run/checkpoints/step-00000012
"${READ[@]}" $ck --npz ck.npz >read.json || bad "read_checkpoint.py failed on a good checkpoint"
"$QLORA" ckpt inspect run >inspect.txt || bad "inspect failed"
"$PY" - read.json ck.npz run/adapter/adapter_model.safetensors inspect.txt <<'EOF' || bad "reader and qlora disagree"
import json, re, sys
import numpy as np
from safetensors.numpy import load_file
r = json.load(open(sys.argv[1]))
npz = np.load(sys.argv[2])
peft = load_file(sys.argv[3])
insp = open(sys.argv[4]).read()
ok = r["step"] == 12 and r["world"] == 2 and r["adam_t"] == 12 and len(r["rng"]) == 2
names = [t[0] for t in r["tensors"]]
ok &= sorted(names) == sorted(peft)
for n in names:
    if npz[n].tobytes() != peft[n].astype(np.float32).tobytes():
        print(f"{n}: differs from the adapter"); ok = False
m = re.search(r"next sample: epoch (\d+), index (\d+)", insp)
ok &= m is not None and [int(m.group(1)), int(m.group(2))] == r["cursor"]
ok &= f"run         {r['run_id']}" in insp and "world       2 rank(s)" in insp
ok &= f"adapters    {len(names)} tensors, {r['n_params']} parameters" in insp
print(f"{len(names)} tensors, cursor {r['cursor']}, t {r['adam_t']}: {'ok' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
protoc-c --proto_path="$QL_SOURCE_DIR/proto" --decode=qlora.ckpt.Manifest \
    "$QL_SOURCE_DIR/proto/manifest.proto" <$ck/manifest.pb >manifest.txt 2>&1 ||
    bad "protoc-c --decode failed: $(head -n 3 manifest.txt)"
grep -q '^step: 12$' manifest.txt && grep -q 'file: "shard-00001-of-00002.h5"' manifest.txt ||
    bad "protoc-c --decode: $(head -n 5 manifest.txt)"
"$PY" -c "
import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-100] ^= 4; open(p, 'wb').write(b)" $ck/shard-00001-of-00002.h5
"${READ[@]}" $ck >/dev/null 2>bad.err && bad "a flipped byte went unnoticed"
grep -q "shard-00001-of-00002.h5: size or checksum differs" bad.err || bad "reader: $(cat bad.err)"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
