#include "ckpt/export.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/shard.h"
#include "ckpt/store.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_lora.h"
#include "model/lora.h"
#include "model/peft.h"
#include "model/source.h"
#include "model/safetensors.h"

/* ------------------------------------------------------------ the source */

static int has_file(const char *dir, const char *name) {
    char *p = ql_fs_join(dir, name);
    int r = p && ql_fs_exists(p);
    free(p);
    return r;
}

/* "a/b/c" -> "a/b"; "c" -> "." */
static void parent_of(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

/* A directory holding committed step directories (or a LATEST). */
static int is_ckpt_root(const char *dir) {
    if (has_file(dir, "LATEST")) return 1;
    int64_t *steps = NULL;
    int n = 0;
    if (ql_ckpt_list(dir, &steps, &n) != QL_OK) {
        ql_error_clear();
        return 0;
    }
    free(steps);
    return n > 0;
}

ql_status ql_export_resolve(const char *src, ql_export_source *out) {
    memset(out, 0, sizeof *out);
    if (ql_gguf_lora_is_file(src) && ql_fs_exists(src)) { /* a llama.cpp LoRA adapter */
        out->kind = QL_EXPORT_FROM_ADAPTER;
        snprintf(out->path, sizeof out->path, "%s", src);
        return QL_OK;
    }
    if (!ql_fs_is_dir(src))
        return ql_fs_exists(src) ? ql_error(QL_EINVAL,
                                            "%s: not a directory; give a run directory, an "
                                            "adapter directory or a checkpoint directory",
                                            src)
                                 : ql_error(QL_ENOTFOUND, "%s: no such directory", src);
    char parent[QL_EXPORT_PATH_MAX], up2[QL_EXPORT_PATH_MAX];
    parent_of(src, parent, sizeof parent);
    if (has_file(src, QL_PEFT_CONFIG)) {
        out->kind = QL_EXPORT_FROM_ADAPTER;
        snprintf(out->path, sizeof out->path, "%s", src);
        if (has_file(parent, "config.resolved.yaml"))
            snprintf(out->run_dir, sizeof out->run_dir, "%s", parent);
        return QL_OK;
    }
    if (has_file(src, "manifest.pb")) { /* RUN/checkpoints/step-N */
        out->kind = QL_EXPORT_FROM_CHECKPOINT;
        snprintf(out->path, sizeof out->path, "%s", src);
        parent_of(parent, up2, sizeof up2);
        if (has_file(up2, "config.resolved.yaml"))
            snprintf(out->run_dir, sizeof out->run_dir, "%s", up2);
        return QL_OK;
    }
    if (has_file(src, "adapter/" QL_PEFT_CONFIG)) { /* a run: its final adapter */
        out->kind = QL_EXPORT_FROM_ADAPTER;
        snprintf(out->path, sizeof out->path, "%s/adapter", src);
        snprintf(out->run_dir, sizeof out->run_dir, "%s", src);
        return QL_OK;
    }
    char *root = ql_fs_join(src, "checkpoints");
    if (!root) return QL_ENOMEM;
    int run_ckpts = ql_fs_is_dir(root);
    free(root);
    if (run_ckpts || is_ckpt_root(src)) { /* a run without adapter/, or RUN/checkpoints */
        out->kind = QL_EXPORT_FROM_CHECKPOINTS;
        snprintf(out->path, sizeof out->path, run_ckpts ? "%s/checkpoints" : "%s", src);
        if (run_ckpts)
            snprintf(out->run_dir, sizeof out->run_dir, "%s", src);
        else if (has_file(parent, "config.resolved.yaml"))
            snprintf(out->run_dir, sizeof out->run_dir, "%s", parent);
        return QL_OK;
    }
    return ql_error(QL_ENOTFOUND,
                    "%s: not a run directory (no adapter/%s, no checkpoints/), an adapter "
                    "directory (no %s) nor a checkpoint (no manifest.pb)",
                    src, QL_PEFT_CONFIG, QL_PEFT_CONFIG);
}

/* ------------------------------------------------ the adapter, model-free */

static int cmp_tensor(const void *x, const void *y) {
    const ql_adapter_tensor *a = x, *b = y;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    if (a->proj != b->proj) return a->proj < b->proj ? -1 : 1;
    return a->is_b - b->is_b;
}

/* (layer, projection, A or B) of a PEFT Llama key; -1 when `name` is not
 * exactly base_model.model.model.layers.N.{self_attn|mlp}.PROJ.lora_{A|B}.weight. */
static int parse_key(const char *name, int *layer, ql_proj *p, int *is_b) {
    char mod[32] = "", proj[32] = "", ab = 0, again[QL_ADAPTER_NAME_MAX];
    if (sscanf(name, "base_model.model.model.layers.%d.%31[^.].%31[^.].lora_%c", layer, mod, proj,
               &ab) != 4 ||
        *layer < 0 || (ab != 'A' && ab != 'B'))
        return -1;
    *p = ql_proj_from_name(proj);
    *is_b = ab == 'B';
    if (*p == QL_N_PROJ) return -1;
    ql_adapter_peft_name(*layer, *p, *is_b, again, sizeof again);
    return strcmp(again, name) ? -1 : 0;
}

#define KEY_FORMAT "base_model.model.model.layers.N.{self_attn|mlp}.PROJ.lora_{A|B}.weight"

/* Orders a table by (layer, projection, A before B), checks that it is
 * complete (every target of every layer 0..L-1, A [r, in] with B [out, r])
 * and, with offsets < 0, lays it out contiguously. `where` names the source. */
static ql_status finish_table(ql_adapters *a, const ql_lora_config *lc, unsigned seen,
                              int max_layer, int assign_offsets, const char *where) {
    if (seen != lc->targets)
        return ql_error(QL_EFORMAT, "%s: holds no weights for some of the target modules", where);
    qsort(a->tensors, (size_t)a->n_tensors, sizeof *a->tensors, cmp_tensor);
    int per_layer = __builtin_popcount(lc->targets);
    if (a->n_tensors != 2 * per_layer * (max_layer + 1))
        return ql_error(QL_EFORMAT,
                        "%s: %d tensors, but %d layers x %d targets x (A, B) = %d expected: some "
                        "layer or projection lacks its lora_A or lora_B",
                        where, a->n_tensors, max_layer + 1, per_layer,
                        2 * per_layer * (max_layer + 1));
    for (int i = 0; i < a->n_tensors; i += 2) {
        const ql_adapter_tensor *A = &a->tensors[i], *B = &a->tensors[i + 1];
        if (A->is_b || !B->is_b || A->layer != B->layer || A->proj != B->proj)
            return ql_error(QL_EFORMAT, "%s: '%s' has no matching lora_%c", where, A->name,
                            A->is_b ? 'A' : 'B');
        if (A->rows != lc->r || B->cols != lc->r)
            return ql_error(QL_EFORMAT, "%s: '%s' is [%lld, %lld]; r is %d", where,
                            A->rows != lc->r ? A->name : B->name,
                            (long long)(A->rows != lc->r ? A->rows : B->rows),
                            (long long)(A->rows != lc->r ? A->cols : B->cols), lc->r);
    }
    a->cfg = *lc;
    a->scale = (float)(lc->use_rslora ? (double)lc->alpha / sqrt((double)lc->r)
                                      : (double)lc->alpha / (double)lc->r);
    if (assign_offsets) {
        int64_t off = 0;
        for (int i = 0; i < a->n_tensors; i++) {
            a->tensors[i].offset = off;
            off += a->tensors[i].rows * a->tensors[i].cols;
        }
        a->n = off;
    }
    return QL_OK;
}

/* A llama.cpp GGUF adapter: its table comes from the base model (its layers,
 * and the heads its q/k rows were permuted by), which must be given. */
static ql_status adapter_from_gguf(const char *path, const char *model, const ql_lora_config *lc,
                                   ql_adapters *a, float **host) {
    memset(a, 0, sizeof *a);
    *host = NULL;
    if (!model)
        return ql_error(QL_EINVAL,
                        "%s: a GGUF adapter's tensors are laid out by its base model; give the "
                        "base with --model PATH",
                        path);
    ql_hf_config hc;
    QL_TRY(ql_model_config_load(model, &hc));
    ql_status st = ql_adapters_layout(&hc, lc, a);
    ql_hf_config_free(&hc);
    if (st == QL_OK &&
        !(*host = ql_malloc((size_t)(a->n ? a->n : 1) * sizeof **host, "the adapter weights")))
        st = QL_ENOMEM;
    if (st == QL_OK) {
        a->params = *host;
        st = ql_peft_load(path, a, NULL);
        a->params = NULL;
    }
    if (st != QL_OK) {
        free(*host);
        *host = NULL;
        ql_adapters_layout_free(a);
    }
    return st;
}

/* The adapter table as the file itself describes it, for an export that
 * needs no base model: every key must be PEFT's Llama key, every targeted
 * projection of every layer 0..L-1 must have its lora_A [r, in] and lora_B
 * [out, r], and the projections present must be the config's targets. */
static ql_status adapter_from_file(const char *dir, const ql_lora_config *lc, ql_adapters *a,
                                   float **host) {
    memset(a, 0, sizeof *a);
    *host = NULL;
    char *path = ql_fs_join(dir, QL_PEFT_WEIGHTS);
    if (!path) return QL_ENOMEM;
    ql_st_file f;
    ql_status st = ql_st_open(path, &f);
    if (st != QL_OK) {
        free(path);
        return st;
    }
    a->tensors = ql_calloc(f.n_tensors ? f.n_tensors : 1, sizeof *a->tensors, "the adapter table");
    if (!a->tensors) st = QL_ENOMEM;
    int max_layer = -1;
    unsigned seen = 0;
    for (size_t i = 0; st == QL_OK && i < f.n_tensors; i++) {
        const ql_st_tensor *t = &f.tensors[i];
        ql_adapter_tensor *x = &a->tensors[a->n_tensors];
        if (parse_key(t->name, &x->layer, &x->proj, &x->is_b) || t->ndim != 2) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s' is not a LoRA weight of a Llama-family projection "
                          "(" KEY_FORMAT ")",
                          path, t->name);
            break;
        }
        if (!((lc->targets >> x->proj) & 1u)) {
            st = ql_error(QL_EFORMAT, "%s: tensor '%s': %s is not in target_modules of %s/%s", path,
                          t->name, ql_proj_name(x->proj), dir, QL_PEFT_CONFIG);
            break;
        }
        snprintf(x->name, sizeof x->name, "%s", t->name);
        x->rows = t->shape[0];
        x->cols = t->shape[1];
        if (x->layer > max_layer) max_layer = x->layer;
        seen |= 1u << x->proj;
        a->n_tensors++;
    }
    if (st == QL_OK) st = finish_table(a, lc, seen, max_layer, 1, path);
    if (st == QL_OK &&
        !(*host = ql_malloc((size_t)(a->n ? a->n : 1) * sizeof(float), "the adapter")))
        st = QL_ENOMEM;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++)
        st = ql_st_to_f32(&f, ql_st_find(&f, a->tensors[i].name), *host + a->tensors[i].offset);
    ql_st_close(&f);
    free(path);
    if (st != QL_OK) {
        free(*host);
        *host = NULL;
        ql_adapters_layout_free(a);
    }
    return st;
}

