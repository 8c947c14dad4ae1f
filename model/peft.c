#include "model/peft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/config.h"
#include "core/fsutil.h"
#include "core/json_float.h"
#include "model/gguf_lora.h"
#include "model/lora.h"
#include "model/safetensors.h"

/* Bit i of ql_lora_config.targets is projection i for both the model and the
 * configuration's target names. */
_Static_assert(QL_CFG_N_TARGETS == QL_N_PROJ, "target name tables disagree");

/* The float32 the user wrote, as the shortest decimal that reads back to it:
 * 0.1f is stored as 0.1, not 0.10000000149011612. */
static double short_float(float x) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if (strtof(buf, NULL) == x) return strtod(buf, NULL);
    }
    return (double)x;
}

/* "q_proj" from "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight". */
static int module_of(const char *key, char *out, size_t cap) {
    const char *end = strstr(key, ".lora_");
    if (!end) return -1;
    const char *start = end;
    while (start > key && start[-1] != '.') start--;
    size_t n = (size_t)(end - start);
    if (n + 1 > cap) return -1;
    memcpy(out, start, n);
    out[n] = '\0';
    return 0;
}

static json_t *config_json(const ql_adapters *a, const char *base_model) {
    json_t *o = json_object(), *targets = json_array();
    if (!o || !targets) {
        json_decref(o);
        json_decref(targets);
        return NULL;
    }
    /* The modules that have adapters, in the table's (layer, projection) order. */
    for (int i = 0; i < a->n_tensors; i++) {
        char mod[64];
        if (module_of(a->tensors[i].name, mod, sizeof mod)) continue;
        int seen = 0;
        for (size_t j = 0; j < json_array_size(targets); j++)
            seen |= !strcmp(json_string_value(json_array_get(targets, j)), mod);
        if (!seen) json_array_append_new(targets, json_string(mod));
    }
    double alpha = short_float(a->cfg.alpha);
    json_object_set_new(o, "alpha_pattern", json_object());
    json_object_set_new(o, "base_model_name_or_path",
                        base_model && *base_model ? json_string(base_model) : json_null());
    json_object_set_new(o, "bias", json_string("none"));
    json_object_set_new(o, "fan_in_fan_out", json_false());
    json_object_set_new(o, "inference_mode", json_true());
    json_object_set_new(o, "init_lora_weights", json_true());
    json_object_set_new(o, "layers_pattern", json_null());
    json_object_set_new(o, "layers_to_transform", json_null());
    /* PEFT writes lora_alpha as the user gave it, usually an integer. */
    json_object_set_new(o, "lora_alpha",
                        alpha == floor(alpha) && fabs(alpha) < 1e15
                            ? json_integer((json_int_t)alpha)
                            : json_real(alpha));
    json_object_set_new(o, "lora_dropout", json_real(short_float(a->cfg.dropout)));
    json_object_set_new(o, "modules_to_save", json_null());
    json_object_set_new(o, "peft_type", json_string("LORA"));
    json_object_set_new(o, "r", json_integer(a->cfg.r));
    json_object_set_new(o, "rank_pattern", json_object());
    json_object_set_new(o, "revision", json_null());
    json_object_set_new(o, "target_modules", targets);
    json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(o, "use_dora", json_false());
    json_object_set_new(o, "use_rslora", a->cfg.use_rslora ? json_true() : json_false());
    return o;
}

