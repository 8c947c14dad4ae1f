/* ql_llama_mem_estimate: model/llama_load.c's and train/optim.c's
 * allocations, counted from the configuration (model/llama_mem.h). */
#include "model/llama_mem.h"

#include <string.h>

#include "kernels/cuda_api.h"
#include "model/lora.h"

#define GIB_F (1024.0 * 1024.0 * 1024.0)

/* CUDA scratch grows to a request's size + 1/4 + 256 (kernels/cuda/backend_cuda.cu). */
static size_t grown(size_t bytes) { return bytes + bytes / 4 + 256; }

static size_t q4_device_bytes(int64_t n, int blocksize, int double_quant) {
    int64_t blocks = (n + blocksize - 1) / blocksize;
    size_t b = (size_t)((n + 1) / 2);
    if (double_quant)
        b +=
            (size_t)blocks + (size_t)((blocks + QL_NESTED_BLOCKSIZE - 1) / QL_NESTED_BLOCKSIZE) * 4;
    else
        b += (size_t)blocks * 4;
    return b;
}

static int has_bias(const ql_hf_config *c, ql_proj p) {
    if (p <= QL_PROJ_V) return c->qkv_bias || c->attention_bias;
    if (p == QL_PROJ_O) return c->attention_bias;
    return c->mlp_bias;
}

/* The LoRA rank of projection p's adapter, 0 without one. */
static int64_t proj_rank(const ql_llama_options *o, int p) {
    return o->lora.r > 0 && ((o->lora.targets >> p) & 1u) ? o->lora.r : 0;
}

/* Whether the model lends one layer's linears dequantized copies while the
 * layer runs (setup_lending in llama_load.c): checkpointing on the dequant
 * path, on a device, unless every layer keeps its own. */
static int lends(const ql_hf_config *c, const ql_llama_options *o, int device, int64_t cap) {
    return device && o->lend_dequantized && o->checkpoint_activations && !o->base_original &&
           o->dequantized_layers < c->num_hidden_layers &&
           ql_cuda_q4_path_for(cap) == QL_CUDA_Q4_DEQUANT_BLAS;
}

/* The CUDA dequant path's scratch (kernels/cuda/q4_lora.cu), taken by calls
 * of at least ql_cuda_q4_fused_max_tokens() tokens: W in bf16 with B's
 * columns and A's rows beside it (not when every weight has a copy, kept by
 * dequantized_layers or lent), [x | s·xa] or [dy | s·dy·B], and under dropout
 * dy·W for dx in fp32 [T, in]. */
static size_t dequant_path_bytes(const ql_hf_config *c, const ql_llama_options *o, int64_t cap) {
    const int64_t all_dense = o->dequantized_layers >= c->num_hidden_layers ||
                              lends(c, o, 1, cap) || (o->base_original && !c->quant.present);
    int64_t w_elems = 0, cat_elems = 0, f32_elems = 0;
    for (int p = 0; p < QL_N_PROJ; p++) {
        int64_t in, out, cat = 0, rpad = proj_rank(o, p) ? (o->lora.r + 15) / 16 * 16 : 0;
        ql_proj_shape(c, (ql_proj)p, &in, &out);
        const int64_t w = all_dense ? 0 : ql_q4_dense_elems(out, in, proj_rank(o, p));
        if (rpad) {
            cat = cap * ((in > out ? in : out) + rpad);
            if (o->lora.dropout > 0.0f && cap * in > f32_elems) f32_elems = cap * in;
        }
        if (w > w_elems) w_elems = w;
        if (cat > cat_elems) cat_elems = cat;
    }
    size_t b = w_elems ? grown((size_t)w_elems * 2) : 0;
    if (cat_elems) b += grown((size_t)cat_elems * 2);
    if (f32_elems) b += grown((size_t)f32_elems * 4);
    return b;
}

/* Under dropout, what the LoRA products reading x' = x ⊙ mask take
 * (kernels/cuda/q4_lora.cu): their partial sums where lora_skinny.cu's
 * kernels take the projection's shape, x' written whole [T, in] in bf16
 * where not. */
