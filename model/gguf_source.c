/* A GGUF file as a model source: the config comes from the {arch}.* metadata,
 * tensors get transformers' names and [out, in] shapes, and the Q/K rows of
 * Llama-style files are put back into the order HF's half-split RoPE expects
 * (FORMATS.md §5.5). GGUF quantized types are dequantized to float32 here;
 * the model loader requantizes them to NF4 like any other float weight. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_lora.h"
#include "model/hf_model.h"
#include "model/source.h"

typedef struct gsrc {
    ql_gguf_file f;
    ql_hf_expected *exp; /* sorted by HF name */
    size_t n_exp;
    const ql_gguf_tensor **t; /* t[i] backs exp[i]; NULL for an absent optional one */
    int64_t *unpermute_heads; /* > 0: rows are un-permuted in groups of this many heads */
} gsrc;

/* ---- names ---------------------------------------------------------------- */

static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
};

/* The GGUF name of an HF tensor (model/source.h). */
int ql_gguf_name_of(const char *hf, char *buf, size_t n) {
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(buf, n, "token_embd.weight"), 1;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(buf, n, "output_norm.weight"), 1;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(buf, n, "output.weight"), 1;
    long layer;
    int used = 0;
    if (sscanf(hf, "model.layers.%ld.%n", &layer, &used) != 1 || used == 0) return 0;
    const char *rest = hf + used;
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        size_t k = strlen(layer_names[i].hf);
        if (!strncmp(rest, layer_names[i].hf, k) && rest[k] == '.') {
            snprintf(buf, n, "blk.%ld.%s%s", layer, layer_names[i].gguf, rest + k);
            return 1;
        }
    }
    return 0;
}

/* ---- metadata --------------------------------------------------------------- */

/* The shortest decimal that reads back as the same float32, as a double:
 * a FLOAT32 1e-5 becomes 1e-05 (as numpy prints it and config.json has it),
 * not 9.99999974737875e-06. */
static double f32_shortest(float v) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

/* A FLOAT32 key gets f32_shortest; FLOAT64 and integers are kept. */
static ql_status get_num(const ql_gguf_file *f, const char *key, double *out) {
    QL_TRY(ql_gguf_get_f64(f, key, out));
    const ql_gguf_kv *kv = ql_gguf_find_kv(f, key);
    if (kv->type == QL_GGUF_F32) *out = f32_shortest((float)*out);
    return QL_OK;
}

static ql_status get_pos(const ql_gguf_file *f, const char *key, int64_t *out) {
    uint64_t v;
    QL_TRY(ql_gguf_get_u64(f, key, &v));
    if (v == 0 || v > (uint64_t)INT32_MAX)
        return ql_error(QL_EFORMAT, "%s: metadata key '%s' is %" PRIu64 ", expected 1..%d", f->path,
                        key, v, INT32_MAX);
    *out = (int64_t)v;
    return QL_OK;
}

static ql_status get_pos_opt(const ql_gguf_file *f, const char *key, int64_t dflt, int64_t *out) {
    if (!ql_gguf_find_kv(f, key)) {
        *out = dflt;
        return QL_OK;
    }
    return get_pos(f, key, out);
}

static int set(json_t *o, const char *k, json_t *v) { return json_object_set_new(o, k, v); }

/* rope_freqs.weight is how llama.cpp's converter stores Llama 3.1/3.2's
 * "llama3" RoPE scaling: one divisor per frequency (FORMATS.md §5.1), and no
 * metadata. Recover the HF rope_scaling by taking the factor from the largest
 * divisor and checking that Meta's low/high frequency factors (1, 4) and
 * original context (8192, or {arch}.rope.scaling.original_context_length)
 * reproduce every divisor. */
