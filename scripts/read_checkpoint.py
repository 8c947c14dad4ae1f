#!/usr/bin/env python3
"""Read a qlora checkpoint with h5py and protobuf alone (docs/checkpoint-format.md).

    read_checkpoint.py CHECKPOINT_DIR [--proto proto/manifest.proto] [--npz OUT.npz]

Decodes manifest.pb against proto/manifest.proto (compiled to a descriptor
set with protoc-c, which every qlora build has), checks the manifest's own
checksum and every shard's checksum, reassembles the flat float32 vectors
params, adam_m and adam_v from the shards, and prints one JSON object: step,
world size, data cursor, AdamW t, and per tensor its name, shape and the
SHA-256 of its float32 bytes. --npz writes every LoRA tensor (by its PEFT
name) and the three flat vectors. Exit status 1 on any mismatch.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def manifest_class(proto):
    """The Manifest message class, from the .proto through a descriptor set."""
    out = os.path.join(tempfile.mkdtemp(), "manifest.desc")
    subprocess.check_call(["protoc-c", "--proto_path=" + os.path.dirname(os.path.abspath(proto)),
                           "--descriptor_set_out=" + out, os.path.abspath(proto)])
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read()).file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("qlora.ckpt.Manifest"))


def checksum(data):
    """SHA-256 over the SHA-256 digests of the 16 MiB pieces of a file."""
    h = hashlib.sha256()
    for i in range(0, len(data), 16 << 20):
        h.update(hashlib.sha256(data[i:i + (16 << 20)]).digest())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--proto", default=os.path.join(os.path.dirname(__file__), "..", "proto",
                                                    "manifest.proto"))
    ap.add_argument("--npz")
    a = ap.parse_args()
    ok = True
    raw = open(os.path.join(a.dir, "manifest.pb"), "rb").read()
    m = manifest_class(a.proto).FromString(raw)
    # The last 67 bytes are field 21 (self_sha256): tag 0xAA 0x01, length 0x40.
    if raw[-67:-64] != b"\xaa\x01\x40" or hashlib.sha256(raw[:-67]).hexdigest() != m.self_sha256:
        print("manifest.pb: self checksum mismatch", file=sys.stderr)
        ok = False
    if m.format_version != 1:
        sys.exit(f"manifest.pb: format_version {m.format_version}, this reader knows 1")
    flat = {k: np.zeros(m.n_params, np.float32) for k in ("params", "adam_m", "adam_v")}
    rng = []
    for s in m.shards:
        path = os.path.join(a.dir, s.file)
        data = open(path, "rb").read()
        if len(data) != s.bytes or checksum(data) != s.checksum:
            print(f"{s.file}: size or checksum differs from the manifest", file=sys.stderr)
            ok = False
        with h5py.File(path, "r") as h:
            at = h.attrs
            if (int(at["rank"]), int(at["world_size"]), int(at["offset"]), int(at["length"]),
                    int(at["step"]), at["run_id"].decode()) != (
                    s.rank, m.world.size, s.offset, s.length, m.step, m.run_id):
                print(f"{s.file}: attributes disagree with the manifest", file=sys.stderr)
                ok = False
            for k in flat:
                flat[k][s.offset:s.offset + s.length] = h[k][:]
            rng.append([int(x) for x in at["rng_state"]])
    tensors = {}
    for t in m.tensors:
        n = t.shape[0] * t.shape[1]
        tensors[t.name] = flat["params"][t.offset:t.offset + n].reshape(tuple(t.shape))
    print(json.dumps({
        "step": m.step, "run_id": m.run_id, "world": m.world.size,
        "cursor": [m.cursor.epoch, m.cursor.index], "adam_t": m.optimizer.t,
        "tokens_seen": m.tokens_seen, "n_params": m.n_params, "rng": rng,
        "tensors": [[t.name, list(t.shape), hashlib.sha256(tensors[t.name].tobytes()).hexdigest()]
                    for t in m.tensors],
    }))
    if a.npz:
        np.savez(a.npz, **tensors, **{"flat." + k: v for k, v in flat.items()})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
