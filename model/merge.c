#include "model/merge.h"
#include "model/merge_impl.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/json_float.h"
#include "kernels/quant4.h"
#include "model/gguf.h"
#include "model/hf_model.h"
#include "model/hf_quantize.h"
#include "model/lora.h"
#include "model/peft.h"
#include "model/safetensors.h"
#include "model/source.h"

/* transformers' default max_shard_size. */
#define DEFAULT_SHARD_BYTES 5000000000ull

void ql_merge_ctx_free(merge_ctx *c) {
    if (c->src_open) ql_model_source_close(&c->src);
    ql_adapters_layout_free(&c->ad);
    free(c->params);
    free(c->a_of);
    free(c->exp);
    free(c->buf);
}

int64_t ql_merge_numel(const ql_hf_expected *e) {
    return e->ndim == 1 ? e->shape[0] : e->shape[0] * e->shape[1];
}

/* The adapters of `given` placed in the model's own layout: the same tensor
 * set (names and shapes) or an error naming the first difference. */
static ql_status copy_adapters(merge_ctx *c, const ql_adapters *given) {
    int *at = ql_malloc((size_t)(c->ad.n_tensors ? c->ad.n_tensors : 1) * sizeof *at,
                        "the adapter index");
    if (!at) return QL_ENOMEM;
    ql_status st = ql_adapters_match(&c->ad, given, c->o->model, at);
    for (int i = 0; st == QL_OK && i < c->ad.n_tensors; i++) {
        const ql_adapter_tensor *t = &c->ad.tensors[i], *g = &given->tensors[at[i]];
        memcpy(c->params + t->offset, given->params + g->offset,
               (size_t)(t->rows * t->cols) * sizeof(float));
    }
    free(at);
    return st;
}

/* The adapter, read against the base model's config (every tensor present
 * with its shape, nothing else). */
ql_status ql_merge_load_adapter(merge_ctx *c) {
    const ql_merge_opts *o = c->o;
    if (!o->adapter_dir && !o->adapters) return QL_OK;
    ql_lora_config lc;
    if (o->adapter_dir)
        QL_TRY(ql_peft_read_config(o->adapter_dir, &lc, NULL, 0));
    else
        lc = o->adapters->cfg;
    QL_TRY(ql_adapters_layout(&c->src.cfg, &lc, &c->ad));
    c->params = ql_malloc((size_t)(c->ad.n ? c->ad.n : 1) * sizeof(float), "the adapter");
    int64_t L = c->src.cfg.num_hidden_layers;
    c->a_of = ql_malloc((size_t)(L * QL_N_PROJ) * sizeof(int), "the adapter index");
    if (!c->params || !c->a_of) return QL_ENOMEM;
    ql_status st;
    if (o->adapter_dir) {
        c->ad.params = c->params;
        st = ql_peft_load(o->adapter_dir, &c->ad, NULL);
        c->ad.params = NULL; /* owned by c->params */
    } else {
        st = copy_adapters(c, o->adapters);
    }
    if (st != QL_OK)
        return ql_error_wrap(st, "adapter %s for model %s: ",
                             o->adapter_dir ? o->adapter_dir : "(checkpoint)", o->model);
    for (int64_t i = 0; i < L * QL_N_PROJ; i++) c->a_of[i] = -1;
    for (int i = 0; i < c->ad.n_tensors; i++)
        if (!c->ad.tensors[i].is_b)
            c->a_of[c->ad.tensors[i].layer * QL_N_PROJ + c->ad.tensors[i].proj] = i;
    return QL_OK;
}

/* W += s·B·A for the linear of (layer, proj), B [out, r], A [r, in]. Each
 * element of B·A is summed in double over r and scaled once in float, as
 * PEFT's float32 `(B @ A) * scaling` up to the summation order. */
static void add_delta(const merge_ctx *c, int layer, ql_proj p, float *w, int64_t out, int64_t in) {
    int ai = c->a_of[layer * QL_N_PROJ + p];
    if (ai < 0) return;
    const ql_adapter_tensor *ta = &c->ad.tensors[ai], *tb = NULL;
    for (int i = 0; i < c->ad.n_tensors && !tb; i++)
        if (c->ad.tensors[i].is_b && c->ad.tensors[i].layer == layer && c->ad.tensors[i].proj == p)
            tb = &c->ad.tensors[i];
    QL_ASSERT(tb && ta->cols == in && tb->rows == out && ta->rows == tb->cols);
    const float *A = c->params + ta->offset, *B = c->params + tb->offset;
    int64_t r = ta->rows;
    float s = c->ad.scale;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < out; i++) {
        for (int64_t j = 0; j < in; j++) {
            double acc = 0;
            for (int64_t k = 0; k < r; k++) acc += (double)B[i * r + k] * (double)A[k * in + j];
            w[i * in + j] += s * (float)acc;
        }
    }
}

