/* Learning rate per optimizer step: linear warmup from 0, then cosine, linear
 * or constant, with exactly the multipliers of transformers'
 * get_cosine_schedule_with_warmup (num_cycles 0.5),
 * get_linear_schedule_with_warmup and get_constant_schedule_with_warmup.
 *
 * `index` is the number of optimizer steps taken before this one (0 for the
 * first), as transformers' Trainer calls lr_scheduler.step() after each
 * optimizer.step(): with warmup the first update therefore has lr 0. */
#ifndef QL_SCHEDULE_H
#define QL_SCHEDULE_H

#include <stdint.h>

#include "core/config.h"

/* The multiplier of the peak learning rate, in double as Python computes it. */
double ql_schedule_factor(ql_schedule kind, int64_t index, int64_t warmup, int64_t total);

static inline double ql_schedule_lr(ql_schedule kind, double peak, int64_t index, int64_t warmup,
                                    int64_t total) {
    return peak * ql_schedule_factor(kind, index, warmup, total);
}

#endif
