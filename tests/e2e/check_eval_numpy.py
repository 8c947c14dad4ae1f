#!/usr/bin/env python3
"""The mean loss `qlora eval` should report, computed without qlora's C code:
a bitsandbytes 4-bit directory written without double quantization
(`qlora quantize --no-double-quant`) is read with the PyPI `safetensors`
package and dequantized in numpy (NF4 code * absmax, FORMATS section 1), an
optional PEFT adapter is merged as PEFT does (W + alpha/r * B @ A), and the
float32 forward pass of scripts/check_hf_forward.py gives logits. Loss: mean
over target tokens of -log softmax, targets = labels shifted by one, -100
ignored, labels defaulting to input_ids.

usage: check_eval_numpy.py MODEL_DIR DATA.jsonl [--adapter DIR]
prints {"loss": ..., "perplexity": ..., "tokens": ...}
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import check_bnb4  # noqa: E402  (NF4 table)
import check_hf_forward  # noqa: E402  (forward)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--adapter")
    a = ap.parse_args()
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg["head_dim"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    q = cfg["quantization_config"]
    assert q["bnb_4bit_quant_type"] == "nf4" and not q["bnb_4bit_use_double_quant"]
    t = load_file(os.path.join(a.model, "model.safetensors"))
    W = {}
    for name, v in t.items():
        if name.endswith(".weight") and name + ".absmax" in t:
            blob = t[name + ".quant_state.bitsandbytes__nf4"].tobytes().rstrip(b"\0")
            st = json.loads(blob)
            out, inn = st["shape"]
            n = out * inn
            W[name] = check_bnb4.dequantize(v.reshape(-1), t[name + ".absmax"], "nf4",
                                            st["blocksize"], n).reshape(out, inn)
        elif name.endswith(".weight") and v.dtype == np.float32:
            W[name] = v  # embeddings, norms, lm_head: kept as they were
    if a.adapter:
        with open(os.path.join(a.adapter, "adapter_config.json")) as f:
            ac = json.load(f)
        r, alpha = ac["r"], ac["lora_alpha"]
        s = alpha / (math.sqrt(r) if ac.get("use_rslora") else r)
        ad = load_file(os.path.join(a.adapter, "adapter_model.safetensors"))
        for k, A in ad.items():
            if ".lora_A." not in k:
                continue
            B = ad[k.replace(".lora_A.", ".lora_B.")]
            base = k.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
            W[base] = (W[base].astype(np.float64) + s * (B.astype(np.float64) @ A)).astype(
                np.float32)

    total, n = 0.0, 0
    with open(a.data) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            ids = rec["input_ids"]
            labels = rec.get("labels") or ids
            lg = check_hf_forward.forward(cfg, lambda k: W[k], ids).astype(np.float64)
            lg -= lg.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(lg).sum(axis=-1))
            for i in range(len(ids) - 1):
                y = labels[i + 1]
                if y != -100:
                    total += lse[i] - lg[i, y]
                    n += 1
    print(json.dumps({"loss": total / n, "perplexity": math.exp(total / n), "tokens": n}))


if __name__ == "__main__":
    main()