/* A linear weight as qlora's forward used it. */
static ql_status base_linear(merge_ctx *c, const ql_hf_expected *e, float *w) {
    const ql_model_source *s = &c->src;
    if (s->is_q4 && s->is_q4(s, e->name)) {
        ql_q4 q;
        QL_TRY(s->get_q4(s, e->name, &q));
        ql_q4_dequantize(&q, w);
        ql_q4_free(&q);
        return QL_OK;
    }
    QL_TRY(s->get_f32(s, e->name, w));
    if (c->o->base_original) return QL_OK;
    ql_q4 q;
    QL_TRY(ql_q4_quantize(w, e->shape[0], e->shape[1], c->o->qtype, c->o->blocksize,
                          c->o->double_quant, &q));
    ql_q4_dequantize(&q, w);
    ql_q4_free(&q);
    return QL_OK;
}

int ql_merge_targeted(const merge_ctx *c, const ql_hf_expected *e, int *layer, ql_proj *p) {
    char mod[32], proj[32];
    if (!c->params || !e->is_linear ||
        sscanf(e->name, "model.layers.%d.%31[^.].%31[^.].weight", layer, mod, proj) != 3)
        return 0;
    *p = ql_proj_from_name(proj);
    return *p != QL_N_PROJ && c->a_of[*layer * QL_N_PROJ + *p] >= 0;
}

ql_status ql_merge_tensor_f32(merge_ctx *c, const ql_hf_expected *e, float *w, int *merged) {
    int layer = -1;
    ql_proj p;
    *merged = 0;
    if (!e->is_linear) return c->src.get_f32(&c->src, e->name, w);
    QL_TRY(base_linear(c, e, w));
    if (ql_merge_targeted(c, e, &layer, &p)) {
        add_delta(c, layer, p, w, e->shape[0], e->shape[1]);
        *merged = 1;
    }
    return QL_OK;
}

/* Tensor e in the output dtype into dst. */
static ql_status produce(merge_ctx *c, const ql_hf_expected *e, void *dst, int *merged) {
    QL_TRY(ql_merge_tensor_f32(c, e, c->buf, merged));
    if (ql_dtype_from_f32(c->o->dtype, c->buf, dst, (size_t)ql_merge_numel(e)) != 0)
        return ql_error(QL_EINTERNAL, "%s: cannot convert to %s", e->name,
                        ql_dtype_name(c->o->dtype));
    return QL_OK;
}

static ql_status write_json(const char *path, const json_t *v) {
    char *text;
    size_t len;
    QL_TRY(ql_json_dumps_py(v, 2, 1, &text, &len));
    text[len] = '\n'; /* transformers ends its JSON files with a newline */
    ql_status st = ql_fs_write_atomic(path, text, len + 1);
    free(text);
    return st;
}

/* Shards of at most max bytes, filled greedily in name order (a tensor larger
 * than the limit gets a shard alone), as huggingface_hub splits. */
static size_t plan_shards(const merge_ctx *c, const int *keep, uint64_t max, size_t *shard_of) {
    size_t n = 0;
    uint64_t cur = 0, esz = ql_dtype_size(c->o->dtype);
    for (size_t i = 0; i < c->n_exp; i++) {
        if (!keep[i]) continue;
        uint64_t b = (uint64_t)ql_merge_numel(&c->exp[i]) * esz;
        if (n == 0 || (cur > 0 && cur + b > max)) {
            n++;
            cur = 0;
        }
        cur += b;
        shard_of[i] = n - 1;
    }
    return n;
}

