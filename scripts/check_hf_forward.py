#!/usr/bin/env python3
"""Sanity-check a converted HF Llama model with a numpy-only forward pass.

Usage: check_hf_forward.py MODEL_DIR [--gguf GGUF] [--question TEXT]
                           [--expect WORD] [--max-new N]

Loads MODEL_DIR/config.json, model.safetensors (BF16/F16/F32) and
tokenizer.json, renders the SmolLM2-Instruct chat template (FORMATS.md §6.4)
around the question (default "What is the capital of France?"), runs the
Llama forward pass of FORMATS.md §4.2/§4.3 in float32 (RMSNorm, half-split
RoPE, GQA causal attention, SwiGLU MLP, tied or separate lm_head), prints the
top-5 next tokens and a short greedy continuation, and fails unless the
continuation contains WORD (default "Paris").  A wrong Q/K un-permutation
gives garbage here.

With --gguf it also runs the same forward pass on the GGUF tensors as stored
(no un-permutation, interleaved "NORM" RoPE pairs as llama.cpp uses for arch
llama) and fails unless the logits agree with the converted model's.

Only numpy (and the gguf package for --gguf) is needed.  The tokenizer here is
a small byte-level BPE with an approximation of the GPT-2 regex (Python's re
has no \\p{L}); it is exact for ASCII text like the prompts used here.
"""

import argparse
import json
import os
import re
import sys

import numpy as np

# ----------------------------------------------------------------------------
# safetensors (read by hand: the numpy API of the safetensors package has no
# bfloat16)

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    if n % 8:
        raise SystemExit(f"check: {path}: header length {n} not a multiple of 8")
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "pt":
        raise SystemExit(f"check: {path}: metadata format is {meta!r}, not pt")
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = info["dtype"]
        if dt not in ST_DTYPES:
            raise SystemExit(f"check: {name}: unsupported dtype {dt}")
        a = np.frombuffer(buf[b:e], dtype=ST_DTYPES[dt]).reshape(info["shape"])
        out[name] = (dt, a)
    return out


def as_f32(entry):
    dt, a = entry
    if dt == "BF16":
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a.astype(np.float32)


# ----------------------------------------------------------------------------
# byte-level BPE tokenizer (FORMATS.md §6)


def bytes_to_unicode():
    bs = (list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD))
          + list(range(0xAE, 0x100)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# \p{L} ~ [^\W\d_], \p{N} ~ \d, [^\s\p{L}\p{N}] ~ [^\s\w]|_ (exact for ASCII)
GPT2_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+"
                     r"| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        m = tj["model"]
        if m.get("type") != "BPE":
            raise SystemExit(f"check: tokenizer model {m.get('type')} is not BPE")
        self.vocab = m["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            pair = tuple(mg.split(" ")) if isinstance(mg, str) else tuple(mg)
            self.ranks.setdefault(pair, r)
        self.added = {a["content"]: a["id"] for a in tj.get("added_tokens", [])}
        for t, i in self.added.items():
            self.inv[i] = t
        pre = json.dumps(tj.get("pre_tokenizer"))
        self.split_digits = '"Digits"' in pre
        self.b2u = bytes_to_unicode()
        self.u2b = {c: b for b, c in self.b2u.items()}
        if self.added:
            alts = sorted(self.added, key=len, reverse=True)
            self.added_re = re.compile("|".join(re.escape(a) for a in alts))
        else:
            self.added_re = None

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def _encode_plain(self, text):
        ids = []
        pieces = [text]
        if self.split_digits:
            pieces = [p for p in re.split(r"(\d)", text) if p]
        for piece in pieces:
            for w in GPT2_RE.findall(piece):
                ids += self._bpe("".join(self.b2u[b] for b in w.encode("utf-8")))
        return ids

    def encode(self, text):
        ids = []
        pos = 0
        if self.added_re:
            for mt in self.added_re.finditer(text):
                ids += self._encode_plain(text[pos:mt.start()])
                ids.append(self.added[mt.group(0)])
                pos = mt.end()
        ids += self._encode_plain(text[pos:])
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.inv.get(int(i), "")
            if int(i) in self.added.values():
                out += t.encode("utf-8")
            else:
                out += bytes(self.u2b[c] for c in t)
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------
# Llama forward pass (FORMATS.md §4.2, §4.3), float32, no KV cache


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rope_tables(cfg, n):
    d = cfg["head_dim"]
    inv = (1.0 / (np.float32(cfg["rope_theta"])
                  ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))))
    inv = inv.astype(np.float32)
    freqs = np.outer(np.arange(n, dtype=np.float32), inv)  # [n, d/2]
    return np.cos(freqs), np.sin(freqs)