static ql_status write_files(const char *tmp, const ql_adapters *a, const float *host,
                             const char *base_model, ql_dtype dtype) {
    ql_st_entry *e =
        ql_calloc((size_t)(a->n_tensors ? a->n_tensors : 1), sizeof *e, "the adapter tensor list");
    if (!e) return QL_ENOMEM;
    /* F16/BF16: one converted copy of the flat vector, same offsets. */
    size_t esz = ql_dtype_size(dtype);
    void *conv = NULL;
    if (dtype != QL_DT_F32) {
        conv = ql_malloc((size_t)(a->n ? a->n : 1) * esz, "the converted adapter");
        if (!conv || ql_dtype_from_f32(dtype, host, conv, (size_t)a->n) != 0) {
            free(conv);
            free(e);
            return conv ? ql_error(QL_EINVAL, "adapter dtype must be F32, F16 or BF16") : QL_ENOMEM;
        }
    }
    for (int i = 0; i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        e[i] = (ql_st_entry){.name = t->name,
                             .dtype = dtype,
                             .ndim = 2,
                             .shape = {t->rows, t->cols},
                             .data =
                                 conv ? (const void *)((const char *)conv + (size_t)t->offset * esz)
                                      : (const void *)(host + t->offset),
                             .nbytes = (uint64_t)(t->rows * t->cols) * esz};
    }
    char *path = ql_fs_join(tmp, QL_PEFT_WEIGHTS);
    ql_status st = path ? ql_st_write(path, e, (size_t)a->n_tensors) : QL_ENOMEM;
    free(path);
    free(e);
    free(conv);
    if (st != QL_OK) return st;

    json_t *cfg = config_json(a, base_model);
    if (!cfg) return ql_error(QL_ENOMEM, "out of memory for %s", QL_PEFT_CONFIG);
    char *text = NULL;
    size_t len = 0;
    st = ql_json_dumps_py(cfg, 2, 1, &text, &len);
    json_decref(cfg);
    if (st != QL_OK) return st;
    path = ql_fs_join(tmp, QL_PEFT_CONFIG);
    st = path ? ql_fs_write_atomic(path, text, len) : QL_ENOMEM;
    free(path);
    free(text);
    return st;
}

ql_status ql_peft_save(const char *dir, const ql_adapters *a, const ql_backend *be,
                       const char *base_model) {
    return ql_peft_save_as(dir, a, be, base_model, QL_DT_F32);
}

ql_status ql_peft_save_as(const char *dir, const ql_adapters *a, const ql_backend *be,
                          const char *base_model, ql_dtype dtype) {
    const float *host = a->params;
    float *copy = NULL;
    if (be && strncmp(be->name, "cpu", 3) != 0) {
        copy = ql_malloc((size_t)a->n * sizeof *copy, "a host copy of the adapters");
        if (!copy) return QL_ENOMEM;
        ql_status st = be->download(copy, a->params, (size_t)a->n * sizeof *copy);
        if (st != QL_OK) {
            free(copy);
            return st;
        }
        host = copy;
    }
    char *tmp = NULL;
    ql_status st = ql_fs_mkdtemp_beside(dir, &tmp);
    if (st == QL_OK) st = write_files(tmp, a, host, base_model, dtype);
    if (st == QL_OK) st = ql_fs_commit_dir(tmp, dir, 1);
    if (st != QL_OK && tmp) ql_fs_remove_tree(tmp);
    free(tmp);
    free(copy);
    if (st != QL_OK) return ql_error_wrap(st, "saving the adapter to %s: ", dir);
    return QL_OK;
}

/* A training run's directory (its resolved configuration, its checkpoints)
 * before the adapter is written at the end. */
static int run_without_adapter(const char *path) {
    char *cfg = ql_fs_join(path, "config.resolved.yaml"), *ck = ql_fs_join(path, "checkpoints");
    const int yes = cfg && ck && ql_fs_exists(cfg) && ql_fs_is_dir(ck);
    free(cfg);
    free(ck);
    return yes;
}

