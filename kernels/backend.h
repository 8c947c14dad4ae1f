/* The backend op table: every operation a QLoRA step needs, once per backend.
 *
 * Backends: "cpu-ref" (plain loops, the readable reference every other
 * backend is tested against), "cpu" (OpenBLAS on dequantized tiles, OpenMP),
 * and "cuda" (kernels/cuda/, when built with nvcc and a GPU is present).
 *
 * Conventions, shared by every backend:
 * - Pointers are in the backend's memory (host for CPU, device for CUDA).
 * - Activations and their gradients (`ql_act`) are of dtype `act_dtype`:
 *   float32 on the CPU backends, bfloat16 on CUDA. Parameters that train
 *   (LoRA A/B), optimizer state, norm weights, losses and the saved statistics
 *   (rstd, lse) are always float32.
 * - Row-major. A linear layer's weight is [out, in]; y = x·Wᵀ.
 * - T is a number of tokens (rows); batch and sequence are flattened into it
 *   except for attention, which needs them apart.
 * - Gradients of trained parameters (dA, dB) are accumulated (+=) so that
 *   micro-batches can be summed; activation gradients (dx) are overwritten.
 * - Ops are deterministic: the same inputs give bit-identical outputs.
 * - Shape misuse is a programmer error (QL_ASSERT); a failure of the device
 *   or library returns QL_EBACKEND with a message. */
#ifndef QL_BACKEND_H
#define QL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/dropout.h"
#include "kernels/quant4.h"

typedef void ql_act;

/* A LoRA adapter on one linear layer: y += scale · (x'·Aᵀ)·Bᵀ, where x' is the
 * LoRA branch's input: x, or with dropout (PEFT's lora_dropout)
 * x' = x ⊙ mask · drop.scale. The backward routes the branch's part of dx
 * back through the same mask, and dA uses x'. */
typedef struct ql_lora {
    const float *A; /* [r, in] */
    const float *B; /* [out, r] */
    int r;
    float scale; /* alpha / r, or alpha / sqrt(r) with rsLoRA */
    /* x's [T, in] mask, element e at e = t·in + i (kernels/dropout.h); made
     * by each op where it reads x, never stored. drop.on = 0: no dropout. */
    ql_dropout drop;
} ql_lora;

/* Which RoPE frequency schedule (FORMATS §4.1, §4.3). QL_ROPE_OTHER is a
 * schedule config.json may name (dynamic, yarn, longrope) that is parsed but
 * not implemented: ql_rope_inv_freq refuses it. */
typedef enum ql_rope_type {
    QL_ROPE_DEFAULT,
    QL_ROPE_LINEAR,
    QL_ROPE_LLAMA3,
    QL_ROPE_OTHER
} ql_rope_type;

typedef struct ql_rope_config {
    ql_rope_type type;
    float theta;                 /* rope_theta */
    float factor;                /* linear, llama3 */
    float low_freq_factor;       /* llama3 */
    float high_freq_factor;      /* llama3 */
    float original_max_position; /* llama3: original_max_position_embeddings */
} ql_rope_config;

typedef struct ql_adamw {
    float lr, beta1, beta2, eps, weight_decay;
} ql_adamw;

/* Attention geometry: tokens are [batch, seq], heads [n_heads | n_kv_heads]. */
typedef struct ql_attn_shape {
    int64_t batch, seq;
    int n_heads, n_kv_heads, head_dim;
} ql_attn_shape;

typedef struct ql_mem_stats {
    size_t in_use, peak;              /* bytes allocated through the backend */
    size_t device_used, device_total; /* the device as a whole (0: not known) */
} ql_mem_stats;