/* ----------------------------------------------------------- checkpoints */

/* One committed checkpoint: verified as `qlora ckpt verify` does (the
 * manifest's own checksum, every shard's size, attributes and SHA-256), its
 * flat parameter vector read from the shards (any world size), the tensor
 * table from the manifest and the run's configuration from the manifest's
 * copy of config.resolved.yaml. */
static ql_status adapter_from_checkpoint(const char *dir, ql_config *cfg, ql_adapters *a,
                                         float **host, int64_t *step) {
    memset(a, 0, sizeof *a);
    *host = NULL;
    ql_ckpt_meta m;
    memset(&m, 0, sizeof m);
    ql_status st = ql_ckpt_verify(dir, QL_LOCK_BEST_EFFORT, NULL, &m, NULL);
    if (st != QL_OK) {
        ql_ckpt_meta_free(&m);
        return st;
    }
    *step = m.step;
    char where[QL_EXPORT_PATH_MAX + 32];
    snprintf(where, sizeof where, "%s/manifest.pb", dir);
    st = ql_config_parse(m.config_yaml, strlen(m.config_yaml), where, NULL, 0, cfg);
    ql_lora_config lc = {.r = (int)cfg->lora.r,
                         .alpha = (float)cfg->lora.alpha,
                         .dropout = (float)cfg->lora.dropout,
                         .use_rslora = cfg->lora.use_rslora,
                         .targets = cfg->lora.targets};
    if (st == QL_OK && lc.r < 1)
        st = ql_error(QL_EFORMAT, "%s: the run's lora.r is %d: no adapter to export", where, lc.r);
    if (st == QL_OK && !(a->tensors = ql_calloc((size_t)(m.n_tensors ? m.n_tensors : 1),
                                                sizeof *a->tensors, "the adapter table")))
        st = QL_ENOMEM;
    int max_layer = -1;
    unsigned seen = 0;
    for (int i = 0; st == QL_OK && i < m.n_tensors; i++) {
        const ql_ckpt_tensor *t = &m.tensors[i];
        ql_adapter_tensor *x = &a->tensors[a->n_tensors++];
        if (parse_key(t->name, &x->layer, &x->proj, &x->is_b)) {
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' is not " KEY_FORMAT, where, t->name);
            break;
        }
        /* parse_key accepted it, so it fits: every valid key is short. */
        memcpy(x->name, t->name, strlen(t->name) + 1 < sizeof x->name ? strlen(t->name) + 1 : 0);
        x->rows = t->rows;
        x->cols = t->cols;
        x->offset = t->offset;
        if (x->layer > max_layer) max_layer = x->layer;
        seen |= 1u << x->proj;
    }
    if (st == QL_OK) st = finish_table(a, &lc, seen, max_layer, 0, where);
    a->n = m.n_params;
    if (st == QL_OK && !(*host = ql_malloc((size_t)(m.n_params ? m.n_params : 1) * sizeof(float),
                                           "the checkpoint's parameters")))
        st = QL_ENOMEM;
    for (int i = 0; st == QL_OK && i < m.n_shards; i++) {
        const ql_ckpt_shard *sh = &m.shards[i];
        char *path = ql_fs_join(dir, sh->file);
        ql_shard *f = NULL;
        ql_shard_desc d;
        st = path ? ql_shard_open(path, QL_LOCK_BEST_EFFORT, &f, &d) : QL_ENOMEM;
        if (st == QL_OK) st = ql_shard_read(f, "params", 0, sh->length, *host + sh->offset);
        if (f) ql_shard_close(f);
        free(path);
    }
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++)
        if (a->tensors[i].offset < 0 ||
            a->tensors[i].offset + a->tensors[i].rows * a->tensors[i].cols > m.n_params)
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' lies outside the %lld parameters", where,
                          a->tensors[i].name, (long long)m.n_params);
    ql_ckpt_meta_free(&m);
    if (st != QL_OK) {
        free(*host);
        *host = NULL;
        ql_adapters_layout_free(a);
    }
    return st;
}