static ql_status rope_from_freqs(const ql_gguf_file *f, const char *arch, int64_t head_dim,
                                 double theta, json_t *cfg) {
    const ql_gguf_tensor *t = ql_gguf_find_tensor(f, "rope_freqs.weight");
    if (!t) return QL_OK;
    if (t->n_dims != 1 || t->numel != head_dim / 2)
        return ql_error(QL_EFORMAT,
                        "%s: tensor 'rope_freqs.weight' has %" PRId64
                        " elements, expected head_dim / 2 = %" PRId64,
                        f->path, t->numel, head_dim / 2);
    float v[512];
    if (t->numel > (int64_t)(sizeof v / sizeof v[0]))
        return ql_error(QL_EUNSUPPORTED, "%s: tensor 'rope_freqs.weight' is too long", f->path);
    QL_TRY(ql_gguf_tensor_f32(f, t, v));
    double factor = 0;
    for (int64_t i = 0; i < t->numel; i++) factor = fmax(factor, (double)v[i]);
    if (!(factor >= 1))
        return ql_error(QL_EUNSUPPORTED, "%s: tensor 'rope_freqs.weight' holds factors below 1",
                        f->path);
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    int64_t old_ctx = 0;
    QL_TRY(get_pos_opt(f, key, 8192, &old_ctx));
    const double low = 1, high = 4, pi = 3.14159265358979323846;
    const double low_wl = (double)old_ctx / low, high_wl = (double)old_ctx / high;
    for (int64_t i = 0; i < t->numel; i++) {
        double inv = 1.0 / pow(theta, (double)(2 * i) / (double)head_dim);
        double wl = 2 * pi / inv, want;
        if (wl < high_wl)
            want = 1;
        else if (wl > low_wl)
            want = factor;
        else {
            double smooth = ((double)old_ctx / wl - low) / (high - low);
            want = 1 / ((1 - smooth) / factor + smooth);
        }
        if (fabs(v[i] - want) > 1e-4 * want)
            return ql_error(QL_EUNSUPPORTED,
                            "%s: tensor 'rope_freqs.weight' element %" PRId64
                            " is %g, but llama3 RoPE scaling (factor %g, low_freq_factor 1, "
                            "high_freq_factor 4, original_max_position_embeddings %" PRId64
                            ") gives %g; other RoPE frequency tables are not supported",
                            f->path, i, (double)v[i], factor, old_ctx, want);
    }
    if (factor == 1) return QL_OK; /* all ones: no scaling */
    json_t *rs = json_object();
    int r = !rs;
    r = r || set(rs, "rope_type", json_string("llama3"));
    r = r || set(rs, "factor", json_real(factor));
    r = r || set(rs, "low_freq_factor", json_real(low));
    r = r || set(rs, "high_freq_factor", json_real(high));
    r = r || set(rs, "original_max_position_embeddings", json_integer(old_ctx));
    r = r || set(cfg, "rope_scaling", rs);
    return r ? ql_error(QL_ENOMEM, "out of memory reading %s", f->path) : QL_OK;
}

static ql_status rope_from_keys(const ql_gguf_file *f, const char *arch, json_t *cfg) {
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (!ql_gguf_find_kv(f, key)) return QL_OK;
    ql_gguf_str ty;
    QL_TRY(ql_gguf_get_str(f, key, &ty));
    if (ty.len == 4 && !memcmp(ty.p, "none", 4)) return QL_OK;
    if (!(ty.len == 6 && !memcmp(ty.p, "linear", 6)))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: metadata key '%s' is '%.*s'; supported RoPE scalings are none and "
                        "linear (llama3 comes as rope_freqs.weight)",
                        f->path, key, (int)(ty.len > 64 ? 64 : ty.len), ty.p);
    snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
    double factor;
    QL_TRY(get_num(f, key, &factor));
    json_t *rs = json_object();
    int r = !rs;
    r = r || set(rs, "rope_type", json_string("linear"));
    r = r || set(rs, "factor", json_real(factor));
    r = r || set(cfg, "rope_scaling", rs);
    return r ? ql_error(QL_ENOMEM, "out of memory reading %s", f->path) : QL_OK;
}

static const char *hf_architecture(const char *arch) {
    if (!strcmp(arch, "qwen2")) return "Qwen2ForCausalLM";
    if (!strcmp(arch, "mistral")) return "MistralForCausalLM";
    return "LlamaForCausalLM";
}