static size_t dropout_bytes(const ql_hf_config *c, const ql_llama_options *o, int64_t cap) {
    size_t part = 0, xdrop = 0;
    for (int p = 0; p < QL_N_PROJ; p++) {
        const int64_t r = proj_rank(o, p), rpad = (r + 15) / 16 * 16;
        int64_t in, out;
        if (!r) continue;
        ql_proj_shape(c, (ql_proj)p, &in, &out);
        const size_t b = ql_cuda_lora_skinny_scratch(cap, in, rpad);
        if (b > part) part = b;
        if (!ql_cuda_lora_skinny_ok(in, rpad) && (size_t)(cap * in) * 2 > xdrop)
            xdrop = (size_t)(cap * in) * 2;
    }
    return (part ? grown(part) : 0) + (xdrop ? grown(xdrop) : 0);
}

ql_status ql_llama_mem_estimate(const ql_hf_config *c, const ql_llama_options *o, int device,
                                int world, ql_mem_estimate *e) {
    memset(e, 0, sizeof *e);
    if (world < 1) world = 1;
    const int64_t d = c->hidden_size, inter = c->intermediate_size, L = c->num_hidden_layers,
                  H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim,
                  V = c->vocab_size, qdim = H * D, kvdim = KV * D;
    const int64_t cap = o->max_batch * o->max_seq;
    const size_t esz = device ? 2 : 4, f4 = sizeof(float);
    e->device = device;
    e->esz = esz;
    /* A bitsandbytes directory brings its own code book and double quant;
     * the block size of such files is 64 in practice. */
    int dq = c->quant.present ? c->quant.double_quant : o->double_quant;
    /* Held as stored: a bitsandbytes directory stays 4-bit. */
    e->linears_f32 = o->base_original && !c->quant.present;

    /* weights */
    int64_t max_in = d > qdim ? d : qdim, max_out = 0;
    if (inter > max_in) max_in = inter;
    for (int p = 0; p < QL_N_PROJ; p++) {
        int64_t in, out;
        ql_proj_shape(c, (ql_proj)p, &in, &out);
        if (out > max_out) max_out = out;
        /* As stored: float32 on the CPU, bf16 in the dequant path's layout
         * on a device (ql_cuda_dense_upload). */
        e->base_q4 += !e->linears_f32 ? (size_t)L * q4_device_bytes(in * out, o->blocksize, dq)
                      : device ? (size_t)L * (size_t)ql_q4_dense_elems(out, in, proj_rank(o, p)) * 2
                               : (size_t)(L * in * out) * f4;
        e->base_params += L * in * out;
        if (has_bias(c, (ql_proj)p)) {
            e->base_other += (size_t)(L * out) * f4;
            e->base_params += L * out;
        }
    }
    const int64_t dense_layers = o->dequantized_layers < L ? o->dequantized_layers : L;
    for (int p = 0; p < QL_N_PROJ && device && !e->linears_f32; p++) {
        int64_t in, out;
        ql_proj_shape(c, (ql_proj)p, &in, &out);
        const size_t bytes = (size_t)ql_q4_dense_elems(out, in, proj_rank(o, p)) * 2; /* bf16 */
        e->base_dense += (size_t)dense_layers * bytes;
        if (lends(c, o, device, cap)) e->dense_lent += bytes;
    }
    e->base_other += (size_t)((2 * L + 1) * d) * f4;                           /* norms */
    e->base_other += (size_t)(D / 2) * f4;                                     /* RoPE */
    e->base_other += (size_t)((c->tie_word_embeddings ? 1 : 2) * V * d) * esz; /* embed, lm_head */
    e->base_params += (2 * L + 1) * d + (c->tie_word_embeddings ? 1 : 2) * V * d;

    /* adapters, gradients, optimizer */
    ql_adapters a;
    memset(&a, 0, sizeof a);
    QL_TRY(ql_adapters_layout(c, &o->lora, &a));
    int64_t n = a.n;
    ql_adapters_layout_free(&a);
    e->trainable = n;
    e->adapters = e->grads = (size_t)n * f4;
    int64_t slice = (n + world - 1) / world;
    e->optimizer = 2 * (size_t)slice * f4;

    /* activations kept for the backward pass: the residual stream (every
     * layer's input) and, per layer or once with checkpointing, q k v, the
     * attention output, the residual after attention, gate and up, the
     * softmax lse, two rstd and x·Aᵀ of each adapted projection. */
    int r = o->lora.r, adapted = 0;
    for (int p = 0; p < QL_N_PROJ; p++) adapted += r > 0 && ((o->lora.targets >> p) & 1u);
    size_t per_layer = (size_t)cap * ((size_t)(2 * qdim + 2 * kvdim + d + 2 * inter) * esz +
                                      (size_t)(H + 2) * f4 + (size_t)adapted * (size_t)r * f4);
    size_t stream = (size_t)((L + 1) * cap * d) * esz;
    e->act_full = stream + (size_t)L * per_layer;
    e->act_ckpt = stream + per_layer;
    e->activations = o->checkpoint_activations ? e->act_ckpt : e->act_full;

    /* working buffers: two norm outputs, the SwiGLU and projection outputs,
     * the final norm, its rstd and the token losses; the backward's
     * gradients (5 of d, 3 of inter, 2 of q, 2 of kv); ids, targets,
     * positions, documents. (No dropout mask: the ops draw it, kernels/dropout.h.) */
    e->step_buffers = (size_t)cap * ((size_t)(4 * d + inter) * esz + 2 * f4) +
                      (size_t)cap * (size_t)(5 * d + 3 * inter + 2 * qdim + 2 * kvdim) * esz +
                      4 * (size_t)cap * sizeof(int32_t);
    e->logit_rows = ql_llama_logit_rows(o, device ? QL_DT_BF16 : QL_DT_F32, V);
    e->rows = o->max_batch;
    e->seq = o->max_seq;
    e->logits = (size_t)(e->logit_rows * V) * esz;

    if (device) {
        /* kernels/cuda: bf16 copies of A [rpad, in] and B [out, rpad],
         * s·xa or s·dy·B [T, rpad] bf16, xa [T, rpad] bf16, dy·B [T, rpad] fp32, under
         * dropout the masked products' partial sums (or x ⊙ mask), attention's rowsum(dO ⊙ O)
         * [batch, heads, seq] fp32, the norm's block sums, the cuBLASLt workspace. */
        int64_t rpad = (r + 15) / 16 * 16;
        if (r > 0) {
            e->workspace +=
                grown((size_t)(rpad * max_in) * 2) + grown((size_t)(max_out * rpad) * 2);
            e->workspace += 2 * grown((size_t)(cap * rpad) * 2) + grown((size_t)(cap * rpad) * 4);
            if (o->lora.dropout > 0.0f) e->workspace += dropout_bytes(c, o, cap);
        }
        /* Weights held in bf16 take the dequant path at every size. */
        if (ql_cuda_q4_path_for(cap) == QL_CUDA_Q4_DEQUANT_BLAS || e->linears_f32)
            e->workspace += dequant_path_bytes(c, o, cap);
        e->workspace += grown((size_t)(cap * H) * 4) + grown(1025 * 8) + grown(16);
        e->workspace += (size_t)32 << 20;
        /* The CUDA context and module images, cuBLASLt's handle, NCCL's
         * channels: an allowance of 1 GiB (+ 0.5 GiB with NCCL), not a
         * measurement; tests/gpu/run.sh records the device's own figure
         * (metrics' mem_device_used_bytes) next to the estimate. */
        e->runtime_reserve = (size_t)(GIB_F * (world > 1 ? 1.5 : 1.0));
    }
    e->total = e->base_q4 + e->base_other + e->base_dense + e->dense_lent + e->adapters + e->grads +
               e->optimizer + e->activations + e->step_buffers + e->logits + e->workspace;
    return QL_OK;
}
