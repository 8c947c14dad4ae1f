/* The forward and backward pass of the decoder (FORMATS §4.2, transformers'
 * modeling_llama.py) over the backend op table, with the loss computed over
 * row chunks of the logits so memory does not grow with the vocabulary. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "kernels/cuda_api.h"
#include "model/llama_impl.h"

/* --------------------------------------------------------------- the batch */

ql_status ql_llama_prepare_batch(ql_llama *m, const ql_batch *b, int need_targets, int dropping) {
    if (!b || b->batch <= 0 || b->seq <= 0)
        return ql_error(QL_EINVAL, "batch: shape %" PRId64 " x %" PRId64 " must be positive",
                        b ? b->batch : 0, b ? b->seq : 0);
    int64_t T = b->batch * b->seq;
    if (b->batch > m->opt.max_batch || b->seq > m->opt.max_seq)
        return ql_error(QL_EINVAL,
                        "batch: %" PRId64 " x %" PRId64 " tokens exceeds the capacity the model "
                        "was loaded with (%" PRId64 " x %" PRId64 ")",
                        b->batch, b->seq, m->opt.max_batch, m->opt.max_seq);
    if (!b->ids) return ql_error(QL_EINVAL, "batch: no token ids");
    if (need_targets && !b->targets) return ql_error(QL_EINVAL, "batch: no targets");
    for (int64_t t = 0; t < T; t++) {
        if (b->ids[t] < 0 || b->ids[t] >= m->V)
            return ql_error(QL_EINVAL,
                            "batch: token id %d at row %" PRId64 ", position %" PRId64
                            " is outside the vocabulary of %" PRId64,
                            b->ids[t], t / b->seq, t % b->seq, m->V);
        if (need_targets && b->targets[t] >= m->V)
            return ql_error(QL_EINVAL,
                            "batch: target %d at row %" PRId64 ", position %" PRId64
                            " is outside the vocabulary of %" PRId64,
                            b->targets[t], t / b->seq, t % b->seq, m->V);
        if (b->pos && b->pos[t] < 0)
            return ql_error(QL_EINVAL,
                            "batch: position id %d at row %" PRId64 ", position %" PRId64
                            " is negative",
                            b->pos[t], t / b->seq, t % b->seq);
    }
    const ql_backend *be = m->be;
    /* ids, targets, positions, documents side by side, [T] each, up in one
     * copy: on a GPU each copy from pageable memory is a host wait. */
    const size_t ib = (size_t)T * sizeof(int32_t);
    int32_t *h = m->h_batch;
    memcpy(h, b->ids, ib);
    if (need_targets) memcpy(h + T, b->targets, ib);
    if (b->pos)
        memcpy(h + 2 * T, b->pos, ib);
    else
        for (int64_t t = 0; t < T; t++) h[2 * T + t] = (int32_t)(t % b->seq);
    if (b->doc) memcpy(h + 3 * T, b->doc, ib);
    QL_TRY(be->upload(m->batch_dev, h, (b->doc ? 4 : 3) * ib));
    m->ids = m->batch_dev;
    m->targets = m->batch_dev + T;
    m->pos = m->batch_dev + 2 * T;
    m->doc_cur = b->doc ? m->batch_dev + 3 * T : NULL;
    m->T = T;
    m->batch = b->batch;
    m->seq = b->seq;
    /* One key per call from the dropout stream; with no dropout, no draws. */
    m->dropping = dropping && m->ad.cfg.r > 0 && m->ad.cfg.dropout > 0.0f;
    if (m->dropping) m->drop_key = ql_rng_u64(&m->rng);
    return QL_OK;
}

/* ------------------------------------------------------------ linear layers */

/* The dropout mask of (layer, proj) for the current call: its seed comes
 * from its own stream of the call's key, so the backward pass (and a
 * recomputed forward) reproduces it. The ops draw the mask from it where
 * they read x (kernels/dropout.h); nothing is stored. */
static ql_dropout mask_of(const ql_llama *m, int layer, ql_proj p) {
    ql_rng r;
    ql_rng_seed_stream(&r, m->drop_key, (uint64_t)layer * QL_N_PROJ + (uint64_t)p);
    ql_dropout d;
    d.on = 1;
    d.seed = ql_rng_u64(&r);
    /* Dropped iff a 32-bit uniform falls below p·2³². */
    d.thresh = (uint64_t)ldexp((double)m->ad.cfg.dropout, 32);
    d.scale = 1.0f / (float)(1.0 - (double)m->ad.cfg.dropout);
    return d;
}

