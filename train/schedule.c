#include "train/schedule.h"

#include <math.h>

static int64_t at_least_1(int64_t x) { return x > 1 ? x : 1; }

double ql_schedule_factor(ql_schedule kind, int64_t index, int64_t warmup, int64_t total) {
    if (index < warmup) return (double)index / (double)at_least_1(warmup);
    switch (kind) {
    case QL_SCHED_COSINE: {
        double progress = (double)(index - warmup) / (double)at_least_1(total - warmup);
        /* num_cycles = 0.5: pi * 0.5 * 2.0 * progress, written as transformers does. */
        double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return f > 0.0 ? f : 0.0;
    }
    case QL_SCHED_LINEAR: {
        double f = (double)(total - index) / (double)at_least_1(total - warmup);
        return f > 0.0 ? f : 0.0;
    }
    case QL_SCHED_CONSTANT: return 1.0;
    }
    return 1.0;
}
