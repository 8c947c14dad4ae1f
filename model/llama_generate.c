/* The incremental forward (model/llama_generate.h): the decoder layer of
 * llama_step.c for a handful of new tokens whose keys and values join a
 * per-sequence cache. */
#include "model/llama_generate.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_impl.h"

typedef struct kv_slot {
    ql_act *k, *v; /* backend memory, [L][cap][kvdim]: keys (after RoPE) and values */
    int64_t len, cap;
} kv_slot;

struct ql_llama_kv {
    ql_llama *m;
    const ql_backend *be;
    int n_slots;
    kv_slot *slots;
    int64_t chunk;
    int use_adapters;
    /* backend step buffers, [chunk, ...] */
    ql_act *x, *n1, *q, *k, *v, *ao, *o, *h, *g, *u, *s, *logits;
    float *xa, *rstd, *lse;
    int32_t *d_ids, *d_pos; /* one buffer: [chunk] ids, then [chunk] positions */
    void **bufs;
    int n_bufs;
    /* host */
    int32_t *h_batch, *h_pos; /* the same on the host: one upload a step */
    void *conv;               /* act_dtype staging for the logits */
    size_t conv_bytes;
};

/* ------------------------------------------------------------------ set-up */

static ql_status buf(ql_llama_kv *kv, size_t bytes, const char *what, void **out) {
    void **nb = realloc(kv->bufs, (size_t)(kv->n_bufs + 1) * sizeof *nb);
    if (!nb) return ql_error(QL_ENOMEM, "out of memory for the generation buffers");
    kv->bufs = nb;
    ql_status st = kv->be->alloc(bytes ? bytes : 1, out);
    if (st != QL_OK)
        return ql_error_wrap(st, "allocating %s for generation (%zu bytes) on backend %s: ", what,
                             bytes, kv->be->name);
    kv->bufs[kv->n_bufs++] = *out;
    return QL_OK;
}

static ql_status act(ql_llama_kv *kv, int64_t per_token, const char *what, ql_act **out) {
    return buf(kv, (size_t)(kv->chunk * per_token) * kv->m->esz, what, out);
}

static ql_status f32(ql_llama_kv *kv, int64_t per_token, const char *what, float **out) {
    return buf(kv, (size_t)(kv->chunk * per_token) * sizeof(float), what, (void **)out);
}

static ql_status alloc_all(ql_llama_kv *kv) {
    const ql_llama *m = kv->m;
    QL_TRY(act(kv, m->d, "residual stream", &kv->x));
    QL_TRY(act(kv, m->d, "norm output", &kv->n1));
    QL_TRY(act(kv, m->qdim, "queries", &kv->q));
    QL_TRY(act(kv, m->kvdim, "keys", &kv->k));
    QL_TRY(act(kv, m->kvdim, "values", &kv->v));
    QL_TRY(act(kv, m->qdim, "attention output", &kv->ao));
    QL_TRY(act(kv, m->d, "projection output", &kv->o));
    QL_TRY(act(kv, m->d, "attention residual", &kv->h));
    QL_TRY(act(kv, m->inter, "gate", &kv->g));
    QL_TRY(act(kv, m->inter, "up", &kv->u));
    QL_TRY(act(kv, m->inter, "SwiGLU output", &kv->s));
    QL_TRY(f32(kv, m->ad.cfg.r > 0 ? m->ad.cfg.r : 1, "LoRA x·Aᵀ", &kv->xa));
    QL_TRY(f32(kv, 1, "rmsnorm rstd", &kv->rstd));
    QL_TRY(f32(kv, m->H, "attention lse", &kv->lse));
    QL_TRY(buf(kv, (size_t)(2 * kv->chunk) * sizeof(int32_t), "token ids and positions",
               (void **)&kv->d_ids));
    kv->d_pos = kv->d_ids + kv->chunk;
    /* Logits of at most one row per slot at a time. */
    QL_TRY(buf(kv, (size_t)(kv->n_slots * m->V) * m->esz, "logits", &kv->logits));
    kv->conv_bytes = (size_t)(m->V * kv->n_slots) * m->esz;
    kv->h_batch = ql_calloc((size_t)(2 * kv->chunk), sizeof(int32_t), "token ids and positions");
    kv->h_pos = kv->h_batch ? kv->h_batch + kv->chunk : NULL;
    kv->conv = ql_malloc(kv->conv_bytes, "conversion buffer");
    if (!kv->h_pos || !kv->conv) return QL_ENOMEM;
    return QL_OK;
}

