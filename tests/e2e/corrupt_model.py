#!/usr/bin/env python3
"""Breaks a model directory made by tests/fixtures/make_tiny_hf_model.py in
one specific way, for the bad-input tests of `qlora quantize`.

usage: corrupt_model.py DIR KIND
KIND: truncated, header_past_end, overlap, out_of_range, unknown_dtype,
      wrong_shape, config_missing_field, index_missing_tensor, missing_shard
Prints the tensor or file it broke (the tests grep the error for it).
"""
import json
import os
import struct
import sys


def read_st(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n], object_pairs_hook=lambda p: p)
    return [(k, dict(v) if k != "__metadata__" else v) for k, v in hdr], raw[8 + n:]


def write_st(path, entries, data):
    obj = {}
    for k, v in entries:
        obj[k] = dict(v) if k == "__metadata__" else v
    text = json.dumps(obj, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def by_offset(entries):
    return sorted((e for e in entries if e[0] != "__metadata__"), key=lambda e: e[1]["data_offsets"][0])


def main():
    d, kind = sys.argv[1], sys.argv[2]
    st = os.path.join(d, "model.safetensors")
    if kind == "truncated":
        with open(st, "r+b") as f:
            f.truncate(5)
        print("model.safetensors")
    elif kind == "header_past_end":
        size = os.path.getsize(st)
        with open(st, "r+b") as f:
            f.write(struct.pack("<Q", size + 100))
        print("model.safetensors")
    elif kind in ("overlap", "out_of_range", "unknown_dtype"):
        entries, data = read_st(st)
        order = by_offset(entries)
        victim = order[len(order) // 2]
        b, e = victim[1]["data_offsets"]
        if kind == "overlap":
            victim[1]["data_offsets"] = [b - 4, e - 4]
        elif kind == "out_of_range":
            victim[1]["data_offsets"] = [len(data), len(data) + (e - b)]
        else:
            victim[1]["dtype"] = "Q8"
        write_st(st, entries, data)
        print(victim[0])
    elif kind == "wrong_shape":
        entries, data = read_st(st)
        name = "model.layers.1.mlp.up_proj.weight"
        for k, v in entries:
            if k == name:
                v["shape"] = v["shape"][::-1]
        write_st(st, entries, data)
        print(name)
    elif kind == "config_missing_field":
        p = os.path.join(d, "config.json")
        cfg = json.load(open(p))
        del cfg["hidden_size"]
        json.dump(cfg, open(p, "w"), indent=2)
        print("hidden_size")
    elif kind == "index_missing_tensor":
        p = os.path.join(d, "model.safetensors.index.json")
        idx = json.load(open(p))
        wm = idx["weight_map"]
        files = sorted(set(wm.values()))
        name = sorted(k for k, v in wm.items() if v == files[0])[0]
        wm[name] = files[1]
        json.dump(idx, open(p, "w"), indent=2)
        print(name)
    elif kind == "missing_shard":
        p = os.path.join(d, "model.safetensors.index.json")
        files = sorted(set(json.load(open(p))["weight_map"].values()))
        os.remove(os.path.join(d, files[-1]))
        print(files[-1])
    else:
        sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
