#!/usr/bin/env python3
"""The PyTorch side of bench_cuda_train (tests/gpu/run.sh runs both).

  torch_cuda_train.py [--layers L] [--seq S] [--batch B] [--steps N] [--warmup W]
                      [--json PATH] [--qlora-json PATH] [--base auto|nf4|bf16]
                      [--cpu-tiny]

The same step as bench/bench_cuda_train.c through the stack people use:
transformers' LlamaForCausalLM with Llama-3-8B shapes (L layers, random
weights, SDPA attention), PEFT LoRA r 16 alpha 32 dropout 0 on q,k,v,o,gate,
up,down in float32 under bf16 autocast, torch.optim.AdamW on the adapters,
clip_grad_norm_(1.0); labels = input_ids (transformers shifts them), one
sequence of S tokens; with and without gradient checkpointing (use_reentrant
False). Median of N timed steps after W warm-up steps, each step ended by
torch.cuda.synchronize(); peak memory from torch.cuda.max_memory_allocated.

The base: --base nf4 (the default where bitsandbytes imports: "auto") is
QLoRA as people run it, PEFT + bitsandbytes: every decoder projection a
bnb.nn.Linear4bit (NF4, double quant, bf16 compute) quantized from the
random bf16 weights, then peft.prepare_model_for_kbit_training, then the
LoRA adapters. The GPU image has no bitsandbytes; scripts/gpu_bundle.sh
carries one in .gpubundle/py (run.sh puts it on PYTHONPATH). --base bf16
(or no bitsandbytes) times LoRA on a bf16 base instead, which does less
work per step than QLoRA (no dequantization). With --qlora-json the ratio
qlora tokens/s / this is printed and stored per checkpointing setting.
--cpu-tiny: a rehearsal on the CPU with 2 tiny layers (hidden 256), nothing
meaningful timed.

Exit 77 (skipped) when torch, transformers or peft do not import or CUDA is
not available (without --cpu-tiny). Prints the versions used.
"""
import argparse
import json
import statistics
import sys
import time