ql_status ql_llama_kv_create(ql_llama *m, int n_slots, int64_t chunk, ql_llama_kv **out) {
    *out = NULL;
    if (!m || n_slots < 1)
        return ql_error(QL_EINVAL, "generation: need a model and at least one sequence slot");
    if (chunk <= 0) chunk = 256;
    if (chunk < n_slots) chunk = n_slots;
    ql_llama_kv *kv = ql_calloc(1, sizeof *kv, "KV cache");
    if (!kv) return QL_ENOMEM;
    kv->m = m;
    kv->be = m->be;
    kv->n_slots = n_slots;
    kv->chunk = chunk;
    kv->use_adapters = 1;
    kv->slots = ql_calloc((size_t)n_slots, sizeof *kv->slots, "KV cache slots");
    ql_status st = kv->slots ? alloc_all(kv) : QL_ENOMEM;
    if (st != QL_OK) {
        ql_llama_kv_free(kv);
        return st;
    }
    *out = kv;
    return QL_OK;
}

void ql_llama_kv_free(ql_llama_kv *kv) {
    if (!kv) return;
    for (int i = 0; i < kv->n_bufs; i++) kv->be->free(kv->bufs[i]);
    free(kv->bufs);
    if (kv->slots)
        for (int i = 0; i < kv->n_slots; i++) {
            if (kv->slots[i].k) kv->be->free(kv->slots[i].k);
            if (kv->slots[i].v) kv->be->free(kv->slots[i].v);
        }
    free(kv->slots);
    free(kv->h_batch);
    free(kv->conv);
    free(kv);
}

ql_status ql_llama_kv_reset(ql_llama_kv *kv, int slot, int64_t ctx) {
    if (slot < 0 || slot >= kv->n_slots)
        return ql_error(QL_EINVAL, "generation: slot %d of %d", slot, kv->n_slots);
    if (ctx < 1) ctx = 1;
    kv_slot *s = &kv->slots[slot];
    s->len = 0;
    if (ctx <= s->cap) return QL_OK;
    const size_t bytes = (size_t)(kv->m->L * ctx * kv->m->kvdim) * kv->m->esz;
    if (s->k) kv->be->free(s->k);
    if (s->v) kv->be->free(s->v);
    s->k = s->v = NULL;
    s->cap = 0;
    ql_status st = kv->be->alloc(bytes, &s->k);
    if (st == QL_OK) st = kv->be->alloc(bytes, &s->v);
    if (st != QL_OK) {
        if (s->k) kv->be->free(s->k);
        s->k = NULL;
        return ql_error_wrap(st, "a KV cache of %" PRId64 " tokens (2 x %zu bytes) on backend %s: ",
                             ctx, bytes, kv->be->name);
    }
    s->cap = ctx; /* each slot's layout [L][cap][kvdim] uses its own cap */
    return QL_OK;
}

int64_t ql_llama_kv_length(const ql_llama_kv *kv, int slot) {
    return slot >= 0 && slot < kv->n_slots ? kv->slots[slot].len : -1;
}

int ql_llama_kv_slots(const ql_llama_kv *kv) { return kv->n_slots; }

void ql_llama_kv_use_adapters(ql_llama_kv *kv, int on) { kv->use_adapters = on != 0; }

/* ---------------------------------------------------------- host transfers */

static ql_status to_host(ql_llama_kv *kv, const ql_act *src, int64_t n, float *dst) {
    if (kv->be->act_dtype == QL_DT_F32)
        return kv->be->download(dst, src, (size_t)n * sizeof(float));
    QL_TRY(kv->be->download(kv->conv, src, (size_t)n * kv->m->esz));
    if (ql_dtype_to_f32(kv->be->act_dtype, kv->conv, dst, (size_t)n) != 0)
        return ql_error(QL_EINTERNAL, "generation: cannot convert from %s",
                        ql_dtype_name(kv->be->act_dtype));
    return QL_OK;
}

