#!/usr/bin/env python3
"""Convert a Llama-architecture GGUF file into a Hugging Face model directory.

Usage: gguf_to_hf.py GGUF OUTDIR

Writes OUTDIR/config.json (LlamaConfig), OUTDIR/model.safetensors (bfloat16,
metadata {"format":"pt"}), OUTDIR/generation_config.json and, when the GGUF
carries a byte-level BPE tokenizer (tokenizer.ggml.model = "gpt2"),
OUTDIR/tokenizer.json and OUTDIR/tokenizer_config.json.

Everything is written into a temporary sibling directory first and renamed
into place at the end, so OUTDIR is either complete or absent/unchanged.

Weights: Q4_1 / Q8_0 / F16 / F32 / BF16 (anything gguf.quants can dequantize)
are dequantized to float32, then rounded to bfloat16 (round to nearest even).
The quantization itself is lossy: the result is the dequantized GGUF model, not
the original HF checkpoint.  The Q/K rows are un-permuted (FORMATS.md §5.5) so
that the HF half-split RoPE applies.

Needs numpy, gguf and safetensors (scripts/python-requirements.txt).
"""

import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np

try:
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize
    import safetensors
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"gguf_to_hf: missing Python package ({e}); run scripts/setup.sh")

CONVERTER_VERSION = "1"


def log(msg):
    print(f"gguf_to_hf: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------
# metadata


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def need(reader, key):
    v = field(reader, key)
    if v is None:
        sys.exit(f"gguf_to_hf: GGUF lacks required key {key}")
    return v


# ----------------------------------------------------------------------------
# tensors

LAYER_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
BLK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def hf_name(name):
    """HF tensor name for a GGUF tensor name, or None if it has no HF peer."""
    if name in GLOBAL_MAP:
        return GLOBAL_MAP[name]
    m = BLK_RE.match(name)
    if m and m.group(2) in LAYER_MAP:
        return f"model.layers.{m.group(1)}.{LAYER_MAP[m.group(2)]}.{m.group(3)}"
    return None


def unpermute(w, n_head):
    """GGUF (interleaved RoPE pairs) -> HF (half-split) row order, §5.5.

    HF row h*D + j*half + i = GGUF row h*D + 2*i + j.  Works for weights
    [n_head*D, in] and biases [n_head*D].
    """
    rows = w.shape[0]
    d = rows // n_head
    if d * n_head != rows or d % 2:
        sys.exit(f"gguf_to_hf: cannot un-permute {w.shape} with {n_head} heads")
    return (w.reshape(n_head, d // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def to_float32(t):
    """Dequantize a ReaderTensor to float32 in numpy (HF) axis order."""
    shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # ne reversed
    a = dequantize(t.data, t.tensor_type)
    return np.ascontiguousarray(a, dtype=np.float32).reshape(shape)


def bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))))
    b = (r >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        b[nan] = 0x7FC0
    return b


# ----------------------------------------------------------------------------
# tokenizer (byte-level BPE only)

GPT2_REGEX = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
              r"|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"
               r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False,
            "trim_offsets": True, "use_regex": use_regex}


def split_regex(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern},
            "behavior": "Isolated", "invert": False}


def pre_tokenizer_for(pre):
    """tokenizers pre_tokenizer for llama.cpp's tokenizer.ggml.pre id.

    Returns (pre_tokenizer, normalizer, ignore_merges, exact)."""
    if pre in ("smollm",):
        return ({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            byte_level(True)]}, None, False, True)
    if pre in ("gpt-2", "gpt2", "default", None):
        return byte_level(True), None, False, pre is not None
    if pre in ("llama-bpe", "llama3"):
        return ({"type": "Sequence", "pretokenizers": [
            split_regex(LLAMA3_REGEX), byte_level(False)]}, None, True, True)
    if pre == "qwen2":
        return ({"type": "Sequence", "pretokenizers": [
            split_regex(QWEN2_REGEX), byte_level(False)]},
            {"type": "NFC"}, False, True)
    return byte_level(True), None, False, False


