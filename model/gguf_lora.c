/* llama.cpp LoRA adapter files (model/gguf_lora.h). */
#include "model/gguf_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "model/hf_config.h"
#include "model/lora.h"
#include "model/source.h"

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

ql_status ql_gguf_lora_base_of(const char *model, ql_gguf_lora_base *b) {
    memset(b, 0, sizeof *b);
    ql_hf_config c;
    QL_TRY(ql_model_config_load(model, &c));
    b->n_heads = c.num_attention_heads;
    b->n_kv_heads = c.num_key_value_heads;
    ql_status st = QL_OK;
    if (ends_with(model, ".gguf")) {
        /* The base llama.cpp will load is this file: its architecture, as is. */
        ql_gguf_file f;
        ql_gguf_str a;
        st = ql_gguf_open(model, &f);
        if (st == QL_OK) st = ql_gguf_get_str(&f, "general.architecture", &a);
        if (st == QL_OK)
            snprintf(b->arch, sizeof b->arch, "%.*s",
                     (int)(a.len < sizeof b->arch ? a.len : sizeof b->arch - 1), a.p);
        ql_gguf_close(&f);
    } else {
        /* convert_hf_to_gguf.py writes LlamaForCausalLM and MistralForCausalLM
         * as "llama", Qwen2ForCausalLM as "qwen2". */
        snprintf(b->arch, sizeof b->arch, "%s", strcmp(c.model_type, "qwen2") ? "llama" : "qwen2");
    }
    ql_hf_config_free(&c);
    /* As model/gguf_source.c reads them: llama and mistral GGUFs hold Q/K in
     * the interleaved RoPE order, qwen2 in Hugging Face's. */
    b->permute_qk = strcmp(b->arch, "qwen2") != 0;
    return st;
}

/* GGUF row h*D + 2i + j holds Hugging Face row h*D + j*D/2 + i (FORMATS.md
 * §5.5): to_gguf moves rows into that order, else back out of it. */
static ql_status move_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads, int to_gguf,
                              const char *what) {
    if (heads < 1 || rows % heads || (rows / heads) % 2)
        return ql_error(QL_EFORMAT, "%s: %lld rows cannot be split into %lld heads of an even size",
                        what, (long long)rows, (long long)heads);
    int64_t d = rows / heads, half = d / 2;
    float *tmp = ql_malloc((size_t)(d * cols) * sizeof *tmp, "a head of q/k rows");
    if (!tmp) return QL_ENOMEM;
    for (int64_t h = 0; h < heads; h++) {
        float *head = w + h * d * cols;
        memcpy(tmp, head, (size_t)(d * cols) * sizeof *tmp);
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                const int64_t g = 2 * i + j, hf = j * half + i;
                memcpy(head + (to_gguf ? g : hf) * cols, tmp + (to_gguf ? hf : g) * cols,
                       (size_t)cols * sizeof *tmp);
            }
    }
    free(tmp);
    return QL_OK;
}

ql_status ql_gguf_permute_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads,
                                  const char *what) {
    return move_qk_rows(w, rows, cols, heads, 1, what);
}

ql_status ql_gguf_unpermute_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads,
                                    const char *what) {
    return move_qk_rows(w, rows, cols, heads, 0, what);
}

/* "blk.N.attn_q.weight" for a PEFT key, as the converter derives it: drop
 * "base_model.model." and ".lora_X.weight", add ".weight", map to GGUF. */
static ql_status base_name(const ql_adapter_tensor *t, char *out, size_t cap) {
    static const char prefix[] = "base_model.model.";
    const char *s = t->name;
    char hf[QL_ADAPTER_NAME_MAX + 8];
    if (strncmp(s, prefix, sizeof prefix - 1) || !strstr(s, ".lora_"))
        return ql_error(QL_EFORMAT, "adapter tensor '%s' is not a PEFT LoRA key", s);
    s += sizeof prefix - 1;
    snprintf(hf, sizeof hf, "%.*s.weight", (int)(strstr(s, ".lora_") - s), s);
    if (!ql_gguf_name_of(hf, out, cap))
        return ql_error(QL_EFORMAT, "adapter tensor '%s': '%s' has no GGUF name", t->name, hf);
    return QL_OK;
}

