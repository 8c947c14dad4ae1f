#include "model/hf_config.h"

#include <stdio.h>
#include <string.h>

#include "core/fsutil.h"

const char *ql_hf_torch_dtype_name(ql_dtype dt) {
    switch (dt) {
    case QL_DT_BF16: return "bfloat16";
    case QL_DT_F16: return "float16";
    case QL_DT_F32: return "float32";
    default: return "?";
    }
}

static const char *type_word(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* `where` is "" for top-level fields or "rope_scaling." for nested ones. */
static ql_status get_int(const char *p, const json_t *o, const char *where, const char *key,
                         int required, int64_t dflt, int64_t *out) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return ql_error(QL_EFORMAT, "%s: missing field '%s%s' (integer)", p, where, key);
        *out = dflt;
        return QL_OK;
    }
    if (!json_is_integer(v))
        return ql_error(QL_EFORMAT, "%s: field '%s%s' must be an integer, got %s", p, where, key,
                        type_word(v));
    *out = json_integer_value(v);
    return QL_OK;
}

static ql_status get_pos_int(const char *p, const json_t *o, const char *key, int required,
                             int64_t dflt, int64_t *out) {
    QL_TRY(get_int(p, o, "", key, required, dflt, out));
    if (*out <= 0)
        return ql_error(QL_EFORMAT, "%s: field '%s' must be a positive integer, got %lld", p, key,
                        (long long)*out);
    return QL_OK;
}

static ql_status get_num(const char *p, const json_t *o, const char *where, const char *key,
                         int required, double dflt, double *out) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return ql_error(QL_EFORMAT, "%s: missing field '%s%s' (number)", p, where, key);
        *out = dflt;
        return QL_OK;
    }
    if (!json_is_number(v))
        return ql_error(QL_EFORMAT, "%s: field '%s%s' must be a number, got %s", p, where, key,
                        type_word(v));
    *out = json_number_value(v);
    return QL_OK;
}

static ql_status get_bool(const char *p, const json_t *o, const char *key, int dflt, int *out) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return QL_OK;
    }
    if (!json_is_boolean(v))
        return ql_error(QL_EFORMAT, "%s: field '%s' must be true or false, got %s", p, key,
                        type_word(v));
    *out = json_is_true(v);
    return QL_OK;
}

static ql_status get_str(const char *p, const json_t *o, const char *where, const char *key,
                         const char *dflt, char *out, size_t n) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        snprintf(out, n, "%s", dflt);
        return QL_OK;
    }
    if (!json_is_string(v))
        return ql_error(QL_EFORMAT, "%s: field '%s%s' must be a string, got %s", p, where, key,
                        type_word(v));
    if (json_string_length(v) >= n)
        return ql_error(QL_EFORMAT, "%s: field '%s%s' is too long (%zu characters)", p, where, key,
                        json_string_length(v));
    snprintf(out, n, "%s", json_string_value(v));
    return QL_OK;
}

static ql_status parse_torch_dtype(const char *p, const char *key, const char *s, ql_dtype *dt) {
    if (!strcmp(s, "bfloat16"))
        *dt = QL_DT_BF16;
    else if (!strcmp(s, "float16"))
        *dt = QL_DT_F16;
    else if (!strcmp(s, "float32"))
        *dt = QL_DT_F32;
    else
        return ql_error(QL_EUNSUPPORTED,
                        "%s: field '%s' is '%s'; expected bfloat16, float16 or float32", p, key, s);
    return QL_OK;
}

/* rope_scaling (v4) or rope_parameters (v5): the same keys, except that v5
 * also carries rope_theta and always names a rope_type. */
static ql_status parse_rope(const char *p, const json_t *o, const char *where, ql_hf_config *c) {
    if (!json_is_object(o))
        return ql_error(QL_EFORMAT, "%s: field '%.*s' must be an object or null, got %s", p,
                        (int)strlen(where) - 1, where, type_word(o));
    char type[32];
    const char *tkey = json_object_get(o, "rope_type") ? "rope_type" : "type";
    QL_TRY(get_str(p, o, where, tkey, "default", type, sizeof type));
    snprintf(c->rope_type_name, sizeof c->rope_type_name, "%s", type);
    if (!strcmp(type, "default")) {
        c->rope_type = QL_ROPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        c->rope_type = QL_ROPE_LINEAR;
        QL_TRY(get_num(p, o, where, "factor", 1, 0, &c->rope_factor));
    } else if (!strcmp(type, "llama3")) {
        c->rope_type = QL_ROPE_LLAMA3;
        QL_TRY(get_num(p, o, where, "factor", 1, 0, &c->rope_factor));
        QL_TRY(get_num(p, o, where, "low_freq_factor", 1, 0, &c->rope_low_freq_factor));
        QL_TRY(get_num(p, o, where, "high_freq_factor", 1, 0, &c->rope_high_freq_factor));
        QL_TRY(get_int(p, o, where, "original_max_position_embeddings", 1, 0,
                       &c->rope_original_max_position_embeddings));
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return ql_error(QL_EFORMAT,
                            "%s: field '%shigh_freq_factor' (%g) must exceed low_freq_factor (%g)",
                            p, where, c->rope_high_freq_factor, c->rope_low_freq_factor);
    } else {
        c->rope_type = QL_ROPE_OTHER;
    }
    if ((c->rope_type == QL_ROPE_LINEAR || c->rope_type == QL_ROPE_LLAMA3) && !(c->rope_factor > 0))
        return ql_error(QL_EFORMAT, "%s: field '%sfactor' must be positive, got %g", p, where,
                        c->rope_factor);
    return QL_OK;
}

