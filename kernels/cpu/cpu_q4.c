/* Fast 4-bit linear layers: W is never materialised whole (a weight held in
 * float32 by dense_upload is read in place instead of dequantized). Forward tiles W by
 * rows (a tile of y's columns per sgemm), backward by columns (a tile of dx's
 * columns, summing over W's rows in a fixed order inside one thread), so no
 * output element is ever a sum across threads. */
#include <stdlib.h>

#include "kernels/cpu/cpu_avx2.h"
#include "kernels/cpu/cpu_blas.h"
#include "kernels/cpu/cpu_dequant.h"
#include "kernels/cpu/cpu_ops.h"

#define DQ_CHUNK ((int64_t)1 << 16) /* a multiple of every block size */
#define T_CHUNK 64                  /* token rows per sgemm for x·Aᵀ and dy·B */
#define BWD_COLS 128                /* dx columns per backward tile */
#define BWD_ROWS 2048               /* W rows dequantized at a time in backward */
#define GRAD_COLS 256               /* dA columns / dB rows per tile */

static int has_lora(const ql_lora *lora) { return lora && lora->r > 0; }

/* The LoRA branch's input under dropout, x ⊙ mask · scale, as a new [T, in]
 * buffer (NULL with a message when out of memory). By pairs of elements:
 * one draw of the generator decides both. */
static float *dropped_input(const ql_lora *lora, const float *x, int64_t T, int64_t in) {
    const int64_t n = T * in;
    float *xl = ql_malloc((size_t)n * sizeof(float), "cpu LoRA dropout input");
    if (!xl) return NULL;
    const ql_dropout *d = &lora->drop;
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < n; e += 2) {
        const unsigned k = ql_dropout_keep2(d->seed, d->thresh, e);
        xl[e] = k & 1 ? x[e] * d->scale : 0.0f;
        if (e + 1 < n) xl[e + 1] = k & 2 ? x[e + 1] * d->scale : 0.0f;
    }
    return xl;
}

ql_status ql_q4_dequantize_cpu(const ql_q4 *w, ql_act *out_) {
    float *out = out_;
    int64_t chunks = ql_ceil_div64(w->n, DQ_CHUNK);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t e0 = c * DQ_CHUNK;
        ql_q4_dequant_range_cpu(w, e0, ql_min64(e0 + DQ_CHUNK, w->n), out + e0);
    }
    return QL_OK;
}

/* c[rows, n] = a[rows, k]·b[n, k]ᵀ, one sgemm per chunk of rows. */
static void rows_times_bt(const float *a, int64_t rows, int64_t k, const float *b, int64_t n,
                          float *c) {
    int64_t chunks = ql_ceil_div64(rows, T_CHUNK);
#pragma omp parallel for schedule(static)
    for (int64_t ci = 0; ci < chunks; ci++) {
        int64_t t0 = ci * T_CHUNK, tn = ql_min64(T_CHUNK, rows - t0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tn, (int)n, (int)k, 1.0f,
                    a + t0 * k, (int)k, b, (int)k, 0.0f, c + t0 * n, (int)n);
    }
}

#ifdef __AVX2__
#define FUSED_MAX_T 16 /* up to this many tokens, skip the fp32 tile and sgemm */
#define TOK_GROUP 8

/* y[:, r0:r0+rows] = x·W[r0:r0+rows]ᵀ for small T, decoding W in registers:
 * at a few tokens the tile path spends most of its time writing the fp32 tile
 * and letting sgemm pack it again, and this path does neither. Each (token,
 * row) is summed by one thread in a fixed order. Needs in % 16 == 0 so that
 * 16-weight chunks never straddle a row or a block. */