/* ------------------------------------------------------------------ a layer */

static ql_status lin(ql_llama_kv *kv, int layer, ql_proj p, const ql_act *x, int64_t T, ql_act *y) {
    ql_llama *m = kv->m;
    const ql_llama_layer *L = &m->layers[layer];
    ql_lora l, *lp = NULL;
    int i = m->adapter_of[layer * QL_N_PROJ + p];
    if (kv->use_adapters && i >= 0) {
        memset(&l, 0, sizeof l);
        l.A = m->ad.params + m->ad.tensors[i].offset;
        l.B = m->ad.params + m->ad.tensors[i + 1].offset;
        l.r = m->ad.cfg.r;
        l.scale = m->ad.scale;
        lp = &l;
    }
    QL_TRY(kv->be->q4_lora_fwd(&L->w[p], lp, x, T, y, kv->xa));
    if (L->bias[p]) QL_TRY(kv->be->bias_add(y, L->bias[p], T, L->w[p].rows));
    return QL_OK;
}

/* Rows t0..t0+n-1 of this step's keys and values into `slot`'s cache of
 * `layer`, from position pos: a copy within backend memory. */
static ql_status cache_rows(ql_llama_kv *kv, int layer, int slot, int64_t pos, int64_t t0,
                            int64_t n) {
    ql_llama *m = kv->m;
    kv_slot *s = &kv->slots[slot];
    const int64_t at = (layer * s->cap + pos) * m->kvdim;
    const size_t bytes = (size_t)(n * m->kvdim) * m->esz;
    QL_TRY(kv->be->copy(ql_llama_act_at(m, s->k, at), ql_llama_act_at(m, kv->k, t0 * m->kvdim),
                        bytes));
    return kv->be->copy(ql_llama_act_at(m, s->v, at), ql_llama_act_at(m, kv->v, t0 * m->kvdim),
                        bytes);
}

/* The new tokens' keys and values into their slots, then each token's
 * attention over its slot's cache up to its own position: one backend call
 * per run of consecutive tokens of one slot (a prompt's chunk is one run; a
 * batched decode step is a run per slot). */
static ql_status attend_cached(ql_llama_kv *kv, int layer, int64_t T, const int *slot_of) {
    ql_llama *m = kv->m;
    const ql_attn_shape sh = {.batch = 1,
                              .seq = T,
                              .n_heads = (int)m->H,
                              .n_kv_heads = (int)m->KV,
                              .head_dim = (int)m->D};
    for (int64_t t0 = 0, n; t0 < T; t0 += n) {
        for (n = 1;
             t0 + n < T && slot_of[t0 + n] == slot_of[t0] && kv->h_pos[t0 + n] == kv->h_pos[t0] + n;
             n++)
            ;
        const kv_slot *s = &kv->slots[slot_of[t0]];
        const int64_t layer_at = layer * s->cap * m->kvdim;
        QL_TRY(cache_rows(kv, layer, slot_of[t0], kv->h_pos[t0], t0, n));
        QL_TRY(kv->be->attn_cached_fwd(ql_llama_act_at(m, kv->q, t0 * m->qdim),
                                       ql_llama_act_at(m, s->k, layer_at),
                                       ql_llama_act_at(m, s->v, layer_at), n, kv->h_pos[t0], &sh,
                                       ql_llama_act_at(m, kv->ao, t0 * m->qdim)));
    }
    return QL_OK;
}

/* A prompt's first chunk in an empty slot is plain causal attention over
 * itself: the backend's op, then its keys and values into the cache. */
static ql_status attend_fresh(ql_llama_kv *kv, int layer, int64_t T, int slot) {
    const ql_llama *m = kv->m;
    ql_attn_shape sh = {.batch = 1,
                        .seq = T,
                        .n_heads = (int)m->H,
                        .n_kv_heads = (int)m->KV,
                        .head_dim = (int)m->D};
    QL_TRY(kv->be->attn_fwd(kv->q, kv->k, kv->v, NULL, &sh, kv->ao, kv->lse));
    return cache_rows(kv, layer, slot, 0, 0, T);
}