static ql_status parse_quant(const char *p, const json_t *q, ql_hf_config *c) {
    if (!json_is_object(q))
        return ql_error(QL_EFORMAT, "%s: field 'quantization_config' must be an object, got %s", p,
                        type_word(q));
    char method[32], qt[8], cd[16];
    QL_TRY(get_str(p, q, "quantization_config.", "quant_method", "bitsandbytes", method,
                   sizeof method));
    if (strcmp(method, "bitsandbytes"))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: quantization_config.quant_method '%s' is not supported (only "
                        "bitsandbytes 4-bit)",
                        p, method);
    const json_t *l4 = json_object_get(q, "load_in_4bit");
    if (!l4) l4 = json_object_get(q, "_load_in_4bit");
    if (!json_is_true(l4))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: quantization_config is bitsandbytes but not load_in_4bit (8-bit "
                        "models are not supported)",
                        p);
    QL_TRY(get_str(p, q, "quantization_config.", "bnb_4bit_quant_type", "fp4", qt, sizeof qt));
    if (!strcmp(qt, "nf4"))
        c->quant.type = QL_QTYPE_NF4;
    else if (!strcmp(qt, "fp4"))
        c->quant.type = QL_QTYPE_FP4;
    else
        return ql_error(QL_EFORMAT,
                        "%s: quantization_config.bnb_4bit_quant_type is '%s'; expected nf4 or fp4",
                        p, qt);
    const json_t *dq = json_object_get(q, "bnb_4bit_use_double_quant");
    if (dq && !json_is_boolean(dq))
        return ql_error(QL_EFORMAT,
                        "%s: quantization_config.bnb_4bit_use_double_quant must be true or false",
                        p);
    c->quant.double_quant = json_is_true(dq);
    QL_TRY(
        get_str(p, q, "quantization_config.", "bnb_4bit_compute_dtype", "float32", cd, sizeof cd));
    QL_TRY(parse_torch_dtype(p, "quantization_config.bnb_4bit_compute_dtype", cd,
                             &c->quant.compute_dtype));
    c->quant.present = 1;
    return QL_OK;
}

