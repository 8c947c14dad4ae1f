/* Fast elementwise sums: the reference's single float addition per element,
 * split over OpenMP threads (no reduction, so bit-identical to cpu-ref). */
#include "kernels/cpu/cpu_ops.h"

ql_status ql_bias_add_cpu(ql_act *y_, const float *b, int64_t T, int64_t n) {
    float *y = y_;
#pragma omp parallel for schedule(static) if (T * n > 16384)
    for (int64_t t = 0; t < T; t++) {
        float *yt = y + t * n;
        for (int64_t i = 0; i < n; i++) yt[i] += b[i];
    }
    return QL_OK;
}

#define ADD_CHUNK 16384

ql_status ql_add_cpu(const ql_act *x_, const ql_act *y_, int64_t n, ql_act *out_) {
    const float *x = x_, *y = y_;
    float *out = out_;
    int64_t chunks = (n + ADD_CHUNK - 1) / ADD_CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t e1 = (c + 1) * ADD_CHUNK < n ? (c + 1) * ADD_CHUNK : n;
        for (int64_t e = c * ADD_CHUNK; e < e1; e++) out[e] = x[e] + y[e];
    }
    return QL_OK;
}