static uint32_t ggml_type_of(ql_dtype d) {
    return d == QL_DT_F16 ? QL_GGML_F16 : d == QL_DT_BF16 ? QL_GGML_BF16 : QL_GGML_F32;
}

ql_status ql_gguf_lora_save(const char *path, const ql_adapters *a, const float *host,
                            const ql_gguf_lora_base *b, ql_dtype dtype) {
    if (dtype != QL_DT_F32 && dtype != QL_DT_F16 && dtype != QL_DT_BF16)
        return ql_error(QL_EINVAL, "a GGUF adapter's dtype must be f32, f16 or bf16");
    if (!(a->cfg.alpha > 0))
        return ql_error(QL_EINVAL,
                        "lora_alpha is %g: llama.cpp reads an alpha of 0 as no scaling, so this "
                        "adapter cannot be written as GGUF",
                        (double)a->cfg.alpha);
    const size_t n = (size_t)(a->n ? a->n : 1), esz = ql_dtype_size(dtype);
    float *work = ql_malloc(n * sizeof *work, "the GGUF adapter");
    void *conv = NULL;
    if (!work) return QL_ENOMEM;
    memcpy(work, host, (size_t)a->n * sizeof *work);
    ql_gguf_writer w = {0};
    ql_status st = QL_OK;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        if (!b->permute_qk || !t->is_b || (t->proj != QL_PROJ_Q && t->proj != QL_PROJ_K)) continue;
        st = ql_gguf_permute_qk_rows(work + t->offset, t->rows, t->cols,
                                     t->proj == QL_PROJ_Q ? b->n_heads : b->n_kv_heads, t->name);
    }
    if (st == QL_OK && dtype != QL_DT_F32) {
        if (!(conv = ql_malloc(n * esz, "the converted GGUF adapter")))
            st = QL_ENOMEM;
        else if (ql_dtype_from_f32(dtype, work, conv, (size_t)a->n) != 0)
            st = ql_error(QL_EINTERNAL, "cannot convert the adapter to dtype %d", (int)dtype);
    }
    const double alpha =
        a->cfg.use_rslora ? (double)a->cfg.alpha * sqrt((double)a->cfg.r) : (double)a->cfg.alpha;
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "general.architecture", b->arch);
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "general.type", "adapter");
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "adapter.type", "lora");
    if (st == QL_OK) st = ql_gguf_writer_add_f32(&w, "adapter.lora.alpha", (float)alpha);
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        char base[160], name[176];
        st = base_name(t, base, sizeof base);
        if (st != QL_OK) break;
        snprintf(name, sizeof name, "%s.lora_%c", base, t->is_b ? 'b' : 'a');
        const int64_t ne[2] = {t->cols, t->rows}; /* row-major [rows, cols] */
        const void *data = conv ? (const void *)((const char *)conv + (size_t)t->offset * esz)
                                : (const void *)(work + t->offset);
        st = ql_gguf_writer_add_tensor(&w, name, 2, ne, ggml_type_of(dtype), data,
                                       (uint64_t)(t->rows * t->cols) * esz);
    }
    if (st == QL_OK) st = ql_gguf_writer_save(&w, path);
    ql_gguf_writer_free(&w);
    free(conv);
    free(work);
    return st;
}

/* ------------------------------------------------------------- reading */

int ql_gguf_lora_is_file(const char *path) {
    return path && ends_with(path, ".gguf") && !ql_fs_is_dir(path);
}

/* "blk.N.<proj>.weight" of (layer, p), as the converter names the base. */
static int proj_base_name(int layer, ql_proj p, char *out, size_t cap) {
    char hf[128];
    snprintf(hf, sizeof hf, "model.layers.%d.%s.%s.weight", layer, ql_proj_module(p),
             ql_proj_name(p));
    return ql_gguf_name_of(hf, out, cap);
}