/* general.file_type for unquantized files; quantized ones were almost always
 * made from bf16 checkpoints, which is also what scripts/gguf_to_hf.py says. */
static const char *torch_dtype_of(const ql_gguf_file *f) {
    uint64_t ft;
    if (ql_gguf_find_kv(f, "general.file_type") &&
        ql_gguf_get_u64(f, "general.file_type", &ft) == QL_OK) {
        if (ft == 0) return "float32";
        if (ft == 1) return "float16";
    }
    return "bfloat16";
}

/* The config.json transformers would have for this file, as JSON, so that
 * ql_hf_config_parse applies the same checks as to a directory. */
static ql_status build_config(const ql_gguf_file *f, const char *arch, json_t *cfg) {
    char key[160];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    int64_t hidden = 0, ff = 0, layers = 0, heads = 0, kv_heads = 0, ctx = 0, head_dim = 0,
            vocab = 0;
    QL_TRY(get_pos(f, K("embedding_length"), &hidden));
    QL_TRY(get_pos(f, K("feed_forward_length"), &ff));
    QL_TRY(get_pos(f, K("block_count"), &layers));
    QL_TRY(get_pos(f, K("attention.head_count"), &heads));
    QL_TRY(get_pos_opt(f, K("attention.head_count_kv"), heads, &kv_heads));
    QL_TRY(get_pos(f, K("context_length"), &ctx));
    if (ql_gguf_find_kv(f, K("attention.key_length"))) {
        QL_TRY(get_pos(f, key, &head_dim));
    } else {
        if (hidden % heads)
            return ql_error(QL_EFORMAT,
                            "%s: %s.embedding_length (%" PRId64
                            ") is not a multiple of %s.attention.head_count (%" PRId64
                            ") and there is no %s.attention.key_length",
                            f->path, arch, hidden, arch, heads, arch);
        head_dim = hidden / heads;
    }
    int64_t v = 0;
    QL_TRY(get_pos_opt(f, K("attention.value_length"), head_dim, &v));
    if (v != head_dim)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: %s is %" PRId64 " but the key length (head_dim) is %" PRId64
                        "; different key and value head sizes are not supported",
                        f->path, key, v, head_dim);
    QL_TRY(get_pos_opt(f, K("rope.dimension_count"), head_dim, &v));
    if (v != head_dim)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: %s is %" PRId64 " but head_dim is %" PRId64
                        "; partial rotary embeddings are not supported",
                        f->path, key, v, head_dim);
    if (head_dim % 2)
        return ql_error(QL_EFORMAT, "%s: head_dim %" PRId64 " is odd; RoPE needs pairs", f->path,
                        head_dim);
    /* llama.cpp takes {arch}.vocab_size when present, else the token list. */
    const ql_gguf_kv *toks = ql_gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (toks && (toks->type != QL_GGUF_ARRAY || toks->elem != QL_GGUF_STRING))
        return ql_error(QL_EFORMAT,
                        "%s: metadata key 'tokenizer.ggml.tokens' is not an array of STRING",
                        f->path);
    if (ql_gguf_find_kv(f, K("vocab_size"))) {
        QL_TRY(get_pos(f, key, &vocab));
        if (toks && toks->count > (uint64_t)vocab)
            return ql_error(QL_EFORMAT,
                            "%s: tokenizer.ggml.tokens has %" PRIu64 " tokens but %s is %" PRId64,
                            f->path, toks->count, key, vocab);
    } else if (toks) {
        if (toks->count == 0 || toks->count > (uint64_t)INT32_MAX)
            return ql_error(QL_EFORMAT, "%s: tokenizer.ggml.tokens has %" PRIu64 " tokens", f->path,
                            toks->count);
        vocab = (int64_t)toks->count;
    } else {
        return ql_error(QL_EFORMAT,
                        "%s: neither %s nor tokenizer.ggml.tokens gives the vocabulary size",
                        f->path, key);
    }
    double eps, theta = 10000.0;
    QL_TRY(get_num(f, K("attention.layer_norm_rms_epsilon"), &eps));
    if (ql_gguf_find_kv(f, K("rope.freq_base"))) QL_TRY(get_num(f, key, &theta));
    if (!(eps > 0) || !(theta > 0))
        return ql_error(QL_EFORMAT,
                        "%s: %s.attention.layer_norm_rms_epsilon (%g) and %s.rope.freq_base (%g) "
                        "must be positive",
                        f->path, arch, eps, arch, theta);