/* The adapter of (layer, p) for this call, or NULL. */
static ql_status lora_of(ql_llama *m, int layer, ql_proj p, ql_lora *l, const ql_lora **out,
                         float **dA, float **dB) {
    *out = NULL;
    int i = m->adapter_of[layer * QL_N_PROJ + p];
    if (i < 0) return QL_OK;
    const ql_adapter_tensor *a = &m->ad.tensors[i], *b = &m->ad.tensors[i + 1];
    memset(l, 0, sizeof *l);
    l->A = m->ad.params + a->offset;
    l->B = m->ad.params + b->offset;
    l->r = m->ad.cfg.r;
    l->scale = m->ad.scale;
    if (dA) *dA = m->ad.grads + a->offset;
    if (dB) *dB = m->ad.grads + b->offset;
    if (m->dropping) l->drop = mask_of(m, layer, p);
    *out = l;
    return QL_OK;
}

static ql_status lin_fwd(ql_llama *m, int layer, ql_proj p, const ql_act *x, ql_act *y, float *xa) {
    ql_lora l;
    const ql_lora *lp;
    QL_TRY(lora_of(m, layer, p, &l, &lp, NULL, NULL));
    const ql_llama_layer *L = &m->layers[layer];
    QL_TRY(m->be->q4_lora_fwd(&L->w[p], lp, x, m->T, y, xa));
    if (L->bias[p]) QL_TRY(m->be->bias_add(y, L->bias[p], m->T, L->w[p].rows));
    return QL_OK;
}

static ql_status lin_bwd(ql_llama *m, int layer, ql_proj p, const ql_act *x, const float *xa,
                         const ql_act *dy, ql_act *dx) {
    ql_lora l;
    const ql_lora *lp;
    float *dA = NULL, *dB = NULL;
    QL_TRY(lora_of(m, layer, p, &l, &lp, &dA, &dB));
    if (!lp && !dx) return QL_OK;
    return m->be->q4_lora_bwd(&m->layers[layer].w[p], lp, x, xa, dy, m->T, dx, dA, dB);
}

/* ------------------------------------------------------------------ a layer */

static ql_attn_shape attn_shape(const ql_llama *m) {
    return (ql_attn_shape){.batch = m->batch,
                           .seq = m->seq,
                           .n_heads = (int)m->H,
                           .n_kv_heads = (int)m->KV,
                           .head_dim = (int)m->D};
}

/* Y = layer(X); leaves n1, n2 and s of this layer in the scratch buffers. */
static ql_status layer_fwd(ql_llama *m, int i, const ql_act *X, ql_act *Y, ql_llama_acts *a) {
    const ql_backend *be = m->be;
    const ql_llama_layer *L = &m->layers[i];
    const int64_t T = m->T;
    ql_attn_shape sh = attn_shape(m);
    QL_TRY(be->rmsnorm_fwd(X, L->norm_in, m->eps, T, m->d, m->n1, a->rstd1));
    QL_TRY(lin_fwd(m, i, QL_PROJ_Q, m->n1, a->q, a->xa[QL_PROJ_Q]));
    QL_TRY(lin_fwd(m, i, QL_PROJ_K, m->n1, a->k, a->xa[QL_PROJ_K]));
    QL_TRY(lin_fwd(m, i, QL_PROJ_V, m->n1, a->v, a->xa[QL_PROJ_V]));
    QL_TRY(be->rope_fwd(a->q, m->pos, m->inv_freq, T, (int)m->H, (int)m->D));
    QL_TRY(be->rope_fwd(a->k, m->pos, m->inv_freq, T, (int)m->KV, (int)m->D));
    QL_TRY(be->attn_fwd(a->q, a->k, a->v, m->doc_cur, &sh, a->ao, a->lse));
    QL_TRY(lin_fwd(m, i, QL_PROJ_O, a->ao, m->o, a->xa[QL_PROJ_O]));
    QL_TRY(be->add(X, m->o, T * m->d, a->h));
    QL_TRY(be->rmsnorm_fwd(a->h, L->norm_post, m->eps, T, m->d, m->n2, a->rstd2));
    QL_TRY(lin_fwd(m, i, QL_PROJ_GATE, m->n2, a->g, a->xa[QL_PROJ_GATE]));
    QL_TRY(lin_fwd(m, i, QL_PROJ_UP, m->n2, a->u, a->xa[QL_PROJ_UP]));
    QL_TRY(be->swiglu_fwd(a->g, a->u, T * m->inter, m->s));
    QL_TRY(lin_fwd(m, i, QL_PROJ_DOWN, m->s, m->o, a->xa[QL_PROJ_DOWN]));
    return be->add(a->h, m->o, T * m->d, Y);
}