/* A tensor name "blk.N.<proj>.weight.lora_a|b": its layer, projection and
 * which factor; 0 when it is anything else. */
static int parse_lora_name(const char *name, int *layer, ql_proj *p, int *is_b) {
    if (strncmp(name, "blk.", 4) || name[4] < '0' || name[4] > '9') return 0;
    char *end;
    long v = strtol(name + 4, &end, 10);
    if (*end != '.' || v < 0 || v > 1000000) return 0;
    const int n = (int)v;
    size_t len = strlen(name);
    if (len < 7 || (strcmp(name + len - 7, ".lora_a") && strcmp(name + len - 7, ".lora_b")))
        return 0;
    for (int k = 0; k < QL_N_PROJ; k++) {
        char base[160];
        if (!proj_base_name(n, (ql_proj)k, base, sizeof base)) continue;
        if (strlen(base) == len - 7 && !strncmp(name, base, len - 7)) {
            *layer = n;
            *p = (ql_proj)k;
            *is_b = name[len - 1] == 'b';
            return 1;
        }
    }
    return 0;
}

static ql_status str_is(const ql_gguf_file *f, const char *key, const char *want) {
    if (!ql_gguf_find_kv(f, key))
        return ql_error(QL_EFORMAT,
                        "%s: metadata key '%s' is missing: not a llama.cpp LoRA adapter "
                        "(convert_lora_to_gguf.py or qlora export --gguf writes one)",
                        f->path, key);
    ql_gguf_str s;
    QL_TRY(ql_gguf_get_str(f, key, &s));
    if (s.len != strlen(want) || memcmp(s.p, want, s.len))
        return ql_error(QL_EFORMAT, "%s: %s is '%.*s', expected '%s': not a LoRA adapter", f->path,
                        key, (int)(s.len > 64 ? 64 : s.len), s.p, want);
    return QL_OK;
}

/* general.architecture into arch; whether its q/k rows are in the
 * converter's interleaved order (model/gguf_source.c reads bases the same
 * way). */
static ql_status adapter_arch(const ql_gguf_file *f, char *arch, size_t cap, int *permuted) {
    ql_gguf_str a;
    QL_TRY(ql_gguf_get_str(f, "general.architecture", &a));
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", (int)(a.len < sizeof buf ? a.len : sizeof buf - 1), a.p);
    if (a.len >= sizeof buf ||
        (strcmp(buf, "llama") && strcmp(buf, "mistral") && strcmp(buf, "qwen2")))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: general.architecture '%.*s': qlora reads adapters of llama, mistral "
                        "and qwen2 models",
                        f->path, (int)(a.len > 64 ? 64 : a.len), a.p);
    if (arch) snprintf(arch, cap, "%s", buf);
    *permuted = strcmp(buf, "qwen2") != 0;
    return QL_OK;
}