#undef K
    int has_bias = ql_gguf_find_tensor(f, "blk.0.attn_q.bias") != NULL;
    int mlp_bias = ql_gguf_find_tensor(f, "blk.0.ffn_gate.bias") != NULL;
    json_t *archs = json_array();
    int r = !archs || json_array_append_new(archs, json_string(hf_architecture(arch)));
    r = r || set(cfg, "architectures", archs);
    r = r || set(cfg, "model_type", json_string(arch));
    r = r || set(cfg, "vocab_size", json_integer(vocab));
    r = r || set(cfg, "hidden_size", json_integer(hidden));
    r = r || set(cfg, "intermediate_size", json_integer(ff));
    r = r || set(cfg, "num_hidden_layers", json_integer(layers));
    r = r || set(cfg, "num_attention_heads", json_integer(heads));
    r = r || set(cfg, "num_key_value_heads", json_integer(kv_heads));
    r = r || set(cfg, "head_dim", json_integer(head_dim));
    r = r || set(cfg, "hidden_act", json_string("silu"));
    r = r || set(cfg, "max_position_embeddings", json_integer(ctx));
    r = r || set(cfg, "rms_norm_eps", json_real(eps));
    r = r || set(cfg, "rope_theta", json_real(theta));
    r = r || set(cfg, "rope_scaling", json_null());
    /* Qwen2's q/k/v biases are implied by its model_type. */
    r = r || set(cfg, "attention_bias", json_boolean(has_bias && strcmp(arch, "qwen2")));
    r = r || set(cfg, "mlp_bias", json_boolean(mlp_bias));
    r = r || set(cfg, "tie_word_embeddings",
                 json_boolean(ql_gguf_find_tensor(f, "output.weight") == NULL));
    r = r || set(cfg, "torch_dtype", json_string(torch_dtype_of(f)));
    static const char *ids[][2] = {
        {"bos", "bos_token_id"}, {"eos", "eos_token_id"}, {"padding", "pad_token_id"}};
    for (int i = 0; i < 3 && !r; i++) {
        int64_t id;
        QL_TRY(ql_gguf_token_id(f, ids[i][0], &id));
        if (id >= 0) r = set(cfg, ids[i][1], json_integer(id));
    }
    if (r) return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    QL_TRY(rope_from_keys(f, arch, cfg));
    return rope_from_freqs(f, arch, head_dim, theta, cfg);
}

/* ---- tensors ----------------------------------------------------------------- */