/* Layer i's linears get the model's buffers as their dequantized copies
 * (setup_lending in llama_load.c) for as long as the layer runs: under
 * checkpointing its recomputed forward pass and its backward pass then read
 * one copy, one dequantize pass per weight where each call would make its
 * own. Only when the 4-bit ops take the dequant path for m->T tokens, and not
 * for weights with a copy of their own (quant.dequantized_layers). */
static ql_status lend_layer(ql_llama *m, int i) {
    if (!m->lend[0] || ql_cuda_q4_path_for(m->T) != QL_CUDA_Q4_DEQUANT_BLAS) return QL_OK;
    ql_llama_layer *L = &m->layers[i];
    for (int p = 0; p < QL_N_PROJ; p++) {
        if (L->w[p].dense) continue;
        QL_TRY(
            m->be->q4_lend_dequantized(&L->w[p], ql_llama_proj_rank(m, i, (ql_proj)p), m->lend[p]));
        m->lent[p] = 1;
    }
    return QL_OK;
}

static void give_back_layer(ql_llama *m, int i) {
    for (int p = 0; p < QL_N_PROJ; p++)
        if (m->lent[p] && m->layers[i].w[p].dense == m->lend[p]) {
            m->be->q4_lend_dequantized(&m->layers[i].w[p], 0, NULL);
            m->lent[p] = 0;
        }
}

/* layer_fwd with the layer's weights lent their copies. */
static ql_status layer_fwd_lent(ql_llama *m, int i, const ql_act *X, ql_act *Y, ql_llama_acts *a) {
    ql_status st = lend_layer(m, i);
    if (st == QL_OK) st = layer_fwd(m, i, X, Y, a);
    give_back_layer(m, i);
    return st;
}

/* dX = ∂loss/∂X from dY, accumulating the layer's adapter gradients. dX may
 * be NULL (the first layer: the embeddings are frozen). */
static ql_status layer_bwd_lent(ql_llama *m, int i, const ql_act *dY, ql_act *dX) {
    const ql_backend *be = m->be;
    const ql_llama_layer *L = &m->layers[i];
    const int64_t T = m->T;
    const ql_act *X = m->xs[i];
    ql_llama_acts *a = &m->acts[m->n_acts == 1 ? 0 : i];
    ql_attn_shape sh = attn_shape(m);
    if (m->opt.checkpoint_activations) {
        QL_TRY(layer_fwd(m, i, X, m->xs[i + 1], a)); /* rewrites the same values */
    } else {
        QL_TRY(be->rmsnorm_fwd(X, L->norm_in, m->eps, T, m->d, m->n1, a->rstd1));
        QL_TRY(be->rmsnorm_fwd(a->h, L->norm_post, m->eps, T, m->d, m->n2, a->rstd2));
        QL_TRY(be->swiglu_fwd(a->g, a->u, T * m->inter, m->s));
    }
    /* MLP */
    QL_TRY(lin_bwd(m, i, QL_PROJ_DOWN, m->s, a->xa[QL_PROJ_DOWN], dY, m->ds));
    QL_TRY(be->swiglu_bwd(m->ds, a->g, a->u, T * m->inter, m->dg, m->du));
    QL_TRY(lin_bwd(m, i, QL_PROJ_GATE, m->n2, a->xa[QL_PROJ_GATE], m->dg, m->t1));
    QL_TRY(lin_bwd(m, i, QL_PROJ_UP, m->n2, a->xa[QL_PROJ_UP], m->du, m->t2));
    QL_TRY(be->add(m->t1, m->t2, T * m->d, m->t1));
    QL_TRY(be->rmsnorm_bwd(m->t1, a->h, L->norm_post, a->rstd2, T, m->d, m->dh));
    QL_TRY(be->add(m->dh, dY, T * m->d, m->dh));
    /* attention */
    QL_TRY(lin_bwd(m, i, QL_PROJ_O, a->ao, a->xa[QL_PROJ_O], m->dh, m->dao));
    QL_TRY(be->attn_bwd(m->dao, a->q, a->k, a->v, a->ao, a->lse, m->doc_cur, &sh, m->dq, m->dk,
                        m->dv));
    QL_TRY(be->rope_bwd(m->dq, m->pos, m->inv_freq, T, (int)m->H, (int)m->D));
    QL_TRY(be->rope_bwd(m->dk, m->pos, m->inv_freq, T, (int)m->KV, (int)m->D));
    QL_TRY(lin_bwd(m, i, QL_PROJ_Q, m->n1, a->xa[QL_PROJ_Q], m->dq, dX ? m->t1 : NULL));
    QL_TRY(lin_bwd(m, i, QL_PROJ_K, m->n1, a->xa[QL_PROJ_K], m->dk, dX ? m->t2 : NULL));
    if (dX) QL_TRY(be->add(m->t1, m->t2, T * m->d, m->t1));
    QL_TRY(lin_bwd(m, i, QL_PROJ_V, m->n1, a->xa[QL_PROJ_V], m->dv, dX ? m->t2 : NULL));
    if (!dX) return QL_OK;
    QL_TRY(be->add(m->t1, m->t2, T * m->d, m->t1));
    QL_TRY(be->rmsnorm_bwd(m->t1, X, L->norm_in, a->rstd1, T, m->d, dX));
    return be->add(dX, m->dh, T * m->d, dX);
}