static void fused_rows(const ql_q4 *w, const float *x, int64_t T, int64_t r0, int64_t rows,
                       float *y) {
    const int64_t in = w->cols, out = w->rows, bs = w->blocksize;
    float book[16];
    for (unsigned c = 0; c < 16; c++) book[c] = ql_q4_value(w->type, c);
    const __m256 lo = _mm256_loadu_ps(book), hi = _mm256_loadu_ps(book + 8);
    for (int64_t o = r0; o < r0 + rows; o++) {
        const uint8_t *prow = w->packed + ((o * in) >> 1);
        for (int64_t t0 = 0; t0 < T; t0 += TOK_GROUP) {
            const float *xr[TOK_GROUP];
            for (int g = 0; g < TOK_GROUP; g++) /* missing tokens recompute the first */
                xr[g] = x + (t0 + g < T ? t0 + g : t0) * in;
            __m256 acc[TOK_GROUP];
            for (int g = 0; g < TOK_GROUP; g++) acc[g] = _mm256_setzero_ps();
            __m256 amax = _mm256_setzero_ps();
            for (int64_t i = 0; i < in; i += 16) {
                int64_t e = o * in + i;
                if (i == 0 || e % bs == 0) amax = _mm256_set1_ps(ql_q4_block_absmax_cpu(w, e / bs));
                __m256 w0, w1;
                ql_avx2_decode16(prow + (i >> 1), lo, hi, amax, &w0, &w1);
                for (int g = 0; g < TOK_GROUP; g++) {
                    acc[g] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[g] + i), acc[g]);
                    acc[g] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr[g] + i + 8), acc[g]);
                }
            }
            for (int g = 0; g < TOK_GROUP && t0 + g < T; g++)
                y[(t0 + g) * out + o] = ql_avx2_hsum(acc[g]);
        }
    }
}
#endif

ql_status ql_q4_lora_fwd_cpu(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, int64_t T,
                             ql_act *y_, float *xa) {
    const float *x = x_;
    float *y = y_;
    if (T <= 0) return QL_OK;
    const int64_t in = w->cols, out = w->rows;
    const int r = has_lora(lora) ? lora->r : 0;
    const int64_t rt = ql_cpu_fwd_tile_rows(T, in, out);
    const int64_t tiles = ql_ceil_div64(out, rt);
    int failed = 0;
#ifdef __AVX2__
    const int fused = T <= FUSED_MAX_T && in % 16 == 0 && w->packed;
#else
    const int fused = 0;
#endif

    float *xl = NULL;
    if (r && lora->drop.on && !(xl = dropped_input(lora, x, T, in))) return QL_ENOMEM;
    int saved = ql_blas_serial_begin();
    if (r) rows_times_bt(xl ? xl : x, T, in, lora->A, r, xa);
    free(xl);
#pragma omp parallel
    {
        float *buf = fused || !w->packed ? (float *)x : ql_cpu_scratch((size_t)(rt * in));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < tiles; ti++) {
            if (!buf) continue;
            int64_t r0 = ti * rt, rows = ql_min64(rt, out - r0);
#ifdef __AVX2__
            if (fused) {
                fused_rows(w, x, T, r0, rows, y);
            } else
#endif
            {
                const float *wt = buf; /* W's rows r0 .. r0 + rows, float32 */
                if (w->packed)
                    ql_q4_dequant_range_cpu(w, r0 * in, (r0 + rows) * in, buf);
                else
                    wt = (const float *)w->dense + r0 * in;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)in,
                            1.0f, x, (int)in, wt, (int)in, 0.0f, y + r0, (int)out);
            }
            if (r)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, r,
                            lora->scale, xa, r, lora->B + r0 * r, r, 1.0f, y + r0, (int)out);
        }
    }
    ql_blas_serial_end(saved);
    return failed ? QL_ENOMEM : QL_OK;
}

/* dx[:, c0:c1] = dy·W[:, c0:c1] (+ s·g·A[:, c0:c1]), W's rows summed in chunks
 * of BWD_ROWS in order by the one thread that owns the column tile. */
static int dx_tiles(const ql_q4 *w, const float *dy, int64_t T, const float *g, const ql_lora *lora,
                    int r, float *dx) {
    const int64_t in = w->cols, out = w->rows;
    const int64_t rc = ql_min64(BWD_ROWS, out);
    const int64_t tiles = ql_ceil_div64(in, BWD_COLS);
    int failed = 0;
#pragma omp parallel
    {
        float *buf = w->packed ? ql_cpu_scratch((size_t)(rc * BWD_COLS)) : NULL;
        const int ok = buf || !w->packed;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < tiles; ti++) {
            if (!ok) continue;
            int64_t c0 = ti * BWD_COLS, cw = ql_min64(BWD_COLS, in - c0);
            for (int64_t r0 = 0; r0 < out; r0 += rc) {
                int64_t rows = ql_min64(rc, out - r0);
                const float *wt = buf; /* W[r0 .. r0 + rows, c0 .. c0 + cw], leading dim ld */
                int64_t ld = cw;
                if (!w->packed) {
                    wt = (const float *)w->dense + r0 * in + c0;
                    ld = in;
                }
                for (int64_t o = 0; w->packed && o < rows; o++) {
                    int64_t e0 = (r0 + o) * in + c0;
                    ql_q4_dequant_range_cpu(w, e0, e0 + cw, buf + o * cw);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cw, (int)rows,
                            1.0f, dy + r0, (int)out, wt, (int)ld, r0 == 0 ? 0.0f : 1.0f, dx + c0,
                            (int)in);
            }
            if (r)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cw, r,
                            lora->scale, g, r, lora->A + c0, (int)in, 1.0f, dx + c0, (int)in);
        }
    }
    return failed;
}