ql_status ql_peft_find(const char *path, char *out, size_t cap) {
    if (ql_gguf_lora_is_file(path)) {
        if (!ql_fs_exists(path)) return ql_error(QL_ENOTFOUND, "%s: no such file", path);
        snprintf(out, cap, "%s", path);
        return QL_OK;
    }
    char *direct = ql_fs_join(path, QL_PEFT_CONFIG),
         *in_run = ql_fs_join(path, "adapter/" QL_PEFT_CONFIG);
    ql_status st = QL_OK;
    if (!direct || !in_run)
        st = ql_error(QL_ENOMEM, "out of memory");
    else if (ql_fs_exists(direct))
        snprintf(out, cap, "%s", path);
    else if (ql_fs_exists(in_run))
        snprintf(out, cap, "%s/adapter", path);
    else if (run_without_adapter(path))
        st = ql_error(QL_ENOTFOUND,
                      "%s: a run directory with no adapter/ yet (preempted, stopped or still "
                      "training); its checkpoints hold the adapter: qlora export %s --out DIR "
                      "writes it, then use --adapter DIR",
                      path, path);
    else
        st = ql_error(QL_ENOTFOUND,
                      "%s: not an adapter directory (no %s) nor a run directory (no adapter/%s)",
                      path, QL_PEFT_CONFIG, QL_PEFT_CONFIG);
    free(direct);
    free(in_run);
    return st;
}

static ql_status refuse_if(int cond, const char *path, const char *key, const char *why) {
    if (!cond) return QL_OK;
    return ql_error(QL_EUNSUPPORTED, "%s: \"%s\": %s is not supported", path, key, why);
}

static int empty_or_null(const json_t *v) {
    return !v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}

static ql_status read_targets(const char *path, const json_t *v, unsigned *out) {
    *out = 0;
    if (json_is_string(v) && !strcmp(json_string_value(v), "all-linear")) {
        *out = QL_PROJ_ALL;
        return QL_OK;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: \"target_modules\": expected a non-empty list of module names (or "
                        "\"all-linear\"); regular expressions are not supported",
                        path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        int found = -1;
        for (int t = 0; s && t < QL_CFG_N_TARGETS; t++)
            if (!strcmp(s, ql_config_target_name(t))) found = t;
        if (found < 0)
            return ql_error(QL_EUNSUPPORTED,
                            "%s: \"target_modules\"[%zu] = %s: qlora trains adapters on q_proj, "
                            "k_proj, v_proj, o_proj, gate_proj, up_proj and down_proj only",
                            path, i, s ? s : "(not a string)");
        *out |= 1u << found;
    }
    return QL_OK;
}

