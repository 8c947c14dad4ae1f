#include "ckpt/export.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/fsutil.h"
#include "model/lora.h"
#include "model/peft.h"
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

static ql_status checkpoint_not_yet(const char *src) {
    return ql_error(QL_EUNSUPPORTED,
                    "%s: is a checkpoint (or a run with checkpoints but no adapter/); exporting "
                    "from a checkpoint is not available yet: the checkpoint reader (ckpt/) is "
                    "still being built. Export the run's adapter/ (written when training ends or "
                    "is interrupted) instead",
                    src);
}

ql_status ql_export_resolve(const char *src, char *adapter_dir, size_t cap, char *run_dir,
                            size_t run_cap) {
    adapter_dir[0] = run_dir[0] = '\0';
    if (!ql_fs_is_dir(src))
        return ql_fs_exists(src) ? ql_error(QL_EINVAL,
                                            "%s: not a directory; give a run directory, an "
                                            "adapter directory or a checkpoint directory",
                                            src)
                                 : ql_error(QL_ENOTFOUND, "%s: no such directory", src);
    if (has_file(src, QL_PEFT_CONFIG)) {
        snprintf(adapter_dir, cap, "%s", src);
        char parent[QL_EXPORT_PATH_MAX];
        parent_of(src, parent, sizeof parent);
        if (has_file(parent, "config.resolved.yaml")) snprintf(run_dir, run_cap, "%s", parent);
        return QL_OK;
    }
    if (has_file(src, "manifest.pb")) return checkpoint_not_yet(src);
    if (has_file(src, "adapter/" QL_PEFT_CONFIG)) {
        snprintf(adapter_dir, cap, "%s/adapter", src);
        snprintf(run_dir, run_cap, "%s", src);
        return QL_OK;
    }
    if (has_file(src, "checkpoints")) return checkpoint_not_yet(src);
    return ql_error(QL_ENOTFOUND,
                    "%s: not a run directory (no adapter/%s), an adapter directory (no %s) nor a "
                    "checkpoint (no manifest.pb)",
                    src, QL_PEFT_CONFIG, QL_PEFT_CONFIG);
}

/* ------------------------------------------------ the adapter, model-free */

static int cmp_tensor(const void *x, const void *y) {
    const ql_adapter_tensor *a = x, *b = y;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    if (a->proj != b->proj) return a->proj < b->proj ? -1 : 1;
    return a->is_b - b->is_b;
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
    a->cfg = *lc;
    a->scale = (float)(lc->use_rslora ? (double)lc->alpha / sqrt((double)lc->r)
                                      : (double)lc->alpha / (double)lc->r);
    a->tensors = ql_calloc(f.n_tensors ? f.n_tensors : 1, sizeof *a->tensors, "the adapter table");
    if (!a->tensors) st = QL_ENOMEM;
    int max_layer = -1;
    unsigned seen = 0;
    for (size_t i = 0; st == QL_OK && i < f.n_tensors; i++) {
        const ql_st_tensor *t = &f.tensors[i];
        int layer = -1;
        char mod[32] = "", proj[32] = "", ab = 0, again[QL_ADAPTER_NAME_MAX];
        int ok = sscanf(t->name, "base_model.model.model.layers.%d.%31[^.].%31[^.].lora_%c", &layer,
                        mod, proj, &ab) == 4 &&
                 layer >= 0 && (ab == 'A' || ab == 'B');
        ql_proj p = ok ? ql_proj_from_name(proj) : QL_N_PROJ;
        if (p != QL_N_PROJ) {
            ql_adapter_peft_name(layer, p, ab == 'B', again, sizeof again);
            ok = !strcmp(again, t->name);
        }
        if (!ok || p == QL_N_PROJ) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s' is not a LoRA weight of a Llama-family projection "
                          "(base_model.model.model.layers.N.{self_attn|mlp}.PROJ.lora_{A|B}."
                          "weight)",
                          path, t->name);
            break;
        }
        if (!((lc->targets >> p) & 1u)) {
            st = ql_error(QL_EFORMAT, "%s: tensor '%s': %s is not in target_modules of %s/%s", path,
                          t->name, proj, dir, QL_PEFT_CONFIG);
            break;
        }
        int64_t rows = t->ndim == 2 ? t->shape[0] : -1, cols = t->ndim == 2 ? t->shape[1] : -1;
        if ((ab == 'A' && rows != lc->r) || (ab == 'B' && cols != lc->r)) {
            char sh[96];
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' has shape %s; r is %d", path, t->name,
                          ql_st_shape_str(t->shape, t->ndim, sh, sizeof sh), lc->r);
            break;
        }
        ql_adapter_tensor *x = &a->tensors[a->n_tensors++];
        snprintf(x->name, sizeof x->name, "%s", t->name);
        x->layer = layer;
        x->proj = p;
        x->is_b = ab == 'B';
        x->rows = rows;
        x->cols = cols;
        if (layer > max_layer) max_layer = layer;
        seen |= 1u << p;
    }
    if (st == QL_OK && seen != lc->targets)
        st = ql_error(QL_EFORMAT, "%s: holds no weights for some of target_modules in %s/%s", path,
                      dir, QL_PEFT_CONFIG);
    if (st == QL_OK) {
        qsort(a->tensors, (size_t)a->n_tensors, sizeof *a->tensors, cmp_tensor);
        int per_layer = __builtin_popcount(lc->targets);
        if (a->n_tensors != 2 * per_layer * (max_layer + 1))
            st = ql_error(QL_EFORMAT,
                          "%s: %d tensors, but %d layers x %d targets x (A, B) = %d expected: "
                          "some layer or projection lacks its lora_A or lora_B",
                          path, a->n_tensors, max_layer + 1, per_layer,
                          2 * per_layer * (max_layer + 1));
    }
    for (int i = 0; st == QL_OK && i < a->n_tensors; i += 2) {
        const ql_adapter_tensor *A = &a->tensors[i], *B = &a->tensors[i + 1];
        if (A->is_b || !B->is_b || A->layer != B->layer || A->proj != B->proj)
            st = ql_error(QL_EFORMAT, "%s: '%s' has no matching lora_%c", path, A->name,
                          A->is_b ? 'A' : 'B');
    }
    int64_t off = 0;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        a->tensors[i].offset = off;
        off += a->tensors[i].rows * a->tensors[i].cols;
    }
    a->n = off;
    if (st == QL_OK && !(*host = ql_malloc((size_t)(off ? off : 1) * sizeof(float), "the adapter")))
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