ql_status ql_q4_lora_bwd_cpu(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, const float *xa,
                             const ql_act *dy_, int64_t T, ql_act *dx_, float *dA, float *dB) {
    const float *x = x_, *dy = dy_;
    float *dx = dx_;
    if (T <= 0) return QL_OK;
    const int64_t in = w->cols, out = w->rows;
    const int r = has_lora(lora) ? lora->r : 0;
    float *g = NULL;
    if (r) {
        g = ql_malloc((size_t)(T * r) * sizeof(float), "cpu q4_lora_bwd dy·B");
        if (!g) return QL_ENOMEM;
    }
    int saved = ql_blas_serial_begin();
    int failed = 0;
    if (r) {
        /* g = dy·B, per chunk of tokens. */
        int64_t chunks = ql_ceil_div64(T, T_CHUNK);
#pragma omp parallel for schedule(static)
        for (int64_t ci = 0; ci < chunks; ci++) {
            int64_t t0 = ci * T_CHUNK, tn = ql_min64(T_CHUNK, T - t0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tn, r, (int)out, 1.0f,
                        dy + t0 * out, (int)out, lora->B, r, 0.0f, g + t0 * r, r);
        }
    }
    /* Under dropout the branch's input is xl and its part of dx goes back
     * through the mask, so it is computed apart (into xl, once dA is done). */
    float *xl = NULL;
    if (r && lora->drop.on && !(xl = dropped_input(lora, x, T, in))) {
        ql_blas_serial_end(saved);
        free(g);
        return QL_ENOMEM;
    }
    if (dx && !xl) failed = dx_tiles(w, dy, T, g, lora, r, dx);
    if (r) {
        const float *xb = xl ? xl : x;
        int64_t ca = ql_ceil_div64(in, GRAD_COLS), cb = ql_ceil_div64(out, GRAD_COLS);
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < ca + cb; ti++) {
            if (ti < ca) { /* dA[:, c0:c1] += s·gᵀ·x[:, c0:c1] */
                int64_t c0 = ti * GRAD_COLS, cw = ql_min64(GRAD_COLS, in - c0);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, (int)cw, (int)T,
                            lora->scale, g, r, xb + c0, (int)in, 1.0f, dA + c0, (int)in);
            } else { /* dB[o0:o1, :] += s·dy[:, o0:o1]ᵀ·xa */
                int64_t o0 = (ti - ca) * GRAD_COLS, ow = ql_min64(GRAD_COLS, out - o0);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ow, r, (int)T,
                            lora->scale, dy + o0, (int)out, xa, r, 1.0f, dB + o0 * r, r);
            }
        }
    }
    if (dx && xl) {
        failed = dx_tiles(w, dy, T, NULL, NULL, 0, dx);
        int64_t chunks = ql_ceil_div64(T, T_CHUNK);
#pragma omp parallel for schedule(static)
        for (int64_t ci = 0; ci < chunks; ci++) { /* xl = s·g·A, then dx += mask ⊙ xl · scale */
            int64_t t0 = ci * T_CHUNK, tn = ql_min64(T_CHUNK, T - t0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tn, (int)in, r, lora->scale,
                        g + t0 * r, r, lora->A, (int)in, 0.0f, xl + t0 * in, (int)in);
            for (int64_t e = t0 * in; e < (t0 + tn) * in; e += 2) { /* by pairs: one draw each */
                const unsigned k = ql_dropout_keep2(lora->drop.seed, lora->drop.thresh, e);
                if (k & 1) dx[e] += xl[e] * lora->drop.scale;
                if ((k & 2) && e + 1 < (t0 + tn) * in) dx[e + 1] += xl[e + 1] * lora->drop.scale;
            }
        }
    }
    ql_blas_serial_end(saved);
    free(xl);
    free(g);
    return failed ? QL_ENOMEM : QL_OK;
}
