/* One optimizer step over the flat adapter vector: the non-finite policy,
 * global-norm clipping, and AdamW through the backend's adamw op with fp32
 * moments in backend memory.
 *
 * A step whose loss or gradient norm is NaN/Inf changes nothing (parameters,
 * moments and AdamW's step count stay as they were) and is counted; with
 * on_nonfinite = skip the run stops with an error only after
 * max_nonfinite_in_a_row such steps in a row, with stop at the first. */
#ifndef QL_OPTIM_H
#define QL_OPTIM_H

#include <stdint.h>

#include "core/config.h"
#include "core/status.h"
#include "kernels/backend.h"

typedef struct ql_optim_config {
    double weight_decay, beta1, beta2, eps;
    double max_grad_norm; /* <= 0: no clipping */
    ql_nonfinite on_nonfinite;
    int64_t max_nonfinite_in_a_row;
} ql_optim_config;

/* The optimizer settings of a resolved configuration. */
ql_optim_config ql_optim_config_from(const ql_config *c);

typedef struct ql_optim {
    const ql_backend *be;
    int64_t n;
    float *m, *v;    /* backend memory [n] */
    float *host;     /* host copy of the gradient when the backend is not host memory */
    int host_memory; /* the backend's pointers are host pointers */
    int64_t t;       /* AdamW steps applied (bias correction counts these) */
    int64_t nonfinite_in_a_row, nonfinite_total;
} ql_optim;

typedef struct ql_step_result {
    double grad_norm; /* before clipping; NaN/Inf when not finite */
    float clip_coef;  /* what the gradient was multiplied by (1: not clipped) */
    int skipped;      /* 1 if the update was not applied */
} ql_step_result;

ql_status ql_optim_init(ql_optim *o, const ql_backend *be, int64_t n);
void ql_optim_free(ql_optim *o);

/* grads = 0, before a step's micro-batches accumulate into them. */
ql_status ql_optim_zero_grads(ql_optim *o, float *grads);

/* Applies step `step` (1-based, for messages) with learning rate `lr` to
 * `params` from the accumulated `grads` (both backend memory; grads are
 * clipped in place). `loss` is the step's mean loss, checked for finiteness
 * with the gradient. Returns an error when the non-finite policy says stop. */
ql_status ql_optim_step(ql_optim *o, const ql_optim_config *c, int64_t step, double loss, double lr,
                        float *params, float *grads, ql_step_result *r);

#endif
