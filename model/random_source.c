/* ql_random_source_open: generated weights behind the ql_model_source
 * interface (model/random_source.h). */
#include "model/random_source.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/lora.h"

typedef struct rnd_impl {
    ql_random_source_opts o;
} rnd_impl;

/* FNV-1a of the name: the tensor's stream under the seed. */
static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

/* Layer and projection of "model.layers.L.<module>.<proj>.weight|bias", or -1. */
static int parse_linear(const char *name, int *layer, ql_proj *p, int *is_bias) {
    int l, n = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &n) != 1 || n == 0) return -1;
    const char *rest = name + n;
    for (int q = 0; q < QL_N_PROJ; q++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s.", ql_proj_module((ql_proj)q), ql_proj_name((ql_proj)q));
        size_t k = strlen(want);
        if (strncmp(rest, want, k)) continue;
        if (!strcmp(rest + k, "weight"))
            *is_bias = 0;
        else if (!strcmp(rest + k, "bias"))
            *is_bias = 1;
        else
            return -1;
        *layer = l;
        *p = (ql_proj)q;
        return 0;
    }
    return -1;
}

static int has_bias(const ql_hf_config *c, ql_proj p) {
    if (p <= QL_PROJ_V) return c->qkv_bias || c->attention_bias;
    if (p == QL_PROJ_O) return c->attention_bias;
    return c->mlp_bias;
}

/* Elements of a tensor this source has, or 0 when it has no such tensor. */
static int64_t numel(const ql_model_source *s, const char *name, int *kind) {
    const ql_hf_config *c = &s->cfg;
    int layer, is_bias;
    ql_proj p;
    *kind = 0; /* 0 linear/bias, 1 norm, 2 embedding */
    if (!strcmp(name, "model.embed_tokens.weight") ||
        (!c->tie_word_embeddings && !strcmp(name, "lm_head.weight"))) {
        *kind = 2;
        return c->vocab_size * c->hidden_size;
    }
    if (!strcmp(name, "model.norm.weight")) {
        *kind = 1;
        return c->hidden_size;
    }
    int l = -1, n = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &n) == 1 && n > 0 && l >= 0 &&
        l < c->num_hidden_layers &&
        (!strcmp(name + n, "input_layernorm.weight") ||
         !strcmp(name + n, "post_attention_layernorm.weight"))) {
        *kind = 1;
        return c->hidden_size;
    }
    if (parse_linear(name, &layer, &p, &is_bias) || layer < 0 || layer >= c->num_hidden_layers)
        return 0;
    int64_t in, out;
    ql_proj_shape(c, p, &in, &out);
    if (is_bias) return has_bias(c, p) ? out : 0;
    return in * out;
}

static int rnd_has(const ql_model_source *s, const char *name) {
    int kind;
    return numel(s, name, &kind) > 0;
}

static float std_of(const rnd_impl *r) { return r->o.std > 0 ? r->o.std : 0.02f; }

static ql_status rnd_get_f32(const ql_model_source *s, const char *name, float *out) {
    const rnd_impl *r = s->impl;
    int kind;
    int64_t n = numel(s, name, &kind);
    if (n <= 0) return ql_error(QL_ENOTFOUND, "%s: no tensor '%s'", s->path, name);
    ql_rng g;
    ql_rng_seed_stream(&g, r->o.seed, name_hash(name));
    float sd = std_of(r);
    if (kind == 1) {
        for (int64_t i = 0; i < n; i++) out[i] = 1.0f + 0.02f * ql_rng_normal(&g);
    } else if (kind == 2) {
        /* Embeddings are large (an 8B model's are 525M values each):
         * uniform with the same standard deviation, two values per draw. */
        const float a = sd * 1.7320508f / 2147483648.0f; /* sqrt(3)·sd / 2^31 */
        int64_t i = 0;
        for (; i + 2 <= n; i += 2) {
            uint64_t u = ql_rng_u64(&g);
            out[i] = a * (float)((int64_t)(u & 0xffffffffu) - 2147483648LL);
            out[i + 1] = a * (float)((int64_t)(u >> 32) - 2147483648LL);
        }
        if (i < n) out[i] = a * (float)((int64_t)(ql_rng_u64(&g) & 0xffffffffu) - 2147483648LL);
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = sd * ql_rng_normal(&g);
    }
    return QL_OK;
}