def apply_rope(x, cos, sin, interleaved):
    """x: [heads, n, d]."""
    if interleaved:  # pairs (2i, 2i+1): GGML "NORM"
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    h = x.shape[-1] // 2  # pairs (i, i+d/2): HF rotate_half
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward(cfg, W, ids, interleaved=False):
    """Logits [n, vocab] for token ids. W(name) -> float32 array (HF names)."""
    n = len(ids)
    nh, nkv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(cfg, n)
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    x = W("model.embed_tokens.weight")[ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W(p + "input_layernorm.weight"), eps)
        q = (h @ W(p + "self_attn.q_proj.weight").T).reshape(n, nh, d).transpose(1, 0, 2)
        k = (h @ W(p + "self_attn.k_proj.weight").T).reshape(n, nkv, d).transpose(1, 0, 2)
        v = (h @ W(p + "self_attn.v_proj.weight").T).reshape(n, nkv, d).transpose(1, 0, 2)
        q = apply_rope(q, cos, sin, interleaved)
        k = apply_rope(k, cos, sin, interleaved)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=0)  # head h uses kv head h // rep
        v = np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) * np.float32(d ** -0.5) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, nh * d)
        x = x + a @ W(p + "self_attn.o_proj.weight").T
        h = rms_norm(x, W(p + "post_attention_layernorm.weight"), eps)
        g = h @ W(p + "mlp.gate_proj.weight").T
        u = h @ W(p + "mlp.up_proj.weight").T
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W(p + "mlp.down_proj.weight").T
    x = rms_norm(x, W("model.norm.weight"), eps)
    head = "model.embed_tokens.weight" if cfg.get("tie_word_embeddings") else "lm_head.weight"
    return x @ W(head).T


# ----------------------------------------------------------------------------


def gguf_weights(path):
    """HF-named float32 weights straight from a GGUF, Q/K left permuted,
    rounded to bf16 like the converter so the comparison is tight."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gguf_to_hf as g
    reader = g.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        name = g.hf_name(t.name)
        if name is not None:
            b = g.bf16_bits(g.to_float32(t))
            out[name] = (b.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return out


def chat_prompt(question):
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
            "trained by Hugging Face<|im_end|>\n<|im_start|>user\n"
            f"{question}<|im_end|>\n<|im_start|>assistant\n")


def main():
    ap = argparse.ArgumentParser(description="numpy forward-pass check")
    ap.add_argument("model_dir")
    ap.add_argument("--gguf", help="also compare with the GGUF's own layout")
    ap.add_argument("--question", default="What is the capital of France?")
    ap.add_argument("--expect", default="Paris")
    ap.add_argument("--max-new", type=int, default=12)
    args = ap.parse_args()

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("rms_norm_eps", 1e-6)
    if cfg.get("rope_scaling"):
        raise SystemExit("check: rope_scaling is not implemented here")
    st = load_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    cache = {}

    def W(name):
        if name not in cache:
            cache[name] = as_f32(st[name])
        return cache[name]

    tok = Tokenizer(os.path.join(args.model_dir, "tokenizer.json"))
    prompt = chat_prompt(args.question)
    ids = tok.encode(prompt)
    ok = True
    if tok.decode(ids) != prompt:
        print("FAIL: tokenizer round trip differs", file=sys.stderr)
        ok = False
    print(f"prompt: {len(ids)} tokens: {ids}")

    logits = forward(cfg, W, ids)
    last = logits[-1]
    top = np.argsort(-last)[:5]
    lp = last - last.max()
    prob = np.exp(lp) / np.exp(lp).sum()
    print("top-5 next tokens: " + ", ".join(
        f"{int(t)} {tok.decode([t])!r} p={prob[t]:.3f}" for t in top))

    if args.gguf:
        G = gguf_weights(args.gguf)
        ref = forward(cfg, lambda n: G[n], ids, interleaved=True)
        diff = float(np.abs(ref - logits).max())
        scale = float(np.abs(ref).max())
        good = diff <= 1e-3 * scale
        print(f"GGUF-layout forward (interleaved RoPE, no un-permute): "
              f"max |logit diff| = {diff:.3g} (max |logit| {scale:.3g}) "
              f"{'OK' if good else 'MISMATCH'}")
        ok = ok and good

    gen = list(ids)
    eos = cfg.get("eos_token_id")
    new = [int(top[0])]
    gen.append(new[0])
    while len(new) < args.max_new and new[-1] != eos:
        nxt = int(np.argmax(forward(cfg, W, gen)[-1]))
        new.append(nxt)
        gen.append(nxt)
    text = tok.decode([t for t in new if t != eos])
    print(f"greedy continuation: {text!r}")
    if args.expect not in text:
        print(f"FAIL: continuation lacks {args.expect!r}", file=sys.stderr)
        ok = False
    print("check_hf_forward: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