ql_status ql_peft_read_config(const char *dir, ql_lora_config *lc, char *base_model, size_t cap) {
    if (ql_gguf_lora_is_file(dir)) {
        if (base_model && cap) base_model[0] = '\0';
        return ql_gguf_lora_read_config(dir, lc, NULL, 0);
    }
    char *path = ql_fs_join(dir, QL_PEFT_CONFIG);
    if (!path) return QL_ENOMEM;
    json_error_t err;
    json_t *o = json_load_file(path, 0, &err);
    ql_status st = QL_OK;
    if (!o) {
        st = ql_fs_exists(path)
                 ? ql_error(QL_EFORMAT, "%s:%d: invalid JSON: %s", path, err.line, err.text)
                 : ql_error(QL_ENOTFOUND, "%s: no such file", path);
        free(path);
        return st;
    }
    memset(lc, 0, sizeof *lc);
    const json_t *pt = json_object_get(o, "peft_type"), *r = json_object_get(o, "r"),
                 *alpha = json_object_get(o, "lora_alpha"),
                 *drop = json_object_get(o, "lora_dropout"), *rs = json_object_get(o, "use_rslora"),
                 *bias = json_object_get(o, "bias"),
                 *bm = json_object_get(o, "base_model_name_or_path");
    if (!json_is_object(o))
        st = ql_error(QL_EFORMAT, "%s: expected a JSON object", path);
    else if (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))
        st = ql_error(QL_EUNSUPPORTED, "%s: \"peft_type\" is %s; only \"LORA\" is supported", path,
                      json_is_string(pt) ? json_string_value(pt) : "missing");
    else if (!json_is_integer(r) || json_integer_value(r) < 1)
        st = ql_error(QL_EFORMAT, "%s: \"r\": expected an integer >= 1", path);
    else if (alpha && !json_is_number(alpha))
        st = ql_error(QL_EFORMAT, "%s: \"lora_alpha\": expected a number", path);
    else if (drop && !json_is_null(drop) && !json_is_number(drop))
        st = ql_error(QL_EFORMAT, "%s: \"lora_dropout\": expected a number", path);
    if (st == QL_OK)
        st = refuse_if(json_is_true(json_object_get(o, "use_dora")), path, "use_dora", "DoRA");
    if (st == QL_OK)
        st = refuse_if(bias && !json_is_null(bias) &&
                           (!json_is_string(bias) || strcmp(json_string_value(bias), "none")),
                       path, "bias", "training biases");
    if (st == QL_OK)
        st = refuse_if(!empty_or_null(json_object_get(o, "modules_to_save")), path,
                       "modules_to_save", "saving full modules");
    if (st == QL_OK)
        st = refuse_if(!empty_or_null(json_object_get(o, "layers_to_transform")), path,
                       "layers_to_transform", "restricting layers");
    if (st == QL_OK)
        st = refuse_if(!empty_or_null(json_object_get(o, "rank_pattern")) ||
                           !empty_or_null(json_object_get(o, "alpha_pattern")),
                       path, "rank_pattern", "a per-module rank or alpha");
    if (st == QL_OK)
        st = refuse_if(json_is_true(json_object_get(o, "fan_in_fan_out")), path, "fan_in_fan_out",
                       "a transposed (Conv1D) base layer");
    if (st == QL_OK) st = read_targets(path, json_object_get(o, "target_modules"), &lc->targets);
    if (st == QL_OK) {
        lc->r = (int)json_integer_value(r);
        /* PeftConfig's default lora_alpha is 8. */
        lc->alpha = alpha ? (float)json_number_value(alpha) : 8.0f;
        lc->dropout = drop && json_is_number(drop) ? (float)json_number_value(drop) : 0.0f;
        lc->use_rslora = json_is_true(rs);
        if (base_model)
            snprintf(base_model, cap, "%s", json_is_string(bm) ? json_string_value(bm) : "");
    }
    json_decref(o);
    free(path);
    return st;
}

ql_status ql_peft_load(const char *dir, ql_adapters *a, const ql_backend *be) {
    if (ql_gguf_lora_is_file(dir)) return ql_gguf_lora_load(dir, a, be);
    char *path = ql_fs_join(dir, QL_PEFT_WEIGHTS);
    if (!path) return QL_ENOMEM;
    ql_st_file f;
    ql_status st = ql_st_open(path, &f);
    if (st != QL_OK) {
        free(path);
        return st;
    }
    float *host = ql_malloc((size_t)(a->n ? a->n : 1) * sizeof *host, "the adapter weights");
    if (!host) st = QL_ENOMEM;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        const ql_st_tensor *s = ql_st_find(&f, t->name);
        char got[96], want[96];
        int64_t ws[2] = {t->rows, t->cols};
        if (!s) {
            st = ql_error(QL_ENOTFOUND,
                          "%s: missing tensor '%s' (the adapter does not cover the model's "
                          "targets: r %d, %d tensors expected)",
                          path, t->name, a->cfg.r, a->n_tensors);
        } else if (s->ndim != 2 || s->shape[0] != t->rows || s->shape[1] != t->cols) {
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", path, t->name,
                          ql_st_shape_str(s->shape, s->ndim, got, sizeof got),
                          ql_st_shape_str(ws, 2, want, sizeof want));
        } else {
            st = ql_st_to_f32(&f, s, host + t->offset);
        }
    }
    /* Anything else in the file would be silently dropped: a different model. */
    for (size_t j = 0; st == QL_OK && j < f.n_tensors; j++) {
        int known = 0;
        for (int i = 0; i < a->n_tensors && !known; i++)
            known = !strcmp(a->tensors[i].name, f.tensors[j].name);
        if (!known) st = ql_adapters_no_place(a, path, f.tensors[j].name);
    }
    if (st == QL_OK) st = ql_adapters_set_params(a, host, be);
    free(host);
    ql_st_close(&f);
    free(path);
    return st;
}