def build_tokenizer(reader):
    """(tokenizer.json dict, tokenizer_config dict, notes) or None."""
    model = field(reader, "tokenizer.ggml.model")
    if model is None:
        return None, ["GGUF has no tokenizer; no tokenizer.json written"]
    if model != "gpt2":
        return None, [f"tokenizer.ggml.model={model!r} (only byte-level BPE "
                      f"'gpt2' is reconstructed); no tokenizer.json written"]
    notes = []
    tokens = list(need(reader, "tokenizer.ggml.tokens"))
    types = field(reader, "tokenizer.ggml.token_type")
    types = list(types) if types is not None else [1] * len(tokens)
    merges = field(reader, "tokenizer.ggml.merges")
    if merges is None:
        notes.append("GGUF has no tokenizer.ggml.merges: BPE model has none")
        merges = []
    pre = field(reader, "tokenizer.ggml.pre")
    pre_tok, normalizer, ignore_merges, exact = pre_tokenizer_for(pre)
    if not exact:
        notes.append(f"tokenizer.ggml.pre={pre!r} unknown here: used the plain "
                     f"GPT-2 ByteLevel pre-tokenizer, which may split differently")

    vocab = {}
    for i, t in enumerate(tokens):
        if t in vocab:
            notes.append(f"duplicate token string {t!r} (ids {vocab[t]}, {i}); "
                         f"kept the first")
            continue
        vocab[t] = i
    added = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (3, 4):  # control -> special; user-defined -> not special
            added.append({"id": i, "content": t, "single_word": False,
                          "lstrip": False, "rstrip": False,
                          "normalized": ty == 4, "special": ty == 3})

    def tok_of(key):
        i = field(reader, key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    unk = tok_of("tokenizer.ggml.unknown_token_id")
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tok,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges,
                  "vocab": vocab, "merges": list(merges)},
    }
    add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
    bos = tok_of("tokenizer.ggml.bos_token_id")
    if add_bos and bos is not None:
        notes.append("add_bos_token is set: a TemplateProcessing post-processor "
                     "is not reconstructed; prepend BOS yourself")
    tc = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": add_bos,
        "add_eos_token": bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(need(reader, "llama.context_length")),
        "bos_token": bos,
        "eos_token": tok_of("tokenizer.ggml.eos_token_id"),
        "unk_token": unk,
        "pad_token": tok_of("tokenizer.ggml.padding_token_id"),
        "additional_special_tokens": [a["content"] for a in added if a["special"]],
    }
    tmpl = field(reader, "tokenizer.chat_template")
    if tmpl is not None:
        tc["chat_template"] = tmpl
    tc = {k: v for k, v in tc.items() if v is not None}
    notes.append("not reconstructable from GGUF: exact tokenizer.json flags "
                 "(offsets trimming, unk_token of the BPE model), "
                 "added-token lstrip/rstrip flags")
    return (tj, tc), notes


# ----------------------------------------------------------------------------
# main


