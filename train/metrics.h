/* OUT/metrics.jsonl: one JSON object per optimizer step, written as the step
 * ends (and flushed), so a crashed or interrupted run keeps every finished
 * step's line. Fields (docs/training.md): step, loss, lr, grad_norm, tokens,
 * targets, tokens_per_s, elapsed_s, skipped (and world, comm_s in runs of
 * several ranks). A loss or norm that is not finite is written as null. */
#ifndef QL_METRICS_H
#define QL_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct ql_step_log {
    int64_t step;
    double loss, lr, grad_norm;
    int64_t tokens, targets;
    double tokens_per_s, elapsed_s;
    int skipped;
    int world;     /* ranks; above 1, the line also has "world" and "comm_s" */
    double comm_s; /* seconds rank 0 spent in the step's collectives */
} ql_step_log;

typedef struct ql_metrics {
    FILE *f;
    char *path;
} ql_metrics;

/* Creates (truncates) `path`. */
ql_status ql_metrics_open(ql_metrics *m, const char *path);
/* For a run resumed after step `step`: keeps the lines of steps up to
 * `step` (rewriting the file atomically), then appends. A missing file is
 * created. */
ql_status ql_metrics_open_at(ql_metrics *m, const char *path, int64_t step);
ql_status ql_metrics_write(ql_metrics *m, const ql_step_log *l);
/* The line for `l` (without the newline) into buf. */
void ql_metrics_format(const ql_step_log *l, char *buf, size_t n);
ql_status ql_metrics_close(ql_metrics *m);

#endif
