#include "model/hf_quantize.h"

#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/json_float.h"
#include "kernels/quant4.h"
#include "model/bnb4.h"
#include "model/hf_model.h"
#include "model/safetensors.h"

const char *const ql_hf_side_files[] = {"tokenizer.json",
                                        "tokenizer_config.json",
                                        "special_tokens_map.json",
                                        "generation_config.json",
                                        "tokenizer.model",
                                        "vocab.json",
                                        "merges.txt",
                                        "added_tokens.json",
                                        "chat_template.jinja",
                                        NULL};

/* Everything one run holds until the files are written. */
typedef struct qrun {
    ql_st_entry *entries;
    size_t n_entries, cap_entries;
    /* group g covers entries [group_start[g], group_start[g+1]): the keys one
     * source tensor became, kept in the same shard */
    size_t *group_start;
    size_t n_groups;
    ql_q4 *q4;
    ql_bnb4_entries *bnb;
    size_t n_q4;
} qrun;

static ql_status push_entry(qrun *r, const ql_st_entry *e) {
    if (r->n_entries == r->cap_entries) {
        size_t cap = r->cap_entries ? r->cap_entries * 2 : 256;
        ql_st_entry *ne = realloc(r->entries, cap * sizeof *ne);
        if (!ne) return ql_error(QL_ENOMEM, "out of memory for the tensor list");
        r->entries = ne;
        r->cap_entries = cap;
    }
    r->entries[r->n_entries++] = *e;
    return QL_OK;
}

static void qrun_free(qrun *r) {
    for (size_t i = 0; i < r->n_q4; i++) {
        ql_bnb4_entries_free(&r->bnb[i]);
        ql_q4_free(&r->q4[i]);
    }
    free(r->q4);
    free(r->bnb);
    free(r->entries);
    free(r->group_start);
}

/* The path OUT will have once created, resolved, for comparing with the
 * model directory. */
static char *resolve_future(const char *path) {
    char *r = realpath(path, NULL);
    if (r) return r;
    char *a = strdup(path), *b = strdup(path);
    char *res = NULL;
    if (a && b) {
        char *parent = realpath(dirname(a), NULL);
        if (parent) {
            res = ql_fs_join(parent, basename(b));
            free(parent);
        }
    }
    free(a);
    free(b);
    return res;
}

static ql_status check_paths(const ql_quantize_opts *o) {
    if (ql_fs_exists(o->out_dir) && !o->force)
        return ql_error(QL_EINVAL, "%s: already exists (use --force to replace it)", o->out_dir);
    char *m = realpath(o->model_dir, NULL);
    char *out = resolve_future(o->out_dir);
    ql_status st = QL_OK;
    if (m && out) {
        size_t lo = strlen(out);
        if (!strcmp(m, out) || (!strncmp(m, out, lo) && m[lo] == '/'))
            st = ql_error(QL_EINVAL,
                          "--out %s would replace the model directory %s (or a directory "
                          "containing it)",
                          o->out_dir, o->model_dir);
    }
    free(m);
    free(out);
    return st;
}

