#include "ckpt/compat.h"

#include "core/json_float.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const FIXED[] = {"seed",         "data.max_seq_len", "data.shuffle",
                                    "data.packing", "lora.r",           "lora.alpha",
                                    "lora.targets", "lora.use_rslora",  "train.global_batch",
                                    "quant.type",   "quant.blocksize",  "quant.double_quant"};
/* Paths and switches whose change says nothing about the run's state (the
 * base model and the data are compared by content instead). */
static const char *const QUIET[] = {
    "model",          "output_dir",          "resume", "data.train", "data.cache",
    "data.cache_dir", "overwrite_output_dir"};

static int in(const char *key, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(key, list[i])) return 1;
    return 0;
}

static void fmt_value(const ql_cfg_key *k, const ql_config *c, char *buf, size_t n) {
    const char *f = (const char *)c + k->offset;
    switch (k->type) {
    case QL_CFG_STR: snprintf(buf, n, "'%s'", f); break;
    case QL_CFG_INT: snprintf(buf, n, "%" PRId64, *(const int64_t *)f); break;
    case QL_CFG_FLOAT: {
        char r[QL_FLOAT_REPR_MAX];
        ql_json_float_repr(*(const double *)f, r);
        snprintf(buf, n, "%s", r);
        break;
    }
    case QL_CFG_BOOL: snprintf(buf, n, "%s", *(const int *)f ? "true" : "false"); break;
    case QL_CFG_CHOICE: {
        const char *p = k->choices;
        for (int i = 0; i < *(const int *)f && p; i++) {
            p = strchr(p, '|');
            if (p) p++;
        }
        snprintf(buf, n, "%.*s", p ? (int)strcspn(p, "|") : 1, p ? p : "?");
        break;
    }
    case QL_CFG_TARGETS: {
        unsigned t = *(const unsigned *)f;
        size_t len = 0;
        buf[0] = 0;
        len += (size_t)snprintf(buf, n, "[");
        for (int j = 0; j < QL_CFG_N_TARGETS && len < n; j++)
            if (t & (1u << j))
                len += (size_t)snprintf(buf + len, n - len, "%s%s", len > 1 ? ", " : "",
                                        ql_config_target_name(j));
        if (len < n) snprintf(buf + len, n - len, "]");
        break;
    }
    }
}

static int same_value(const ql_cfg_key *k, const ql_config *a, const ql_config *b) {
    const char *x = (const char *)a + k->offset, *y = (const char *)b + k->offset;
    switch (k->type) {
    case QL_CFG_STR: return !strcmp(x, y);
    case QL_CFG_INT: return *(const int64_t *)x == *(const int64_t *)y;
    case QL_CFG_FLOAT: return *(const double *)x == *(const double *)y;
    case QL_CFG_BOOL:
    case QL_CFG_CHOICE: return *(const int *)x == *(const int *)y;
    case QL_CFG_TARGETS: return *(const unsigned *)x == *(const unsigned *)y;
    }
    return 0;
}

static void describe_base(const ql_ckpt_base *b, char *buf, size_t n) {
    snprintf(buf, n,
             "%.300s: %s, %" PRId64 " layers, hidden %" PRId64 ", intermediate %" PRId64
             ", %" PRId64 " heads (%" PRId64 " kv), vocab %" PRId64 ", fingerprint %.12s",
             b->path, *b->model_type ? b->model_type : "?", b->num_hidden_layers, b->hidden_size,
             b->intermediate_size, b->num_attention_heads, b->num_key_value_heads, b->vocab_size,
             b->fingerprint);
}

