#!/usr/bin/env python3
"""Judges the LoRA adapter GGUFs `qlora export --gguf` writes, reading them
with the PyPI `gguf` package (llama.cpp's gguf-py), not qlora's reader.

  same OURS REF [--alpha A]
      OURS has REF's tensors (names, shapes, types, bytes) and its
      general.architecture, general.type, adapter.type and adapter.lora.alpha
      (A instead, where given); REF is what llama.cpp's convert_lora_to_gguf.py
      wrote (tests/fixtures/gguf_lora/, make_gguf_lora_reference.py).
  rounding F32 OTHER f16|bf16
      OTHER holds the same tensors as F32, each the round-to-nearest-even
      float16 / bfloat16 of F32's, with the same metadata.
  from-peft GGUF PEFT_DIR ARCH N_HEADS N_KV_HEADS
      GGUF is the PEFT adapter directory PEFT_DIR converted as the converter
      converts it: names blk.N.<gguf>.weight.lora_{a,b}, lora_a = lora_A,
      lora_b = lora_B with its q/k rows permuted for RoPE as
      convert_hf_to_gguf.py's LlamaModel.permute does (not for qwen2), alpha
      lora_alpha (times sqrt(r) with use_rslora), architecture ARCH.
  merged GGUF BASE_GGUF HF_DIR f32|f16|bf16|q8_0 [original]
      GGUF is the merged model of HF_DIR (a float32 merged directory written
      by `qlora export --merge`, checked elsewhere against PEFT) as one file on
      the base BASE_GGUF: every metadata entry of BASE_GGUF with its value
      (general.file_type: the type's), every tensor of BASE_GGUF; those that
      are HF_DIR linears hold HF_DIR's values (q/k rows permuted as the
      converter permutes them, except qwen2) in the given type (f16/bf16: the
      roundings; q8_0: gguf.quants.quantize's bytes); the others are
      BASE_GGUF's bytes and type; with `original` (--base-weights original)
      a linear may also be kept as stored (the untargeted ones are).
  rewrite SRC OUT [--alignment N] [--f32-embedding]
      (a tool, not a check) SRC rewritten by gguf-py's GGUFWriter: laid out
      on N bytes, or with token_embd.weight dequantized to F32.
Exit status 0 when it holds; otherwise 1 with the first difference.
"""
import json
import math
import os
import sys

import numpy as np
from gguf import GGUFReader

KEYS = ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"]
GGUF_NAME = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}


def fail(msg):
    print("check_gguf_lora: " + msg)
    sys.exit(1)


def read(path):
    r = GGUFReader(path)
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    t = {x.name: x for x in r.tensors}
    return kv, t


def values(t):
    """A tensor as float32, [ne1, ne0] (row-major, as PyTorch had it)."""
    a = np.asarray(t.data)
    if t.tensor_type.name == "BF16":
        a = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32).reshape(int(t.shape[1]), int(t.shape[0]))


def check_keys(kv, want, path):
    for k in KEYS:
        if k not in kv:
            fail(f"{path}: metadata key {k} missing")
        if k == "adapter.lora.alpha":
            if not math.isclose(kv[k], want[k], rel_tol=1e-6):
                fail(f"{path}: {k} = {kv[k]}, want {want[k]}")
        elif kv[k] != want[k]:
            fail(f"{path}: {k} = {kv[k]!r}, want {want[k]!r}")


def same(ours, ref, alpha=None):
    kv_o, t_o = read(ours)
    kv_r, t_r = read(ref)
    if alpha is not None:
        kv_r["adapter.lora.alpha"] = float(alpha)
    check_keys(kv_o, kv_r, ours)
    if set(t_o) != set(t_r):
        fail(f"{ours}: tensors {sorted(set(t_o) ^ set(t_r))} in one file only")
    for n, r in t_r.items():
        o = t_o[n]
        if list(o.shape) != list(r.shape) or o.tensor_type != r.tensor_type:
            fail(f"{ours}: {n} is {list(o.shape)} {o.tensor_type.name}, want {list(r.shape)} {r.tensor_type.name}")
        if np.asarray(o.data).tobytes() != np.asarray(r.data).tobytes():
            fail(f"{ours}: {n} differs from the converter's (max {np.abs(values(o) - values(r)).max():.3g})")
    print(f"{ours}: {len(t_o)} tensors and the metadata as in {ref}")


