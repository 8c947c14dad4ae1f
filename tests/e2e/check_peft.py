#!/usr/bin/env python3
"""Checks an adapter directory written by qlora against Hugging Face PEFT's
format (shared FORMATS.md section 3), reading it with the PyPI `safetensors`
package (not qlora's reader) and Python's json:

- adapter_config.json is exactly json.dumps(cfg, indent=2, sort_keys=True),
  as PeftConfig.save_pretrained writes it, with peft_type LORA, task_type
  CAUSAL_LM, inference_mode true, bias none and the expected r, lora_alpha,
  target_modules;
- adapter_model.safetensors has metadata {"format": "pt"} and exactly the
  PEFT keys base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight
  for the model's layers and targets, float32, A [r, in] and B [out, r];
- with --hand-made: the values of tests/unit/test_peft.c's hand-made adapter.

usage: check_peft.py ADAPTER_DIR (--model MODEL_DIR | --hand-made)
                     [--r R] [--alpha A] [--targets q_proj,v_proj] [--base NAME] [--rslora]
"""
import argparse
import json
import os
import sys

import numpy as np
import safetensors
from safetensors import safe_open

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shapes(cfg, r):
    """{module: (in, out)} for one layer of a Llama-family config.json."""
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    im = cfg["intermediate_size"]
    return {
        "q_proj": (h, nh * hd), "k_proj": (h, nkv * hd), "v_proj": (h, nkv * hd),
        "o_proj": (nh * hd, h), "gate_proj": (h, im), "up_proj": (h, im), "down_proj": (im, h),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("adapter")
    ap.add_argument("--model")
    ap.add_argument("--hand-made", action="store_true")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--targets", default=",".join(ALL))
    ap.add_argument("--base")
    ap.add_argument("--rslora", action="store_true", help="expect use_rslora true")
    a = ap.parse_args()
    fails = []

    def check(cond, what):
        if not cond:
            fails.append(what)

    if a.hand_made:
        cfg = {"hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
               "head_dim": 4, "intermediate_size": 8, "num_hidden_layers": 2}
        a.r, a.alpha, a.targets, a.base = 4, 16, "q_proj,v_proj", "models/tiny"
    else:
        with open(os.path.join(a.model, "config.json")) as f:
            cfg = json.load(f)
    targets = a.targets.split(",")

    with open(os.path.join(a.adapter, "adapter_config.json")) as f:
        text = f.read()
    c = json.loads(text)
    check(text == json.dumps(c, indent=2, sort_keys=True),
          "adapter_config.json is not json.dumps(..., indent=2, sort_keys=True)")
    for k, v in [("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("inference_mode", True),
                 ("bias", "none"), ("r", a.r), ("use_rslora", a.rslora), ("use_dora", False)]:
        check(c.get(k) == v, f"adapter_config.json: {k} = {c.get(k)!r}, want {v!r}")
    check(c.get("lora_alpha") == a.alpha, f"lora_alpha = {c.get('lora_alpha')!r}, want {a.alpha}")
    check(isinstance(c.get("lora_dropout"), float), "lora_dropout is not a float")
    check(sorted(c.get("target_modules") or []) == sorted(targets),
          f"target_modules = {c.get('target_modules')}, want {targets}")
    if a.base is not None:
        check(c.get("base_model_name_or_path") == a.base,
              f"base_model_name_or_path = {c.get('base_model_name_or_path')!r}, want {a.base!r}")

    path = os.path.join(a.adapter, "adapter_model.safetensors")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    check(n % 8 == 0, f"header length {n} is not a multiple of 8 (the Rust writer pads it)")
    dims = shapes(cfg, a.r)
    want = {}
    for i in range(cfg["num_hidden_layers"]):
        for m in targets:
            part = "self_attn" if m in ALL[:4] else "mlp"
            base = f"base_model.model.model.layers.{i}.{part}.{m}"
            fin, fout = dims[m]
            want[base + ".lora_A.weight"] = (a.r, fin)
            want[base + ".lora_B.weight"] = (fout, a.r)
    with safe_open(path, framework="numpy") as f:
        check(f.metadata() == {"format": "pt"}, f"metadata {f.metadata()}, want {{'format': 'pt'}}")
        keys = set(f.keys())
        for k in sorted(set(want) - keys):
            check(False, f"missing key {k}")
        for k in sorted(keys - set(want)):
            check(False, f"unexpected key {k}")
        tensors = {k: f.get_tensor(k) for k in keys & set(want)}
    for k, t in tensors.items():
        check(t.dtype == np.float32, f"{k}: dtype {t.dtype}, want float32")
        check(tuple(t.shape) == want[k], f"{k}: shape {t.shape}, want {want[k]}")
        check(bool(np.isfinite(t).all()), f"{k}: values not finite")

    if a.hand_made and not fails:
        # test_peft.c: flat vector in (layer, projection, A before B) order,
        # value (i % 81 - 40) / 64.
        off = 0
        for i in range(2):
            for m in ["q_proj", "v_proj"]:
                for ab in "AB":
                    k = f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}.weight"
                    t = tensors[k]
                    idx = np.arange(off, off + t.size)
                    ref = ((idx % 81 - 40) / 64.0).astype(np.float32).reshape(t.shape)
                    check(np.array_equal(t, ref), f"{k}: values differ from test_peft.c's")
                    off += t.size

    for f_ in fails:
        print("FAIL: " + f_)
    print(f"check_peft: {len(want)} tensors, safetensors {safetensors.__version__}, "
          f"numpy {np.__version__}: " + ("ok" if not fails else f"{len(fails)} problem(s)"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
