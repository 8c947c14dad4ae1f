#!/usr/bin/env python3
"""Greedy generation checked without qlora's C code: a bitsandbytes 4-bit
directory written without double quantization (`qlora quantize
--no-double-quant`) is dequantized in numpy (NF4 code * absmax, FORMATS
section 1) and run through the float32 forward pass of
scripts/check_hf_forward.py (no KV cache: the whole sequence at once). Every
token qlora generated must be the argmax of that forward at its position, or
within a near-tie of it (the two logits closer than 1e-4 of the largest
logit's magnitude, where float rounding may pick either).

usage: check_generate_numpy.py MODEL_DIR PROMPT_IDS GENERATED_IDS
(ids as space-separated integers); prints one line and exits 0 when all agree.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import check_bnb4  # noqa: E402  (NF4 table)
import check_hf_forward  # noqa: E402  (forward)


def load(path):
    """name -> array from a safetensors file (U8, F16, F32; BF16 widened to
    float32), read by hand: numpy has no bfloat16 for the safetensors
    package to return."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    kinds = {"U8": np.uint8, "F16": np.float16, "F32": np.float32, "BF16": np.uint16}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        a = np.frombuffer(buf[b:e], dtype=kinds[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        out[name] = a
    return out


def main():
    model, prompt, gen = sys.argv[1], [int(x) for x in sys.argv[2].split()], [
        int(x) for x in sys.argv[3].split()]
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg["head_dim"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    q = cfg["quantization_config"]
    assert q["bnb_4bit_quant_type"] == "nf4" and not q["bnb_4bit_use_double_quant"]
    t = load(os.path.join(model, "model.safetensors"))
    W = {}
    for name, v in t.items():
        if name.endswith(".weight") and name + ".absmax" in t:
            st = json.loads(t[name + ".quant_state.bitsandbytes__nf4"].tobytes().rstrip(b"\0"))
            out, inn = st["shape"]
            W[name] = check_bnb4.dequantize(v.reshape(-1), t[name + ".absmax"], "nf4",
                                            st["blocksize"], out * inn).reshape(out, inn)
        elif name.endswith(".weight"):
            W[name] = v.astype(np.float32)
    logits = check_hf_forward.forward(cfg, lambda k: W[k], prompt + gen)
    ties = 0
    for k, tok in enumerate(gen):
        row = logits[len(prompt) - 1 + k]
        best = int(np.argmax(row))
        if best == tok:
            continue
        gap = float(row[best] - row[tok])
        if gap <= 1e-4 * float(np.abs(row).max()):
            ties += 1
            continue
        print("token %d: qlora generated %d (logit %.6g), numpy's argmax is %d (logit %.6g)"
              % (k, tok, row[tok], best, row[best]))
        sys.exit(1)
    print("%d generated tokens are numpy's argmax (%d near-ties)" % (len(gen), ties))


if __name__ == "__main__":
    main()