ql_status ql_hf_config_parse(const char *text, size_t len, const char *p, ql_hf_config *c) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ql_error(QL_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", p, jerr.text,
                        jerr.line, jerr.column);
    c->json = root;
    ql_status st = QL_OK;
    if (!json_is_object(root)) {
        st = ql_error(QL_EFORMAT, "%s: not a JSON object", p);
        goto fail;
    }
    QL_TRY_GOTO(
        st, get_str(p, root, "", "model_type", "llama", c->model_type, sizeof c->model_type), fail);
    if (strcmp(c->model_type, "llama") && strcmp(c->model_type, "mistral") &&
        strcmp(c->model_type, "qwen2")) {
        st = ql_error(QL_EUNSUPPORTED,
                      "%s: model_type '%s' is not supported (llama, mistral, qwen2)", p,
                      c->model_type);
        goto fail;
    }
    const json_t *arch = json_object_get(root, "architectures");
    if (json_is_array(arch) && json_is_string(json_array_get(arch, 0)))
        snprintf(c->architecture, sizeof c->architecture, "%s",
                 json_string_value(json_array_get(arch, 0)));

    QL_TRY_GOTO(st, get_pos_int(p, root, "hidden_size", 1, 0, &c->hidden_size), fail);
    QL_TRY_GOTO(st, get_pos_int(p, root, "intermediate_size", 1, 0, &c->intermediate_size), fail);
    QL_TRY_GOTO(st, get_pos_int(p, root, "num_hidden_layers", 1, 0, &c->num_hidden_layers), fail);
    QL_TRY_GOTO(st, get_pos_int(p, root, "num_attention_heads", 1, 0, &c->num_attention_heads),
                fail);
    QL_TRY_GOTO(st, get_pos_int(p, root, "vocab_size", 1, 0, &c->vocab_size), fail);
    QL_TRY_GOTO(st,
                get_pos_int(p, root, "num_key_value_heads", 0, c->num_attention_heads,
                            &c->num_key_value_heads),
                fail);
    if (c->num_attention_heads % c->num_key_value_heads) {
        st = ql_error(QL_EFORMAT,
                      "%s: num_attention_heads (%lld) must be a multiple of num_key_value_heads "
                      "(%lld)",
                      p, (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
        goto fail;
    }
    const json_t *hd = json_object_get(root, "head_dim");
    if ((!hd || json_is_null(hd)) && c->hidden_size % c->num_attention_heads) {
        st = ql_error(QL_EFORMAT,
                      "%s: hidden_size (%lld) is not a multiple of num_attention_heads (%lld) and "
                      "no head_dim is given",
                      p, (long long)c->hidden_size, (long long)c->num_attention_heads);
        goto fail;
    }
    QL_TRY_GOTO(
        st,
        get_pos_int(p, root, "head_dim", 0, c->hidden_size / c->num_attention_heads, &c->head_dim),
        fail);
    QL_TRY_GOTO(
        st, get_pos_int(p, root, "max_position_embeddings", 0, 2048, &c->max_position_embeddings),
        fail);
    QL_TRY_GOTO(st, get_num(p, root, "", "rms_norm_eps", 0, 1e-6, &c->rms_norm_eps), fail);
    if (!(c->rms_norm_eps > 0)) {
        st = ql_error(QL_EFORMAT, "%s: field 'rms_norm_eps' must be positive, got %g", p,
                      c->rms_norm_eps);
        goto fail;
    }
    QL_TRY_GOTO(st, get_bool(p, root, "tie_word_embeddings", 0, &c->tie_word_embeddings), fail);
    QL_TRY_GOTO(st, get_bool(p, root, "attention_bias", 0, &c->attention_bias), fail);
    QL_TRY_GOTO(st, get_bool(p, root, "mlp_bias", 0, &c->mlp_bias), fail);
    if (!strcmp(c->model_type, "qwen2")) {
        c->qkv_bias = 1;
        c->attention_bias = 0;
    }

    c->rope_type = QL_ROPE_DEFAULT;
    snprintf(c->rope_type_name, sizeof c->rope_type_name, "default");
    const json_t *rp = json_object_get(root, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        QL_TRY_GOTO(st, parse_rope(p, rp, "rope_parameters.", c), fail);
        QL_TRY_GOTO(
            st, get_num(p, rp, "rope_parameters.", "rope_theta", 0, 10000.0, &c->rope_theta), fail);
    } else {
        QL_TRY_GOTO(st, get_num(p, root, "", "rope_theta", 0, 10000.0, &c->rope_theta), fail);
        const json_t *rs = json_object_get(root, "rope_scaling");
        if (rs && !json_is_null(rs)) QL_TRY_GOTO(st, parse_rope(p, rs, "rope_scaling.", c), fail);
    }
    if (!(c->rope_theta > 0)) {
        st = ql_error(QL_EFORMAT, "%s: rope_theta must be positive, got %g", p, c->rope_theta);
        goto fail;
    }

    /* transformers v5 renamed torch_dtype to dtype. */
    const char *dkey = json_object_get(root, "torch_dtype") ? "torch_dtype" : "dtype";
    char dname[32];
    QL_TRY_GOTO(st, get_str(p, root, "", dkey, "", dname, sizeof dname), fail);
    if (dname[0]) {
        QL_TRY_GOTO(st, parse_torch_dtype(p, dkey, dname, &c->torch_dtype), fail);
        c->dtype_known = 1;
    }

    const json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q)) QL_TRY_GOTO(st, parse_quant(p, q, c), fail);
    return QL_OK;
fail:
    ql_hf_config_free(c);
    return st;
}

ql_status ql_hf_config_load(const char *dir, ql_hf_config *c) {
    memset(c, 0, sizeof *c);
    char *path = ql_fs_join(dir, "config.json");
    if (!path) return QL_ENOMEM;
    char *text;
    size_t len;
    ql_status st = ql_fs_read_file(path, &text, &len);
    if (st == QL_OK) {
        st = ql_hf_config_parse(text, len, path, c);
        free(text);
    }
    free(path);
    return st;
}

void ql_hf_config_free(ql_hf_config *c) {
    json_decref(c->json);
    c->json = NULL;
}
