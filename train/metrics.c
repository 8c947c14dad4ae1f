#include "train/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/json_float.h"

ql_status ql_metrics_open(ql_metrics *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->path = strdup(path);
    if (!m->path) return ql_error(QL_ENOMEM, "out of memory");
    m->f = fopen(path, "w");
    if (!m->f) {
        ql_status st = ql_error(QL_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(m->path);
        m->path = NULL;
        return st;
    }
    return QL_OK;
}

ql_status ql_metrics_open_at(ql_metrics *m, const char *path, int64_t step) {
    memset(m, 0, sizeof *m);
    if (ql_fs_exists(path)) {
        char *data;
        size_t len;
        QL_TRY(ql_fs_read_file(path, &data, &len));
        size_t keep = 0;
        for (size_t i = 0; i < len;) {
            size_t e = i;
            while (e < len && data[e] != '\n') e++;
            /* Every line starts {"step": N (train and eval lines alike). */
            long long s = -1;
            if (sscanf(data + i, "{\"step\": %lld", &s) != 1 || s > step || e == len) break;
            keep = e + 1;
            i = e + 1;
        }
        ql_status st = ql_fs_write_atomic(path, data, keep);
        free(data);
        QL_TRY(st);
    }
    m->path = strdup(path);
    if (!m->path) return ql_error(QL_ENOMEM, "out of memory");
    m->f = fopen(path, "a");
    if (!m->f) {
        ql_status st = ql_error(QL_EIO, "%s: cannot open to append: %s", path, strerror(errno));
        free(m->path);
        m->path = NULL;
        return st;
    }
    return QL_OK;
}

/* Shortest round-trip digits (Python's repr), or null. */
static void num(double x, char buf[QL_FLOAT_REPR_MAX]) {
    if (!isfinite(x))
        strcpy(buf, "null");
    else
        ql_json_float_repr(x, buf);
}

void ql_metrics_format(const ql_step_log *l, char *buf, size_t n) {
    char loss[QL_FLOAT_REPR_MAX], lr[QL_FLOAT_REPR_MAX], gn[QL_FLOAT_REPR_MAX];
    num(l->loss, loss);
    num(l->lr, lr);
    num(l->grad_norm, gn);
    snprintf(
        buf, n,
        "{\"step\": %" PRId64 ", \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, \"tokens\": %" PRId64
        ", \"targets\": %" PRId64 ", \"tokens_per_s\": %.1f, \"elapsed_s\": %.3f, "
        "\"skipped\": %d}",
        l->step, loss, lr, gn, l->tokens, l->targets, l->tokens_per_s, l->elapsed_s, l->skipped);
    size_t used = strlen(buf);
    if (l->world > 1 && used > 0 && used + 48 < n)
        snprintf(buf + used - 1, n - used + 1, ", \"world\": %d, \"comm_s\": %.4f}", l->world,
                 l->comm_s);
    const char *keys[3] = {"mem_peak_bytes", "mem_rss_peak_bytes", "mem_device_used_bytes"};
    const size_t vals[3] = {l->mem_peak, l->mem_rss_peak, l->mem_device_used};
    for (int i = 0; i < 3; i++) {
        used = strlen(buf);
        if (vals[i] && used > 0 && used + 48 < n)
            snprintf(buf + used - 1, n - used + 1, ", \"%s\": %zu}", keys[i], vals[i]);
    }
}

ql_status ql_metrics_write(ql_metrics *m, const ql_step_log *l) {
    if (!m->f) return QL_OK;
    char line[512];
    ql_metrics_format(l, line, sizeof line);
    if (fprintf(m->f, "%s\n", line) < 0 || fflush(m->f) != 0)
        return ql_error(QL_EIO, "%s: write failed: %s", m->path, strerror(errno));
    return QL_OK;
}

ql_status ql_metrics_close(ql_metrics *m) {
    ql_status st = QL_OK;
    if (m->f && fclose(m->f) != 0)
        st = ql_error(QL_EIO, "%s: close failed: %s", m->path, strerror(errno));
    free(m->path);
    memset(m, 0, sizeof *m);
    return st;
}
