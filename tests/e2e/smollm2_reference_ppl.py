#!/usr/bin/env python3
"""Reference perplexity of a Llama model on pre-tokenized JSONL, in numpy.

usage: smollm2_reference_ppl.py (--model HF_DIR | --gguf FILE) --data JSONL
                                [--nf4]

Independent of qlora's C code: the float32 forward pass is
scripts/check_hf_forward.py's `forward` (FORMATS.md §4.2), the weights come
from the HF directory's safetensors (check_hf_forward's reader) or from the
GGUF through the gguf package (scripts/gguf_to_hf.py's dequantization and Q/K
un-permutation, kept in float32: no bf16 rounding, as qlora's GGUF source).

--nf4 first takes every linear projection through bitsandbytes NF4 with
block size 64 and double quantization (what qlora does on load by default),
using the numpy re-implementation in tests/e2e/check_bnb4.py, and uses the
dequantized weights; embeddings and norms stay float32.

Loss convention: labels default to input_ids; position t predicts
labels[t + 1]; labels < 0 are skipped; mean over targets. Prints one JSON line
{"loss", "perplexity", "tokens"}.
"""
import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import check_bnb4  # noqa: E402
import check_hf_forward as chk  # noqa: E402

PROJ = tuple(p + ".weight" for p in check_bnb4.LINEAR)


def nf4_roundtrip(w, dmap):
    """NF4, block 64, double quant, dequantized with FORMATS §8's two-step absmax."""
    q = check_bnb4.quantize(w, "nf4", 64, True, dmap)
    nb = q["absmax_q"].size
    amax = ((dmap[q["absmax_q"]] * np.repeat(q["nested_absmax"], 256)[:nb]).astype(np.float32)
            + q["offset"]).astype(np.float32)
    return check_bnb4.dequantize(q["packed"], amax, "nf4", 64, w.size).reshape(w.shape)


def hf_weights(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    st = chk.load_safetensors(os.path.join(model_dir, "model.safetensors"))
    return cfg, lambda name: chk.as_f32(st[name])


def gguf_weights(path):
    import gguf_to_hf as g
    reader = g.GGUFReader(path)
    arch = g.field(reader, "general.architecture")
    n_head = int(g.field(reader, f"{arch}.attention.head_count"))
    n_kv = int(g.field(reader, f"{arch}.attention.head_count_kv", n_head))
    hidden = int(g.field(reader, f"{arch}.embedding_length"))
    cfg = {
        "num_hidden_layers": int(g.field(reader, f"{arch}.block_count")),
        "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "head_dim": hidden // n_head, "hidden_size": hidden,
        "rms_norm_eps": float(g.field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(g.field(reader, f"{arch}.rope.freq_base", 10000.0)),
    }
    tensors = {}
    for t in reader.tensors:
        name = g.hf_name(t.name)
        if name is not None:
            tensors[name] = t
    cfg["tie_word_embeddings"] = "lm_head.weight" not in tensors

    def get(name):
        w = g.to_float32(tensors[name])
        if name.endswith("q_proj.weight"):
            w = g.unpermute(w, n_head)
        elif name.endswith("k_proj.weight"):
            w = g.unpermute(w, n_kv)
        return w

    return cfg, get


def main():
    ap = argparse.ArgumentParser(description="numpy reference perplexity")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model")
    src.add_argument("--gguf")
    ap.add_argument("--data", required=True)
    ap.add_argument("--nf4", action="store_true")
    args = ap.parse_args()

    cfg, raw = hf_weights(args.model) if args.model else gguf_weights(args.gguf)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("rope_theta", 10000.0)
    if cfg.get("rope_scaling"):
        raise SystemExit("smollm2_reference_ppl: rope_scaling is not implemented here")
    dmap = check_bnb4.dynamic_map()
    cache = {}

    def W(name):
        if name not in cache:
            w = raw(name)
            if args.nf4 and name.endswith(PROJ):
                w = nf4_roundtrip(w, dmap)
            cache[name] = w
        return cache[name]

    total, n = 0.0, 0
    with open(args.data) as f:
        for line in f:
            rec = json.loads(line)
            ids = rec["input_ids"]
            labels = rec.get("labels", ids)
            lg = chk.forward(cfg, W, ids).astype(np.float64)
            lg -= lg.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(lg).sum(axis=-1))
            for t in range(len(ids) - 1):
                y = labels[t + 1]
                if y >= 0:
                    total += lse[t] - lg[t, y]
                    n += 1
    print(json.dumps({"loss": total / n, "perplexity": float(np.exp(total / n)), "tokens": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