static ql_status write_shard(merge_ctx *c, const char *tmp, const char *fname, const int *keep,
                             const size_t *shard_of, size_t shard, ql_merge_stats *s) {
    size_t esz = ql_dtype_size(c->o->dtype), n = 0;
    for (size_t i = 0; i < c->n_exp; i++) n += keep[i] && shard_of[i] == shard;
    ql_st_entry *e = ql_calloc(n ? n : 1, sizeof *e, "the shard's tensor list");
    void **bufs = ql_calloc(n ? n : 1, sizeof *bufs, "the shard's tensors");
    ql_status st = e && bufs ? QL_OK : QL_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < c->n_exp && st == QL_OK; i++) {
        if (!keep[i] || shard_of[i] != shard) continue;
        if (c->o->cancel && *c->o->cancel) {
            st = ql_error(QL_EIO, "interrupted by a signal; no output written");
            break;
        }
        const ql_hf_expected *x = &c->exp[i];
        uint64_t bytes = (uint64_t)ql_merge_numel(x) * esz;
        bufs[k] = ql_malloc((size_t)(bytes ? bytes : 1), x->name);
        if (!bufs[k]) {
            st = QL_ENOMEM;
            break;
        }
        int merged = 0;
        st = produce(c, x, bufs[k], &merged);
        if (st != QL_OK) {
            st = ql_error_wrap(st, "%s: tensor %s: ", c->o->model, x->name);
            break;
        }
        e[k] = (ql_st_entry){.name = x->name,
                             .dtype = c->o->dtype,
                             .ndim = x->ndim,
                             .shape = {x->shape[0], x->shape[1]},
                             .data = bufs[k],
                             .nbytes = bytes};
        k++;
        s->n_tensors++;
        s->n_merged += merged;
        s->params += ql_merge_numel(x);
        s->bytes += bytes;
    }
    if (st == QL_OK) {
        char *path = ql_fs_join(tmp, fname);
        st = path ? ql_st_write(path, e, k) : QL_ENOMEM;
        free(path);
    }
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    return st;
}

