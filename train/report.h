/* The run report: RUN/report.html (an inline SVG plot of training and eval
 * loss by step and a table: steps, losses, tokens, tokens/s, time, the stored
 * evaluation) and RUN/loss.png (the same plot as an image), both written
 * atomically from RUN/metrics.jsonl (docs/evaluation.md). No JavaScript, no
 * external files: the HTML opens anywhere, e.g. straight from a cluster's
 * shared file system.
 *
 * `qlora report RUN` calls it; `qlora train` can call it when a run ends. */
#ifndef QL_REPORT_H
#define QL_REPORT_H

#include <stdint.h>

#include "core/status.h"

#define QL_REPORT_HTML "report.html"
#define QL_REPORT_PNG "loss.png"

typedef struct ql_report_info {
    int64_t train_points, eval_points; /* plotted */
    int64_t first_step, last_step;
    double first_loss, last_loss, last_eval_loss; /* NaN when absent */
    int64_t skipped_lines;                        /* lines of metrics.jsonl not understood */
} ql_report_info;

/* Reads RUN/metrics.jsonl (and RUN/eval.json when present) and writes
 * RUN/report.html and RUN/loss.png. `info` may be NULL. A missing
 * metrics.jsonl or one without a single training step is an error; lines
 * that are not JSON objects with "step" and "loss" or "eval_loss" (a line cut
 * short by a crash, other records) are passed over and counted. */
ql_status ql_report_write(const char *run_dir, ql_report_info *info);

#endif