static ql_status read_config(const ql_gguf_file *f, ql_lora_config *lc, char *arch, size_t cap) {
    int permuted;
    QL_TRY(str_is(f, "general.type", "adapter"));
    QL_TRY(str_is(f, "adapter.type", "lora"));
    if (ql_gguf_find_kv(f, "adapter.alora.invocation_tokens"))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: an activated LoRA (adapter.alora.invocation_tokens): it applies "
                        "only after its invocation tokens, which qlora does not do",
                        f->path);
    QL_TRY(adapter_arch(f, arch, cap, &permuted));
    double alpha = 0;
    if (ql_gguf_find_kv(f, "adapter.lora.alpha"))
        QL_TRY(ql_gguf_get_f64(f, "adapter.lora.alpha", &alpha));
    if (!(alpha >= 0) || !isfinite(alpha))
        return ql_error(QL_EFORMAT, "%s: adapter.lora.alpha is %g", f->path, alpha);
    /* Per layer: a bit per projection with lora_a, another with lora_b. */
    int n_layers = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        int layer, is_b;
        ql_proj p;
        if (!parse_lora_name(f->tensors[i].name, &layer, &p, &is_b)) continue;
        /* Every layer up to the last holds two tensors at least. */
        if ((size_t)layer >= f->n_tensors)
            return ql_error(QL_EFORMAT, "%s: tensor '%s': layer %d of a file of %zu tensors",
                            f->path, f->tensors[i].name, layer, f->n_tensors);
        if (layer + 1 > n_layers) n_layers = layer + 1;
    }
    unsigned *has = ql_calloc((size_t)(n_layers ? n_layers : 1), 2 * sizeof *has, "adapter layers");
    if (!has) return QL_ENOMEM;
    ql_status st = QL_OK;
    int64_t r = 0;
    for (size_t i = 0; st == QL_OK && i < f->n_tensors; i++) {
        const ql_gguf_tensor *t = &f->tensors[i];
        int layer, is_b;
        ql_proj p;
        if (!parse_lora_name(t->name, &layer, &p, &is_b)) {
            st = ql_error(QL_EUNSUPPORTED,
                          "%s: tensor '%s' is not the lora_a or lora_b of a layer's q, k, v, o, "
                          "gate, up or down projection, the only ones qlora adapts",
                          f->path, t->name);
        } else if (t->n_dims != 2) {
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' has %d dimensions, expected 2", f->path,
                          t->name, t->n_dims);
        } else {
            const int64_t rank =
                is_b ? t->ne[0] : t->ne[1]; /* lora_a ne {in, r}, lora_b {r, out} */
            if (r == 0) r = rank;
            if (rank != r)
                st = ql_error(QL_EUNSUPPORTED,
                              "%s: tensor '%s' has rank %lld, others %lld: qlora needs one rank "
                              "for every projection",
                              f->path, t->name, (long long)rank, (long long)r);
            has[2 * layer + is_b] |= 1u << p;
        }
    }
    for (int l = 0; st == QL_OK && l < n_layers; l++) {
        char base[160];
        if (has[2 * l] != has[2 * l + 1]) {
            unsigned odd = has[2 * l] ^ has[2 * l + 1];
            ql_proj p = QL_PROJ_Q;
            while (!((odd >> p) & 1u)) p++;
            proj_base_name(l, p, base, sizeof base);
            st = ql_error(QL_EFORMAT, "%s: '%s.lora_%c' is missing (it has the lora_%c)", f->path,
                          base, (has[2 * l] >> p) & 1u ? 'b' : 'a',
                          (has[2 * l] >> p) & 1u ? 'a' : 'b');
        } else if (has[2 * l] != has[0]) {
            unsigned odd = has[2 * l] ^ has[0];
            ql_proj p = QL_PROJ_Q;
            while (!((odd >> p) & 1u)) p++;
            st = ql_error(QL_EUNSUPPORTED,
                          "%s: %s is adapted in layer %d but not in layer %d: qlora needs the "
                          "same targets in every layer",
                          f->path, ql_proj_name(p), (has[2 * l] >> p) & 1u ? l : 0,
                          (has[2 * l] >> p) & 1u ? 0 : l);
        }
    }
    if (st == QL_OK && (r <= 0 || !has[0]))
        st = ql_error(QL_EFORMAT, "%s: no LoRA tensors (blk.N.<projection>.weight.lora_a/b)",
                      f->path);
    if (st == QL_OK && r > 65536)
        st = ql_error(QL_EUNSUPPORTED, "%s: rank %lld is above 65536", f->path, (long long)r);
    if (st == QL_OK) {
        /* llama.cpp: scale = alpha / r, or 1 with no alpha. */
        *lc = (ql_lora_config){.r = (int)r,
                               .alpha = alpha > 0 ? (float)alpha : (float)r,
                               .dropout = 0.0f,
                               .use_rslora = 0,
                               .targets = has[0]};
    }
    free(has);
    return st;
}

