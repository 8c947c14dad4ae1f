#!/usr/bin/env python3
"""Independent readings of what `qlora export` writes, for
tests/e2e/test_export_peft.sh. No qlora code is used here.

Subcommands (IDS is a little-endian int32 file of BATCH x SEQ token ids;
logits files are little-endian float32 [BATCH, SEQ, vocab]):

  logits MODEL_DIR IDS BATCH SEQ OUT [--adapter DIR]
      numpy, float64: a Hugging Face Llama/Qwen2 directory (F32/F16/BF16
      safetensors, default RoPE) and, optionally, a PEFT adapter directory
      read the way PEFT reads it: adapter_config.json's r, lora_alpha,
      use_rslora (scaling alpha/r or alpha/sqrt(r)) and target_modules;
      adapter_model.safetensors keys base_model.model.<module>.lora_{A,B}.weight
      (F32/F16/BF16); the forward of a LoRA linear as PEFT computes it,
      y = x W^T + b + scaling * (x A^T) B^T (dropout off). The adapter is not
      merged, so this also judges a merged model independently.
  compare GOT REF TOL [LABEL]
      max|got - ref| / max|ref| <= TOL, printed; exit 1 otherwise.
  differ GOT REF MIN [LABEL]
      the same figure must be >= MIN (a check that can fail must fail).
  bf16-of F32_DIR BF16_DIR
      every tensor of BF16_DIR's model.safetensors is BF16 and equals the
      round-to-nearest-even bfloat16 of the same tensor in F32_DIR.
  merged-config DIR TORCH_DTYPE [SRC_DIR]
      config.json has torch_dtype TORCH_DTYPE and no quantization_config,
      the same other keys as SRC_DIR's (when given, less quantization_config),
      and model.safetensors has metadata {"format": "pt"}.
  peft MODEL_DIR IDS BATCH SEQ OUT [--adapter DIR]       (needs torch, transformers, peft)
      transformers' AutoModelForCausalLM (float32, eager attention) with
      PeftModel.from_pretrained(ADAPTER) as a user would load it.
  hf MERGED_DIR IDS BATCH SEQ OUT [auto|float32]         (needs torch, transformers)
      AutoModelForCausalLM.from_pretrained(MERGED_DIR) in the dtype its
      config.json names (auto) or upcast to float32, logits cast to float32.
"""
import json
import math
import os
import sys

