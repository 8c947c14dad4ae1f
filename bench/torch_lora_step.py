#!/usr/bin/env python3
"""The PyTorch side of the training benchmark (bench/bench_train.sh).

  torch_lora_step.py --write-model DIR [--seed N]
      Writes a SmolLM2-135M-shaped Llama HF directory with random weights
      (config.json, model.safetensors in BF16) that both sides load.

  torch_lora_step.py --model DIR --batch B --seq T [--steps N] [--warmup W]
                     [--threads K] [--impl auto|peft|manual]
      Times LoRA training steps in float32 (forward, backward, AdamW on the
      LoRA parameters; base weights frozen) and prints one JSON line.

LoRA: r 16, alpha 32, dropout 0, all seven projections (q k v o gate up
down), as PEFT's defaults initialise it. --impl peft uses transformers'
LlamaForCausalLM wrapped by PEFT (auto: when both import); --impl manual is a
hand-written Llama of the same shapes (FORMATS.md §4.2) for a torch without
them.

Memory: VmHWM from /proc/self/status. After loading, the high-water mark is
reset (writing 5 to /proc/self/clear_refs) so that the training steps' own
peak is reported too. Only numpy and torch are needed; safetensors is read
and written by hand.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

# SmolLM2-135M(-Instruct)'s config.json, less what does not change shapes.
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "torch_dtype": "bfloat16",
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA, LR = 16, 32.0, 2e-4


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- safetensors by hand (the package's numpy API has no bfloat16) ---------


def bf16_bytes(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return u.astype("<u2").tobytes()


def write_model(out, seed):
    c = SMOLLM2_135M
    h, im, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    rng = np.random.default_rng(seed)
    shapes = [("model.embed_tokens.weight", (v, h)), ("model.norm.weight", (h,))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)),
                   (p + "post_attention_layernorm.weight", (h,)),
                   (p + "self_attn.q_proj.weight", (nh * hd, h)),
                   (p + "self_attn.k_proj.weight", (nkv * hd, h)),
                   (p + "self_attn.v_proj.weight", (nkv * hd, h)),
                   (p + "self_attn.o_proj.weight", (h, nh * hd)),
                   (p + "mlp.gate_proj.weight", (im, h)),
                   (p + "mlp.up_proj.weight", (im, h)),
                   (p + "mlp.down_proj.weight", (h, im))]
    shapes.sort()
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shp in shapes:
        n = 2 * math.prod(shp)
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for name, shp in shapes:
            if name.endswith("norm.weight"):
                a = np.ones(shp, dtype=np.float32)
            else:
                a = rng.standard_normal(shp, dtype=np.float32) * np.float32(0.02)
            f.write(bf16_bytes(a))
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)


def read_safetensors(path):
    """name -> float32 numpy array, converted one tensor at a time on demand."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def get(name):
        info = header[name]
        b, e = info["data_offsets"]
        raw = np.frombuffer(buf[b:e], dtype={"BF16": "<u2", "F16": "<f2", "F32": "<f4"}[info["dtype"]])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return raw.astype(np.float32).reshape(info["shape"])

    return sorted(header), get


# --- the models --------------------------------------------------------------


def build_peft(cfg, names, get, torch):
    import peft
    import transformers

    tcfg = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    model = transformers.LlamaForCausalLM(tcfg).float()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(torch.from_numpy(get(name)))
    lcfg = peft.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=TARGETS,
                           bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    attn = getattr(model.base_model.model.config, "_attn_implementation", "eager")
    versions = {"transformers": transformers.__version__, "peft": peft.__version__, "attn": attn}

    def loss_fn(ids):
        return model(input_ids=ids, labels=ids).loss

    return model, loss_fn, versions


