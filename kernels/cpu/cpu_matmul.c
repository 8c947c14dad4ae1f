/* Fast dense frozen matmul (lm_head, tied embeddings): the same fixed tiling
 * as the 4-bit path without the dequantization, so y tiles are W row ranges
 * and dx tiles are W column ranges. */
#include "kernels/cpu/cpu_blas.h"
#include "kernels/cpu/cpu_dequant.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_v8.h"

#define BWD_COLS 128
#define DOT_MAX_T 16 /* up to this many tokens, dot products instead of sgemm */
#define DOT_ROWS 64  /* W rows per task */
#define DOT_GROUP 8  /* tokens summed against one pass over a W row */

/* y = x·Wᵀ for a few tokens (generation's lm_head: one token per sequence),
 * W read once per group of tokens: sgemm would first copy all of W into its
 * packed layout (113 MB for SmolLM2's tied embedding, every token). Each
 * (token, row) is one thread's sum in eight fixed lanes, whatever T is. */
static void dot_rows(const float *W, const float *x, int64_t T, int64_t in, int64_t out, float *y) {
    const int64_t in8 = in & ~(int64_t)7;
#pragma omp parallel for schedule(static)
    for (int64_t r0 = 0; r0 < out; r0 += DOT_ROWS) {
        int64_t r1 = ql_min64(r0 + DOT_ROWS, out);
        for (int64_t t0 = 0; t0 < T; t0 += DOT_GROUP) {
            int nt = (int)ql_min64(DOT_GROUP, T - t0);
            for (int64_t o = r0; o < r1; o++) {
                const float *w = W + o * in;
                ql_v8f acc[DOT_GROUP];
                for (int g = 0; g < DOT_GROUP; g++) acc[g] = ql_v8_splat(0.0f);
                for (int64_t i = 0; i < in8; i += 8) {
                    ql_v8f wv = ql_v8_load(w + i);
                    for (int g = 0; g < nt; g++) acc[g] += wv * ql_v8_load(x + (t0 + g) * in + i);
                }
                for (int g = 0; g < nt; g++) {
                    float tail = 0.0f;
                    for (int64_t i = in8; i < in; i++) tail += w[i] * x[(t0 + g) * in + i];
                    y[(t0 + g) * out + o] = ql_v8_total(acc[g]) + tail;
                }
            }
        }
    }
}

ql_status ql_matmul_fwd_cpu(const ql_act *W_, const ql_act *x_, int64_t T, int64_t in, int64_t out,
                            ql_act *y_) {
    const float *W = W_, *x = x_;
    float *y = y_;
    if (T <= 0) return QL_OK;
    if (T <= DOT_MAX_T) {
        dot_rows(W, x, T, in, out, y);
        return QL_OK;
    }
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