/* The newest checkpoint under `root` that verifies (LATEST first), saying on
 * `progress` which ones were passed over and why. */
static ql_status newest_checkpoint(const char *root, FILE *progress, ql_config *cfg, ql_adapters *a,
                                   float **host, int64_t *step, char *dir, size_t cap) {
    char **dirs = NULL, note[1024];
    int n = 0;
    QL_TRY(ql_ckpt_candidates(root, &dirs, &n, note, sizeof note));
    if (note[0] && progress) fprintf(progress, "export: %s\n", note);
    ql_status st = n ? QL_OK : ql_error(QL_ENOTFOUND, "%s: no committed checkpoint", root);
    for (int i = 0; i < n; i++) {
        st = adapter_from_checkpoint(dirs[i], cfg, a, host, step);
        if (st == QL_OK) {
            snprintf(dir, cap, "%s", dirs[i]);
            break;
        }
        if (progress)
            fprintf(progress, "export: %s does not verify (%s)%s\n", dirs[i], ql_error_message(),
                    i + 1 < n ? "; trying the one before" : "");
    }
    if (st != QL_OK && n > 1)
        st = ql_error_wrap(
            st, "%s: none of the %d checkpoints verifies; the last one tried: ", root, n);
    ql_ckpt_free_list(dirs, n);
    return st;
}

