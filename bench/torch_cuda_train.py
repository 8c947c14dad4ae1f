#!/usr/bin/env python3
"""The PyTorch side of bench_cuda_train (tests/gpu/run.sh runs both).

  torch_cuda_train.py [--layers L] [--seq S] [--batch B] [--steps N] [--warmup W]
                      [--json PATH] [--qlora-json PATH]

The same step as bench/bench_cuda_train.c through the stack people use:
transformers' LlamaForCausalLM with Llama-3-8B shapes (L layers, random
weights, SDPA attention), PEFT LoRA r 16 alpha 32 dropout 0 on q,k,v,o,gate,
up,down in float32 under bf16 autocast, torch.optim.AdamW on the adapters,
clip_grad_norm_(1.0); labels = input_ids (transformers shifts them), one
sequence of S tokens; with and without gradient checkpointing (use_reentrant
False). Median of N timed steps after W warm-up steps, each step ended by
torch.cuda.synchronize(); peak memory from torch.cuda.max_memory_allocated.

The base weights are bf16: bitsandbytes (4-bit) is not part of the GPU
image this is written for (its version, if any, is recorded but it is not
used), so this times LoRA on a bf16 base, which does less work
per step than QLoRA in PyTorch (no dequantization); the ratio printed is
qlora's tokens/s over this one. With --qlora-json the ratio is printed and
stored per checkpointing setting.

Exit 77 (skipped) when torch, transformers or peft do not import or CUDA is
not available. Prints the versions used.
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--qlora-json")
    a = ap.parse_args()
    try:
        import torch
        import transformers
        import peft
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        print(f"skip: torch/transformers/peft not importable ({e})")
        return 77
    if not torch.cuda.is_available():
        print("skip: torch sees no CUDA device")
        return 77
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0)}
    try:
        import bitsandbytes  # noqa: F401
        versions["bitsandbytes"] = bitsandbytes.__version__ + " (present, not used)"
    except Exception:  # noqa: BLE001
        versions["bitsandbytes"] = None
    print("versions:", json.dumps(versions))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    results = []
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=a.layers, num_attention_heads=32,
                          num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
                          rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                          attn_implementation="sdpa")
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        t0 = time.time()
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(old)
        model.requires_grad_(False)
        if ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lcfg = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets,
                               bias="none", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lcfg)
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.data = p.data.float()
        opt = torch.optim.AdamW(params, lr=1e-4)
        build_s = time.time() - t0
        g = torch.Generator(device="cuda").manual_seed(1)
        ids = torch.randint(0, 128256, (a.batch, a.seq), device="cuda", generator=g)
        model.train()
        torch.cuda.reset_peak_memory_stats()
        times, losses = [], []
        for s in range(a.warmup + a.steps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(out.loss))  # waits for the step
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            if s >= a.warmup:
                times.append(dt)
            print(f"  {'checkpointing' if ckpt else 'plain'} step {s + 1}: {dt * 1e3:.1f} ms, "
                  f"loss {losses[-1]:.4f}", flush=True)
        step = statistics.median(times)
        r = {"activation_checkpointing": ckpt, "step_ms": step * 1e3,
             "tokens_per_s": a.batch * a.seq / step, "peak_bytes": torch.cuda.max_memory_allocated(),
             "build_s": build_s, "first_loss": losses[0], "last_loss": losses[-1]}
        results.append(r)
        print(f"torch {'with' if ckpt else 'without'} checkpointing: {r['step_ms']:.1f} ms/step, "
              f"{r['tokens_per_s']:.0f} tokens/s, peak {r['peak_bytes'] / 2**30:.2f} GiB")
        del model, opt, params, out
    if a.qlora_json:
        q = json.load(open(a.qlora_json))
        by = {bool(x["activation_checkpointing"]): x for x in q["results"]}
        for r in results:
            mine = by.get(r["activation_checkpointing"])
            if mine:
                r["qlora_over_torch"] = mine["tokens_per_s"] / r["tokens_per_s"]
                print(f"qlora / torch tokens/s, checkpointing {'on' if r['activation_checkpointing'] else 'off'}: "
                      f"{r['qlora_over_torch']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "torch_cuda_train", "versions": versions,
                       "method": "transformers LlamaForCausalLM (bf16 base, SDPA) + PEFT LoRA r16 "
                                 "fp32 under bf16 autocast, AdamW, clip 1.0; bf16 base (no bitsandbytes)",
                       "layers": a.layers, "seq": a.seq, "batch": a.batch, "results": results},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