static ql_status check_config(const ql_ckpt_meta *ck, const ql_config *cfg, char *notes,
                              size_t notes_n) {
    ql_config *old = ql_calloc(1, sizeof *old, "the checkpoint's configuration");
    if (!old) return QL_ENOMEM;
    ql_status st = ql_config_parse(ck->config_yaml, strlen(ck->config_yaml),
                                   "the checkpoint's configuration", NULL, 0, old);
    if (st != QL_OK) {
        free(old);
        return ql_error_wrap(st, "cannot read the configuration stored in the checkpoint: ");
    }
    size_t n, len = strlen(notes);
    const ql_cfg_key *keys = ql_config_schema(&n);
    for (size_t i = 0; i < n && st == QL_OK; i++) {
        const ql_cfg_key *k = &keys[i];
        if (same_value(k, old, cfg)) continue;
        char a[512], b[512];
        fmt_value(k, old, a, sizeof a);
        fmt_value(k, cfg, b, sizeof b);
        if (in(k->path, FIXED, sizeof FIXED / sizeof *FIXED))
            st = ql_error(QL_EINVAL,
                          "%s is %s in the checkpoint and %s now: it fixes the adapters or the "
                          "data stream, so a resume cannot change it (set it back, or start "
                          "over: --resume=never --overwrite_output_dir=true, or another "
                          "output_dir)",
                          k->path, a, b);
        else if (!in(k->path, QUIET, sizeof QUIET / sizeof *QUIET) && len < notes_n)
            len += (size_t)snprintf(notes + len, notes_n - len,
                                    "%s: %s in the checkpoint, %s now\n", k->path, a, b);
    }
    free(old);
    return st;
}

ql_status ql_ckpt_check_fixed_keys(const ql_ckpt_meta *ck, const ql_config *cfg) {
    char none[1] = "";
    return check_config(ck, cfg, none, 0);
}

ql_status ql_ckpt_check_compat(const ql_ckpt_meta *ck, const ql_ckpt_meta *now,
                               const ql_config *cfg, char *notes, size_t notes_n) {
    if (notes_n) notes[0] = 0;
    QL_TRY(check_config(ck, cfg, notes, notes_n));

    const ql_ckpt_base *a = &ck->base, *b = &now->base;
    if (strcmp(a->fingerprint, b->fingerprint) != 0) {
        char da[1024], db[1024];
        describe_base(a, da, sizeof da);
        describe_base(b, db, sizeof db);
        const char *what =
            strcmp(a->model_type, b->model_type)               ? "model_type differs"
            : a->num_hidden_layers != b->num_hidden_layers     ? "num_hidden_layers differs"
            : a->hidden_size != b->hidden_size                 ? "hidden_size differs"
            : a->intermediate_size != b->intermediate_size     ? "intermediate_size differs"
            : a->num_attention_heads != b->num_attention_heads ? "num_attention_heads differs"
            : a->num_key_value_heads != b->num_key_value_heads ? "num_key_value_heads differs"
            : a->vocab_size != b->vocab_size                   ? "vocab_size differs"
                                                               : "same shapes, other weights";
        return ql_error(QL_EINVAL,
                        "the checkpoint was trained on another base model (%s): checkpoint %s; "
                        "this run %s",
                        what, da, db);
    }

    if (ck->n_params != now->n_params || ck->n_tensors != now->n_tensors)
        return ql_error(QL_EINVAL,
                        "the adapter layout differs: the checkpoint has %d tensors, %" PRId64
                        " parameters; this run %d tensors, %" PRId64,
                        ck->n_tensors, ck->n_params, now->n_tensors, now->n_params);
    for (int i = 0; i < ck->n_tensors; i++) {
        const ql_ckpt_tensor *x = &ck->tensors[i], *y = &now->tensors[i];
        if (strcmp(x->name, y->name) || x->rows != y->rows || x->cols != y->cols ||
            x->offset != y->offset)
            return ql_error(
                QL_EINVAL,
                "the adapter layout differs at tensor %d: the checkpoint has %s [%" PRId64
                ", %" PRId64 "] at %" PRId64 ", this run %s [%" PRId64 ", %" PRId64 "] at %" PRId64,
                i, x->name, x->rows, x->cols, x->offset, y->name, y->rows, y->cols, y->offset);
    }

    if (ck->data.rows != now->data.rows || strcmp(ck->data.sha256, now->data.sha256) != 0)
        return ql_error(QL_EINVAL,
                        "the training data differs from the checkpoint's (%" PRId64
                        " rows, fingerprint %.12s; now %" PRId64
                        " rows, %.12s): its data cursor would point at other samples (use the "
                        "data the run started with, or start over: --resume=never "
                        "--overwrite_output_dir=true, or another output_dir)",
                        ck->data.rows, ck->data.sha256, now->data.rows, now->data.sha256);
    return QL_OK;
}