/* ------------------------------------------------------------- the merge */

/* The base model: --model, else the run's `model` (from `cfg`, a
 * checkpoint's configuration, or the run's config.resolved.yaml), else the
 * adapter's base_model_name_or_path, whichever exists. With `quant`, also the
 * 4-bit settings the run trained with (qlora's defaults without a run). */
static ql_status base_model(const ql_export_opts *o, const ql_config *cfg,
                            const char *base_in_adapter, int quant, ql_export_result *r) {
    r->qtype = QL_QTYPE_NF4;
    r->blocksize = 64;
    r->double_quant = 1;
    ql_config *own = NULL;
    if (!cfg && r->run_dir[0] && (quant || !o->model)) {
        char *path = ql_fs_join(r->run_dir, "config.resolved.yaml");
        own = ql_calloc(1, sizeof *own, "the run configuration");
        ql_status st = path && own ? ql_config_load(path, NULL, 0, own) : QL_ENOMEM;
        free(path);
        if (st != QL_OK) {
            free(own);
            return ql_error_wrap(st, "reading the run's base model and 4-bit settings: ");
        }
        cfg = own;
    }
    char run_model[QL_EXPORT_PATH_MAX] = "";
    if (cfg) {
        r->qtype = cfg->quant.type == QL_QTYPE_FP4 ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
        r->quant_none = cfg->quant.type == QL_QUANT_NONE;
        r->blocksize = (int)cfg->quant.blocksize;
        r->double_quant = cfg->quant.double_quant;
        r->quant_from_run = 1;
        snprintf(run_model, sizeof run_model, "%s", cfg->model);
    }
    free(own);
    if (o->model)
        snprintf(r->model, sizeof r->model, "%s", o->model);
    else if (run_model[0] && ql_fs_exists(run_model))
        snprintf(r->model, sizeof r->model, "%s", run_model);
    else if (base_in_adapter[0] && ql_fs_exists(base_in_adapter))
        snprintf(r->model, sizeof r->model, "%s", base_in_adapter);
    else
        return ql_error(QL_ENOTFOUND,
                        "cannot find the base model %s (the run's model: %s; the adapter's "
                        "base_model_name_or_path: %s); give it with --model PATH",
                        o->merge ? "to merge into"
                                 : "whose architecture and heads the GGUF "
                                   "adapter needs",
                        run_model[0] ? run_model : "none",
                        base_in_adapter[0] ? base_in_adapter : "none");
    return QL_OK;
}

