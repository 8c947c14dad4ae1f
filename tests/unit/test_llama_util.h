/* Helpers for the model tests (test_llama_*.c): a tiny random Llama-family
 * model written as a Hugging Face directory with ql_st_write, batches, and
 * adapter access through the backend's upload/download. */
#ifndef QL_TEST_LLAMA_UTIL_H
#define QL_TEST_LLAMA_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "model/llama.h"
#include "model/safetensors.h"

typedef struct tl_spec {
    const char *arch, *model_type;
    int layers, hidden, inter, heads, kv, head_dim, vocab;
    int tied, qkv_bias;
    double rope_theta;
    uint64_t seed;
    /* For the bad-input tests: what config.json says differs from the tensors. */
    int cfg_hidden, cfg_vocab, cfg_layers; /* 0 = as the tensors */
    const char *skip_tensor;               /* leave this tensor out */
    const char *extra_json;                /* appended to config.json's object, starting with ',' */
    const char *act;                       /* hidden_act; NULL = silu */
} tl_spec;

/* Two layers, GQA 4 / 2 heads of 16, vocabulary 50: the tiny model. */
static inline tl_spec tl_default(void) {
    tl_spec s = {.arch = "LlamaForCausalLM",
                 .model_type = "llama",
                 .layers = 2,
                 .hidden = 64,
                 .inter = 96,
                 .heads = 4,
                 .kv = 2,
                 .head_dim = 16,
                 .vocab = 50,
                 .rope_theta = 10000.0,
                 .seed = 7};
    return s;
}

typedef struct tl_tensor {
    char name[128];
    int64_t shape[2];
    int ndim;
    float *data;
} tl_tensor;

static inline void tl_fill(ql_rng *r, float *p, int64_t n, float center, float spread) {
    for (int64_t i = 0; i < n; i++) p[i] = center + ql_rng_uniform_range(r, -spread, spread);
}

static inline int tl_write_model(const char *dir, const tl_spec *s) {
    mkdir(dir, 0755);
    int h = s->hidden, q = s->heads * s->head_dim, kv = s->kv * s->head_dim, im = s->inter;
    int n_max = 4 + s->layers * 12;
    tl_tensor *t = calloc((size_t)n_max, sizeof *t);
    int n = 0;
    ql_rng r;
    ql_rng_seed(&r, s->seed);
#define TL_ADD(nm, d0, d1, center, spread)                                                         \
    do {                                                                                           \
        tl_tensor *x_ = &t[n++];                                                                   \
        snprintf(x_->name, sizeof x_->name, "%s", nm);                                             \
        x_->shape[0] = d0;                                                                         \
        x_->shape[1] = d1;                                                                         \
        x_->ndim = (d1) ? 2 : 1;                                                                   \
        int64_t ne_ = (int64_t)(d0) * ((d1) ? (d1) : 1);                                           \
        x_->data = malloc((size_t)ne_ * sizeof(float));                                            \
        tl_fill(&r, x_->data, ne_, center, spread);                                                \
    } while (0)
    char nm[128];
    TL_ADD("model.embed_tokens.weight", s->vocab, h, 0.0f, 0.5f);
    TL_ADD("model.norm.weight", h, 0, 1.0f, 0.2f);
    if (!s->tied) TL_ADD("lm_head.weight", s->vocab, h, 0.0f, 0.3f);
    static const char *pn[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                "gate_proj", "up_proj", "down_proj"};
    for (int l = 0; l < s->layers; l++) {
        int outs[7] = {q, kv, kv, h, im, im, h}, ins[7] = {h, h, h, q, h, h, im};
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        TL_ADD(nm, h, 0, 1.0f, 0.2f);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        TL_ADD(nm, h, 0, 1.0f, 0.2f);
        for (int p = 0; p < 7; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s.%s.weight", l, p < 4 ? "self_attn" : "mlp",
                     pn[p]);
            TL_ADD(nm, outs[p], ins[p], 0.0f, (float)(1.7 / sqrt((double)ins[p])));
            if (s->qkv_bias && p < 3) {
                snprintf(nm, sizeof nm, "model.layers.%d.self_attn.%s.bias", l, pn[p]);
                TL_ADD(nm, outs[p], 0, 0.0f, 0.5f);
            }
        }
    }
