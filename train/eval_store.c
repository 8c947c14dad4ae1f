#include "train/eval_store.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fsutil.h"
#include "core/json_float.h"
#include "core/sha256.h"

/* A JSON number, or null for what JSON cannot hold. */
static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *str_or_null(const char *s) { return s && *s ? json_string(s) : json_null(); }

ql_status ql_eval_summary_write(const char *path, ql_eval_summary *s) {
    if (!s->created_utc[0]) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->created_utc, sizeof s->created_utc, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    json_t *o = json_object();
    if (!o) return ql_error(QL_ENOMEM, "out of memory building %s", path);
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "created_utc", json_string(s->created_utc));
    json_object_set_new(o, "model", json_string(s->model));
    json_object_set_new(o, "adapter", str_or_null(s->adapter));
    json_object_set_new(o, "data", json_string(s->data));
    json_object_set_new(o, "data_sha256", str_or_null(s->data_sha256));
    json_object_set_new(o, "records", json_integer(s->records));
    json_object_set_new(o, "tokens", json_integer(s->tokens));
    json_object_set_new(o, "loss", num(s->loss));
    json_object_set_new(o, "perplexity", num(s->perplexity));
    json_object_set_new(o, "base_loss", s->has_base ? num(s->base_loss) : json_null());
    json_object_set_new(o, "base_perplexity", s->has_base ? num(s->base_perplexity) : json_null());
    json_object_set_new(o, "base_weights",
                        json_string(s->base_original ? "original" : "quantized"));
    if (s->has_drift) {
        const ql_eval_drift *d = &s->drift;
        json_t *b = json_object();
        json_object_set_new(b, "path", json_string(d->path));
        json_object_set_new(b, "loss", num(d->baseline_loss));
        json_object_set_new(b, "change", num(d->change));
        json_object_set_new(b, "relative_change", num(d->relative_change));
        json_object_set_new(b, "threshold", num(d->threshold));
        json_object_set_new(b, "drifted", json_boolean(d->drifted));
        json_object_set_new(b, "same_data", json_boolean(d->same_data));
        json_object_set_new(b, "same_base_weights", json_boolean(d->same_base_weights));
        json_object_set_new(o, "baseline", b);
    }
    char *text = NULL;
    size_t len = 0;
    ql_status st = ql_json_dumps_py(o, 2, 1, &text, &len);
    json_decref(o);
    if (st != QL_OK) return st;
    text[len] = '\n'; /* the dump leaves room for the NUL, which becomes a newline */
    st = ql_fs_write_atomic(path, text, len + 1);
    free(text);
    return st;
}

static ql_status get_num(const char *path, const json_t *o, const char *key, int required,
                         double *out, int *present) {
    const json_t *v = json_object_get(o, key);
    if (present) *present = v && !json_is_null(v);
    if (!v || json_is_null(v)) {
        *out = NAN;
        return required ? ql_error(QL_EFORMAT, "%s: \"%s\": missing (expected a number)", path, key)
                        : QL_OK;
    }
    if (!json_is_number(v)) return ql_error(QL_EFORMAT, "%s: \"%s\": expected a number", path, key);
    *out = json_number_value(v);
    return QL_OK;
}

static void get_str(const json_t *o, const char *key, char *out, size_t cap) {
    const json_t *v = json_object_get(o, key);
    snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

ql_status ql_eval_summary_read(const char *path, ql_eval_summary *s) {
    memset(s, 0, sizeof *s);
    json_error_t err;
    json_t *o = json_load_file(path, 0, &err);
    if (!o)
        return ql_fs_exists(path)
                   ? ql_error(QL_EFORMAT, "%s:%d: invalid JSON: %s", path, err.line, err.text)
                   : ql_error(QL_ENOTFOUND, "%s: no such file", path);
    ql_status st =
        json_is_object(o) ? QL_OK : ql_error(QL_EFORMAT, "%s: expected a JSON object", path);
    double records = 0, tokens = 0;
    if (st == QL_OK) st = get_num(path, o, "loss", 1, &s->loss, NULL);
    if (st == QL_OK) st = get_num(path, o, "perplexity", 0, &s->perplexity, NULL);
    if (st == QL_OK) st = get_num(path, o, "base_loss", 0, &s->base_loss, &s->has_base);
    if (st == QL_OK) st = get_num(path, o, "base_perplexity", 0, &s->base_perplexity, NULL);
    if (st == QL_OK) st = get_num(path, o, "records", 0, &records, NULL);
    if (st == QL_OK) st = get_num(path, o, "tokens", 0, &tokens, NULL);
    if (st == QL_OK && !(s->loss >= 0))
        st = ql_error(QL_EFORMAT, "%s: \"loss\" is %g; a stored loss must be >= 0", path, s->loss);
    if (st == QL_OK) {
        s->records = isfinite(records) ? (int64_t)records : 0;
        s->tokens = isfinite(tokens) ? (int64_t)tokens : 0;
        get_str(o, "created_utc", s->created_utc, sizeof s->created_utc);
        get_str(o, "model", s->model, sizeof s->model);
        get_str(o, "adapter", s->adapter, sizeof s->adapter);
        get_str(o, "data", s->data, sizeof s->data);
        get_str(o, "data_sha256", s->data_sha256, sizeof s->data_sha256);
        const json_t *bw = json_object_get(o, "base_weights");
        if (json_is_string(bw) && !strcmp(json_string_value(bw), "original"))
            s->base_original = 1;
        else if (bw && !(json_is_string(bw) && !strcmp(json_string_value(bw), "quantized")))
            st = ql_error(QL_EFORMAT,
                          "%s: \"base_weights\": expected \"quantized\" or \"original\"", path);
    }
    json_decref(o);
    return st;
}

ql_status ql_eval_find(const char *where, char *out, size_t cap) {
    if (!ql_fs_is_dir(where)) {
        if (!ql_fs_exists(where))
            return ql_error(QL_ENOTFOUND, "%s: no such file or directory", where);
        snprintf(out, cap, "%s", where);
        return QL_OK;
    }
    char *p = ql_fs_join(where, QL_EVAL_FILE);
    if (!p) return QL_ENOMEM;
    int there = ql_fs_exists(p);
    snprintf(out, cap, "%s", p);
    free(p);
    if (!there)
        return ql_error(QL_ENOTFOUND,
                        "%s: no stored evaluation (%s); store one with qlora eval --out %s (or "
                        "--adapter %s when it is a run)",
                        where, QL_EVAL_FILE, where, where);
    return QL_OK;
}

void ql_eval_drift_check(const ql_eval_summary *baseline, const char *path,
                         const ql_eval_summary *now, double threshold, ql_eval_drift *d) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    d->baseline_loss = baseline->loss;
    d->loss = now->loss;
    d->change = now->loss - baseline->loss;
    d->relative_change = baseline->loss > 0 ? d->change / baseline->loss : INFINITY;
    d->threshold = threshold;
    /* A loss that is not a number is drift too: something broke. */
    d->drifted = !(d->relative_change <= threshold);
    d->same_data = baseline->data_sha256[0] && !strcmp(baseline->data_sha256, now->data_sha256);
    d->same_base_weights = baseline->base_original == now->base_original;
}

ql_status ql_eval_file_sha256(const char *path, char hex[65]) {
    ql_sha256 s;
    uint8_t d[QL_SHA256_LEN];
    ql_sha256_init(&s);
    QL_TRY(ql_sha256_add_file(&s, path));
    ql_sha256_final(&s, d);
    ql_sha256_hex(d, hex);
    return QL_OK;
}