ql_status ql_gguf_lora_read_config(const char *path, ql_lora_config *lc, char *arch, size_t cap) {
    ql_gguf_file f;
    ql_status st = ql_gguf_open(path, &f);
    if (st == QL_OK) st = read_config(&f, lc, arch, cap);
    ql_gguf_close(&f);
    return st;
}

ql_status ql_gguf_lora_load(const char *path, ql_adapters *a, const ql_backend *be) {
    ql_gguf_file f;
    QL_TRY(ql_gguf_open(path, &f));
    int permuted = 0;
    char arch[32] = "";
    ql_status st = adapter_arch(&f, arch, sizeof arch, &permuted);
    /* The base's q/k rows are in the converter's order unless it is qwen2
     * (model/gguf_source.c); an adapter of the other kind would be applied
     * to rows it was not made for. llama.cpp refuses it too. */
    if (st == QL_OK && a->model_type[0] && permuted != (strcmp(a->model_type, "qwen2") != 0))
        st = ql_error(QL_EINVAL,
                      "%s: an adapter for a %s model (general.architecture), but the base is %s",
                      path, arch, a->model_type);
    float *host = ql_malloc((size_t)(a->n ? a->n : 1) * sizeof *host, "the adapter weights");
    if (!host) st = QL_ENOMEM;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        char base[160], name[176];
        if (!proj_base_name(t->layer, t->proj, base, sizeof base)) {
            st = ql_error(QL_EINTERNAL, "no GGUF name for '%s'", t->name);
            break;
        }
        snprintf(name, sizeof name, "%s.lora_%c", base, t->is_b ? 'b' : 'a');
        const ql_gguf_tensor *g = ql_gguf_find_tensor(&f, name);
        if (!g) {
            st = ql_error(QL_ENOTFOUND,
                          "%s: missing tensor '%s' (the adapter does not cover the model's "
                          "targets: r %d, %d tensors expected)",
                          path, name, a->cfg.r, a->n_tensors);
        } else if (g->n_dims != 2 || g->ne[0] != t->cols || g->ne[1] != t->rows) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s' has ne {%lld, %lld}, expected {%lld, %lld} (PEFT's "
                          "%s [%lld, %lld]): an adapter of another model",
                          path, name, (long long)g->ne[0], (long long)g->ne[1], (long long)t->cols,
                          (long long)t->rows, t->name, (long long)t->rows, (long long)t->cols);
        } else if (!ql_gguf_can_dequantize(g->type)) {
            const char *tn = ql_gguf_type_name(g->type);
            st = ql_error(QL_EUNSUPPORTED,
                          "%s: tensor '%s' is %s; qlora reads F32, F16, BF16, Q8_0, Q4_0 and "
                          "Q4_1",
                          path, name, tn ? tn : "of an unknown type");
        } else {
            st = ql_gguf_tensor_f32(&f, g, host + t->offset);
            if (st == QL_OK && permuted && t->is_b &&
                (t->proj == QL_PROJ_Q || t->proj == QL_PROJ_K))
                st = ql_gguf_unpermute_qk_rows(host + t->offset, t->rows, t->cols,
                                               t->proj == QL_PROJ_Q ? a->n_heads : a->n_kv_heads,
                                               name);
        }
    }
    /* Every layout tensor was found under its own name: a file with more
     * tensors holds something this model has no place for. */
    for (size_t j = 0; st == QL_OK && f.n_tensors != (size_t)a->n_tensors && j < f.n_tensors; j++) {
        int layer, is_b;
        ql_proj p;
        int known = parse_lora_name(f.tensors[j].name, &layer, &p, &is_b);
        int found = 0;
        for (int i = 0; known && i < a->n_tensors && !found; i++)
            found = a->tensors[i].layer == layer && a->tensors[i].proj == p &&
                    a->tensors[i].is_b == is_b;
        if (!found) st = ql_adapters_no_place(a, path, f.tensors[j].name);
    }
    if (st == QL_OK) st = ql_adapters_set_params(a, host, be);
    free(host);
    ql_gguf_close(&f);
    return st;
}