static ql_status check_tensors(gsrc *g, const ql_hf_config *c, int permuted) {
    const ql_gguf_file *f = &g->f;
    char gname[QL_HF_NAME_MAX + 32], got[96], want[96];
    unsigned char *used = calloc(f->n_tensors ? f->n_tensors : 1, 1);
    g->t = calloc(g->n_exp ? g->n_exp : 1, sizeof *g->t);
    g->unpermute_heads = calloc(g->n_exp ? g->n_exp : 1, sizeof *g->unpermute_heads);
    if (!used || !g->t || !g->unpermute_heads) {
        free(used);
        return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    }
    ql_status st = QL_OK;
    for (size_t i = 0; i < g->n_exp && st == QL_OK; i++) {
        const ql_hf_expected *e = &g->exp[i];
        if (!ql_gguf_name_of(e->name, gname, sizeof gname)) {
            st = ql_error(QL_EINTERNAL, "%s: no GGUF name for '%s'", f->path, e->name);
            break;
        }
        /* Expected shapes are HF [out, in]; GGUF lists the inner dim first. */
        int64_t wshape[2] = {e->ndim == 2 ? e->shape[1] : e->shape[0], e->shape[0]};
        snprintf(want, sizeof want, e->ndim == 2 ? "[%" PRId64 ", %" PRId64 "]" : "[%" PRId64 "]",
                 wshape[0], wshape[1]);
        const ql_gguf_tensor *t = ql_gguf_find_tensor(f, gname);
        if (!t) {
            if (e->optional) continue;
            st = ql_error(QL_EFORMAT,
                          "%s: missing tensor '%s' (Hugging Face '%s', expected ne %s = %s)",
                          f->path, gname, e->name, want, e->dims);
            break;
        }
        int same = t->n_dims == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->ne[d] == wshape[d];
        if (!same) {
            int n = snprintf(got, sizeof got, "[");
            for (int d = 0; d < t->n_dims; d++)
                n += snprintf(got + n, sizeof got - (size_t)n, "%s%" PRId64, d ? ", " : "",
                              t->ne[d]);
            snprintf(got + n, sizeof got - (size_t)n, "]");
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s' (Hugging Face '%s') has ne %s, expected %s from the "
                          "metadata (HF shape %s)",
                          f->path, gname, e->name, got, want, e->dims);
            break;
        }
        if (!ql_gguf_can_dequantize(t->type)) {
            st = ql_gguf_tensor_f32(f, t, NULL); /* records the unsupported-type message */
            break;
        }
        g->t[i] = t;
        used[t - f->tensors] = 1;
        if (permuted && strstr(e->name, ".self_attn.q_proj."))
            g->unpermute_heads[i] = c->num_attention_heads;
        if (permuted && strstr(e->name, ".self_attn.k_proj."))
            g->unpermute_heads[i] = c->num_key_value_heads;
    }
    for (size_t k = 0; k < f->n_tensors && st == QL_OK; k++) {
        const char *name = f->tensors[k].name;
        if (used[k] || !strcmp(name, "rope_freqs.weight")) continue;
        st = ql_error(QL_EFORMAT,
                      "%s: unexpected tensor '%s' (not part of a %s model with this metadata)",
                      f->path, name, c->model_type);
    }
    free(used);
    return st;
}

static size_t find_exp(const gsrc *g, const char *name) {
    size_t lo = 0, hi = g->n_exp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->exp[mid].name, name);
        if (c == 0) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

static int src_has(const ql_model_source *s, const char *name) {
    const gsrc *g = s->impl;
    size_t i = find_exp(g, name);
    return i != (size_t)-1 && g->t[i] != NULL;
}

static ql_status src_get_f32(const ql_model_source *s, const char *name, float *out) {
    const gsrc *g = s->impl;
    size_t i = find_exp(g, name);
    if (i == (size_t)-1 || !g->t[i])
        return ql_error(QL_ENOTFOUND, "%s: no tensor '%s' in this model", s->path, name);
    const ql_gguf_tensor *t = g->t[i];
    QL_TRY(ql_gguf_tensor_f32(&g->f, t, out));
    if (g->unpermute_heads[i]) {
        int64_t rows = t->n_dims == 2 ? t->ne[1] : t->ne[0], cols = t->n_dims == 2 ? t->ne[0] : 1;
        QL_TRY(ql_gguf_unpermute_qk_rows(out, rows, cols, g->unpermute_heads[i], name));
    }
    return QL_OK;
}

static int src_is_q4(const ql_model_source *s, const char *name) { return 0; }

static ql_status src_get_q4(const ql_model_source *s, const char *name, ql_q4 *out) {
    return ql_error(QL_EUNSUPPORTED,
                    "%s: '%s': a GGUF holds no bitsandbytes 4-bit tensors (use get_f32)", s->path,
                    name);
}

static void src_close(ql_model_source *s) {
    gsrc *g = s->impl;
    if (g) {
        ql_gguf_close(&g->f);
        free(g->exp);
        free(g->t);
        free(g->unpermute_heads);
        free(g);
    }
    ql_hf_config_free(&s->cfg);
    s->impl = NULL;
}