/* The adapter table `a` is the one `model` gives its configuration, so that
 * a GGUF adapter (whose Q/K order depends on the model's heads) is never
 * written against a base it does not fit. */
static ql_status adapter_fits(const ql_adapters *a, const char *model) {
    ql_hf_config hc;
    QL_TRY(ql_model_config_load(model, &hc));
    ql_adapters want;
    memset(&want, 0, sizeof want);
    ql_status st = ql_adapters_layout(&hc, &a->cfg, &want);
    if (st == QL_OK) st = ql_adapters_match(&want, a, model, NULL);
    ql_adapters_layout_free(&want);
    ql_hf_config_free(&hc);
    return st;
}

/* ---------------------------------------------------------------- export */

ql_status ql_export(const ql_export_opts *o, ql_export_result *r) {
    memset(r, 0, sizeof *r);
    if (!o->out_dir || !*o->out_dir) return ql_error(QL_EINVAL, "no output directory given");
    if (o->q8_0 && !(o->merge && o->gguf))
        return ql_error(QL_EINVAL, "q8_0 is a type for a merged GGUF (--merge --gguf) only");
    if (o->gguf && ql_fs_is_dir(o->out_dir))
        return ql_error(QL_EINVAL, "%s is a directory; --gguf writes a file (e.g. adapter.gguf)",
                        o->out_dir);
    if (ql_fs_exists(o->out_dir) && !o->force)
        return ql_error(QL_EINVAL, "%s already exists; choose another --out or add --force",
                        o->out_dir);
    /* Defaults: an adapter as PEFT saves it (f32), a merged directory as
     * models are published (bf16), a merged GGUF as llama.cpp's converter
     * writes it (f16). */
    r->dtype = o->dtype >= 0         ? (ql_dtype)o->dtype
               : o->merge && o->gguf ? QL_DT_F16
               : o->merge            ? QL_DT_BF16
                                     : QL_DT_F32;
    if (r->dtype != QL_DT_F32 && r->dtype != QL_DT_BF16 && r->dtype != QL_DT_F16)
        return ql_error(QL_EINVAL, "dtype must be bf16, f16 or f32");
    ql_export_source src;
    QL_TRY(ql_export_resolve(o->src, &src));
    /* --out a/b/c: a/b is created (the output itself appears atomically). */
    char parent[QL_EXPORT_PATH_MAX];
    parent_of(o->out_dir, parent, sizeof parent);
    QL_TRY(ql_fs_mkdirs(parent));
    r->from = src.kind;
    snprintf(r->run_dir, sizeof r->run_dir, "%s", src.run_dir);

    ql_adapters a;
    memset(&a, 0, sizeof a);
    float *host = NULL;
    ql_config *cfg = NULL; /* a checkpoint's configuration */
    char base_in_adapter[QL_EXPORT_PATH_MAX] = "";
    ql_status st = QL_OK;
    if (src.kind == QL_EXPORT_FROM_ADAPTER) {
        snprintf(r->adapter_dir, sizeof r->adapter_dir, "%s", src.path);
        st = ql_peft_read_config(src.path, &r->lora, base_in_adapter, sizeof base_in_adapter);
        /* The merge reads the adapter against the model itself. */
        if (st == QL_OK && !o->merge)
            st = ql_gguf_lora_is_file(src.path)
                     ? adapter_from_gguf(src.path, o->model, &r->lora, &a, &host)
                     : adapter_from_file(src.path, &r->lora, &a, &host);
    } else {
        cfg = ql_calloc(1, sizeof *cfg, "the run configuration");
        if (!cfg) return QL_ENOMEM;
        if (src.kind == QL_EXPORT_FROM_CHECKPOINT) {
            snprintf(r->adapter_dir, sizeof r->adapter_dir, "%s", src.path);
            st = adapter_from_checkpoint(src.path, cfg, &a, &host, &r->step);
        } else {
            st = newest_checkpoint(src.path, o->progress, cfg, &a, &host, &r->step, r->adapter_dir,
                                   sizeof r->adapter_dir);
        }
        if (st == QL_OK) {
            r->lora = a.cfg;
            snprintf(base_in_adapter, sizeof base_in_adapter, "%s", cfg->model);
        }
    }
    /* A GGUF adapter names no base; the one given lays it out. */
    if (!base_in_adapter[0] && o->model && ql_gguf_lora_is_file(src.path))
        snprintf(base_in_adapter, sizeof base_in_adapter, "%s", o->model);
    snprintf(r->base_name, sizeof r->base_name, "%s",
             o->base_name ? o->base_name : base_in_adapter);
    if (st == QL_OK && o->merge) st = base_model(o, cfg, base_in_adapter, 1, r);
    if (st == QL_OK && o->merge) {
        a.params = host;
        ql_merge_opts mo = {.model = r->model,
                            .adapter_dir =
                                src.kind == QL_EXPORT_FROM_ADAPTER ? r->adapter_dir : NULL,
                            .adapters = src.kind == QL_EXPORT_FROM_ADAPTER ? NULL : &a,
                            .out_dir = o->out_dir,
                            .dtype = r->dtype,
                            .gguf = o->gguf,
                            .gguf_type = o->q8_0                  ? QL_GGML_Q8_0
                                         : r->dtype == QL_DT_F32  ? QL_GGML_F32
                                         : r->dtype == QL_DT_BF16 ? QL_GGML_BF16
                                                                  : QL_GGML_F16,
                            .qtype = r->qtype,
                            .blocksize = r->blocksize,
                            .double_quant = r->double_quant,
                            .base_original = o->base_original || r->quant_none,
                            .force = o->force,
                            .progress = o->progress,
                            .cancel = o->cancel};
        st = ql_merge_write(&mo, &r->merge);
        r->n_tensors = r->merge.n_tensors;
    } else if (st == QL_OK && o->gguf) {
        ql_gguf_lora_base b;
        r->n_tensors = a.n_tensors;
        st = base_model(o, cfg, base_in_adapter, 0, r);
        if (st == QL_OK) st = adapter_fits(&a, r->model);
        if (st == QL_OK) st = ql_gguf_lora_base_of(r->model, &b);
        if (st == QL_OK) {
            snprintf(r->gguf_arch, sizeof r->gguf_arch, "%s", b.arch);
            st = ql_gguf_lora_save(o->out_dir, &a, host, &b, r->dtype);
        }
    } else if (st == QL_OK) {
        r->n_tensors = a.n_tensors;
        a.params = host;
        st = ql_peft_save_as(o->out_dir, &a, NULL, r->base_name, r->dtype);
    }
    a.params = NULL;
    free(host);
    free(cfg);
    ql_adapters_layout_free(&a);
    return st;
}
