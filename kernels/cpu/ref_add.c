/* Reference elementwise sums the model needs: a frozen bias on a linear
 * layer's output, and residual / gradient sums. One float addition per
 * element, so the fast backend must agree bit for bit. */
#include "kernels/cpu/cpu_ops.h"

ql_status ql_bias_add_ref(ql_act *y_, const float *b, int64_t T, int64_t n) {
    float *y = y_;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) y[t * n + i] += b[i];
    return QL_OK;
}

ql_status ql_add_ref(const ql_act *x_, const ql_act *y_, int64_t n, ql_act *out_) {
    const float *x = x_, *y = y_;
    float *out = out_;
    for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
    return QL_OK;
}