static int rnd_is_q4(const ql_model_source *s, const char *name) {
    const rnd_impl *r = s->impl;
    int layer, is_bias;
    ql_proj p;
    return r->o.q4 && !parse_linear(name, &layer, &p, &is_bias) && !is_bias && rnd_has(s, name);
}

static ql_status rnd_get_q4(const ql_model_source *s, const char *name, ql_q4 *q) {
    const rnd_impl *r = s->impl;
    int layer, is_bias;
    ql_proj p;
    memset(q, 0, sizeof *q);
    if (!rnd_is_q4(s, name) || parse_linear(name, &layer, &p, &is_bias))
        return ql_error(QL_ENOTFOUND, "%s: no 4-bit tensor '%s'", s->path, name);
    int64_t in, out;
    ql_proj_shape(&s->cfg, p, &in, &out);
    q->type = r->o.quant_type;
    q->rows = out;
    q->cols = in;
    q->n = in * out;
    q->blocksize = r->o.blocksize;
    q->n_blocks = (q->n + q->blocksize - 1) / q->blocksize;
    q->double_quant = r->o.double_quant;
    QL_TRY(ql_q4_alloc(q));
    ql_rng g;
    ql_rng_seed_stream(&g, r->o.seed, name_hash(name));
    /* Uniform codes: 16 bytes of nibbles per two draws. */
    int64_t nb = ql_q4_packed_bytes(q), i = 0;
    for (; i + 8 <= nb; i += 8) {
        uint64_t u = ql_rng_u64(&g);
        memcpy(q->packed + i, &u, 8);
    }
    for (; i < nb; i++) q->packed[i] = (uint8_t)ql_rng_u64(&g);
    if (q->n & 1) q->packed[nb - 1] &= 0xf0; /* the padding nibble, as bitsandbytes leaves it */
    /* The NF4 code book's values have an RMS near 0.5 of the block absmax. */
    float amax = std_of(r) / 0.5f;
    if (q->double_quant) {
        /* absmax = map[code]·nested + offset with |map| <= 1: within ±10%
         * of amax whatever the code. */
        for (int64_t b = 0; b < q->n_blocks; b++) q->absmax_q[b] = (uint8_t)ql_rng_u64(&g);
        for (int64_t b = 0; b < ql_q4_nested_blocks(q); b++) q->nested_absmax[b] = 0.1f * amax;
        q->nested_offset = amax;
    } else {
        for (int64_t b = 0; b < q->n_blocks; b++)
            q->absmax[b] = amax * ql_rng_uniform_range(&g, 0.9f, 1.1f);
    }
    return QL_OK;
}

static void rnd_close(ql_model_source *s) {
    free(s->impl);
    s->impl = NULL;
}

ql_status ql_random_source_open(const ql_hf_config *cfg, const ql_random_source_opts *o,
                                ql_model_source *s) {
    memset(s, 0, sizeof *s);
    if (o->q4 && !ql_q4_blocksize_ok(o->blocksize))
        return ql_error(QL_EINVAL, "random model: block size %d is not one bitsandbytes allows",
                        o->blocksize);
    rnd_impl *r = ql_calloc(1, sizeof *r, "random model");
    if (!r) return QL_ENOMEM;
    r->o = *o;
    s->kind = QL_SOURCE_RANDOM;
    snprintf(s->path, sizeof s->path, "random:%s", cfg->model_type[0] ? cfg->model_type : "llama");
    s->cfg = *cfg;
    s->cfg.json = NULL;
    s->has = rnd_has;
    s->get_f32 = rnd_get_f32;
    s->is_q4 = rnd_is_q4;
    s->get_q4 = rnd_get_q4;
    s->close = rnd_close;
    s->impl = r;
    return QL_OK;
}
