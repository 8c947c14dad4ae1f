#!/usr/bin/env bash
# Elastic resume: a run saved at 4 ranks (mpirun --oversubscribe; LoRA
# dropout off, since dropout streams are per rank) continues at 2 ranks and
# at 1 rank from its step-6 checkpoint:
#   - the same data stream: steps 7..12 take the same global sample ids
#     (QL_TRACE_SAMPLES) as the uninterrupted 4-rank run;
#   - the losses and gradient norms of steps 7..12 match it to 1e-6 relative
#     (only the order of the gradient sums differs);
#   - the tensors reassemble bit-exactly: a resume at 2 and at 1 rank with
#     nothing left to run writes an adapter whose every tensor is, bit for
#     bit, its slice of the 4 shards' params (read with h5py, placed by the
#     manifest's tensor table read with protobuf from proto/manifest.proto);
#   - the checkpoints the 2-rank run writes have 2 shards and verify.
set -u
. "$(dirname "$0")/ckpt_lib.sh"
"$PY" -c 'import google.protobuf, safetensors' 2>/dev/null || { echo "skip: protobuf/safetensors missing in .venv"; exit 77; }
command -v protoc-c >/dev/null || { echo "skip: protoc-c missing"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
ckpt_setup
OV=(--lora.dropout=0)

QL_TRACE_SAMPLES=1 train 4 e4 "${OV[@]}"
[ $rc = 0 ] || { bad "4 ranks: exit $rc"; tail -n 5 e4.err; }
for w in 2 1; do
    mkdir -p e$w/checkpoints
    cp -r e4/checkpoints/step-00000006 e$w/checkpoints/
    echo step-00000006 >e$w/checkpoints/LATEST
    head -n 6 e4/metrics.jsonl >e$w/metrics.jsonl
    cp -r e$w e${w}_zero
    QL_TRACE_SAMPLES=1 train $w e$w "${OV[@]}"
    [ $rc = 0 ] || { bad "$w ranks: exit $rc"; tail -n 5 e$w.err; }
    grep -q "^resume: e$w/checkpoints/step-00000006: step 6, .*written by 4 rank(s) (re-partitioned)$" e$w.err ||
        bad "$w ranks: no resume line: $(grep resume e$w.err)"
    [ "$(samples e4.err | sed -n '7,12p')" = "$(samples e$w.err)" ] ||
        bad "$w ranks: steps 7..12 took other samples"
    "$PY" - e4/metrics.jsonl e$w/metrics.jsonl <<'EOF' || bad "$w ranks: losses differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
ok = len(a) == len(b) == 12 and a[:6] == b[:6]
worst = 0.0
for x, y in zip(a[6:], b[6:]):
    for k in ("loss", "grad_norm"):
        worst = max(worst, abs(x[k] - y[k]) / abs(x[k]))
    ok &= x["step"] == y["step"] and x["tokens"] == y["tokens"] and x["targets"] == y["targets"]
    ok &= x["lr"] == y["lr"]
print(f"steps 7..12: largest relative difference {worst:.2e}")
sys.exit(0 if ok and worst <= 1e-6 else 1)
EOF
    "$QLORA" ckpt verify e$w >/dev/null 2>&1 || bad "$w ranks: its checkpoints do not verify"
    n=$(ls e$w/checkpoints/step-00000012/*.h5 | wc -l)
    [ "$n" = "$w" ] || bad "$w ranks: step 12 has $n shards"

    # Nothing left to run: the adapter is the restored parameters.
    train $w e${w}_zero "${OV[@]}" --train.steps=6
    [ $rc = 0 ] || { bad "$w ranks, steps 6: exit $rc"; tail -n 3 e${w}_zero.err; }
    "$PY" - e4/checkpoints/step-00000006 e${w}_zero/adapter "$QL_SOURCE_DIR/proto" <<'EOF' ||
import os, subprocess, sys, tempfile
import h5py, numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from safetensors.numpy import load_file
ck, adapter, proto = sys.argv[1:4]
desc = os.path.join(tempfile.mkdtemp(), "m.desc")
subprocess.check_call(["protoc-c", f"--proto_path={proto}", f"--descriptor_set_out={desc}",
                       os.path.join(proto, "manifest.proto")])
pool = descriptor_pool.DescriptorPool()
for f in descriptor_pb2.FileDescriptorSet.FromString(open(desc, "rb").read()).file:
    pool.Add(f)
Manifest = message_factory.GetMessageClass(pool.FindMessageTypeByName("qlora.ckpt.Manifest"))
m = Manifest.FromString(open(os.path.join(ck, "manifest.pb"), "rb").read())
flat = np.zeros(m.n_params, np.float32)
for s in m.shards:
    with h5py.File(os.path.join(ck, s.file), "r") as h:
        flat[s.offset:s.offset + s.length] = h["params"][:]
got = load_file(os.path.join(adapter, "adapter_model.safetensors"))
ok = len(got) == len(m.tensors) == 28
for t in m.tensors:
    want = flat[t.offset:t.offset + t.shape[0] * t.shape[1]].reshape(tuple(t.shape))
    have = got[t.name].astype(np.float32)
    if have.shape != want.shape or have.tobytes() != want.tobytes():
        print(f"{t.name}: differs"); ok = False
sys.exit(0 if ok else 1)
EOF
        bad "$w ranks: the restored adapter is not the 4 shards' params"
done

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