def to_nf4(model, bnb, torch, dev):
    """Every decoder projection -> bnb.nn.Linear4bit (NF4, double quant, bf16
    compute), quantized from its bf16 weight as bitsandbytes does on .to()."""
    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                lin = getattr(parent, n)
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False,
                                      compute_dtype=torch.bfloat16, compress_statistics=True,
                                      quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False,
                                             compress_statistics=True, quant_type="nf4")
                setattr(parent, n, q.to(dev))
                del lin
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    if n4 != 7 * len(model.model.layers):
        raise RuntimeError(f"{n4} Linear4bit modules, expected 7 per layer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--qlora-json")
    ap.add_argument("--base", choices=["auto", "nf4", "bf16"], default="auto")
    ap.add_argument("--cpu-tiny", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        import transformers
        import peft
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        print(f"skip: torch/transformers/peft not importable ({e})")
        return 77
    dev = "cpu" if a.cpu_tiny else "cuda"
    if not a.cpu_tiny and not torch.cuda.is_available():
        print("skip: torch sees no CUDA device")
        return 77
    if a.cpu_tiny:
        a.layers, a.seq, a.steps, a.warmup = min(a.layers, 2), min(a.seq, 64), 1, 1
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "cuda": torch.version.cuda,
                "gpu": "cpu" if a.cpu_tiny else torch.cuda.get_device_name(0)}
    bnb = None
    try:
        import bitsandbytes as bnb
        versions["bitsandbytes"] = bnb.__version__
    except Exception as e:  # noqa: BLE001
        versions["bitsandbytes"] = None
        if a.base == "nf4":
            print(f"--base nf4: bitsandbytes does not import ({e})")
            return 1
    base = "nf4" if a.base == "nf4" or (a.base == "auto" and bnb is not None) else "bf16"
    versions["base"] = base
    print("versions:", json.dumps(versions))
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    results = []
    for ckpt in (False, True):
        if dev == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        tiny = a.cpu_tiny
        vocab = 4096 if tiny else 128256
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=256 if tiny else 4096,
                          intermediate_size=896 if tiny else 14336,
                          num_hidden_layers=a.layers, num_attention_heads=2 if tiny else 32,
                          num_key_value_heads=1 if tiny else 8, head_dim=128,
                          max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                          tie_word_embeddings=False, attn_implementation="sdpa")
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        t0 = time.time()
        with torch.device(dev):
            model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(old)
        model.requires_grad_(False)
        if base == "nf4":
            to_nf4(model, bnb, torch, dev)
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=ckpt,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        elif ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lcfg = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets,
                               bias="none", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lcfg)
        params = [p for p in model.parameters() if p.requires_grad]
        want = 16 * a.layers * sum(m.in_features + m.out_features
                                   for m in (model.base_model.model.model.layers[0].self_attn.q_proj,
                                             model.base_model.model.model.layers[0].self_attn.k_proj,
                                             model.base_model.model.model.layers[0].self_attn.v_proj,
                                             model.base_model.model.model.layers[0].self_attn.o_proj,
                                             model.base_model.model.model.layers[0].mlp.gate_proj,
                                             model.base_model.model.model.layers[0].mlp.up_proj,
                                             model.base_model.model.model.layers[0].mlp.down_proj))
        if sum(p.numel() for p in params) != want:
            raise RuntimeError(f"{sum(p.numel() for p in params)} trainable parameters, "
                               f"expected {want} (LoRA r 16 on the 7 projections)")
        for p in params:
            p.data = p.data.float()
        opt = torch.optim.AdamW(params, lr=1e-4)
        build_s = time.time() - t0
        g = torch.Generator(device=dev).manual_seed(1)
        ids = torch.randint(0, vocab, (a.batch, a.seq), device=dev, generator=g)
        model.train()
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, losses = [], []
        for s in range(a.warmup + a.steps):
            sync()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev, dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(out.loss.detach()))  # waits for the step
            sync()
            dt = time.perf_counter() - t
            if s >= a.warmup:
                times.append(dt)
            print(f"  {'checkpointing' if ckpt else 'plain'} step {s + 1}: {dt * 1e3:.1f} ms, "
                  f"loss {losses[-1]:.4f}", flush=True)
        step = statistics.median(times)
        r = {"activation_checkpointing": ckpt, "step_ms": step * 1e3,
             "tokens_per_s": a.batch * a.seq / step,
             "peak_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else 0,
             "build_s": build_s, "first_loss": losses[0], "last_loss": losses[-1]}
        results.append(r)
        print(f"torch {'with' if ckpt else 'without'} checkpointing: {r['step_ms']:.1f} ms/step, "
              f"{r['tokens_per_s']:.0f} tokens/s, peak {r['peak_bytes'] / 2**30:.2f} GiB")
        del model, opt, params, out
    if a.qlora_json:
        q = json.load(open(a.qlora_json))
        # torch runs with lora_dropout 0 and dequantizes every call: compare with
        # qlora's rows without dropout and without layers kept dequantized.
        by = {bool(x["activation_checkpointing"]): x for x in q["results"]
              if not x.get("lora_dropout") and not x.get("dequantized_layers")}
        for r in results:
            mine = by.get(r["activation_checkpointing"])
            if mine:
                r["qlora_over_torch"] = mine["tokens_per_s"] / r["tokens_per_s"]
                print(f"qlora / torch tokens/s, checkpointing {'on' if r['activation_checkpointing'] else 'off'}: "
                      f"{r['qlora_over_torch']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "torch_cuda_train", "versions": versions,
                       "method": "transformers LlamaForCausalLM (SDPA) + PEFT LoRA r16 fp32 under "
                                 "bf16 autocast, AdamW, clip 1.0; base: " +
                                 ("bitsandbytes Linear4bit NF4 + double quant, bf16 compute, "
                                  "prepare_model_for_kbit_training" if base == "nf4" else
                                  "bf16 (no bitsandbytes: less work than QLoRA)"),
                       "base": base,
                       "layers": a.layers, "seq": a.seq, "batch": a.batch, "results": results},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
