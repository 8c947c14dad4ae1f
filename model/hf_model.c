#include "model/hf_model.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"

int ql_hf_ignored_tensor(const char *name) {
    size_t n = strlen(name);
    static const char suffix[] = ".rotary_emb.inv_freq";
    return n >= sizeof suffix - 1 && !strcmp(name + n - (sizeof suffix - 1), suffix);
}

static int cmp_expected(const void *a, const void *b) {
    return strcmp(((const ql_hf_expected *)a)->name, ((const ql_hf_expected *)b)->name);
}

typedef struct exp_list {
    ql_hf_expected *v;
    size_t n, cap;
} exp_list;

static int add_exp(exp_list *l, const char *name, int ndim, int64_t d0, int64_t d1, int linear,
                   const char *dims) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        ql_hf_expected *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = cap;
    }
    ql_hf_expected *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->is_linear = linear;
    e->dims = dims;
    return 0;
}

ql_status ql_hf_expected_tensors(const ql_hf_config *c, ql_hf_expected **out, size_t *n) {
    exp_list l = {0};
    int r = 0;
    int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim,
            kv = c->num_key_value_heads * c->head_dim, im = c->intermediate_size;
    r |= add_exp(&l, "model.embed_tokens.weight", 2, c->vocab_size, h, 0,
                 "[vocab_size, hidden_size]");
    r |= add_exp(&l, "model.norm.weight", 1, h, 0, 0, "[hidden_size]");
    r |= add_exp(&l, "lm_head.weight", 2, c->vocab_size, h, 0, "[vocab_size, hidden_size]");
    if (!r) l.v[l.n - 1].optional = c->tie_word_embeddings;
    char name[QL_HF_NAME_MAX];
    static const char *qkv_dims[3] = {"[num_attention_heads * head_dim, hidden_size]",
                                      "[num_key_value_heads * head_dim, hidden_size]",
                                      "[num_key_value_heads * head_dim, hidden_size]"};
    static const char *qkv_bias_dims[3] = {"[num_attention_heads * head_dim]",
                                           "[num_key_value_heads * head_dim]",
                                           "[num_key_value_heads * head_dim]"};
    for (int64_t i = 0; i < c->num_hidden_layers && !r; i++) {
#define NAME(fmt) (snprintf(name, sizeof name, "model.layers.%lld." fmt, (long long)i), name)
        r |= add_exp(&l, NAME("input_layernorm.weight"), 1, h, 0, 0, "[hidden_size]");
        r |= add_exp(&l, NAME("post_attention_layernorm.weight"), 1, h, 0, 0, "[hidden_size]");
        static const char *proj[3] = {"q_proj", "k_proj", "v_proj"};
        int64_t outs[3] = {q, kv, kv};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s.weight", (long long)i,
                     proj[k]);
            r |= add_exp(&l, name, 2, outs[k], h, 1, qkv_dims[k]);
            if (c->attention_bias || c->qkv_bias) {
                snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s.bias", (long long)i,
                         proj[k]);
                r |= add_exp(&l, name, 1, outs[k], 0, 0, qkv_bias_dims[k]);
            }
        }
        r |= add_exp(&l, NAME("self_attn.o_proj.weight"), 2, h, q, 1,
                     "[hidden_size, num_attention_heads * head_dim]");
        if (c->attention_bias)
            r |= add_exp(&l, NAME("self_attn.o_proj.bias"), 1, h, 0, 0, "[hidden_size]");
        r |= add_exp(&l, NAME("mlp.gate_proj.weight"), 2, im, h, 1,
                     "[intermediate_size, hidden_size]");
        r |= add_exp(&l, NAME("mlp.up_proj.weight"), 2, im, h, 1,
                     "[intermediate_size, hidden_size]");
        r |= add_exp(&l, NAME("mlp.down_proj.weight"), 2, h, im, 1,
                     "[hidden_size, intermediate_size]");
        if (c->mlp_bias) {
            r |= add_exp(&l, NAME("mlp.gate_proj.bias"), 1, im, 0, 0, "[intermediate_size]");
            r |= add_exp(&l, NAME("mlp.up_proj.bias"), 1, im, 0, 0, "[intermediate_size]");
            r |= add_exp(&l, NAME("mlp.down_proj.bias"), 1, h, 0, 0, "[hidden_size]");
        }