def convert(gguf_path, outdir):
    reader = GGUFReader(gguf_path)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf_to_hf: general.architecture={arch!r}; only 'llama' "
                 f"is supported")
    p = arch + "."
    hidden = int(need(reader, p + "embedding_length"))
    n_head = int(need(reader, p + "attention.head_count"))
    n_kv = int(field(reader, p + "attention.head_count_kv", n_head))
    head_dim = hidden // n_head
    rope_dim = field(reader, p + "rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        sys.exit(f"gguf_to_hf: rope.dimension_count {rope_dim} != head_dim "
                 f"{head_dim} (partial rotary not supported)")
    if field(reader, p + "attention.key_length") not in (None, head_dim):
        sys.exit("gguf_to_hf: attention.key_length != embedding/heads "
                 "(explicit head_dim not supported)")
    scaling = field(reader, p + "rope.scaling.type")
    names = [t.name for t in reader.tensors]
    if "rope_freqs.weight" in names:
        sys.exit("gguf_to_hf: rope_freqs.weight (llama3 RoPE scaling) "
                 "cannot be turned back into rope_scaling parameters")
    rope_scaling = None
    if scaling not in (None, "none"):
        factor = float(need(reader, p + "rope.scaling.factor"))
        if scaling != "linear":
            sys.exit(f"gguf_to_hf: rope.scaling.type={scaling!r} not supported")
        rope_scaling = {"rope_type": "linear", "type": "linear", "factor": factor}

    toks = field(reader, "tokenizer.ggml.tokens")
    vocab_size = len(toks) if toks is not None else None
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    if vocab_size is None:
        vocab_size = int(embd.shape[1])
    if int(embd.shape[1]) != vocab_size:
        log(f"note: vocab from tokens ({vocab_size}) != embedding rows "
            f"({int(embd.shape[1])}); using the embedding rows")
        vocab_size = int(embd.shape[1])
    tied = "output.weight" not in names

    def tid(key):
        v = field(reader, "tokenizer.ggml." + key)
        return int(v) if v is not None else None

    n_layers = int(need(reader, p + "block_count"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": int(need(reader, p + "feed_forward_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(need(reader, p + "context_length")),
        # stored as float32 in GGUF: print the short decimal (1e-05, not 9.99e-06)
        "rms_norm_eps": float(str(np.float32(
            need(reader, p + "attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(field(reader, p + "rope.freq_base", 10000.0)),
        "rope_scaling": rope_scaling,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": tied,
        "bos_token_id": tid("bos_token_id"),
        "eos_token_id": tid("eos_token_id"),
        "pad_token_id": tid("padding_token_id"),
        "torch_dtype": "bfloat16",
    }
    gen = {"bos_token_id": config["bos_token_id"],
           "eos_token_id": config["eos_token_id"],
           "pad_token_id": config["pad_token_id"]}
    gen = {k: v for k, v in gen.items() if v is not None}

    tensors = {}
    skipped = []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            skipped.append(t.name)
            continue
        w = to_float32(t)
        if t.name.endswith((".attn_q.weight", ".attn_q.bias")):
            w = unpermute(w, n_head)
        elif t.name.endswith((".attn_k.weight", ".attn_k.bias")):
            w = unpermute(w, n_kv)
        if name.endswith(".bias"):
            config["attention_bias"] = True
        tensors[name] = {"dtype": "bfloat16", "shape": list(w.shape),
                         "data": bf16_bits(w).tobytes()}
    if skipped:
        log(f"ignored tensors without an HF counterpart: {skipped}")
    expect = 3 + 9 * n_layers - (1 if tied else 0)
    if len(tensors) < expect:
        sys.exit(f"gguf_to_hf: only {len(tensors)} of {expect} expected tensors")

    tok, notes = build_tokenizer(reader)

    outdir = os.path.abspath(outdir)
    parent = os.path.dirname(outdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(outdir) + ".tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
    try:
        safetensors.serialize_file(tensors, os.path.join(tmp, "model.safetensors"),
                                   metadata={"format": "pt"})
        del tensors

        def dump(fname, obj):
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, ensure_ascii=False)
                f.write("\n")

        dump("config.json", config)
        dump("generation_config.json", gen)
        if tok is not None:
            dump("tokenizer.json", tok[0])
            dump("tokenizer_config.json", tok[1])
        for n in notes:
            log(n)
        old = None
        if os.path.lexists(outdir):
            old = tempfile.mkdtemp(prefix=os.path.basename(outdir) + ".old-",
                                   dir=parent)
            os.rename(outdir, os.path.join(old, "d"))
        os.rename(tmp, outdir)
        tmp = None
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {outdir} ({n_layers} layers, hidden {hidden}, heads {n_head}/"
        f"{n_kv}, vocab {vocab_size}, tied {tied})")


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    convert(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
