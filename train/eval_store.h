/* The result of an evaluation kept with a run (RUN/eval.json), and the drift
 * check a later evaluation makes against it (docs/evaluation.md).
 *
 * eval.json is one JSON object (json.dumps(..., indent=2, sort_keys=True)):
 *   version 1, created_utc, model, adapter (null for the base model alone),
 *   data (the path), data_sha256 (of the file's bytes), records, tokens
 *   (target tokens), loss and perplexity of the evaluated model (with the
 *   adapter when there is one), base_loss and base_perplexity (when the base
 *   model was evaluated too, else null), base_weights ("quantized": the
 *   linears rounded to 4 bits as training holds them, or "original": as
 *   stored; absent in older files, which were "quantized"), and, when the evaluation was compared
 *   with a baseline, baseline: {path, loss, change, relative_change, threshold,
 *   drifted, same_data, same_base_weights}. Readers ignore keys they do not
 *   know. */
#ifndef QL_EVAL_STORE_H
#define QL_EVAL_STORE_H

#include <stdint.h>

#include "core/status.h"

#define QL_EVAL_FILE "eval.json"
#define QL_EVAL_PATH_MAX 4096
/* Default relative loss increase that counts as drift (docs/evaluation.md). */
#define QL_DRIFT_THRESHOLD_DEFAULT 0.05

typedef struct ql_eval_drift {
    char path[QL_EVAL_PATH_MAX]; /* the baseline's eval.json */
    double baseline_loss, loss;
    double change;          /* loss - baseline_loss */
    double relative_change; /* change / baseline_loss */
    double threshold;
    int drifted;           /* relative_change > threshold */
    int same_data;         /* the baseline was measured on the same bytes */
    int same_base_weights; /* ... with the base weights held the same way */
} ql_eval_drift;

typedef struct ql_eval_summary {
    char created_utc[32];
    char model[QL_EVAL_PATH_MAX];
    char adapter[QL_EVAL_PATH_MAX]; /* "" = the base model alone */
    char data[QL_EVAL_PATH_MAX];
    char data_sha256[65];
    int64_t records, tokens;
    double loss, perplexity; /* the evaluated model (with the adapter when there is one) */
    int has_base;            /* base_loss and base_perplexity are set */
    double base_loss, base_perplexity;
    int base_original; /* the linears as stored ("original"), not rounded to 4 bits */
    int has_drift;
    ql_eval_drift drift;
} ql_eval_summary;

/* Writes `s` to `path` atomically; created_utc is filled in when empty. */
ql_status ql_eval_summary_write(const char *path, ql_eval_summary *s);

/* Reads an eval.json. Errors name the file and the key. */
ql_status ql_eval_summary_read(const char *path, ql_eval_summary *s);

/* `where` is an eval.json file, or a directory holding one (a run): the
 * file's path into out. A directory without one is QL_ENOTFOUND with advice. */
ql_status ql_eval_find(const char *where, char *out, size_t cap);

/* Compares `now` with `baseline` (read from `path`): fills d. */
void ql_eval_drift_check(const ql_eval_summary *baseline, const char *path,
                         const ql_eval_summary *now, double threshold, ql_eval_drift *d);

/* SHA-256 of a file's bytes as 64 hex digits. */
ql_status ql_eval_file_sha256(const char *path, char hex[65]);

#endif