#undef NAME
    }
    if (r) {
        free(l.v);
        return ql_error(QL_ENOMEM, "out of memory listing the model's tensors");
    }
    qsort(l.v, l.n, sizeof *l.v, cmp_expected);
    *out = l.v;
    *n = l.n;
    return QL_OK;
}

static const ql_hf_expected *find_expected(const ql_hf_model *m, const char *name) {
    ql_hf_expected key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, m->expected, m->n_expected, sizeof key, cmp_expected);
}

const ql_hf_expected *ql_hf_model_expected(const ql_hf_model *m, const char *name) {
    return find_expected(m, name);
}

static int cmp_ref(const void *a, const void *b) {
    return strcmp(((const ql_hf_ref *)a)->name, ((const ql_hf_ref *)b)->name);
}

const ql_st_tensor *ql_hf_model_find(const ql_hf_model *m, const char *name,
                                     const ql_st_file **file) {
    ql_hf_ref key = {.name = name};
    const ql_hf_ref *r = bsearch(&key, m->refs, m->n_refs, sizeof key, cmp_ref);
    if (!r) return NULL;
    if (file) *file = &m->files[r->file];
    return r->t;
}

void ql_hf_model_close(ql_hf_model *m) {
    for (size_t i = 0; i < m->n_files; i++) ql_st_close(&m->files[i]);
    free(m->files);
    free(m->refs);
    free(m->expected);
    free(m->dir);
    ql_hf_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

static ql_status open_single(ql_hf_model *m, const char *path) {
    m->files = ql_calloc(1, sizeof *m->files, "safetensors files");
    if (!m->files) return QL_ENOMEM;
    QL_TRY(ql_st_open(path, &m->files[0]));
    m->n_files = 1;
    ql_st_file *f = &m->files[0];
    m->refs = ql_calloc(f->n_tensors, sizeof *m->refs, "tensor table");
    if (!m->refs) return QL_ENOMEM;
    for (size_t i = 0; i < f->n_tensors; i++)
        m->refs[i] = (ql_hf_ref){f->tensors[i].name, 0, &f->tensors[i]};
    m->n_refs = f->n_tensors;
    return QL_OK; /* a file's tensors are already sorted by name */
}

/* Shard names come from a file we did not write: keep them inside the
 * model directory. */
static int safe_shard_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static ql_status open_sharded(ql_hf_model *m, const char *index_path) {
    char *text;
    size_t len;
    QL_TRY(ql_fs_read_file(index_path, &text, &len));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    ql_status st = QL_OK;
    const char **shards = NULL;
    char *spath = NULL;
    if (!root) {
        st = ql_error(QL_EFORMAT, "%s: not valid JSON: %s (line %d)", index_path, jerr.text,
                      jerr.line);
        goto out;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        st = ql_error(QL_EFORMAT, "%s: missing field 'weight_map' (object of tensor -> file)",
                      index_path);
        goto out;
    }
    size_t n = json_object_size(wm);
    shards = ql_calloc(n ? n : 1, sizeof *shards, "shard list");
    m->files = ql_calloc(n ? n : 1, sizeof *m->files, "safetensors files");
    m->refs = ql_calloc(n ? n : 1, sizeof *m->refs, "tensor table");
    if (!shards || !m->files || !m->refs) {
        st = QL_ENOMEM;
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v) || !safe_shard_name(json_string_value(v))) {
            st = ql_error(QL_EFORMAT,
                          "%s: weight_map['%s'] must be a file name in the model directory",
                          index_path, name);
            goto out;
        }
        const char *shard = json_string_value(v);
        size_t fi = 0;
        while (fi < m->n_files && strcmp(shards[fi], shard)) fi++;
        if (fi == m->n_files) {
            free(spath);
            spath = ql_fs_join(m->dir, shard);
            if (!spath) {
                st = QL_ENOMEM;
                goto out;
            }
            if (!ql_fs_exists(spath)) {
                st = ql_error(QL_ENOTFOUND,
                              "%s: shard file '%s' (holding tensor '%s') is missing from %s",
                              index_path, shard, name, m->dir);
                goto out;
            }
            if ((st = ql_st_open(spath, &m->files[fi])) != QL_OK) goto out;
            shards[fi] = shard;
            m->n_files++;
        }
        const ql_st_tensor *t = ql_st_find(&m->files[fi], name);
        if (!t) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s' is mapped to shard '%s', which does not contain it",
                          index_path, name, shard);
            goto out;
        }
        m->refs[m->n_refs++] = (ql_hf_ref){t->name, fi, t};
    }
    qsort(m->refs, m->n_refs, sizeof *m->refs, cmp_ref);
    m->sharded = 1;