static ql_status layer_bwd(ql_llama *m, int i, const ql_act *dY, ql_act *dX) {
    ql_status st = lend_layer(m, i);
    if (st == QL_OK) st = layer_bwd_lent(m, i, dY, dX);
    give_back_layer(m, i);
    return st;
}

/* ------------------------------------------------------------- whole model */

/* Embedding and every layer; with keep, each layer's activations are kept
 * for the backward pass (all of them, or only the layer inputs when
 * checkpointing). */
ql_status ql_llama_forward_layers(ql_llama *m, int keep) {
    QL_TRY(m->be->embed_fwd(m->embed, m->ids, m->T, m->d, m->xs[0]));
    for (int i = 0; i < m->L; i++) {
        ql_llama_acts *a = &m->acts[keep && m->n_acts > 1 ? i : 0];
        if (m->layer_start) QL_TRY(m->layer_start(m->layer_start_ctx, i));
        QL_TRY(layer_fwd_lent(m, i, m->xs[i], m->xs[i + 1], a));
    }
    return m->be->rmsnorm_fwd(m->xs[m->L], m->norm_f, m->eps, m->T, m->d, m->fnorm, m->rstd_f);
}

static int chunk_has_targets(const int32_t *targets, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        if (targets[t] >= 0) return 1;
    return 0;
}

void ql_llama_set_layer_done(ql_llama *m, ql_llama_layer_done_fn fn, void *ctx) {
    m->layer_done = fn;
    m->layer_done_ctx = ctx;
}

double ql_llama_last_wait_s(const ql_llama *m) { return m->last_wait_s; }

void ql_llama_set_backend(ql_llama *m, const ql_backend *be) { m->be = be; }

void ql_llama_set_layer_start(ql_llama *m, ql_llama_layer_done_fn fn, void *ctx) {
    m->layer_start = fn;
    m->layer_start_ctx = ctx;
}

void ql_llama_layer_grad_range(const ql_llama *m, int layer, int64_t *lo, int64_t *hi) {
    *lo = *hi = 0;
    int first = 1;
    for (int i = 0; i < m->ad.n_tensors; i++) {
        const ql_adapter_tensor *t = &m->ad.tensors[i];
        if (t->layer != layer) continue;
        const int64_t a = t->offset, b = t->offset + t->rows * t->cols;
        if (first || a < *lo) *lo = a;
        if (first || b > *hi) *hi = b;
        first = 0;
    }
}