def build_manual(cfg, names, get, torch):
    nn, F = torch.nn, torch.nn.functional
    h, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, scale = cfg["rms_norm_eps"], LORA_ALPHA / LORA_R

    class LoraLinear(nn.Module):
        def __init__(self, w):
            super().__init__()
            out_f, in_f = w.shape
            self.weight = nn.Parameter(torch.from_numpy(w), requires_grad=False)
            self.A = nn.Parameter(torch.empty(LORA_R, in_f).uniform_(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f)))
            self.B = nn.Parameter(torch.zeros(out_f, LORA_R))

        def forward(self, x):
            return F.linear(x, self.weight) + scale * F.linear(F.linear(x, self.A), self.B)

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Parameter(torch.from_numpy(get("model.embed_tokens.weight")), requires_grad=False)
            self.norm = nn.Parameter(torch.from_numpy(get("model.norm.weight")), requires_grad=False)
            self.layers = nn.ModuleList()
            for i in range(cfg["num_hidden_layers"]):
                p = f"model.layers.{i}."
                m = nn.Module()
                for k in ("input_layernorm", "post_attention_layernorm"):
                    setattr(m, k, nn.Parameter(torch.from_numpy(get(p + k + ".weight")), requires_grad=False))
                for t in TARGETS:
                    mod = "self_attn." if t in TARGETS[:4] else "mlp."
                    setattr(m, t, LoraLinear(get(p + mod + t + ".weight")))
                self.layers.append(m)
            inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            self.register_buffer("inv_freq", inv)

        def forward(self, ids):
            b, t = ids.shape
            freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
            cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()

            def rope(x):
                x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
                return x * cos + torch.cat([-x2, x1], -1) * sin

            x = F.embedding(ids, self.emb)
            mask = torch.full((t, t), float("-inf")).triu(1)
            for m in self.layers:
                y = rms(x, m.input_layernorm)
                q = rope(m.q_proj(y).view(b, t, nh, hd).transpose(1, 2))
                k = rope(m.k_proj(y).view(b, t, nkv, hd).transpose(1, 2))
                v = m.v_proj(y).view(b, t, nkv, hd).transpose(1, 2)
                k = k.repeat_interleave(nh // nkv, dim=1)
                v = v.repeat_interleave(nh // nkv, dim=1)
                s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
                a = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, nh * hd)
                x = x + m.o_proj(a)
                y = rms(x, m.post_attention_layernorm)
                x = x + m.down_proj(F.silu(m.gate_proj(y)) * m.up_proj(y))
            return F.linear(rms(x, self.norm), self.emb)

    model = Model()

    def loss_fn(ids):
        logits = model(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    return model, loss_fn, {"attn": "manual (matmul + softmax)"}


def bench(args):
    import torch

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    names, get = read_safetensors(os.path.join(args.model, "model.safetensors"))

    impl = args.impl
    if impl == "auto":
        try:
            import peft  # noqa: F401
            import transformers  # noqa: F401
            impl = "peft"
        except ImportError:
            impl = "manual"
    t_load = time.perf_counter()
    build = build_peft if impl == "peft" else build_manual
    model, loss_fn, versions = build(cfg, names, get, torch)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
    load_s = time.perf_counter() - t_load
    hwm_load, rss_load = status_kb("VmHWM"), status_kb("VmRSS")
    did_reset = reset_hwm()

    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq), generator=g)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = loss_fn(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if i >= args.warmup:
            times.append(dt)
    hwm_train = status_kb("VmHWM")
    step_s = statistics.median(times)
    tok = args.batch * args.seq
    rec = {
        "impl": f"torch-{impl}", "torch": torch.__version__, **versions,
        "python": platform.python_version(), "threads": threads,
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "not mkl (openblas on Debian)",
        "batch": args.batch, "seq": args.seq, "tokens_per_step": tok,
        "steps": args.steps, "warmup": args.warmup,
        "step_ms": 1e3 * step_s, "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "tokens_per_s": tok / step_s,
        "loss_first": losses[0], "loss_last": losses[-1],
        "trainable_params": sum(p.numel() for p in trainable),
        "load_s": load_s,
        "rss_after_load_mb": rss_load / 1024,
        "peak_rss_load_mb": hwm_load / 1024,
        "peak_rss_train_mb": hwm_train / 1024 if did_reset else None,
        "peak_rss_mb": max(hwm_load, hwm_train) / 1024,
    }
    print(json.dumps(rec))


def main():
    ap = argparse.ArgumentParser(description="PyTorch LoRA training step benchmark")
    ap.add_argument("--write-model", metavar="DIR")
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--impl", choices=("auto", "peft", "manual"), default="auto")
    args = ap.parse_args()
    if args.write_model:
        write_model(args.write_model, args.seed)
        return 0
    if not args.model:
        ap.error("--model or --write-model is required")
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
