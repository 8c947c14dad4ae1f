#include "data/jsonl_tokens.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/fsutil.h"

#define IGNORE (-100)

typedef struct builder {
    ql_token_data *d;
    int64_t cap_rec, cap_tok;
    int32_t *lab; /* scratch: one record's labels */
    int64_t lab_cap;
} builder;

ql_status ql_token_data_reserve(ql_token_data *d, int64_t *cap_rec, int64_t *cap_tok,
                                int64_t n_tok) {
    const char *what = d->path ? d->path : "token data";
    if (d->n + 1 >= *cap_rec) {
        int64_t cap = *cap_rec ? *cap_rec * 2 : 1024;
        int64_t *off = realloc(d->off, (size_t)(cap + 1) * sizeof *off);
        if (off) d->off = off;
        int64_t *line = off ? realloc(d->line, (size_t)cap * sizeof *line) : NULL;
        if (line) d->line = line;
        if (!line) return ql_error(QL_ENOMEM, "%s: out of memory for the record table", what);
        if (!*cap_rec) d->off[0] = 0;
        *cap_rec = cap;
    }
    int64_t need = d->off[d->n] + n_tok;
    if (need > *cap_tok) {
        int64_t cap = *cap_tok ? *cap_tok : 65536;
        while (cap < need) cap *= 2;
        int32_t *ids = realloc(d->ids, (size_t)cap * sizeof *ids);
        if (ids) d->ids = ids;
        int32_t *tg = ids ? realloc(d->targets, (size_t)cap * sizeof *tg) : NULL;
        if (tg) d->targets = tg;
        if (!tg)
            return ql_error(QL_ENOMEM, "%s: out of memory for %lld tokens", what, (long long)need);
        *cap_tok = cap;
    }
    return QL_OK;
}

static ql_status reserve(builder *b, int64_t n_tok) {
    ql_token_data *d = b->d;
    QL_TRY(ql_token_data_reserve(d, &b->cap_rec, &b->cap_tok, n_tok));
    if (n_tok > b->lab_cap) {
        int32_t *lab = realloc(b->lab, (size_t)n_tok * sizeof *lab);
        if (!lab) return ql_error(QL_ENOMEM, "%s: out of memory for labels", d->path);
        b->lab = lab;
        b->lab_cap = n_tok;
    }
    return QL_OK;
}

const char *ql_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction or exponent";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

/* One record: `obj` is the parsed line. */
static ql_status add_record(builder *b, const json_t *obj, int64_t line, int64_t max_seq_len) {
    ql_token_data *d = b->d;
    const char *path = d->path;
    if (!json_is_object(obj))
        return ql_error(QL_EFORMAT,
                        "%s:%lld: expected a JSON object {\"input_ids\": [...]}, got %s", path,
                        (long long)line, ql_json_kind(obj));
    const json_t *ids = json_object_get(obj, "input_ids");
    if (!ids)
        return ql_error(QL_EFORMAT, "%s:%lld: the record has no \"input_ids\"", path,
                        (long long)line);
    if (!json_is_array(ids))
        return ql_error(QL_EFORMAT, "%s:%lld: \"input_ids\" must be a list of token ids, got %s",
                        path, (long long)line, ql_json_kind(ids));
    int64_t len = (int64_t)json_array_size(ids);
    if (len == 0)
        return ql_error(QL_EFORMAT, "%s:%lld: \"input_ids\" is empty", path, (long long)line);
    const json_t *labels = json_object_get(obj, "labels");
    if (labels && json_is_null(labels)) labels = NULL;
    if (labels && !json_is_array(labels))
        return ql_error(QL_EFORMAT, "%s:%lld: \"labels\" must be a list, got %s", path,
                        (long long)line, ql_json_kind(labels));
    if (labels && (int64_t)json_array_size(labels) != len)
        return ql_error(QL_EFORMAT,
                        "%s:%lld: \"labels\" has %zu entries but \"input_ids\" has %lld", path,
                        (long long)line, json_array_size(labels), (long long)len);
    int64_t L = len < max_seq_len ? len : max_seq_len;
    QL_TRY(reserve(b, len));
    int32_t *out_ids = d->ids + d->off[d->n], *out_tg = d->targets + d->off[d->n];
    for (int64_t t = 0; t < len; t++) {
        const json_t *v = json_array_get(ids, (size_t)t);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return ql_error(QL_EFORMAT,
                            "%s:%lld: input_ids[%lld]: expected a token id (an integer >= 0), "
                            "got %s",
                            path, (long long)line, (long long)t,
                            json_is_integer(v) ? "a negative or too large integer"
                                               : ql_json_kind(v));
        int32_t id = (int32_t)json_integer_value(v);
        if (t < L) out_ids[t] = id;
        if (id > d->max_id) d->max_id = id;
        if (!labels) b->lab[t] = id;
    }
    for (int64_t t = 0; labels && t < len; t++) {
        const json_t *v = json_array_get(labels, (size_t)t);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || (x < 0 && x != IGNORE) || x > INT32_MAX)
            return ql_error(
                QL_EFORMAT, "%s:%lld: labels[%lld]: expected a token id or -100, got %s", path,
                (long long)line, (long long)t,
                json_is_integer(v) ? "another negative or too large integer" : ql_json_kind(v));
        b->lab[t] = (int32_t)x;
        if (x > d->max_id) d->max_id = (int32_t)x;
    }
    /* Truncate first, then shift: the last kept token predicts nothing, as
     * when a Hugging Face collator truncates input_ids and labels together. */
    for (int64_t t = 0; t < L; t++) {
        out_tg[t] = t + 1 < L ? b->lab[t + 1] : IGNORE;
        if (out_tg[t] >= 0) d->n_targets++;
    }
    if (L < len) d->n_truncated++;
    if (L > d->max_len) d->max_len = L;
    d->line[d->n] = line;
    d->off[d->n + 1] = d->off[d->n] + L;
    d->n++;
    return QL_OK;
}