static ql_status layer_fwd(ql_llama_kv *kv, int i, int64_t T, const int *slot_of, int fresh) {
    ql_llama *m = kv->m;
    const ql_backend *be = kv->be;
    const ql_llama_layer *L = &m->layers[i];
    QL_TRY(be->rmsnorm_fwd(kv->x, L->norm_in, m->eps, T, m->d, kv->n1, kv->rstd));
    QL_TRY(lin(kv, i, QL_PROJ_Q, kv->n1, T, kv->q));
    QL_TRY(lin(kv, i, QL_PROJ_K, kv->n1, T, kv->k));
    QL_TRY(lin(kv, i, QL_PROJ_V, kv->n1, T, kv->v));
    QL_TRY(be->rope_fwd(kv->q, kv->d_pos, m->inv_freq, T, (int)m->H, (int)m->D));
    QL_TRY(be->rope_fwd(kv->k, kv->d_pos, m->inv_freq, T, (int)m->KV, (int)m->D));
    if (fresh)
        QL_TRY(attend_fresh(kv, i, T, slot_of[0]));
    else
        QL_TRY(attend_cached(kv, i, T, slot_of));
    QL_TRY(lin(kv, i, QL_PROJ_O, kv->ao, T, kv->o));
    QL_TRY(be->add(kv->x, kv->o, T * m->d, kv->h));
    QL_TRY(be->rmsnorm_fwd(kv->h, L->norm_post, m->eps, T, m->d, kv->n1, kv->rstd));
    QL_TRY(lin(kv, i, QL_PROJ_GATE, kv->n1, T, kv->g));
    QL_TRY(lin(kv, i, QL_PROJ_UP, kv->n1, T, kv->u));
    QL_TRY(be->swiglu_fwd(kv->g, kv->u, T * m->inter, kv->s));
    QL_TRY(lin(kv, i, QL_PROJ_DOWN, kv->s, T, kv->o));
    return be->add(kv->h, kv->o, T * m->d, kv->x);
}

/* Takes back the first T tokens' positions (the earliest of a slot wins). */
static void forget(ql_llama_kv *kv, int64_t T, const int *slot_of) {
    for (int64_t t = T - 1; t >= 0; t--) kv->slots[slot_of[t]].len = kv->h_pos[t];
}

/* T tokens (T <= chunk), token t into slot slot_of[t] (a slot's tokens in
 * order); logits of the rows listed in `rows` (n_rows <= n_slots). */
