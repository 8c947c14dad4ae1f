/* Internal to model/llama*.c: the loaded model, its buffers and the helpers
 * the load and step files share. */
#ifndef QL_LLAMA_IMPL_H
#define QL_LLAMA_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"
#include "model/lora.h"
#include "model/source.h"

typedef struct ql_llama_layer {
    ql_q4 w[QL_N_PROJ];     /* frozen 4-bit base weights, backend memory */
    float *bias[QL_N_PROJ]; /* frozen biases (Qwen2 q/k/v), NULL when absent */
    float *norm_in, *norm_post;
} ql_llama_layer;

/* What one layer's backward needs from its forward. */
typedef struct ql_llama_acts {
    ql_act *q, *k, *v; /* after RoPE (q, k) */
    ql_act *ao;        /* attention output, o_proj's input */
    ql_act *h;         /* residual after attention */
    ql_act *g, *u;     /* gate_proj and up_proj outputs */
    float *lse, *rstd1, *rstd2;
    float *xa[QL_N_PROJ]; /* x·Aᵀ of each adapted projection */
} ql_llama_acts;

struct ql_llama {
    const ql_backend *be;
    ql_llama_options opt;
    ql_hf_config cfg; /* cfg.json is not kept */
    char path[4096];
    ql_source_kind kind;
    size_t esz;                                    /* bytes per activation element */
    int64_t d, inter, H, KV, D, V, L, qdim, kvdim; /* shapes */
    int64_t cap;                                   /* token capacity max_batch * max_seq */
    float eps;

    /* weights */
    ql_llama_layer *layers;
    ql_act *embed, *lm_head; /* lm_head == embed when tied */
    float *norm_f, *inv_freq;
    int64_t base_params;

    /* adapters */
    ql_adapters ad;
    int *adapter_of;                   /* [L * QL_N_PROJ]: index of the A tensor, -1 when none */
    ql_rng rng;                        /* dropout */
    ql_llama_layer_done_fn layer_done; /* ql_llama_set_layer_done */
    void *layer_done_ctx;
    ql_llama_layer_done_fn layer_start; /* ql_llama_set_layer_start */
    void *layer_start_ctx;
    double last_wait_s; /* ql_llama_last_wait_s */

    /* activations */
    ql_act **xs;         /* [L + 1] residual stream: layer inputs and the last output */
    ql_llama_acts *acts; /* L of them, or 1 with checkpointing */
    int n_acts;
    ql_act *n1, *n2, *s, *o;
    ql_act *fnorm, *logits;
    float *rstd_f, *losses;
    int64_t logit_rows;
    /* gradients */
    ql_act *dy, *dx, *dh, *t1, *t2, *ds, *dg, *du, *dao, *dq, *dk, *dv;
    /* batch: the current call's ids, targets, positions (and documents:
     * doc_cur), [T] each, side by side in batch_dev ([4 · cap]) */
    int32_t *batch_dev, *ids, *targets, *pos;
    /* host scratch */
    int32_t *h_batch; /* [4 · cap]: batch_dev's staging */
    float *h_losses;

    /* the current call */
    int64_t T, batch, seq;
    const int32_t *doc_cur; /* documents in batch_dev, or NULL */
    int dropping;
    uint64_t drop_key;

    void **allocs; /* backend buffers to free */
    size_t n_allocs, cap_allocs;
    size_t backend_bytes;
    size_t dense_bytes;    /* of which the linears kept dequantized (dequantized_layers) */
    int64_t float_linears; /* linears held in float32 as stored (opt.base_original) */
    /* one layer's linears dequantized while it runs (opt.lend_dequantized):
     * the buffers, which projections hold one now, and their bytes */
    void *lend[QL_N_PROJ];
    int lent[QL_N_PROJ];
    size_t lend_bytes;
    /* load timing (seconds): the whole load, reading tensors from the
     * source, quantizing on the host, uploading float32 and quantizing on the
     * device, copying host-quantized 4-bit weights to the backend */
    double load_s, read_s, quantize_s, gpu_quantize_s, upload_s;
};

/* A backend buffer owned by the model (freed by ql_llama_free). */
ql_status ql_llama_alloc(ql_llama *m, size_t bytes, const char *what, void **out);
/* Forward/backward pieces (llama_step.c). */
ql_status ql_llama_prepare_batch(ql_llama *m, const ql_batch *b, int need_targets, int dropping);
ql_status ql_llama_forward_layers(ql_llama *m, int keep);

/* The LoRA rank of (layer, p)'s adapter, 0 without one: what a dequantized
 * copy of its weight is laid out for. */
static inline int64_t ql_llama_proj_rank(const ql_llama *m, int layer, ql_proj p) {
    return m->adapter_of[layer * QL_N_PROJ + p] >= 0 ? m->ad.cfg.r : 0;
}

static inline ql_act *ql_llama_act_at(const ql_llama *m, ql_act *p, int64_t elems) {
    return (char *)p + (size_t)elems * m->esz;
}

#endif