ql_status ql_jsonl_tokens_load(const char *path, int64_t max_seq_len, ql_token_data *d) {
    memset(d, 0, sizeof *d);
    if (max_seq_len < 2) return ql_error(QL_EINVAL, "%s: max_seq_len must be >= 2", path);
    d->path = strdup(path);
    if (!d->path) return ql_error(QL_ENOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    ql_status st = ql_fs_read_file(path, &text, &len);
    builder b = {.d = d};
    if (st == QL_OK) st = reserve(&b, 0);
    size_t pos = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3; /* a UTF-8 byte order mark */
    for (int64_t line = 1; st == QL_OK && pos < len; line++) {
        char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - pos;
        if (n && text[pos + n - 1] == '\r') n--;
        size_t blank = 0;
        while (blank < n && strchr(" \t", text[pos + blank])) blank++;
        if (blank < n) {
            json_error_t err;
            json_t *obj = json_loadb(text + pos, n, 0, &err);
            if (!obj)
                st = ql_error(QL_EFORMAT, "%s:%lld: invalid JSON at column %d: %s", path,
                              (long long)line, err.column, ql_jsonl_error_text(err.text));
            else
                st = add_record(&b, obj, line, max_seq_len);
            json_decref(obj);
        }
        pos = end + 1;
    }
    if (st == QL_OK && d->n == 0)
        st = ql_error(QL_EFORMAT, "%s: no records (the file is empty or only blank lines)", path);
    free(text);
    free(b.lab);
    if (st != QL_OK) ql_jsonl_tokens_free(d);
    return st;
}

void ql_jsonl_tokens_free(ql_token_data *d) {
    free(d->path);
    free(d->off);
    free(d->ids);
    free(d->targets);
    free(d->line);
    memset(d, 0, sizeof *d);
}

ql_status ql_jsonl_tokens_check_vocab(const ql_token_data *d, int64_t vocab) {
    if (d->max_id < vocab) return QL_OK;
    for (int64_t i = 0; i < d->n; i++) {
        for (int64_t t = d->off[i]; t < d->off[i + 1]; t++)
            if (d->ids[t] >= vocab)
                return ql_error(QL_EINVAL,
                                "%s:%lld: input_ids[%lld] = %d is outside the model's vocabulary "
                                "(%lld tokens)",
                                d->path, (long long)d->line[i], (long long)(t - d->off[i]),
                                d->ids[t], (long long)vocab);
        for (int64_t t = d->off[i]; t < d->off[i + 1]; t++)
            if (d->targets[t] >= vocab)
                return ql_error(QL_EINVAL,
                                "%s:%lld: labels[%lld] = %d is outside the model's vocabulary "
                                "(%lld tokens)",
                                d->path, (long long)d->line[i], (long long)(t - d->off[i]) + 1,
                                d->targets[t], (long long)vocab);
    }
    /* Only truncated-away tokens were out of range: they are never used. */
    return QL_OK;
}

const char *ql_jsonl_error_text(const char *text) {
    static _Thread_local char buf[256];
    static const char eof[] = "end of file";
    const char *at = strstr(text, eof);
    if (!at) return text;
    snprintf(buf, sizeof buf, "%.*send of the line%s", (int)(at - text), text, at + sizeof eof - 1);
    return buf;
}