static ql_status feed(ql_llama_kv *kv, int64_t T, const int *slot_of, const int32_t *ids,
                      const int64_t *rows, int n_rows, float *logits) {
    ql_llama *m = kv->m;
    const ql_backend *be = kv->be;
    QL_ASSERT(T >= 1 && T <= kv->chunk && n_rows <= kv->n_slots);
    for (int64_t t = 0; t < T; t++) {
        int sl = slot_of[t];
        if (sl < 0 || sl >= kv->n_slots)
            return ql_error(QL_EINVAL, "generation: slot %d of %d", sl, kv->n_slots);
        if (ids[t] < 0 || ids[t] >= m->V)
            return ql_error(QL_EINVAL,
                            "generation: token id %d is outside the vocabulary of %" PRId64, ids[t],
                            m->V);
    }
    /* Positions: each slot continues where it stopped. */
    for (int64_t t = 0; t < T; t++) {
        kv_slot *s = &kv->slots[slot_of[t]];
        if (s->len >= s->cap) {
            forget(kv, t, slot_of);
            return ql_error(QL_EINVAL,
                            "generation: sequence in slot %d is full (%" PRId64
                            " tokens reserved; ql_llama_kv_reset reserves more)",
                            slot_of[t], s->cap);
        }
        kv->h_pos[t] = (int32_t)s->len++;
    }
    int fresh = kv->h_pos[0] == 0;
    for (int64_t t = 1; t < T && fresh; t++)
        fresh = slot_of[t] == slot_of[0] && kv->h_pos[t] == (int32_t)t;
    memcpy(kv->h_batch, ids, (size_t)T * sizeof(int32_t));
    ql_status st = be->upload(kv->d_ids, kv->h_batch, (size_t)(kv->chunk + T) * sizeof(int32_t));
    if (st == QL_OK) st = be->embed_fwd(m->embed, kv->d_ids, T, m->d, kv->x);
    for (int i = 0; i < m->L && st == QL_OK; i++) st = layer_fwd(kv, i, T, slot_of, fresh);
    if (st == QL_OK) st = be->rmsnorm_fwd(kv->x, m->norm_f, m->eps, T, m->d, kv->n1, kv->rstd);
    if (st != QL_OK) {
        forget(kv, T, slot_of); /* the cache holds a partial step */
        return st;
    }
    if (!logits || n_rows == 0) {
        /* A chunk with nothing to read back still waits here, so that a
         * device error in it takes its tokens back out of the cache. */
        st = be->sync();
        if (st != QL_OK) forget(kv, T, slot_of);
        return st;
    }
    /* Contiguous rows in one product, otherwise one row at a time. */
    int contiguous = 1;
    for (int r = 1; r < n_rows; r++) contiguous &= rows[r] == rows[0] + r;
    if (contiguous) {
        st = be->matmul_fwd(m->lm_head, ql_llama_act_at(m, kv->n1, rows[0] * m->d), n_rows, m->d,
                            m->V, kv->logits);
    } else {
        for (int r = 0; r < n_rows && st == QL_OK; r++)
            st = be->matmul_fwd(m->lm_head, ql_llama_act_at(m, kv->n1, rows[r] * m->d), 1, m->d,
                                m->V, ql_llama_act_at(m, kv->logits, (int64_t)r * m->V));
    }
    if (st == QL_OK) st = to_host(kv, kv->logits, (int64_t)n_rows * m->V, logits);
    if (st != QL_OK) forget(kv, T, slot_of); /* a device error anywhere in the step */
    return st;
}

ql_status ql_llama_kv_prefill(ql_llama_kv *kv, int slot, const int32_t *ids, int64_t n,
                              float *logits) {
    if (slot < 0 || slot >= kv->n_slots)
        return ql_error(QL_EINVAL, "generation: slot %d of %d", slot, kv->n_slots);
    if (n < 1) return ql_error(QL_EINVAL, "generation: an empty prompt (no tokens to start from)");
    if (kv->slots[slot].len + n > kv->slots[slot].cap)
        return ql_error(QL_EINVAL,
                        "generation: %" PRId64 " prompt tokens do not fit the %" PRId64
                        " reserved for slot %d",
                        n, kv->slots[slot].cap - kv->slots[slot].len, slot);
    int *slot_of = ql_malloc((size_t)kv->chunk * sizeof(int), "slot table");
    if (!slot_of) return QL_ENOMEM;
    for (int64_t t = 0; t < kv->chunk; t++) slot_of[t] = slot;
    ql_status st = QL_OK;
    for (int64_t c0 = 0; c0 < n && st == QL_OK; c0 += kv->chunk) {
        int64_t T = n - c0 < kv->chunk ? n - c0 : kv->chunk, last = T - 1;
        int is_last = c0 + T == n;
        st = feed(kv, T, slot_of, ids + c0, &last, is_last ? 1 : 0, is_last ? logits : NULL);
    }
    free(slot_of);
    return st;
}

ql_status ql_llama_kv_step(ql_llama_kv *kv, int n, const int *slots, const int32_t *ids,
                           float *logits) {
    if (n < 1 || n > kv->n_slots)
        return ql_error(QL_EINVAL, "generation: a step of %d sequences (1..%d)", n, kv->n_slots);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (slots[i] == slots[j])
                return ql_error(QL_EINVAL, "generation: slot %d twice in one step", slots[i]);
    int64_t *rows = ql_malloc((size_t)n * sizeof *rows, "row table");
    if (!rows) return QL_ENOMEM;
    for (int i = 0; i < n; i++) rows[i] = i;
    ql_status st = feed(kv, n, slots, ids, rows, n, logits);
    free(rows);
    return st;
}