def bf16_rne(x):
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return (b.astype(np.uint32) << 16).view(np.float32)


def rounding(f32, other, kind):
    kv_a, t_a = read(f32)
    kv_b, t_b = read(other)
    check_keys(kv_b, kv_a, other)
    if set(t_a) != set(t_b):
        fail(f"{other}: not the same tensors as {f32}")
    want_type = {"f16": "F16", "bf16": "BF16"}[kind]
    for n, a in t_a.items():
        b = t_b[n]
        if b.tensor_type.name != want_type:
            fail(f"{other}: {n} is {b.tensor_type.name}, want {want_type}")
        x = values(a)
        want = x.astype(np.float16).astype(np.float32) if kind == "f16" else bf16_rne(x)
        if not np.array_equal(values(b), want):
            fail(f"{other}: {n} is not the {kind} rounding of {f32}'s")
    print(f"{other}: every tensor the {kind} rounding of {f32}'s")


def load_safetensors(path):
    """{name: float32 array} of a safetensors file (F32, F16 or BF16), read by
    hand: numpy has no bfloat16 for the safetensors package to return."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    out = {}
    for k, v in json.loads(raw[8:8 + n]).items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        buf = raw[8 + n + b:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, {"F32": "<f4", "F16": "<f2"}[v["dtype"]]).astype(np.float32)
        out[k] = a.reshape(v["shape"])
    return out


def permute(w, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute, on lora_B's rows."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def from_peft(path, peft_dir, arch, n_heads, n_kv):
    cfg = json.load(open(f"{peft_dir}/adapter_config.json"))
    st = load_safetensors(f"{peft_dir}/adapter_model.safetensors")
    r = cfg["r"]
    alpha = cfg["lora_alpha"] * (math.sqrt(r) if cfg.get("use_rslora") else 1.0)
    kv, t = read(path)
    check_keys(kv, {"general.architecture": arch, "general.type": "adapter", "adapter.type": "lora",
                    "adapter.lora.alpha": alpha}, path)
    want = {}
    for k, v in st.items():
        base = k.replace("base_model.model.", "").replace(".lora_A.weight", "").replace(".lora_B.weight", "")
        layer, mod = base.split(".")[2], ".".join(base.split(".")[3:])
        name = f"blk.{layer}.{GGUF_NAME[mod]}.weight.lora_{'b' if '.lora_B.' in k else 'a'}"
        v = v.astype(np.float32)
        if arch != "qwen2" and name.endswith("lora_b") and GGUF_NAME[mod] in ("attn_q", "attn_k"):
            v = permute(v, n_heads if GGUF_NAME[mod] == "attn_q" else n_kv)
        want[name] = v
    if set(want) != set(t):
        fail(f"{path}: tensors {sorted(set(want) ^ set(t))} in one side only")
    for n, v in want.items():
        if not np.array_equal(values(t[n]), v):
            fail(f"{path}: {n} is not the converted {peft_dir} tensor")
    print(f"{path}: {len(t)} tensors, {peft_dir} as the converter converts it ({arch})")


LINEAR_GGUF = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


def merged(path, base, hf_dir, kind, original=False):
    import gguf
    kv_m, t_m = read(path)
    kv_b, t_b = read(base)
    for k, v in kv_b.items():
        want = FILE_TYPE[kind] if k == "general.file_type" else v
        if k not in kv_m or (kv_m[k] != want and not (isinstance(v, float) and math.isclose(kv_m[k], v))):
            fail(f"{path}: metadata {k} = {kv_m.get(k)!r}, want {want!r}")
    if set(t_m) != set(t_b):
        fail(f"{path}: tensors {sorted(set(t_m) ^ set(t_b))} in one file only")
    arch = kv_b["general.architecture"]
    heads = kv_b[f"{arch}.attention.head_count"]
    kv_heads = kv_b.get(f"{arch}.attention.head_count_kv", heads)
    hf = {}
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            hf.update(load_safetensors(os.path.join(hf_dir, f)))
    n_linear = n_copied = 0
    for n, b in t_b.items():
        m = t_m[n]
        if list(m.shape) != list(b.shape):
            fail(f"{path}: {n} is {list(m.shape)}, want {list(b.shape)}")
        parts = n.split(".")
        if parts[0] == "blk" and parts[2] in LINEAR_GGUF and parts[3] == "weight":
            mod = next(k for k, v in GGUF_NAME.items() if v == parts[2])
            w = hf[f"model.layers.{parts[1]}.{mod}.weight"]
            if arch != "qwen2" and parts[2] in ("attn_q", "attn_k"):
                w = permute(w, heads if parts[2] == "attn_q" else kv_heads)
            if original and m.tensor_type == b.tensor_type and np.asarray(m.data).tobytes() == np.asarray(b.data).tobytes() \
                    and m.tensor_type.name != {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[kind]:
                n_copied += 1  # an untargeted linear kept as stored (--base-weights original)
                continue
            if kind == "q8_0":
                want = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0).tobytes()
                if m.tensor_type.name != "Q8_0" or np.asarray(m.data).tobytes() != want:
                    fail(f"{path}: {n} is not gguf.quants' Q8_0 of the merged weights")
            else:
                want = {"f32": w, "f16": w.astype(np.float16).astype(np.float32), "bf16": bf16_rne(w)}[kind]
                if m.tensor_type.name != kind.upper() or not np.array_equal(values(m), want):
                    fail(f"{path}: {n} ({m.tensor_type.name}) is not the {kind} merged weight of {hf_dir}")
            n_linear += 1
        else:
            if m.tensor_type != b.tensor_type or np.asarray(m.data).tobytes() != np.asarray(b.data).tobytes():
                fail(f"{path}: {n} is not {base}'s tensor as stored")
            n_copied += 1
    print(f"{path}: {len(kv_b)} metadata entries as {base}; {n_linear} merged linears ({kind}) as {hf_dir}; "
          f"{n_copied} tensors copied as stored")


def rewrite(src, out, alignment=None, f32_embedding=False):
    """SRC's metadata and tensors written again by gguf-py (see the usage)."""
    import gguf
    r = GGUFReader(src)
    w = gguf.GGUFWriter(out, r.fields["general.architecture"].contents())
    if alignment:
        w.add_custom_alignment(alignment)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or (alignment and k == "general.alignment"):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        d = np.asarray(t.data)
        if f32_embedding and t.name == "token_embd.weight":
            shape = [int(x) for x in reversed(t.shape)]
            w.add_tensor(t.name, gguf.quants.dequantize(d, t.tensor_type).reshape(shape).astype(np.float32))
        elif t.tensor_type.name in ("F32", "F16"):
            w.add_tensor(t.name, d)
        else:
            w.add_tensor(t.name, d, raw_shape=d.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(a):
    if a and a[0] == "same" and len(a) in (3, 5):
        same(a[1], a[2], a[4] if len(a) == 5 and a[3] == "--alpha" else None)
    elif a and a[0] == "rounding" and len(a) == 4:
        rounding(a[1], a[2], a[3])
    elif a and a[0] == "merged" and len(a) in (5, 6) and a[5:] in ([], ["original"]):
        merged(a[1], a[2], a[3], a[4], a[5:] == ["original"])
    elif a and a[0] == "rewrite" and len(a) >= 3:
        al = int(a[a.index("--alignment") + 1]) if "--alignment" in a else None
        rewrite(a[1], a[2], al, "--f32-embedding" in a)
    elif a and a[0] == "from-peft" and len(a) == 6:
        from_peft(a[1], a[2], a[3], int(a[4]), int(a[5]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