static ql_status quantize_tensors(const ql_quantize_opts *o, const ql_hf_model *m, qrun *r,
                                  ql_quantize_stats *s) {
    r->q4 = ql_calloc(m->n_refs ? m->n_refs : 1, sizeof *r->q4, "4-bit matrices");
    r->bnb = ql_calloc(m->n_refs ? m->n_refs : 1, sizeof *r->bnb, "4-bit entries");
    r->group_start = ql_calloc(m->n_refs + 1, sizeof *r->group_start, "tensor groups");
    if (!r->q4 || !r->bnb || !r->group_start) return QL_ENOMEM;
    size_t total = 0;
    for (size_t i = 0; i < m->n_refs; i++) total += !ql_hf_ignored_tensor(m->refs[i].name);
    const char *qname = o->type == QL_QTYPE_NF4 ? "nf4" : "fp4";
    size_t k = 0;
    float *buf = NULL;
    ql_status st = QL_OK;
    for (size_t i = 0; i < m->n_refs && st == QL_OK; i++) {
        if (o->cancel && *o->cancel) {
            st = ql_error(QL_EIO, "interrupted by a signal; no output written");
            break;
        }
        const ql_st_tensor *t = m->refs[i].t;
        uint64_t bytes = t->end - t->begin;
        s->bytes_in += bytes;
        s->params_total += t->numel;
        if (ql_hf_ignored_tensor(t->name)) {
            s->n_dropped++;
            continue;
        }
        k++;
        r->group_start[r->n_groups++] = r->n_entries;
        const ql_hf_expected *e = ql_hf_model_expected(m, t->name);
        char sh[128];
        if (!e || !e->is_linear) {
            ql_st_entry ent = {.name = t->name,
                               .dtype = t->dtype,
                               .ndim = t->ndim,
                               .data = t->data,
                               .nbytes = bytes};
            memcpy(ent.shape, t->shape, sizeof ent.shape);
            st = push_entry(r, &ent);
            s->n_kept++;
            s->bytes_out += bytes;
            if (o->progress)
                fprintf(o->progress, "[%zu/%zu] %s %s kept (%s)\n", k, total, t->name,
                        ql_st_shape_str(t->shape, t->ndim, sh, sizeof sh), ql_dtype_name(t->dtype));
            continue;
        }
        if (o->progress) {
            fprintf(o->progress, "[%zu/%zu] %s %" PRId64 "x%" PRId64 " -> %s%s\n", k, total,
                    t->name, t->shape[0], t->shape[1], qname, o->double_quant ? "+dq" : "");
            fflush(o->progress);
        }
        free(buf);
        buf = ql_malloc((size_t)t->numel * sizeof *buf, t->name);
        if (!buf) {
            st = QL_ENOMEM;
            break;
        }
        QL_TRY_GOTO(st, ql_st_to_f32(&m->files[m->refs[i].file], t, buf), out);
        ql_q4 *q = &r->q4[r->n_q4];
        QL_TRY_GOTO(st,
                    ql_q4_quantize(buf, t->shape[0], t->shape[1], o->type, o->blocksize,
                                   o->double_quant, q),
                    out);
        ql_dtype src = t->dtype == QL_DT_F64 ? QL_DT_F32 : t->dtype;
        ql_bnb4_entries *b = &r->bnb[r->n_q4];
        st = ql_bnb4_make_entries(t->name, q, src, b);
        r->n_q4++;
        if (st != QL_OK) break;
        for (size_t j = 0; j < b->n && st == QL_OK; j++) {
            st = push_entry(r, &b->e[j]);
            s->bytes_out += b->e[j].nbytes;
            s->bytes_quantized_all += b->e[j].nbytes;
        }
        s->bytes_quantized += (uint64_t)ql_q4_packed_bytes(q) +
                              (uint64_t)q->n_blocks * (q->double_quant ? 1u : 4u) +
                              (q->double_quant ? (uint64_t)ql_q4_nested_blocks(q) * 4u : 0u);
        s->params_quantized += t->numel;
        s->n_quantized++;
    }
out:
    free(buf);
    r->group_start[r->n_groups] = r->n_entries;
    return st;
}

static ql_status write_json(const char *path, const json_t *v) {
    char *text;
    size_t len;
    QL_TRY(ql_json_dumps_py(v, 2, 1, &text, &len));
    /* transformers ends its JSON files with a newline. */
    text[len] = '\n';
    ql_status st = ql_fs_write_atomic(path, text, len + 1);
    free(text);
    return st;
}

