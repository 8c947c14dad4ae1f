/* Flat fp32 vectors for both CPU backends: zeroing, the squared norm and
 * scaling of the adapter gradient. The sum runs in index order in double, as
 * train/clip.c's ql_grad_sq_sum, so the CPU optimizer's norm is the same
 * number whichever path computes it. */
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

ql_status ql_zero_f32_cpu(float *x, int64_t n) {
    if (n > 0) memset(x, 0, (size_t)n * sizeof *x);
    return QL_OK;
}

ql_status ql_sq_sum_f32_cpu(const float *x, int64_t n, double *sum) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    *sum = s;
    return QL_OK;
}

ql_status ql_scale_f32_cpu(float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
    return QL_OK;
}
