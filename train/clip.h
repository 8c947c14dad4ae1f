/* Global-norm gradient clipping over the flat adapter gradient, as
 * torch.nn.utils.clip_grad_norm_ does it: coef = max_norm / (norm + 1e-6),
 * applied only when below 1. The norm is summed in double so it does not
 * depend on the order or the length of the vector the way a float sum does. */
#ifndef QL_CLIP_H
#define QL_CLIP_H

#include <stdint.h>

/* sqrt(sum g_i^2) in double; NaN or Inf if any element is. */
double ql_grad_norm(const float *g, int64_t n);
/* sum g_i^2 in double, in index order (a slice's share of the global norm:
 * ql_grad_norm(g, n) == sqrt(ql_grad_sq_sum(g, n))). */
double ql_grad_sq_sum(const float *g, int64_t n);

/* The factor clip_grad_norm_ multiplies the gradients by: min(1, max_norm /
 * (norm + 1e-6)) rounded to float; 1 when max_norm <= 0 (no clipping). */
float ql_clip_coef(double norm, double max_norm);

void ql_grad_scale(float *g, int64_t n, float coef);

#endif