const ql_gguf_file *ql_gguf_source_file(const struct ql_model_source *s) {
    if (!s || s->kind != QL_SOURCE_GGUF || !s->impl || s->close != src_close) return NULL;
    return &((const gsrc *)s->impl)->f;
}

static ql_status open_impl(const char *path, ql_model_source *s, gsrc *g) {
    ql_gguf_file *f = &g->f;
    QL_TRY(ql_gguf_open(path, f));
    ql_gguf_str a;
    if (!ql_gguf_find_kv(f, "general.architecture"))
        return ql_error(QL_EFORMAT, "%s: metadata key 'general.architecture' is missing", path);
    QL_TRY(ql_gguf_get_str(f, "general.architecture", &a));
    char arch[32];
    if (a.len >= sizeof arch)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: general.architecture '%.*s' is not supported (llama, mistral, qwen2)",
                        path, (int)(a.len > 64 ? 64 : a.len), a.p);
    memcpy(arch, a.p, a.len);
    arch[a.len] = '\0';
    if (strcmp(arch, "llama") && strcmp(arch, "mistral") && strcmp(arch, "qwen2"))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: general.architecture '%s' is not supported (llama, mistral, qwen2)",
                        path, arch);

    json_t *cfg = json_object();
    if (!cfg) return ql_error(QL_ENOMEM, "out of memory reading %s", path);
    ql_status st = build_config(f, arch, cfg);
    char *text = st == QL_OK ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    if (st != QL_OK) return st;
    if (!text) return ql_error(QL_ENOMEM, "out of memory reading %s", path);
    char where[4200];
    snprintf(where, sizeof where, "%s (metadata as config.json)", path);
    st = ql_hf_config_parse(text, strlen(text), where, &s->cfg);
    free(text);
    QL_TRY(st);

    if (ql_gguf_find_kv(f, "tokenizer.ggml.model")) {
        ql_gguf_str tm;
        QL_TRY(ql_gguf_get_str(f, "tokenizer.ggml.model", &tm));
        if (tm.len >= sizeof s->tokenizer)
            return ql_error(QL_EFORMAT, "%s: tokenizer.ggml.model is %" PRIu64 " bytes long", path,
                            tm.len);
        memcpy(s->tokenizer, tm.p, tm.len);
        s->tokenizer[tm.len] = '\0';
    }

    /* The expected-tensor list grows with block_count: make sure the layers
     * exist before listing them, so a corrupt count cannot allocate much. */
    for (int64_t i = 0; i < s->cfg.num_hidden_layers; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", (long long)i);
        if (!ql_gguf_find_tensor(f, name))
            return ql_error(QL_EFORMAT,
                            "%s: missing tensor '%s' (Hugging Face "
                            "'model.layers.%lld.input_layernorm.weight'; %s.block_count is %lld)",
                            path, name, (long long)i, arch, (long long)s->cfg.num_hidden_layers);
    }
    QL_TRY(ql_hf_expected_tensors(&s->cfg, &g->exp, &g->n_exp));
    /* llama.cpp's converter permutes Q/K for its interleaved RoPE in Llama
     * and Mistral files; qwen2 files use NeoX RoPE and keep HF's order. */
    return check_tensors(g, &s->cfg, strcmp(arch, "qwen2") != 0);
}

ql_status ql_gguf_source_open(const char *path, ql_model_source *s) {
    memset(s, 0, sizeof *s);
    s->kind = QL_SOURCE_GGUF;
    if (strlen(path) >= sizeof s->path)
        return ql_error(QL_EINVAL, "%.200s...: path too long", path);
    snprintf(s->path, sizeof s->path, "%s", path);
    gsrc *g = calloc(1, sizeof *g);
    if (!g) return ql_error(QL_ENOMEM, "out of memory opening %s", path);
    s->impl = g;
    s->has = src_has;
    s->get_f32 = src_get_f32;
    s->is_q4 = src_is_q4;
    s->get_q4 = src_get_q4;
    s->close = src_close;
    ql_status st = open_impl(path, s, g);
    if (st != QL_OK) {
        src_close(s);
        memset(s, 0, sizeof *s);
    }
    return st;
}