ql_status ql_llama_forward_backward(ql_llama *m, const ql_batch *b, int backward, float grad_scale,
                                    double *loss_sum, int64_t *n_targets) {
    const ql_backend *be = m->be;
    QL_TRY(ql_llama_prepare_batch(m, b, 1, backward));
    QL_TRY(ql_llama_forward_layers(m, backward));
    const int64_t T = m->T, V = m->V, d = m->d;
    /* lm_head and cross-entropy per chunk of rows; in the backward pass the
     * logits are overwritten by their gradient and folded into dF = t1. */
    for (int64_t c0 = 0; c0 < T; c0 += m->logit_rows) {
        int64_t rows = T - c0 < m->logit_rows ? T - c0 : m->logit_rows;
        if (!backward && !chunk_has_targets(b->targets + c0, rows)) continue;
        QL_TRY(be->matmul_fwd(m->lm_head, ql_llama_act_at(m, m->fnorm, c0 * d), rows, d, V,
                              m->logits));
        QL_TRY(be->xent_fwd_bwd(m->logits, m->targets + c0, rows, V, grad_scale, m->losses + c0,
                                backward ? m->logits : NULL));
        if (backward)
            QL_TRY(be->matmul_bwd(m->lm_head, m->logits, rows, d, V,
                                  ql_llama_act_at(m, m->t1, c0 * d)));
    }
    if (backward && m->ad.n > 0) { /* without adapters there is nothing to train */
        QL_TRY(be->rmsnorm_bwd(m->t1, m->xs[m->L], m->norm_f, m->rstd_f, T, d, m->dy));
        ql_act *dy = m->dy, *dx = m->dx;
        for (int i = (int)m->L - 1; i >= 0; i--) {
            QL_TRY(layer_bwd(m, i, dy, i > 0 ? dx : NULL));
            if (m->layer_done) QL_TRY(m->layer_done(m->layer_done_ctx, i));
            ql_act *tmp = dy;
            dy = dx;
            dx = tmp;
        }
    }
    /* The per-token losses come back only now, after the backward pass has
     * been queued: on a device backend this copy is the micro-batch's one
     * wait, and the device never idles between forward and backward. */
    const double w0 = ql_clock_s();
    QL_TRY(be->download(m->h_losses, m->losses, (size_t)T * sizeof(float)));
    m->last_wait_s = ql_clock_s() - w0;
    double sum = 0.0;
    int64_t n = 0;
    for (int64_t t = 0; t < T; t++)
        if (b->targets[t] >= 0) {
            sum += m->h_losses[t];
            n++;
        }
    if (loss_sum) *loss_sum = sum;
    if (n_targets) *n_targets = n;
    return QL_OK;
}

ql_status ql_llama_reserve(ql_llama *m, int64_t batch, int64_t seq) {
    const int64_t B = batch, S = seq, T = B * S;
    int32_t *tok = ql_calloc((size_t)(2 * T), sizeof *tok, "the reserving pass's tokens");
    if (!tok) return QL_ENOMEM;
    for (int64_t t = 0; t < T; t++) tok[T + t] = -100;
    const ql_batch b = {.batch = B, .seq = S, .ids = tok, .targets = tok + T};
    const ql_rng rng = m->rng;
    const ql_llama_layer_done_fn done = m->layer_done, start = m->layer_start;
    m->layer_done = m->layer_start = NULL;
    ql_status st = ql_llama_forward_backward(m, &b, 1, 1.0f, NULL, NULL);
    if (st == QL_OK && m->ad.n > 0) st = m->be->zero_f32(m->ad.grads, m->ad.n);
    if (st == QL_OK) st = m->be->sync();
    m->rng = rng;
    m->layer_done = done;
    m->layer_start = start;
    free(tok);
    return st;
}

ql_status ql_llama_logits(ql_llama *m, const ql_batch *b, float *logits) {
    const ql_backend *be = m->be;
    QL_TRY(ql_llama_prepare_batch(m, b, 0, 0));
    QL_TRY(ql_llama_forward_layers(m, 0));
    const int64_t T = m->T, V = m->V, d = m->d;
    float *conv = NULL;
    if (be->act_dtype != QL_DT_F32) {
        conv = ql_malloc((size_t)(m->logit_rows * V) * m->esz, "logits");
        if (!conv) return QL_ENOMEM;
    }
    ql_status st = QL_OK;
    for (int64_t c0 = 0; c0 < T && st == QL_OK; c0 += m->logit_rows) {
        int64_t rows = T - c0 < m->logit_rows ? T - c0 : m->logit_rows;
        st =
            be->matmul_fwd(m->lm_head, ql_llama_act_at(m, m->fnorm, c0 * d), rows, d, V, m->logits);
        if (st != QL_OK) break;
        if (!conv) {
            st = be->download(logits + c0 * V, m->logits, (size_t)(rows * V) * sizeof(float));
        } else {
            st = be->download(conv, m->logits, (size_t)(rows * V) * m->esz);
            if (st == QL_OK &&
                ql_dtype_to_f32(be->act_dtype, conv, logits + c0 * V, (size_t)(rows * V)) != 0)
                st = ql_error(QL_EINTERNAL, "logits: cannot convert from %s",
                              ql_dtype_name(be->act_dtype));
        }
    }
    free(conv);
    return st;
}
