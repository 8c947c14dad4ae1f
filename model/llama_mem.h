/* How much memory training a Llama-family model takes, from its
 * configuration alone (no weights read, nothing allocated): the numbers
 * `qlora train --dry-run` prints and the check that refuses a configuration
 * that cannot fit.
 *
 * Every figure is what model/llama_load.c and train/optim.c allocate through
 * the backend, buffer by buffer, for one rank; tests/unit/test_mem_estimate.c
 * holds them against the bytes the CPU backend counts. What the backend
 * allocates for itself is `workspace` (CUDA: bf16 copies of the LoRA
 * matrices, attention row sums, the cuBLASLt workspace; on the CPU the
 * kernels' thread-local tiles are plain host memory and not counted);
 * `runtime_reserve` is what no allocator of ours sees (the CUDA context,
 * cuBLASLt's and NCCL's own buffers), a documented allowance. */
#ifndef QL_LLAMA_MEM_H
#define QL_LLAMA_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"

typedef struct ql_mem_estimate {
    int device;             /* 1: a device backend (bf16 activations, CUDA workspace) */
    size_t esz;             /* bytes per activation element */
    size_t base_q4;         /* 4-bit linears: packed codes + absmax (or 8-bit absmax + nested);
                               with linears_f32, the linears as stored: float32 on the CPU,
                               bf16 with the LoRA padding on a device */
    int linears_f32;        /* the linears held as stored (base_original), not in 4 bits */
    size_t base_other;      /* norms, biases, RoPE table, embeddings and lm_head (act dtype) */
    size_t base_dense;      /* linears also kept dequantized (dequantized_layers; device only) */
    size_t dense_lent;      /* one layer's linears dequantized while it runs (checkpointing) */
    size_t adapters;        /* LoRA A and B, fp32 */
    size_t grads;           /* their gradients, fp32 */
    size_t optimizer;       /* AdamW m and v of this rank's ZeRO-1 slice, fp32 */
    size_t activations;     /* kept from forward to backward, as configured */
    size_t act_full;        /* ... without activation checkpointing */
    size_t act_ckpt;        /* ... with it (layer inputs + one layer's set) */
    size_t step_buffers;    /* one layer's working and gradient buffers, token ids */
    size_t logits;          /* one lm_head chunk of logit_rows rows */
    size_t workspace;       /* the backend's own scratch */
    size_t total;           /* the sum of the above: bytes allocated through the backend */
    size_t runtime_reserve; /* not ours to count (CUDA context, libraries, NCCL); 0 on CPU */
    int64_t logit_rows;
    int64_t trainable, base_params;
    int64_t rows, seq; /* the micro-batch it is for: o->max_batch x o->max_seq */
} ql_mem_estimate;

/* The estimate for config c with options o (o->be is not used: `device`
 * says whether activations are bf16 on a device backend or fp32 on the
 * CPU), on one of `world` data-parallel ranks. */
ql_status ql_llama_mem_estimate(const ql_hf_config *c, const ql_llama_options *o, int device,
                                int world, ql_mem_estimate *e);

#endif