static ql_status write_tensors(merge_ctx *c, const char *tmp, ql_merge_stats *s) {
    int *keep = ql_calloc(c->n_exp ? c->n_exp : 1, sizeof *keep, "the tensor list");
    size_t *shard_of = ql_calloc(c->n_exp ? c->n_exp : 1, sizeof *shard_of, "the shard plan");
    if (!keep || !shard_of) {
        free(keep);
        free(shard_of);
        return QL_ENOMEM;
    }
    int64_t biggest = 1;
    for (size_t i = 0; i < c->n_exp; i++) {
        /* lm_head is optional only with tied embeddings, and then
         * transformers stores none. */
        keep[i] = !c->exp[i].optional;
        if (keep[i] && ql_merge_numel(&c->exp[i]) > biggest) biggest = ql_merge_numel(&c->exp[i]);
    }
    c->buf = ql_malloc((size_t)biggest * sizeof(float), "the staging buffer");
    uint64_t max = c->o->max_shard_bytes ? c->o->max_shard_bytes : DEFAULT_SHARD_BYTES;
    size_t n_shards = c->buf ? plan_shards(c, keep, max, shard_of) : 0;
    ql_status st = c->buf ? QL_OK : QL_ENOMEM;
    json_t *wm = json_object();
    if (!wm) st = ql_error(QL_ENOMEM, "out of memory for the shard index");
    char fname[64];
    for (size_t sh = 0; sh < n_shards && st == QL_OK; sh++) {
        if (n_shards == 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", sh + 1, n_shards);
        if (c->o->progress)
            fprintf(c->o->progress, "export: writing %s (%zu of %zu)\n", fname, sh + 1, n_shards);
        st = write_shard(c, tmp, fname, keep, shard_of, sh, s);
        for (size_t i = 0; i < c->n_exp && st == QL_OK; i++)
            if (keep[i] && shard_of[i] == sh)
                json_object_set_new(wm, c->exp[i].name, json_string(fname));
    }
    s->n_shards = (int)n_shards;
    if (st == QL_OK && n_shards > 1) {
        json_t *index = json_pack("{s:{s:I},s:O}", "metadata", "total_size", (json_int_t)s->bytes,
                                  "weight_map", wm);
        char *path = ql_fs_join(tmp, "model.safetensors.index.json");
        st = index && path ? write_json(path, index) : ql_error(QL_ENOMEM, "out of memory");
        free(path);
        json_decref(index);
    }
    json_decref(wm);
    free(keep);
    free(shard_of);
    return st;
}

/* config.json: the source's, less quantization_config, with the new dtype. */
static ql_status write_config(merge_ctx *c, const char *tmp) {
    json_t *cfg = c->src.cfg.json ? json_deep_copy(c->src.cfg.json) : NULL;
    if (!cfg) return ql_error(QL_ENOMEM, "out of memory building config.json");
    json_object_del(cfg, "quantization_config");
    const char *dt = ql_hf_torch_dtype_name(c->o->dtype);
    json_object_set_new(cfg, "torch_dtype", json_string(dt));
    /* transformers v5 writes `dtype`; keep the two in agreement. */
    if (json_object_get(cfg, "dtype")) json_object_set_new(cfg, "dtype", json_string(dt));
    char *path = ql_fs_join(tmp, "config.json");
    ql_status st = path ? write_json(path, cfg) : QL_ENOMEM;
    free(path);
    json_decref(cfg);
    return st;
}

/* The tokenizer and generation files of a directory source. A GGUF file
 * carries its tokenizer as metadata, which is not converted here. */
static ql_status copy_side_files(merge_ctx *c, const char *tmp, ql_merge_stats *s) {
    if (c->src.kind == QL_SOURCE_GGUF) {
        s->tokenizer_missing = 1;
        return QL_OK;
    }
    ql_status st = QL_OK;
    for (size_t i = 0; ql_hf_side_files[i] && st == QL_OK; i++) {
        char *from = ql_fs_join(c->src.path, ql_hf_side_files[i]);
        char *to = ql_fs_join(tmp, ql_hf_side_files[i]);
        if (!from || !to)
            st = QL_ENOMEM;
        else if (ql_fs_exists(from) && (st = ql_fs_copy_file(from, to)) == QL_OK)
            s->tokenizer_files++;
        free(from);
        free(to);
    }
    char *tj = ql_fs_join(c->src.path, "tokenizer.json");
    if (tj && !ql_fs_exists(tj)) s->tokenizer_missing = 2;
    free(tj);
    return st;
}

static ql_status check_opts(const ql_merge_opts *o) {
    if (o->gguf && o->gguf_type != QL_GGML_F32 && o->gguf_type != QL_GGML_F16 &&
        o->gguf_type != QL_GGML_BF16 && o->gguf_type != QL_GGML_Q8_0)
        return ql_error(QL_EINVAL, "a merged GGUF's linears must be f32, f16, bf16 or q8_0");
    if (!o->gguf && o->dtype != QL_DT_BF16 && o->dtype != QL_DT_F16 && o->dtype != QL_DT_F32)
        return ql_error(QL_EINVAL, "merged model dtype must be bf16, f16 or f32, not %s",
                        ql_dtype_name(o->dtype));
    if (!o->base_original && !ql_q4_blocksize_ok(o->blocksize))
        return ql_error(QL_EINVAL, "quantization block size %d is not one bitsandbytes allows",
                        o->blocksize);
    if (ql_fs_exists(o->out_dir) && !o->force)
        return ql_error(QL_EINVAL, "%s already exists; choose another output or use --force",
                        o->out_dir);
    return QL_OK;
}

ql_status ql_merge_write(const ql_merge_opts *o, ql_merge_stats *s) {
    memset(s, 0, sizeof *s);
    QL_TRY(check_opts(o));
    merge_ctx c = {.o = o};
    char *tmp = NULL;
    ql_status st = ql_model_source_open(o->model, &c.src);
    if (st == QL_OK) c.src_open = 1;
    if (st == QL_OK) st = ql_merge_load_adapter(&c);
    if (st == QL_OK) st = ql_hf_expected_tensors(&c.src.cfg, &c.exp, &c.n_exp);
    if (st == QL_OK && o->gguf) {
        st = ql_merge_write_gguf(&c, s);
        ql_merge_ctx_free(&c);
        return st;
    }
    if (st == QL_OK) st = ql_fs_mkdtemp_beside(o->out_dir, &tmp);
    if (st == QL_OK) st = write_tensors(&c, tmp, s);
    if (st == QL_OK) st = write_config(&c, tmp);
    if (st == QL_OK) st = copy_side_files(&c, tmp, s);
    if (st == QL_OK && o->cancel && *o->cancel)
        st = ql_error(QL_EIO, "interrupted by a signal; no output written");
    if (st == QL_OK) st = ql_fs_commit_dir(tmp, o->out_dir, o->force);
    if (st != QL_OK && tmp) ql_fs_remove_tree(tmp);
    free(tmp);
    ql_merge_ctx_free(&c);
    return st;
}