out:
    free(spath);
    free(shards);
    json_decref(root);
    return st;
}

static int is_float_dtype(ql_dtype dt) {
    return dt == QL_DT_F32 || dt == QL_DT_F16 || dt == QL_DT_BF16 || dt == QL_DT_F64;
}

static const char *const bnb_suffixes[] = {"absmax",
                                           "quant_map",
                                           "nested_absmax",
                                           "nested_quant_map",
                                           "quant_state.bitsandbytes__nf4",
                                           "quant_state.bitsandbytes__fp4"};

/* Is `name` one of the quant-state tensors of an expected linear weight? */
static int is_bnb_aux(const ql_hf_model *m, const char *name) {
    const char *w = strstr(name, ".weight.");
    if (!w) return 0;
    size_t base = (size_t)(w - name) + strlen(".weight");
    if (base >= QL_HF_NAME_MAX) return 0;
    char wname[QL_HF_NAME_MAX];
    memcpy(wname, name, base);
    wname[base] = '\0';
    const ql_hf_expected *e = find_expected(m, wname);
    if (!e || !e->is_linear) return 0;
    for (size_t i = 0; i < sizeof bnb_suffixes / sizeof *bnb_suffixes; i++)
        if (!strcmp(name + base + 1, bnb_suffixes[i])) return 1;
    return 0;
}

/* Where messages say a tensor should have been. */
static const char *tensor_source(const ql_hf_model *m) {
    return m->sharded ? "model.safetensors.index.json" : "model.safetensors";
}

static ql_status check_tensors(ql_hf_model *m) {
    char got[256], want[256];
    for (size_t i = 0; i < m->n_expected; i++) {
        const ql_hf_expected *e = &m->expected[i];
        const ql_st_file *f;
        const ql_st_tensor *t = ql_hf_model_find(m, e->name, &f);
        ql_st_shape_str(e->shape, e->ndim, want, sizeof want);
        if (!t) {
            if (e->optional) continue;
            return ql_error(QL_EFORMAT, "%s/%s: missing tensor '%s' (expected shape %s)", m->dir,
                            tensor_source(m), e->name, want);
        }
        if (e->is_linear && m->cfg.quant.present && t->dtype == QL_DT_U8) {
            ql_q4 q;
            QL_TRY(ql_hf_model_get_q4(m, e->name, &q, NULL));
            ql_q4_free(&q);
            continue;
        }
        if (!is_float_dtype(t->dtype))
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s': dtype %s, expected a floating type (F32, F16, "
                            "BF16)%s",
                            f->path, e->name, ql_dtype_name(t->dtype),
                            e->is_linear && !m->cfg.quant.present
                                ? " (config.json has no bitsandbytes quantization_config)"
                                : "");
        int same = t->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same)
            return ql_error(
                QL_EFORMAT, "%s: tensor '%s': shape %s, expected %s = %s from config.json", f->path,
                e->name, ql_st_shape_str(t->shape, t->ndim, got, sizeof got), e->dims, want);
    }
    for (size_t i = 0; i < m->n_refs; i++) {
        const char *name = m->refs[i].name;
        if (find_expected(m, name) || ql_hf_ignored_tensor(name)) continue;
        if (m->cfg.quant.present && is_bnb_aux(m, name)) continue;
        return ql_error(QL_EFORMAT,
                        "%s: unexpected tensor '%s' (not part of a %s model with this config.json)",
                        m->files[m->refs[i].file].path, name, m->cfg.model_type);
    }
    return QL_OK;
}

