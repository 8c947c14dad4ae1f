/* Fast dense frozen matmul (lm_head, tied embeddings): the same fixed tiling
 * as the 4-bit path without the dequantization, so y tiles are W row ranges
 * and dx tiles are W column ranges. */
#include "kernels/cpu/cpu_blas.h"
#include "kernels/cpu/cpu_dequant.h"
#include "kernels/cpu/cpu_ops.h"

#define BWD_COLS 128

ql_status ql_matmul_fwd_cpu(const ql_act *W_, const ql_act *x_, int64_t T, int64_t in, int64_t out,
                            ql_act *y_) {
    const float *W = W_, *x = x_;
    float *y = y_;
    if (T <= 0) return QL_OK;
    const int64_t rt = ql_cpu_fwd_tile_rows(T, in, out);
    const int64_t tiles = ql_ceil_div64(out, rt);
    int saved = ql_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t ti = 0; ti < tiles; ti++) {
        int64_t r0 = ti * rt, rows = ql_min64(rt, out - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)in, 1.0f, x,
                    (int)in, W + r0 * in, (int)in, 0.0f, y + r0, (int)out);
    }
    ql_blas_serial_end(saved);
    return QL_OK;
}

ql_status ql_matmul_bwd_cpu(const ql_act *W_, const ql_act *dy_, int64_t T, int64_t in, int64_t out,
                            ql_act *dx_) {
    const float *W = W_, *dy = dy_;
    float *dx = dx_;
    if (T <= 0) return QL_OK;
    const int64_t tiles = ql_ceil_div64(in, BWD_COLS);
    int saved = ql_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t ti = 0; ti < tiles; ti++) {
        int64_t c0 = ti * BWD_COLS, cw = ql_min64(BWD_COLS, in - c0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cw, (int)out, 1.0f, dy,
                    (int)out, W + c0, (int)in, 0.0f, dx + c0, (int)in);
    }
    ql_blas_serial_end(saved);
    return QL_OK;
}