/* ------------------------------------------------------------- the merge */

/* The base model and the 4-bit settings the run trained with. */
static ql_status merge_settings(const ql_export_opts *o, const char *base_in_adapter,
                                ql_export_result *r) {
    r->qtype = QL_QTYPE_NF4;
    r->blocksize = 64;
    r->double_quant = 1;
    char run_model[QL_EXPORT_PATH_MAX] = "";
    if (r->run_dir[0]) {
        char *path = ql_fs_join(r->run_dir, "config.resolved.yaml");
        ql_config *c = ql_calloc(1, sizeof *c, "the run configuration");
        ql_status st = path && c ? ql_config_load(path, NULL, 0, c) : QL_ENOMEM;
        if (st == QL_OK) {
            r->qtype = c->quant.type ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
            r->blocksize = (int)c->quant.blocksize;
            r->double_quant = c->quant.double_quant;
            r->quant_from_run = 1;
            snprintf(run_model, sizeof run_model, "%s", c->model);
        }
        free(c);
        free(path);
        if (st != QL_OK) return ql_error_wrap(st, "reading the run's 4-bit settings: ");
    }
    if (o->model)
        snprintf(r->model, sizeof r->model, "%s", o->model);
    else if (run_model[0] && ql_fs_exists(run_model))
        snprintf(r->model, sizeof r->model, "%s", run_model);
    else if (base_in_adapter[0] && ql_fs_exists(base_in_adapter))
        snprintf(r->model, sizeof r->model, "%s", base_in_adapter);
    else
        return ql_error(QL_ENOTFOUND,
                        "cannot find the base model to merge into (run config: %s; adapter's "
                        "base_model_name_or_path: %s); give it with --model PATH",
                        run_model[0] ? run_model : "none",
                        base_in_adapter[0] ? base_in_adapter : "none");
    return QL_OK;
}

/* ---------------------------------------------------------------- export */

ql_status ql_export(const ql_export_opts *o, ql_export_result *r) {
    memset(r, 0, sizeof *r);
    if (!o->out_dir || !*o->out_dir) return ql_error(QL_EINVAL, "no output directory given");
    if (ql_fs_exists(o->out_dir) && !o->force)
        return ql_error(QL_EINVAL, "%s already exists; choose another --out or add --force",
                        o->out_dir);
    r->dtype = o->dtype >= 0 ? (ql_dtype)o->dtype : o->merge ? QL_DT_BF16 : QL_DT_F32;
    if (r->dtype != QL_DT_F32 && r->dtype != QL_DT_BF16 && r->dtype != QL_DT_F16)
        return ql_error(QL_EINVAL, "dtype must be bf16, f16 or f32");
    QL_TRY(ql_export_resolve(o->src, r->adapter_dir, sizeof r->adapter_dir, r->run_dir,
                             sizeof r->run_dir));
    char base_in_adapter[QL_EXPORT_PATH_MAX];
    QL_TRY(ql_peft_read_config(r->adapter_dir, &r->lora, base_in_adapter, sizeof base_in_adapter));
    snprintf(r->base_name, sizeof r->base_name, "%s",
             o->base_name ? o->base_name : base_in_adapter);

    if (o->merge) {
        QL_TRY(merge_settings(o, base_in_adapter, r));
        ql_merge_opts mo = {.model = r->model,
                            .adapter_dir = r->adapter_dir,
                            .out_dir = o->out_dir,
                            .dtype = r->dtype,
                            .qtype = r->qtype,
                            .blocksize = r->blocksize,
                            .double_quant = r->double_quant,
                            .base_original = o->base_original,
                            .force = o->force,
                            .progress = o->progress,
                            .cancel = o->cancel};
        QL_TRY(ql_merge_write(&mo, &r->merge));
        r->n_tensors = r->merge.n_tensors;
        return QL_OK;
    }

    ql_adapters a;
    float *host = NULL;
    QL_TRY(adapter_from_file(r->adapter_dir, &r->lora, &a, &host));
    r->n_tensors = a.n_tensors;
    a.params = host;
    ql_status st = ql_peft_save_as(o->out_dir, &a, NULL, r->base_name, r->dtype);
    free(host);
    ql_adapters_layout_free(&a);
    return st;
}