ql_status ql_hf_model_open(const char *dir, ql_hf_model *m) {
    memset(m, 0, sizeof *m);
    ql_status st = QL_OK;
    char *single = NULL, *index = NULL;
    m->dir = strdup(dir);
    if (!m->dir) return ql_error(QL_ENOMEM, "out of memory");
    if (!ql_fs_is_dir(dir)) {
        st = ql_error(QL_ENOTFOUND, "%s: not a directory", dir);
        goto fail;
    }
    QL_TRY_GOTO(st, ql_hf_config_load(dir, &m->cfg), fail);
    QL_TRY_GOTO(st, ql_hf_expected_tensors(&m->cfg, &m->expected, &m->n_expected), fail);
    single = ql_fs_join(dir, "model.safetensors");
    index = ql_fs_join(dir, "model.safetensors.index.json");
    if (!single || !index) {
        st = QL_ENOMEM;
        goto fail;
    }
    /* transformers looks for the single file first. */
    if (ql_fs_exists(single))
        QL_TRY_GOTO(st, open_single(m, single), fail);
    else if (ql_fs_exists(index))
        QL_TRY_GOTO(st, open_sharded(m, index), fail);
    else {
        st = ql_error(QL_ENOTFOUND,
                      "%s: no model.safetensors or model.safetensors.index.json (only "
                      "safetensors checkpoints are supported)",
                      dir);
        goto fail;
    }
    if (!m->cfg.dtype_known) {
        /* No torch_dtype: the embeddings' dtype is the model's. */
        const ql_st_tensor *t = ql_hf_model_find(m, "model.embed_tokens.weight", NULL);
        m->cfg.torch_dtype =
            t && is_float_dtype(t->dtype) && t->dtype != QL_DT_F64 ? t->dtype : QL_DT_F32;
    }
    QL_TRY_GOTO(st, check_tensors(m), fail);
    free(single);
    free(index);
    return QL_OK;
fail:
    free(single);
    free(index);
    ql_hf_model_close(m);
    return st;
}

ql_status ql_hf_model_get_f32(const ql_hf_model *m, const char *name, float *out) {
    const ql_st_file *f;
    const ql_st_tensor *t = ql_hf_model_find(m, name, &f);
    if (!t) return ql_error(QL_ENOTFOUND, "%s: no tensor '%s'", m->dir, name);
    return ql_st_to_f32(f, t, out);
}

/* ------------------------------------------------ bitsandbytes 4-bit reader */

/* Looks up `weight` + "." + suffix and checks its dtype and shape. A NULL
 * *t with QL_OK means absent and optional. */
static ql_status bnb_part(const ql_hf_model *m, const char *weight, const char *suffix,
                          int required, ql_dtype dt, int64_t numel, const char *why,
                          const ql_st_tensor **t, const ql_st_file **f) {
    char name[QL_HF_NAME_MAX + 64];
    snprintf(name, sizeof name, "%s.%s", weight, suffix);
    *t = ql_hf_model_find(m, name, f);
    if (!*t) {
        if (!required) return QL_OK;
        return ql_error(QL_EFORMAT, "%s/%s: missing tensor '%s' (%s[%" PRId64 "] for %s)", m->dir,
                        tensor_source(m), name, ql_dtype_name(dt), numel, why);
    }
    if ((*t)->dtype != dt || (*t)->numel != numel) {
        char sh[256];
        return ql_error(
            QL_EFORMAT, "%s: tensor '%s': %s %s, expected %s with %" PRId64 " elements (%s)",
            (*f)->path, name, ql_dtype_name((*t)->dtype),
            ql_st_shape_str((*t)->shape, (*t)->ndim, sh, sizeof sh), ql_dtype_name(dt), numel, why);
    }
    return QL_OK;
}

static ql_status blob_int(const char *where, const json_t *o, const char *key, int64_t *v) {
    const json_t *x = json_object_get(o, key);
    if (!json_is_integer(x))
        return ql_error(QL_EFORMAT, "%s: quant state field '%s' must be an integer", where, key);
    *v = json_integer_value(x);
    return QL_OK;
}

static ql_status blob_str(const char *where, const json_t *o, const char *key, const char **v) {
    const json_t *x = json_object_get(o, key);
    if (!json_is_string(x))
        return ql_error(QL_EFORMAT, "%s: quant state field '%s' must be a string", where, key);
    *v = json_string_value(x);
    return QL_OK;
}