#undef TL_ADD
    ql_st_entry *e = calloc((size_t)n, sizeof *e);
    int ne = 0;
    for (int i = 0; i < n; i++) {
        if (s->skip_tensor && !strcmp(s->skip_tensor, t[i].name)) continue;
        e[ne].name = t[i].name;
        e[ne].dtype = QL_DT_F32;
        e[ne].ndim = t[i].ndim;
        e[ne].shape[0] = t[i].shape[0];
        e[ne].shape[1] = t[i].shape[1];
        e[ne].data = t[i].data;
        e[ne].nbytes = (uint64_t)(t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1)) * 4;
        ne++;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = ql_st_write(path, e, (size_t)ne) == QL_OK ? 0 : -1;
    for (int i = 0; i < n; i++) free(t[i].data);
    free(t);
    free(e);
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"%s\"], \"model_type\": \"%s\", \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
             "\"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
             "\"rms_norm_eps\": 1e-05, \"rope_theta\": %g, \"tie_word_embeddings\": %s, "
             "\"hidden_act\": \"%s\", \"torch_dtype\": \"float32\"%s}",
             s->arch, s->model_type, s->cfg_hidden ? s->cfg_hidden : h, im,
             s->cfg_layers ? s->cfg_layers : s->layers, s->heads, s->kv, s->head_dim,
             s->cfg_vocab ? s->cfg_vocab : s->vocab, s->rope_theta, s->tied ? "true" : "false",
             s->act ? s->act : "silu", s->extra_json ? s->extra_json : "");
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(cfg, f);
    fclose(f);
    return rc;
}

/* A batch of random tokens with some ignored targets (every 5th). */
typedef struct tl_batch {
    ql_batch b;
    int32_t *ids, *targets, *pos, *doc;
} tl_batch;

static inline tl_batch tl_random_batch(int64_t batch, int64_t seq, int vocab, uint64_t seed) {
    tl_batch t;
    memset(&t, 0, sizeof t);
    int64_t T = batch * seq;
    t.ids = malloc((size_t)T * sizeof(int32_t));
    t.targets = malloc((size_t)T * sizeof(int32_t));
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int64_t i = 0; i < T; i++) {
        t.ids[i] = (int32_t)ql_rng_below(&r, (uint64_t)vocab);
        t.targets[i] = i % 5 == 3 ? -100 : (int32_t)ql_rng_below(&r, (uint64_t)vocab);
    }
    t.b = (ql_batch){.batch = batch, .seq = seq, .ids = t.ids, .targets = t.targets};
    return t;
}

static inline void tl_batch_free(tl_batch *t) {
    free(t->ids), free(t->targets), free(t->pos), free(t->doc);
}

/* Host copies of the adapter vectors (the backend may not be the host). */
static inline float *tl_download(const ql_backend *be, const float *src, int64_t n) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (be->download(p, src, (size_t)n * sizeof(float)) != QL_OK) abort();
    return p;
}

static inline void tl_upload(const ql_backend *be, float *dst, const float *src, int64_t n) {
    if (be->upload(dst, src, (size_t)n * sizeof(float)) != QL_OK) abort();
}

static inline void tl_zero_grads(const ql_backend *be, ql_adapters *a) {
    float *z = calloc((size_t)(a->n ? a->n : 1), sizeof(float));
    tl_upload(be, a->grads, z, a->n);
    free(z);
}

/* Fresh temporary directory under /tmp, with a tag in its name. */
static inline const char *tl_tmpdir(const char *tag) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "/tmp/ql_test_%s_XXXXXX", tag);
    if (!mkdtemp(buf[k])) abort();
    return buf[k];
}

#endif