static ql_status write_tensors(const ql_quantize_opts *o, const char *tmp, qrun *r,
                               ql_quantize_stats *s) {
    uint64_t max = o->max_shard_bytes ? o->max_shard_bytes : QL_DEFAULT_MAX_SHARD_BYTES;
    uint64_t total = 0;
    for (size_t i = 0; i < r->n_entries; i++) total += r->entries[i].nbytes;
    ql_status st = QL_OK;
    if (total <= max) {
        char *path = ql_fs_join(tmp, "model.safetensors");
        if (!path) return QL_ENOMEM;
        st = ql_st_write(path, r->entries, r->n_entries);
        free(path);
        s->n_shards = 1;
        return st;
    }
    /* Greedy split like huggingface_hub's: fill a shard until the next group
     * would overflow it. A group larger than the limit gets a shard alone. */
    size_t *shard_of = ql_calloc(r->n_groups ? r->n_groups : 1, sizeof *shard_of, "shards");
    if (!shard_of) return QL_ENOMEM;
    size_t n_shards = 0;
    uint64_t cur = 0;
    for (size_t g = 0; g < r->n_groups; g++) {
        uint64_t gb = 0;
        for (size_t j = r->group_start[g]; j < r->group_start[g + 1]; j++)
            gb += r->entries[j].nbytes;
        if (n_shards == 0 || (cur > 0 && cur + gb > max)) {
            n_shards++;
            cur = 0;
        }
        cur += gb;
        shard_of[g] = n_shards - 1;
    }
    json_t *index = json_object(), *wm = json_object();
    json_t *meta = json_pack("{s:I}", "total_size", (json_int_t)total);
    if (!index || !wm || !meta || json_object_set_new(index, "metadata", meta) ||
        json_object_set_new(index, "weight_map", wm)) {
        free(shard_of);
        json_decref(index);
        return ql_error(QL_ENOMEM, "out of memory building the shard index");
    }
    char fname[64];
    for (size_t sh = 0; sh < n_shards && st == QL_OK; sh++) {
        snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", sh + 1, n_shards);
        size_t first = SIZE_MAX, last = 0;
        for (size_t g = 0; g < r->n_groups; g++)
            if (shard_of[g] == sh) {
                if (first == SIZE_MAX) first = r->group_start[g];
                last = r->group_start[g + 1];
            }
        for (size_t j = first; j < last; j++)
            json_object_set_new(wm, r->entries[j].name, json_string(fname));
        char *path = ql_fs_join(tmp, fname);
        if (!path) {
            st = QL_ENOMEM;
            break;
        }
        if (o->progress) fprintf(o->progress, "writing %s\n", fname);
        st = ql_st_write(path, r->entries + first, last - first);
        free(path);
    }
    if (st == QL_OK) {
        char *path = ql_fs_join(tmp, "model.safetensors.index.json");
        st = path ? write_json(path, index) : QL_ENOMEM;
        free(path);
    }
    s->n_shards = (int)n_shards;
    json_decref(index);
    free(shard_of);
    return st;
}

static ql_status write_side_files(const ql_quantize_opts *o, const ql_hf_model *m,
                                  const char *tmp) {
    json_t *cfg = json_deep_copy(m->cfg.json);
    json_t *qc = ql_bnb4_quantization_config(o->type, o->double_quant, m->cfg.torch_dtype);
    if (!cfg || !qc || json_object_set_new(cfg, "quantization_config", qc)) {
        json_decref(cfg);
        return ql_error(QL_ENOMEM, "out of memory building config.json");
    }
    char *path = ql_fs_join(tmp, "config.json");
    ql_status st = path ? write_json(path, cfg) : QL_ENOMEM;
    free(path);
    json_decref(cfg);
    for (size_t i = 0; ql_hf_side_files[i] && st == QL_OK; i++) {
        char *src = ql_fs_join(m->dir, ql_hf_side_files[i]);
        char *dst = ql_fs_join(tmp, ql_hf_side_files[i]);
        if (!src || !dst)
            st = QL_ENOMEM;
        else if (ql_fs_exists(src))
            st = ql_fs_copy_file(src, dst);
        free(src);
        free(dst);
    }
    return st;
}

ql_status ql_hf_quantize(const ql_quantize_opts *o, ql_quantize_stats *s) {
    memset(s, 0, sizeof *s);
    if (!ql_q4_blocksize_ok(o->blocksize))
        return ql_error(QL_EINVAL,
                        "--blocksize %d is not one bitsandbytes allows (32, 64, 128, 256, 512, "
                        "1024, 2048, 4096)",
                        o->blocksize);
    QL_TRY(check_paths(o));
    ql_hf_model m;
    QL_TRY(ql_hf_model_open(o->model_dir, &m));
    ql_status st = QL_OK;
    char *tmp = NULL;
    qrun r = {0};
    if (m.cfg.quant.present) {
        st = ql_error(QL_EINVAL,
                      "%s/config.json: the model is already bitsandbytes 4-bit "
                      "(quantization_config is set)",
                      o->model_dir);
        goto out;
    }
    QL_TRY_GOTO(st, ql_fs_mkdtemp_beside(o->out_dir, &tmp), out);
    QL_TRY_GOTO(st, quantize_tensors(o, &m, &r, s), out);
    QL_TRY_GOTO(st, write_tensors(o, tmp, &r, s), out);
    QL_TRY_GOTO(st, write_side_files(o, &m, tmp), out);
    if (o->cancel && *o->cancel) {
        st = ql_error(QL_EIO, "interrupted by a signal; no output written");
        goto out;
    }
    st = ql_fs_commit_dir(tmp, o->out_dir, o->force);
out:
    if (st != QL_OK && tmp) ql_fs_remove_tree(tmp);
    free(tmp);
    qrun_free(&r);
    ql_hf_model_close(&m);
    return st;
}