ql_status ql_hf_model_get_q4(const ql_hf_model *m, const char *weight, ql_q4 *out,
                             ql_dtype *dtype) {
    memset(out, 0, sizeof *out);
    const ql_st_file *wf, *bf = NULL, *f;
    const ql_st_tensor *w = ql_hf_model_find(m, weight, &wf), *blob = NULL, *t;
    if (!w) return ql_error(QL_ENOTFOUND, "%s: no tensor '%s'", m->dir, weight);
    char bname[QL_HF_NAME_MAX + 64];
    ql_qtype type = QL_QTYPE_NF4;
    for (int k = 0; k < 2 && !blob; k++) {
        snprintf(bname, sizeof bname, "%s.quant_state.bitsandbytes__%s", weight, k ? "fp4" : "nf4");
        blob = ql_hf_model_find(m, bname, &bf);
        type = k ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
    }
    if (!blob)
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': no '%s.quant_state.bitsandbytes__nf4' (or __fp4) "
                        "entry, so it is not a bitsandbytes 4-bit weight",
                        wf->path, weight, weight);
    if (w->dtype != QL_DT_U8)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: tensor '%s': dtype %s; only bnb_4bit_quant_storage uint8 (U8) is "
                        "supported",
                        wf->path, weight, ql_dtype_name(w->dtype));
    if (blob->dtype != QL_DT_U8 || blob->ndim != 1)
        return ql_error(QL_EFORMAT, "%s: tensor '%s': expected a 1-D U8 JSON blob", bf->path,
                        bname);

    char where[QL_HF_NAME_MAX + 600];
    snprintf(where, sizeof where, "%s: tensor '%s'", bf->path, bname);
    /* Some writers pad the blob with NULs. */
    size_t len = (size_t)blob->numel;
    const char *txt = blob->data;
    while (len && (txt[len - 1] == '\0' || txt[len - 1] == ' ')) len--;
    json_error_t jerr;
    json_t *qs = json_loadb(txt, len, 0, &jerr);
    if (!json_is_object(qs)) {
        json_decref(qs);
        return ql_error(QL_EFORMAT, "%s: quant state is not a JSON object: %s", where,
                        qs ? "wrong type" : jerr.text);
    }
    ql_status st = QL_OK;
    const char *qt = NULL, *dts = NULL;
    int64_t bs = 0, rows, cols;
    QL_TRY_GOTO(st, blob_str(where, qs, "quant_type", &qt), out);
    if (strcmp(qt, type == QL_QTYPE_NF4 ? "nf4" : "fp4")) {
        st = ql_error(QL_EFORMAT, "%s: quant_type '%s' does not match the key's suffix", where, qt);
        goto out;
    }
    QL_TRY_GOTO(st, blob_int(where, qs, "blocksize", &bs), out);
    if (!ql_q4_blocksize_ok(bs)) {
        st = ql_error(QL_EFORMAT, "%s: blocksize %" PRId64 " is not one bitsandbytes allows", where,
                      bs);
        goto out;
    }
    QL_TRY_GOTO(st, blob_str(where, qs, "dtype", &dts), out);
    ql_dtype odt;
    if (!strcmp(dts, "bfloat16"))
        odt = QL_DT_BF16;
    else if (!strcmp(dts, "float16"))
        odt = QL_DT_F16;
    else if (!strcmp(dts, "float32"))
        odt = QL_DT_F32;
    else {
        st = ql_error(QL_EFORMAT, "%s: dtype '%s', expected bfloat16, float16 or float32", where,
                      dts);
        goto out;
    }
    const json_t *shape = json_object_get(qs, "shape");
    if (!json_is_array(shape) || json_array_size(shape) != 2 ||
        !json_is_integer(json_array_get(shape, 0)) || !json_is_integer(json_array_get(shape, 1)) ||
        json_integer_value(json_array_get(shape, 0)) <= 0 ||
        json_integer_value(json_array_get(shape, 1)) <= 0) {
        st = ql_error(QL_EFORMAT, "%s: 'shape' must be [out_features, in_features]", where);
        goto out;
    }
    rows = json_integer_value(json_array_get(shape, 0));
    cols = json_integer_value(json_array_get(shape, 1));
    const ql_hf_expected *e = find_expected(m, weight);
    if (e && e->is_linear && (e->shape[0] != rows || e->shape[1] != cols)) {
        char want[64];
        st = ql_error(QL_EFORMAT,
                      "%s: shape [%" PRId64 ", %" PRId64 "], expected %s = %s from config.json",
                      where, rows, cols, e->dims, ql_st_shape_str(e->shape, 2, want, sizeof want));
        goto out;
    }
    const json_t *nb = json_object_get(qs, "nested_blocksize");
    int dq = nb != NULL;
    double offset = 0;
    if (dq) {
        int64_t nbs = 0;
        const char *ndt = NULL;
        QL_TRY_GOTO(st, blob_int(where, qs, "nested_blocksize", &nbs), out);
        if (nbs != QL_NESTED_BLOCKSIZE) {
            st = ql_error(QL_EUNSUPPORTED,
                          "%s: nested_blocksize %" PRId64 ", only 256 is supported", where, nbs);
            goto out;
        }
        QL_TRY_GOTO(st, blob_str(where, qs, "nested_dtype", &ndt), out);
        if (strcmp(ndt, "float32")) {
            st = ql_error(QL_EUNSUPPORTED, "%s: nested_dtype '%s', only float32 is supported",
                          where, ndt);
            goto out;
        }
        const json_t *off = json_object_get(qs, "nested_offset");
        if (!json_is_number(off)) {
            st = ql_error(QL_EFORMAT, "%s: quant state field 'nested_offset' must be a number",
                          where);
            goto out;
        }
        offset = json_number_value(off);
    }

    out->type = type;
    out->rows = rows;
    out->cols = cols;
    out->blocksize = (int)bs;
    out->double_quant = dq;
    int64_t n = rows * cols, nblk = (n + bs - 1) / bs, nnest = (nblk + 255) / 256;
    char why[160];
    snprintf(why, sizeof why, "%s%s, shape [%" PRId64 ", %" PRId64 "], blocks of %" PRId64,
             type == QL_QTYPE_NF4 ? "nf4" : "fp4", dq ? " with double quant" : "", rows, cols, bs);
    if (w->numel != (n + 1) / 2) {
        char sh[128];
        st = ql_error(QL_EFORMAT, "%s: tensor '%s': shape %s, expected [%" PRId64 ", 1] (%s)",
                      wf->path, weight, ql_st_shape_str(w->shape, w->ndim, sh, sizeof sh),
                      (n + 1) / 2, why);
        goto out;
    }
    const ql_st_tensor *am, *qm, *na = NULL, *nq = NULL;
    const ql_st_file *amf, *naf = NULL, *nqf = NULL;
    QL_TRY_GOTO(
        st, bnb_part(m, weight, "absmax", 1, dq ? QL_DT_U8 : QL_DT_F32, nblk, why, &am, &amf), out);
    QL_TRY_GOTO(st, bnb_part(m, weight, "quant_map", 1, QL_DT_F32, 16, why, &qm, &f), out);
    for (unsigned c = 0; c < 16; c++) {
        float v;
        memcpy(&v, (const char *)qm->data + 4 * c, 4);
        /* By value: files from bitsandbytes store FP4's code 8 as +0.0. */
        if (v != ql_q4_value(type, c)) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s.quant_map': entry %u is %.9g, not the %s code book "
                          "value %.9g",
                          f->path, weight, c, (double)v, type == QL_QTYPE_NF4 ? "NF4" : "FP4",
                          (double)ql_q4_value(type, c));
            goto out;
        }
    }
    if (dq) {
        QL_TRY_GOTO(st, bnb_part(m, weight, "nested_absmax", 1, QL_DT_F32, nnest, why, &na, &naf),
                    out);
        QL_TRY_GOTO(st, bnb_part(m, weight, "nested_quant_map", 1, QL_DT_F32, 256, why, &nq, &nqf),
                    out);
    } else {
        QL_TRY_GOTO(st, bnb_part(m, weight, "nested_absmax", 0, QL_DT_F32, 0, why, &t, &f), out);
        if (t) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s.nested_absmax' present but the quant state has no "
                          "nested_blocksize",
                          f->path, weight);
            goto out;
        }
    }
    QL_TRY_GOTO(st, ql_q4_alloc(out), out);
    memcpy(out->packed, w->data, (size_t)ql_q4_packed_bytes(out));
    if (dq) {
        memcpy(out->absmax_q, am->data, (size_t)nblk);
        memcpy(out->nested_absmax, na->data, (size_t)nnest * 4);
        memcpy(out->nested_map, nq->data, 256 * 4);
        /* The blob holds the float32 offset widened to double: exact. */
        out->nested_offset = (float)offset;
    } else {
        memcpy(out->absmax, am->data, (size_t)nblk * 4);
    }
    if (dtype) *dtype = odt;
out:
    json_decref(qs);
    return st;
}