import numpy as np

ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def load_st(path):
    """{name: float64 array}; reads the container by hand (BF16 included)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=ST_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out, meta, header


def load_model(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    W = {}
    if os.path.exists(idx):
        with open(idx) as f:
            for shard in sorted(set(json.load(f)["weight_map"].values())):
                W.update(load_st(os.path.join(d, shard))[0])
    else:
        W = load_st(os.path.join(d, "model.safetensors"))[0]
    return cfg, W


def load_adapter(d):
    """{module path: (A, B)}, scaling — PEFT's reading of an adapter directory."""
    with open(os.path.join(d, "adapter_config.json")) as f:
        c = json.load(f)
    assert c["peft_type"] == "LORA", c["peft_type"]
    r, alpha = c["r"], c["lora_alpha"]
    scaling = alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r
    t = load_st(os.path.join(d, "adapter_model.safetensors"))[0]
    targets = c["target_modules"]
    lora = {}
    for k, A in t.items():
        if not k.endswith(".lora_A.weight"):
            continue
        mod = k[len("base_model.model."):-len(".lora_A.weight")]
        # PEFT's list matching: the module name ends with "." + target.
        assert any(mod == x or mod.endswith("." + x) for x in targets), (mod, targets)
        lora[mod] = (A, t[k.replace(".lora_A.", ".lora_B.")])
    return lora, scaling


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def forward(cfg, W, ids, lora=None, scaling=0.0):
    """Logits [seq, vocab] of one row, float64."""
    assert not cfg.get("rope_scaling"), "default RoPE only"
    n = len(ids)
    h_ = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or h_ // nh
    eps = cfg["rms_norm_eps"]
    lora = lora or {}

    def lin(mod, x):
        y = x @ W[mod + ".weight"].T
        if mod + ".bias" in W:
            y = y + W[mod + ".bias"]
        if mod in lora:
            A, B = lora[mod]
            y = y + scaling * ((x @ A.T) @ B.T)
        return y

    inv = (1.0 / (np.float32(cfg["rope_theta"])
                  ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(np.float32)
    ang = np.outer(np.arange(n, dtype=np.float64), inv.astype(np.float64))
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # [heads, n, d], half-split pairs (i, i + d/2)
        a, b = x[..., :d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = rope(lin(p + "self_attn.q_proj", h).reshape(n, nh, d).transpose(1, 0, 2))
        k = rope(lin(p + "self_attn.k_proj", h).reshape(n, nkv, d).transpose(1, 0, 2))
        v = lin(p + "self_attn.v_proj", h).reshape(n, nkv, d).transpose(1, 0, 2)
        k = np.repeat(k, nh // nkv, axis=0)
        v = np.repeat(v, nh // nkv, axis=0)
        s = q @ k.transpose(0, 2, 1) * d ** -0.5 + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        x = x + lin(p + "self_attn.o_proj", (s @ v).transpose(1, 0, 2).reshape(n, nh * d))
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = lin(p + "mlp.gate_proj", h), lin(p + "mlp.up_proj", h)
        x = x + lin(p + "mlp.down_proj", (g / (1.0 + np.exp(-g))) * u)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = W["model.embed_tokens.weight"]
    return x @ head.T


def read_ids(path, batch, seq):
    return np.fromfile(path, dtype="<i4").reshape(batch, seq)


def adapter_arg(rest):
    return rest[rest.index("--adapter") + 1] if "--adapter" in rest else None


def cmd_logits(model, ids, batch, seq, out, *rest):
    cfg, W = load_model(model)
    ad = adapter_arg(rest)
    lora, scaling = load_adapter(ad) if ad else ({}, 0.0)
    ids = read_ids(ids, int(batch), int(seq))
    lg = np.stack([forward(cfg, W, row, lora, scaling) for row in ids])
    lg.astype("<f4").tofile(out)
    return 0


def rel(got, ref):
    g, r = np.fromfile(got, dtype="<f4"), np.fromfile(ref, dtype="<f4")
    if g.shape != r.shape:
        sys.exit(f"check_export: {got} has {g.size} values, {ref} {r.size}")
    return float(np.max(np.abs(g.astype(np.float64) - r)) / np.max(np.abs(r)))


def cmd_compare(got, ref, tol, label=""):
    x = rel(got, ref)
    ok = x <= float(tol)
    print(f"{label or got}: max|diff|/max|ref| {x:.2e} (tolerance {float(tol):.0e}) "
          + ("ok" if ok else "TOO LARGE"))
    return 0 if ok else 1


def cmd_differ(got, ref, least, label=""):
    x = rel(got, ref)
    ok = x >= float(least)
    print(f"{label or got}: max|diff|/max|ref| {x:.2e} (must be >= {float(least):.0e}) "
          + ("ok" if ok else "TOO SMALL"))
    return 0 if ok else 1


def cmd_bf16_of(f32_dir, bf16_dir):
    def raw(d):
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            h = json.loads(f.read(n))
            data = f.read()
        h.pop("__metadata__", None)
        return h, data
    h32, d32 = raw(f32_dir)
    h16, d16 = raw(bf16_dir)
    fails = 0
    if sorted(h32) != sorted(h16):
        print(f"FAIL: tensor names differ: {sorted(set(h32) ^ set(h16))}")
        return 1
    for k in sorted(h32):
        a = np.frombuffer(d32[slice(*h32[k]["data_offsets"])], dtype="<f4")
        b = np.frombuffer(d16[slice(*h16[k]["data_offsets"])], dtype="<u2")
        u = a.view(np.uint32).astype(np.uint64)
        want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        if h16[k]["dtype"] != "BF16" or h16[k]["shape"] != h32[k]["shape"] or \
                not np.array_equal(b, want):
            print(f"FAIL: {k}: not the bfloat16 rounding of the float32 export")
            fails += 1
    print(f"bf16-of: {len(h32)} tensors, {fails} differ")
    return 1 if fails else 0


def cmd_merged_config(d, torch_dtype, src=None):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    fails = []
    if c.get("torch_dtype") != torch_dtype:
        fails.append(f"torch_dtype {c.get('torch_dtype')!r}, want {torch_dtype!r}")
    if "quantization_config" in c:
        fails.append("quantization_config present")
    if src:
        with open(os.path.join(src, "config.json")) as f:
            s = json.load(f)
        s.pop("quantization_config", None)
        for k in sorted(set(s) | set(c)):
            if k not in ("torch_dtype", "dtype") and s.get(k) != c.get(k):
                fails.append(f"{k}: {c.get(k)!r}, source has {s.get(k)!r}")
    files = [x for x in os.listdir(d) if x.endswith(".safetensors")]
    for x in files:
        meta = load_st(os.path.join(d, x))[1]
        if meta != {"format": "pt"}:
            fails.append(f"{x}: metadata {meta}")
    if not files:
        fails.append("no safetensors file")
    for f_ in fails:
        print("FAIL: " + f_)
    print(f"merged-config {d}: " + ("ok" if not fails else f"{len(fails)} problem(s)"))
    return 1 if fails else 0


def torch_stack():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def cmd_peft(model, ids, batch, seq, out, *rest):
    import peft
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32,
                                             attn_implementation="eager")
    ad = adapter_arg(rest)
    if ad:
        from peft import PeftModel
        m = PeftModel.from_pretrained(m, ad)
    m.eval()
    x = torch.tensor(read_ids(ids, int(batch), int(seq)), dtype=torch.long)
    with torch.no_grad():
        m(input_ids=x).logits.float().numpy().astype("<f4").tofile(out)
    print(f"peft: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}")
    return 0


def cmd_hf(merged, ids, batch, seq, out, dtype="auto"):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(
        merged, dtype=torch.float32 if dtype == "float32" else "auto", attn_implementation="eager")
    m.eval()
    x = torch.tensor(read_ids(ids, int(batch), int(seq)), dtype=torch.long)
    with torch.no_grad():
        m(input_ids=x).logits.float().numpy().astype("<f4").tofile(out)
    print(f"hf: loaded {merged} as {next(m.parameters()).dtype} with transformers "
          f"{transformers.__version__}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd in ("peft", "hf") and not torch_stack():
        print("check_export: torch/transformers not importable here")
        return 77
    fn = {"logits": cmd_logits, "compare": cmd_compare, "differ": cmd_differ,
          "bf16-of": cmd_bf16_of, "merged-config": cmd_merged_config, "peft": cmd_peft,
          "hf": cmd_hf}.get(cmd)
    if not fn:
        print(f"check_export: unknown subcommand {cmd}")
        return 2
    return fn(*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
