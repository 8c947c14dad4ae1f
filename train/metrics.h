/* OUT/metrics.jsonl: one JSON object per optimizer step, written as the step
 * ends (and flushed), so a crashed or interrupted run keeps every finished
 * step's line. Fields (docs/training.md): step, loss, lr, grad_norm, tokens,
 * targets, tokens_per_s, elapsed_s, skipped (and world, comm_s in runs of
 * several ranks; mem_peak_bytes, mem_rss_peak_bytes and mem_device_used_bytes
 * when known). A loss or norm that is not finite is written as null. */
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
    /* Memory (0: not reported): the most bytes held through the backend
     * during the step (mem_peak_bytes: the device's buffers on CUDA, the
     * counted host buffers on the CPU), the process's resident high-water
     * mark (mem_rss_peak_bytes) and, on a GPU, the device's used memory as
     * its driver reports it (mem_device_used_bytes). */
    size_t mem_peak, mem_rss_peak, mem_device_used;
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