typedef struct ql_backend {
    const char *name;
    ql_dtype act_dtype;

    /* --- memory ------------------------------------------------------------ */
    ql_status (*alloc)(size_t bytes, void **out);
    void (*free)(void *p);
    ql_status (*upload)(void *dst, const void *host_src, size_t bytes);
    ql_status (*download)(void *host_dst, const void *src, size_t bytes);
    /* dst = src, both in backend memory (not overlapping); queued, no host wait. */
    ql_status (*copy)(void *dst, const void *src, size_t bytes);
    /* Copies a host ql_q4 into backend memory (dst's buffers are allocated). */
    ql_status (*q4_upload)(const ql_q4 *host, ql_q4 *dst);
    void (*q4_free)(ql_q4 *dst);
    /* Quantizes a float32 row-major [rows, cols] host matrix into backend
     * memory on the device: the same bytes as ql_q4_quantize followed by
     * q4_upload, without the host quantization (a large model loads in
     * seconds). NULL on the CPU backends: the caller quantizes on the host
     * and calls q4_upload. Waits until dst is complete; free with q4_free. */
    ql_status (*q4_quantize_upload)(const float *host_w, int64_t rows, int64_t cols, ql_qtype type,
                                    int blocksize, int double_quant, ql_q4 *dst);
    /* Keeps W dequantized in backend memory beside its 4-bit data
     * (w->dense), laid out for the LoRA rank r of the calls that will use
     * it (0: none), so that the 4-bit ops read it where they would
     * dequantize W (CUDA: the calls on the dequant path) and skip that
     * pass: memory for speed, with the same results bit for bit. A call
     * whose rank needs another layout does not use it. q4_free frees it.
     * NULL on the CPU backends. */
    ql_status (*q4_keep_dequantized)(ql_q4 *w, int64_t r);
    /* Lends buf (backend memory of ql_q4_dense_elems(rows, cols, r) bf16
     * elements) to w as its dequantized copy: W is dequantized into it now,
     * in q4_keep_dequantized's layout, and the 4-bit ops read it as they
     * read a kept copy until the weight is given back (buf NULL), which
     * leaves w without a copy. For a stretch that uses the same weights
     * several times (a checkpointed layer's recomputed forward pass and its
     * backward pass): one dequantize pass instead of one per call, the same
     * results. w must have no copy of its own. NULL on the CPU backends. */
    ql_status (*q4_lend_dequantized)(ql_q4 *w, int64_t r, void *buf);
    /* A frozen linear held as the float32 row-major [rows, cols] host matrix
     * it was given, not in 4 bits (a merged model, or the base as stored:
     * `--base-weights original`, quant.type none): dst gets the shape,
     * packed NULL and dense the backend's copy, laid out for the LoRA rank r
     * of the calls that will use it (CPU: float32 [rows, cols], r unused;
     * CUDA: bf16 in q4_keep_dequantized's layout, rounded to nearest even),
     * and the 4-bit ops below read that as W (on CUDA always on the dequant
     * path). q4_free frees it. NULL on backends that hold 4-bit linears
     * only. */
    ql_status (*dense_upload)(const float *host_w, int64_t rows, int64_t cols, int64_t r,
                              ql_q4 *dst);
    ql_status (*sync)(void);

    /* --- 4-bit linear layers with LoRA --------------------------------------- */
    /* out[rows, cols] = dequantized W, in act_dtype. */
    ql_status (*q4_dequantize)(const ql_q4 *w, ql_act *out);
    /* y[T,out] = x[T,in]·Wᵀ + lora.scale·(x·Aᵀ)·Bᵀ; xa[T,r] = x·Aᵀ (fp32) is
     * kept for the backward pass. lora may be NULL (then xa is unused). */
    ql_status (*q4_lora_fwd)(const ql_q4 *w, const ql_lora *lora, const ql_act *x, int64_t T,
                             ql_act *y, float *xa);
    /* dx[T,in] = dy·W + s·(dy·B)·A;  dA[r,in] += s·(dy·B)ᵀ·x;  dB[out,r] += s·dyᵀ·xa.
     * Never dW: the base weight is frozen. dx may be NULL (first layer). */
    ql_status (*q4_lora_bwd)(const ql_q4 *w, const ql_lora *lora, const ql_act *x, const float *xa,
                             const ql_act *dy, int64_t T, ql_act *dx, float *dA, float *dB);

    /* y[T, n] += b[n]: a frozen bias (Qwen2's q/k/v), fp32. No backward: dy
     * passes through unchanged and the bias is not trained. */
    ql_status (*bias_add)(ql_act *y, const float *b, int64_t T, int64_t n);
    /* out[n] = x + y elementwise (residual connections and summed gradients);
     * out may alias x or y. */
    ql_status (*add)(const ql_act *x, const ql_act *y, int64_t n, ql_act *out);

    /* --- dense frozen matmul (lm_head, tied embeddings) ----------------------- */
    /* y[T,out] = x[T,in]·Wᵀ with W[out,in] in act_dtype. */
    ql_status (*matmul_fwd)(const ql_act *W, const ql_act *x, int64_t T, int64_t in, int64_t out,
                            ql_act *y);
    /* dx[T,in] = dy[T,out]·W. */
    ql_status (*matmul_bwd)(const ql_act *W, const ql_act *dy, int64_t T, int64_t in, int64_t out,
                            ql_act *dx);

    /* --- normalisation, position, activation ------------------------------------ */
    /* y = x · rsqrt(mean(x²) + eps) · w per row of d; rstd[T] saved. */
    ql_status (*rmsnorm_fwd)(const ql_act *x, const float *w, float eps, int64_t T, int64_t d,
                             ql_act *y, float *rstd);
    /* dx from dy (w frozen: no dw). */
    ql_status (*rmsnorm_bwd)(const ql_act *dy, const ql_act *x, const float *w, const float *rstd,
                             int64_t T, int64_t d, ql_act *dx);
    /* In place on x[T, n_heads, head_dim], HF half-split pairing (i, i + d/2),
     * angle pos[t]·inv_freq[i]. bwd rotates the gradient back (angle negated). */
    ql_status (*rope_fwd)(ql_act *x, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim);
    ql_status (*rope_bwd)(ql_act *dx, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim);
    /* out = silu(gate) · up, elementwise over n. */
    ql_status (*swiglu_fwd)(const ql_act *gate, const ql_act *up, int64_t n, ql_act *out);
    ql_status (*swiglu_bwd)(const ql_act *dout, const ql_act *gate, const ql_act *up, int64_t n,
                            ql_act *dgate, ql_act *dup);

    /* --- attention ----------------------------------------------------------------- */
    /* Causal attention with GQA (query head h reads kv head h / (n_heads/n_kv_heads))
     * and, when doc != NULL, a per-document mask for packed rows: key j is
     * visible to query i iff j <= i and doc[j] == doc[i] (doc is [batch*seq]).
     * q/out [batch, seq, n_heads, head_dim]; k/v [batch, seq, n_kv_heads, head_dim];
     * lse[batch, n_heads, seq] (natural-log sum of exp of scaled scores) is saved.
     * Scale 1/sqrt(head_dim). */
    ql_status (*attn_fwd)(const ql_act *q, const ql_act *k, const ql_act *v, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *out, float *lse);
    ql_status (*attn_bwd)(const ql_act *dout, const ql_act *q, const ql_act *k, const ql_act *v,
                          const ql_act *out, const float *lse, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *dq, ql_act *dk, ql_act *dv);
    /* Generation's attention (model/llama_generate.c): T new query rows of
     * one sequence over its key/value cache, whose rows 0..pos0+T-1 are
     * filled (the new rows' own keys and values included). Row t is at
     * position pos0 + t and sees keys 0..pos0 + t. q/out [T, n_heads,
     * head_dim]; k/v [pos0 + T, n_kv_heads, head_dim]. GQA and the scale as
     * attn_fwd; s->batch and s->seq are not read. Every (row, head) sums its
     * keys in order, so a row's result does not depend on T or pos0 beyond
     * its own position. */
    ql_status (*attn_cached_fwd)(const ql_act *q, const ql_act *k, const ql_act *v, int64_t T,
                                 int64_t pos0, const ql_attn_shape *s, ql_act *out);

    /* --- embedding and loss ------------------------------------------------------------- */
    /* out[T,d] = table[ids[t], :]; the embedding is frozen (no backward). */
    ql_status (*embed_fwd)(const ql_act *table, const int32_t *ids, int64_t T, int64_t d,
                           ql_act *out);
    /* Cross-entropy of logits[T,V] against targets[T]; a target < 0 (-100 in HF)
     * is ignored: loss 0, gradient 0. losses[T] (fp32) per token. If dlogits is
     * not NULL it receives grad_scale·(softmax − onehot) (it may alias logits).
     * A target >= V is QL_EINVAL naming the token: from this call on the CPU
     * backends; on CUDA from the next download or sync (no host wait inside a
     * step; that token's loss is NaN and its gradient 0 meanwhile). */
    ql_status (*xent_fwd_bwd)(const ql_act *logits, const int32_t *targets, int64_t T, int64_t V,
                              float grad_scale, float *losses, ql_act *dlogits);

    /* --- optimizer ------------------------------------------------------------------------- */
    /* Decoupled-weight-decay Adam (torch.optim.AdamW) over a flat fp32 vector;
     * step counts from 1. */
    ql_status (*adamw)(float *param, const float *grad, float *m, float *v, int64_t n,
                       const ql_adamw *h, int64_t step);

    /* --- flat fp32 vectors (the optimizer's gradient, in backend memory) ---------------- */
    /* x[n] = 0 (zeroing the gradients before a step's micro-batches). */
    ql_status (*zero_f32)(float *x, int64_t n);
    /* *sum (HOST memory) = Σ x[i]², each square and the sum in double, for the
     * global gradient norm: the one number the host needs from the step. The
     * CPU backends add in index order (ql_grad_sq_sum, bit for bit); CUDA in a
     * fixed grouping of its own (deterministic; it may differ from the CPU in
     * the last bits of the double). Waits for the queued work. */
    ql_status (*sq_sum_f32)(const float *x, int64_t n, double *sum);
    /* x[i] *= s, one float multiply each (gradient clipping; = ql_grad_scale). */
    ql_status (*scale_f32)(float *x, int64_t n, float s);

    /* --- memory accounting ---------------------------------------------------------------- */
    /* What this backend holds: bytes allocated through alloc and q4_upload (and,
     * on CUDA, the ops' own scratch buffers and cuBLASLt workspace), now and at
     * most since the last reset; device_used/device_total: the whole device
     * as its driver reports it (CUDA: context, libraries and other processes
     * included), 0 on the CPU backends. */
    void (*mem_stats)(ql_mem_stats *s);
    /* Restarts `peak` from the bytes in use now (at the start of a step). */
    void (*mem_reset_peak)(void);
} ql_backend;

/* The built-in backends. ql_backend_cuda() returns NULL (with a message) when
 * this build has no CUDA or no device is visible. */
const ql_backend *ql_backend_cpu_ref(void);
const ql_backend *ql_backend_cpu(void);
const ql_backend *ql_backend_cuda(void);
/* By name ("cpu-ref", "cpu", "cuda", or "auto": ql_backend_resolve_name);
 * NULL with a message if unknown or absent. */
const ql_backend *ql_backend_by_name(const char *name);
/* "auto" -> "cuda" when this build has CUDA and a device is visible, else
 * "cpu"; any other name is returned as it is. */
const char *ql_backend_resolve_name(const char *name);

/* Host-side: the RoPE inverse frequencies inv_freq[head_dim/2] for a config,
 * computed in float32 as transformers does (modeling_rope_utils.py). */
ql_status ql_rope_inv_freq(const ql_rope_config *c, int head_dim, float *inv_freq);

#endif
