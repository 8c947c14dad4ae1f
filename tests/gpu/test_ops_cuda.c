/* Every op of the "cuda" backend against the "cpu-ref" reference on random
 * inputs (never zeros): odd sizes, T not a multiple of any tile, the fused
 * NF4 GEMM's fast and general paths and the dequantize + cuBLASLt baseline,
 * LoRA ranks 5/8/16 with and without dropout, attention with head_dim 64 and
 * 128 (tensor cores) and 32 (plain kernels), GQA, several documents per
 * packed row, ignored targets, in-place cross-entropy.
 *
 * Inputs are drawn as float32 and rounded to bf16 first, so both backends
 * see the same values and the comparison measures only the CUDA backend's
 * bf16 arithmetic. Outputs on the device are poisoned (0xFF bytes: NaN in
 * bf16 and fp32) before every call. Tolerances are relative to each
 * tensor's largest magnitude and sized for bf16: see TOL_* below. Each op is
 * also run twice and must give the same bits (determinism).
 *
 * Exits 77 (skipped) when no CUDA device is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "kernels/cuda_api.h"
#include "unit/test_ops_util.h"

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

/* bf16 rounding is 2^-9 relative; sums of bf16 products with fp32
 * accumulation stay within a few of those of the tensor's scale. */
#define TOL_ELEM 8e-3   /* elementwise ops: one or two bf16 roundings */
#define TOL_GEMM 1.5e-2 /* products whose inputs (W, A, B) are rounded to bf16 */
#define TOL_ATTN 2e-2   /* attention: P and dS rounded to bf16 inside */

static const ql_backend *gpu, *ref;
static int n_ops_run;

/* --- helpers --------------------------------------------------------------------------- */

#define GTRY(expr)                                                                                 \
    do {                                                                                           \
        ql_status s_ = (expr);                                                                     \
        if (s_ != QL_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, ql_error_message());     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Random values in [lo, hi) that are exact in bf16, none of them zero. */
static float *rand_bf16(int64_t n, float lo, float hi) {
    float *p = tops_rand(n, lo, hi);
    for (int64_t i = 0; i < n; i++) {
        float v = ql_bf16_to_f32(ql_f32_to_bf16(p[i]));
        p[i] = v != 0.0f ? v : 0.0078125f;
    }
    return p;
}

static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    GTRY(gpu->alloc(bytes, &p));
    return p;
}

static void *dev_poisoned(size_t bytes) {
    void *p = dev_alloc(bytes);
    GTRY(ql_cuda_memset(p, 0xFF, bytes, NULL));
    return p;
}

static void poison(void *p, size_t bytes) { GTRY(ql_cuda_memset(p, 0xFF, bytes, NULL)); }

/* fp32 host values to a bf16 device buffer. */
static void *up_act(const float *h, int64_t n) {
    uint16_t *tmp = malloc((size_t)(n > 0 ? n : 1) * 2);
    for (int64_t i = 0; i < n; i++) tmp[i] = ql_f32_to_bf16(h[i]);
    void *d = dev_alloc((size_t)(n > 0 ? n : 1) * 2);
    GTRY(gpu->upload(d, tmp, (size_t)n * 2));
    free(tmp);
    return d;
}

static void *up_raw(const void *h, size_t bytes) {
    void *d = dev_alloc(bytes ? bytes : 1);
    GTRY(gpu->upload(d, h, bytes));
    return d;
}

static float *down_act(const void *d, int64_t n) {
    uint16_t *tmp = malloc((size_t)(n > 0 ? n : 1) * 2);
    GTRY(gpu->sync());
    GTRY(gpu->download(tmp, d, (size_t)n * 2));
    float *h = tops_alloc(n);
    for (int64_t i = 0; i < n; i++) h[i] = ql_bf16_to_f32(tmp[i]);
    free(tmp);
    return h;
}

static float *down_f32(const void *d, int64_t n) {
    float *h = tops_alloc(n);
    GTRY(gpu->sync());
    GTRY(gpu->download(h, d, (size_t)n * 4));
    return h;
}

/* Bytes of a device buffer, for the determinism checks. */
static void *down_bytes(const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    GTRY(gpu->sync());
    GTRY(gpu->download(h, d, bytes));
    return h;
}

static void same_bits(const void *d, const void *first, size_t bytes, const char *what) {
    void *h = down_bytes(d, bytes);
    CHECKF(memcmp(h, first, bytes) == 0, "%s: a second run gave different bits", what);
    free(h);
}

/* --- memory and registry ----------------------------------------------------------------- */

static void test_memory(void) {
    CHECK(strcmp(gpu->name, "cuda") == 0 && gpu->act_dtype == QL_DT_BF16);
#ifndef QL_GPU_MIN_BUILD
    CHECK(ql_backend_by_name("cuda") == gpu);
#endif
    float src[37], dst[37];
    for (int i = 0; i < 37; i++) src[i] = (float)i * 0.5f + 1.0f;
    void *p = dev_poisoned(sizeof src);
    GTRY(gpu->upload(p, src, sizeof src));
    GTRY(gpu->download(dst, p, sizeof dst));
    CHECK(memcmp(src, dst, sizeof src) == 0);
    void *p2 = dev_poisoned(sizeof src);
    GTRY(gpu->copy(p2, (char *)p + 8, sizeof src - 8));
    memset(dst, 0, sizeof dst);
    GTRY(gpu->download(dst, p2, sizeof src - 8));
    CHECK(memcmp(src + 2, dst, sizeof src - 8) == 0);
    CHECK(gpu->sync() == QL_OK);
    gpu->free(p);
    gpu->free(p2);
}

/* --- 4-bit linear layers --------------------------------------------------------------------- */

static void test_dequantize(int64_t rows, int64_t cols, ql_qtype type, int bs, int dq) {
    ql_q4 host = tops_q4(rows, cols, type, bs, dq), dev;
    GTRY(gpu->q4_upload(&host, &dev));
    float *want = tops_alloc(host.n);
    ql_q4_dequantize(&host, want);
    void *d = dev_poisoned((size_t)host.n * 2);
    GTRY(gpu->q4_dequantize(&dev, d));
    uint16_t *got = down_bytes(d, (size_t)host.n * 2);
    int64_t bad = 0;
    for (int64_t i = 0; i < host.n; i++) bad += got[i] != ql_f32_to_bf16(want[i]);
    CHECKF(bad == 0, "dequantize %lldx%lld type %d bs %d dq %d: %lld elements differ",
           (long long)rows, (long long)cols, type, bs, dq, (long long)bad);
    n_ops_run++;
    free(got);
    gpu->free(d);
    gpu->q4_free(&dev);
    ql_q4_free(&host);
    free(want);
}

typedef struct lora_case {
    int64_t out, in, T;
    ql_qtype type;
    int bs, dq, r, dropout, with_dx;
} lora_case;

static void test_lora(const lora_case *c, ql_cuda_q4_path path) {
    const int64_t out = c->out, in = c->in, T = c->T;
    const int r = c->r;
    char what[192];
    snprintf(what, sizeof what, "q4_lora %s %lldx%lld T=%lld %s bs=%d dq=%d r=%d drop=%d",
             path == QL_CUDA_Q4_FUSED ? "fused" : "dequant+cublasLt", (long long)out, (long long)in,
             (long long)T, c->type == QL_QTYPE_NF4 ? "nf4" : "fp4", c->bs, c->dq, r, c->dropout);
    ql_cuda_q4_set_path(path);

    ql_q4 host = tops_q4(out, in, c->type, c->bs, c->dq), dev;
    GTRY(gpu->q4_upload(&host, &dev));
    float *x = rand_bf16(T * in, -1, 1), *dy = rand_bf16(T * out, -1, 1);
    /* A and B exact in bf16 as well: the CUDA path rounds them to bf16 for
     * its GEMMs, and with few terms (T = 1, in = 64) that rounding alone,
     * amplified by cancellation, exceeds any tolerance relative to the
     * result. The comparison is then of the kernels' arithmetic only. */
    float *A = rand_bf16((int64_t)r * in, -0.1f, 0.1f), *B = rand_bf16(out * r, -0.1f, 0.1f);
    float *dA0 = tops_rand((int64_t)r * in, -1, 1), *dB0 = tops_rand(out * r, -1, 1);
    const ql_dropout drop = {c->dropout, ((uint64_t)tops_u32() << 32) | tops_u32(),
                             429496730 /* p = 0.1 */, 1.0f / 0.9f};

    /* Reference (host memory). */
    ql_lora hl = {.A = A, .B = B, .r = r, .scale = 2.0f, .drop = drop};
    float *ry = tops_alloc(T * out), *rxa = tops_alloc(T * r), *rdx = tops_alloc(T * in);
    float *rdA = tops_copy(dA0, (int64_t)r * in), *rdB = tops_copy(dB0, out * r);
    GTRY(ref->q4_lora_fwd(&host, r ? &hl : NULL, x, T, ry, rxa));
    GTRY(ref->q4_lora_bwd(&host, r ? &hl : NULL, x, rxa, dy, T, c->with_dx ? rdx : NULL, rdA, rdB));

    /* CUDA. */
    void *dx_ = up_act(x, T * in), *ddy = up_act(dy, T * out);
    void *dAm = up_raw(A, (size_t)r * (size_t)in * 4), *dBm = up_raw(B, (size_t)(out * r) * 4);
    ql_lora dl = {.A = dAm, .B = dBm, .r = r, .scale = 2.0f, .drop = drop};
    void *gy = dev_poisoned((size_t)(T * out) * 2), *gxa = dev_poisoned((size_t)(T * r) * 4 + 4);
    void *gdx = dev_poisoned((size_t)(T * in) * 2);
    void *gdA = up_raw(dA0, (size_t)r * (size_t)in * 4), *gdB = up_raw(dB0, (size_t)(out * r) * 4);
    GTRY(gpu->q4_lora_fwd(&dev, r ? &dl : NULL, dx_, T, gy, gxa));
    GTRY(gpu->q4_lora_bwd(&dev, r ? &dl : NULL, dx_, gxa, ddy, T, c->with_dx ? gdx : NULL, gdA,
                          gdB));
    float *y = down_act(gy, T * out), *xa = down_f32(gxa, T * r), *dx = down_act(gdx, T * in);
    float *dA = down_f32(gdA, (int64_t)r * in), *dB = down_f32(gdB, out * r);

    char w2[256];
    snprintf(w2, sizeof w2, "%s: y", what);
    TOPS_CLOSE(y, ry, T * out, TOL_GEMM, w2);
    if (r) {
        snprintf(w2, sizeof w2, "%s: xa", what);
        TOPS_CLOSE(xa, rxa, T * r, TOL_GEMM, w2);
        /* dA, dB accumulate: compare the increments. */
        for (int64_t i = 0; i < (int64_t)r * in; i++) dA[i] -= dA0[i], rdA[i] -= dA0[i];
        for (int64_t i = 0; i < out * r; i++) dB[i] -= dB0[i], rdB[i] -= dB0[i];
        snprintf(w2, sizeof w2, "%s: dA increment", what);
        TOPS_CLOSE(dA, rdA, (int64_t)r * in, TOL_GEMM, w2);
        snprintf(w2, sizeof w2, "%s: dB increment", what);
        TOPS_CLOSE(dB, rdB, out * r, TOL_GEMM, w2);
    }
    if (c->with_dx) {
        snprintf(w2, sizeof w2, "%s: dx", what);
        TOPS_CLOSE(dx, rdx, T * in, TOL_GEMM, w2);
    }

    /* Determinism: again, from poisoned outputs and the same dA, dB start;
     * then once more with W kept dequantized (q4_keep_dequantized): the same
     * bits on either path (the dequant path reads the copy, the fused one
     * ignores it). The copy's free rows and columns are never written by the
     * keep (the emulator's cudaMalloc leaves them 0xFF, NaN: a read would
     * show). */
    void *y1 = down_bytes(gy, (size_t)(T * out) * 2), *dx1 = down_bytes(gdx, (size_t)(T * in) * 2);
    void *dA1 = down_bytes(gdA, (size_t)r * (size_t)in * 4),
         *dB1 = down_bytes(gdB, (size_t)(out * r) * 4);
    for (int kept = 0; kept < 2; kept++) {
        if (kept) {
            GTRY(gpu->q4_keep_dequantized(&dev, r));
            CHECK(dev.dense != NULL);
        }
        snprintf(w2, sizeof w2, "%s%s", what, kept ? ", kept dequantized" : "");
        poison(gy, (size_t)(T * out) * 2);
        poison(gdx, (size_t)(T * in) * 2);
        GTRY(gpu->upload(gdA, dA0, (size_t)r * (size_t)in * 4));
        GTRY(gpu->upload(gdB, dB0, (size_t)(out * r) * 4));
        GTRY(gpu->q4_lora_fwd(&dev, r ? &dl : NULL, dx_, T, gy, gxa));
        GTRY(gpu->q4_lora_bwd(&dev, r ? &dl : NULL, dx_, gxa, ddy, T, c->with_dx ? gdx : NULL, gdA,
                              gdB));
        same_bits(gy, y1, (size_t)(T * out) * 2, w2);
        if (c->with_dx) same_bits(gdx, dx1, (size_t)(T * in) * 2, w2);
        if (r) {
            same_bits(gdA, dA1, (size_t)r * (size_t)in * 4, w2);
            same_bits(gdB, dB1, (size_t)(out * r) * 4, w2);
        }
    }
    n_ops_run += 3;

    /* The same W held in bf16 only (dense_upload: quant.type none,
     * --base-weights original): every call on the dequant path reading it,
     * so with path forced to dequant the bits of the kept copy's calls, and
     * on the fused path's shapes the reference's values; a call without
     * LoRA reads W at the layout's row stride; q4_dequantize gives W. */
    float *Wf = tops_alloc(out * in);
    ql_q4_dequantize(&host, Wf);
    ql_q4 dw;
    GTRY(gpu->dense_upload(Wf, out, in, r, &dw));
    CHECK(!dw.packed && dw.dense && dw.dense_pad == (r ? (r + 15) / 16 * 16 : 0));
    snprintf(w2, sizeof w2, "%s, held in bf16", what);
    poison(gy, (size_t)(T * out) * 2);
    poison(gdx, (size_t)(T * in) * 2);
    GTRY(gpu->upload(gdA, dA0, (size_t)r * (size_t)in * 4));
    GTRY(gpu->upload(gdB, dB0, (size_t)(out * r) * 4));
    GTRY(gpu->q4_lora_fwd(&dw, r ? &dl : NULL, dx_, T, gy, gxa));
    GTRY(
        gpu->q4_lora_bwd(&dw, r ? &dl : NULL, dx_, gxa, ddy, T, c->with_dx ? gdx : NULL, gdA, gdB));
    if (path == QL_CUDA_Q4_DEQUANT_BLAS) {
        same_bits(gy, y1, (size_t)(T * out) * 2, w2);
        if (c->with_dx) same_bits(gdx, dx1, (size_t)(T * in) * 2, w2);
        if (r) {
            same_bits(gdA, dA1, (size_t)r * (size_t)in * 4, w2);
            same_bits(gdB, dB1, (size_t)(out * r) * 4, w2);
        }
    } else {
        float *yd = down_act(gy, T * out);
        TOPS_CLOSE(yd, ry, T * out, TOL_GEMM, w2);
        free(yd);
        if (c->with_dx) {
            float *dxd = down_act(gdx, T * in);
            TOPS_CLOSE(dxd, rdx, T * in, TOL_GEMM, w2);
            free(dxd);
        }
    }
    if (r) { /* the adapter switched off (generation's base-model answers) */
        float *ry0 = tops_alloc(T * out);
        GTRY(ref->q4_lora_fwd(&host, NULL, x, T, ry0, NULL));
        GTRY(gpu->q4_lora_fwd(&dw, NULL, dx_, T, gy, NULL));
        float *y0 = down_act(gy, T * out);
        snprintf(w2, sizeof w2, "%s, held in bf16, without LoRA", what);
        TOPS_CLOSE(y0, ry0, T * out, TOL_GEMM, w2);
        free(y0), free(ry0);
    }
    void *gW = dev_poisoned((size_t)(out * in) * 2);
    GTRY(gpu->q4_dequantize(&dw, gW));
    float *Wd = down_act(gW, out * in);
    int64_t bad = 0;
    for (int64_t i = 0; i < out * in; i++) bad += Wd[i] != ql_bf16_to_f32(ql_f32_to_bf16(Wf[i]));
    CHECKF(bad == 0, "%s: q4_dequantize of the bf16 weight: %lld elements", w2, (long long)bad);
    free(Wd), free(Wf);
    gpu->free(gW);
    gpu->q4_free(&dw);
    CHECK(!dw.dense);
    n_ops_run += 2;

    free(y1), free(dx1), free(dA1), free(dB1);
    free(y), free(xa), free(dx), free(dA), free(dB);
    free(ry), free(rxa), free(rdx), free(rdA), free(rdB);
    gpu->free(dx_), gpu->free(ddy), gpu->free(dAm), gpu->free(dBm);
    gpu->free(gy), gpu->free(gxa), gpu->free(gdx), gpu->free(gdA), gpu->free(gdB);
    free(x), free(dy), free(A), free(B), free(dA0), free(dB0);
    gpu->q4_free(&dev);
    ql_q4_free(&host);
    ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
}

/* The LoRA dropout terms of the backward alone: with W = 0,
 * dx = mask ⊙ s·(dy·B)·A · scale is 0 where the mask drops and (generically)
 * not where it keeps, so dx's zeros must be the generator's dropped
 * elements, bit for bit; and dx, dA compared with cpu-ref to a tolerance
 * relative to the LoRA terms themselves, not to a dy·W that would hide them.
 * Both paths: the fused kernel's epilogue draws the mask (odd `in` puts
 * pairs at odd element indices), the dequant path's dx kernel does. */
static void test_lora_dropout_pattern(int64_t out, int64_t in, int64_t T, ql_cuda_q4_path path) {
    const int r = 8;
    /* Random codes with every block's absmax 0: W decodes to ±0. */
    ql_q4 host = tops_q4(out, in, QL_QTYPE_NF4, 64, 0), dev;
    for (int64_t b = 0; b < host.n_blocks; b++) host.absmax[b] = 0.0f;
    GTRY(gpu->q4_upload(&host, &dev));
    float *A = rand_bf16((int64_t)r * in, -0.5f, 0.5f), *B = rand_bf16(out * r, -0.5f, 0.5f);
    float *x = rand_bf16(T * in, -1, 1), *dy = rand_bf16(T * out, -1, 1);
    const ql_dropout drop = {1, ((uint64_t)tops_u32() << 32) | tops_u32(), 1ull << 31 /* p = 1/2 */,
                             2.0f};
    void *gx = up_act(x, T * in), *gdy = up_act(dy, T * out);
    void *gA = up_raw(A, (size_t)r * (size_t)in * 4), *gB = up_raw(B, (size_t)(out * r) * 4);
    ql_lora dl = {.A = gA, .B = gB, .r = r, .scale = 2.0f, .drop = drop};
    ql_lora hl = {.A = A, .B = B, .r = r, .scale = 2.0f, .drop = drop};
    float *xa0 = tops_alloc(T * r), *dA0 = tops_alloc((int64_t)r * in), *dB0 = tops_alloc(out * r);
    memset(xa0, 0, (size_t)(T * r) * 4);
    memset(dA0, 0, (size_t)r * (size_t)in * 4);
    float *rdx = tops_alloc(T * in), *rdA = tops_copy(dA0, (int64_t)r * in);
    float *rdB = tops_alloc(out * r);
    memset(rdB, 0, (size_t)(out * r) * 4);
    GTRY(ref->q4_lora_bwd(&host, &hl, x, xa0, dy, T, rdx, rdA, rdB));
    void *gxa = up_raw(xa0, (size_t)(T * r) * 4), *gdx = dev_poisoned((size_t)(T * in) * 2);
    void *gdA = up_raw(dA0, (size_t)r * (size_t)in * 4), *gdB = up_raw(rdB, (size_t)(out * r) * 4);
    ql_cuda_q4_set_path(path);
    GTRY(gpu->q4_lora_bwd(&dev, &dl, gx, gxa, gdy, T, gdx, gdA, gdB));
    CHECK(ql_cuda_q4_last_path() == (int)path);
    char what[128];
    snprintf(what, sizeof what, "q4_lora W = 0 dropout %s %lldx%lld T=%lld",
             path == QL_CUDA_Q4_FUSED ? "fused" : "dequant", (long long)out, (long long)in,
             (long long)T);
    float *gdxf = down_act(gdx, T * in), *gdAf = down_f32(gdA, (int64_t)r * in);
    TOPS_CLOSE(gdxf, rdx, T * in, TOL_GEMM, what);
    TOPS_CLOSE(gdAf, rdA, (int64_t)r * in, TOL_GEMM, what);
    uint16_t *dx = down_bytes(gdx, (size_t)(T * in) * 2);
    int64_t wrong = 0, first = -1, dropped = 0;
    for (int64_t e = 0; e < T * in; e++) {
        const int keep = ql_dropout_keep(drop.seed, drop.thresh, e);
        const int nonzero = (dx[e] & 0x7fff) != 0;
        dropped += !keep;
        if (keep != nonzero && wrong++ == 0) first = e;
    }
    CHECKF(wrong == 0, "%s: dx zero where dropped: %lld elements differ, first %lld", what,
           (long long)wrong, (long long)first);
    CHECK(dropped > 0 && dropped < T * in);
    n_ops_run++;
    ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
    free(dx), free(A), free(B), free(x), free(dy), free(gdxf), free(gdAf);
    free(xa0), free(dA0), free(dB0), free(rdx), free(rdA), free(rdB);
    gpu->free(gx), gpu->free(gdy), gpu->free(gA), gpu->free(gB);
    gpu->free(gxa), gpu->free(gdx), gpu->free(gdA), gpu->free(gdB);
    gpu->q4_free(&dev);
    ql_q4_free(&host);
}

/* The LoRA products that apply the dropout mask as they read x
 * (ql_cuda_lora_xa, ql_cuda_lora_dA) against sums in double: x'·Aᵀ and
 * dA + alpha·Eᵀ·x', x' masked by the generator on the host. Shapes give
 * several splits, rows and columns that fill no tile, every rank padding the
 * kernels take (16..64) and E with a row stride past its columns. */
static double keep(const ql_dropout *d, int64_t e) {
    return !d->on || ql_dropout_keep(d->seed, d->thresh, e) ? 1.0 : 0.0;
}

static void test_lora_skinny(int64_t T, int64_t in, int r, int dropout) {
    const int64_t rpad = (r + 15) / 16 * 16, lde = rpad + 8;
    const ql_dropout d = {dropout, tops_u32() * 0x100000001ull + 99, 1ull << 30, 4.0f / 3.0f};
    const float alpha = dropout ? d.scale : 0.5f;
    char what[96];
    snprintf(what, sizeof what, "lora skinny T=%lld in=%lld r=%d drop=%d", (long long)T,
             (long long)in, r, dropout);
    float *x = rand_bf16(T * in, -1, 1), *A = rand_bf16(rpad * in, -0.5f, 0.5f);
    float *E = rand_bf16(T * lde, -1, 1), *dA0 = rand_bf16((int64_t)r * in, -1, 1);
    for (int64_t n = r; n < rpad; n++)
        for (int64_t k = 0; k < in; k++) A[n * in + k] = 0.0f;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = r; n < lde; n++) E[t * lde + n] = n < rpad ? 0.0f : NAN;
    /* x with a row of NaN after it: a read past x's end shows (0·NaN). */
    float *xp = tops_alloc((T + 1) * in);
    memcpy(xp, x, (size_t)(T * in) * sizeof(float));
    for (int64_t k = 0; k < in; k++) xp[T * in + k] = NAN;
    void *gx = up_act(xp, (T + 1) * in), *gA = up_act(A, rpad * in), *gE = up_act(E, T * lde);
    void *gxa = dev_poisoned((size_t)(T * r) * 4), *gdA = up_raw(dA0, (size_t)(r * in) * 4);
    GTRY(ql_cuda_lora_xa(gx, gA, rpad, r, dropout ? &d : NULL, alpha, T, in, gxa));
    GTRY(ql_cuda_lora_dA(gE, lde, gx, dropout ? &d : NULL, alpha, r, rpad, T, in, gdA));
    float *xa = down_f32(gxa, T * r), *dA = down_f32(gdA, (int64_t)r * in);
    int64_t bad = 0, first = -1;
    for (int64_t t = 0; t < T; t++)
        for (int n = 0; n < r; n++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < in; k++) {
                const double v = keep(&d, t * in + k) * x[t * in + k] * A[n * in + k];
                s += v, mag += fabs(v);
            }
            s *= alpha, mag *= fabs(alpha);
            if (!(fabs(xa[t * r + n] - s) <= 1e-4 * mag + 1e-30) && bad++ == 0) first = t * r + n;
        }
    CHECKF(bad == 0, "%s: x'·Aᵀ: %lld of %lld differ, first %lld", what, (long long)bad,
           (long long)(T * r), (long long)first);
    bad = 0;
    for (int n = 0; n < r; n++)
        for (int64_t i = 0; i < in; i++) {
            double s = 0, mag = 0;
            for (int64_t t = 0; t < T; t++) {
                const double v = keep(&d, t * in + i) * x[t * in + i] * E[t * lde + n];
                s += v, mag += fabs(v);
            }
            const double want = dA0[n * in + i] + alpha * s;
            mag = fabs(alpha) * mag + fabs(dA0[n * in + i]);
            if (!(fabs(dA[n * in + i] - want) <= 1e-4 * mag) && bad++ == 0) first = n * in + i;
        }
    CHECKF(bad == 0, "%s: dA + Eᵀ·x': %lld of %lld differ, first %lld", what, (long long)bad,
           (long long)(r * in), (long long)first);
    /* The same bits again: the splits are fixed by the shapes. */
    void *xa1 = down_bytes(gxa, (size_t)(T * r) * 4), *dA1 = down_bytes(gdA, (size_t)(r * in) * 4);
    poison(gxa, (size_t)(T * r) * 4);
    GTRY(gpu->upload(gdA, dA0, (size_t)(r * in) * 4));
    GTRY(ql_cuda_lora_xa(gx, gA, rpad, r, dropout ? &d : NULL, alpha, T, in, gxa));
    GTRY(ql_cuda_lora_dA(gE, lde, gx, dropout ? &d : NULL, alpha, r, rpad, T, in, gdA));
    same_bits(gxa, xa1, (size_t)(T * r) * 4, what);
    same_bits(gdA, dA1, (size_t)(r * in) * 4, what);
    n_ops_run++;
    free(x), free(xp), free(A), free(E), free(dA0), free(xa), free(dA), free(xa1), free(dA1);
    gpu->free(gx), gpu->free(gA), gpu->free(gE), gpu->free(gxa), gpu->free(gdA);
}

/* Shapes the kernels do not take are refused, not computed wrong. */
static void test_lora_skinny_refuses(void) {
    void *g = dev_alloc(64 * 80 * 2);
    float *o = dev_alloc(64 * 80 * 4);
    CHECK(ql_cuda_lora_xa(g, g, 16, 16, NULL, 1.0f, 4, 77, o) == QL_EUNSUPPORTED);
    CHECK(ql_cuda_lora_xa(g, g, 80, 70, NULL, 1.0f, 4, 64, o) == QL_EUNSUPPORTED);
    CHECK(ql_cuda_lora_dA(g, 16, (const uint16_t *)g + 1, NULL, 1.0f, 16, 16, 4, 64, o) ==
          QL_EUNSUPPORTED);
    CHECK(ql_cuda_lora_xa(g, (const uint16_t *)g + 4, 16, 16, NULL, 1.0f, 4, 64, o) ==
          QL_EUNSUPPORTED); /* A at an 8-byte boundary */
    CHECK(ql_cuda_lora_xa(g, g, 16, 17, NULL, 1.0f, 4, 64, o) == QL_EUNSUPPORTED);    /* r > rpad */
    CHECK(ql_cuda_lora_dA(g, 8, g, NULL, 1.0f, 16, 16, 4, 64, o) == QL_EUNSUPPORTED); /* lde */
    CHECK(!ql_cuda_lora_skinny_ok(77, 16) && !ql_cuda_lora_skinny_ok(64, 80) &&
          ql_cuda_lora_skinny_ok(64, 64));
    gpu->free(g), gpu->free(o);
}

/* The phase timing of q4_lora (ql_cuda_q4_phases_*): each phase counted as
 * often as the path runs it, a time that is a number, nothing counted while
 * it is off. One forward and backward with dropout and dx on each path. */
static void test_q4_phases(ql_cuda_q4_path path) {
    const int64_t out = 256, in = 128, T = 64;
    const int r = 8;
    ql_q4 host = tops_q4(out, in, QL_QTYPE_NF4, 64, 1), dev;
    GTRY(gpu->q4_upload(&host, &dev));
    float *A = rand_bf16((int64_t)r * in, -0.1f, 0.1f), *B = rand_bf16(out * r, -0.1f, 0.1f);
    float *x = rand_bf16(T * in, -1, 1), *dy = rand_bf16(T * out, -1, 1);
    void *gx = up_act(x, T * in), *gdy = up_act(dy, T * out);
    void *gA = up_raw(A, (size_t)r * (size_t)in * 4), *gB = up_raw(B, (size_t)(out * r) * 4);
    void *gy = dev_poisoned((size_t)(T * out) * 2), *gxa = dev_poisoned((size_t)(T * r) * 4);
    void *gdx = dev_poisoned((size_t)(T * in) * 2), *gdA = up_raw(A, (size_t)r * (size_t)in * 4);
    void *gdB = up_raw(B, (size_t)(out * r) * 4);
    ql_lora dl = {.A = gA, .B = gB, .r = r, .scale = 2.0f, .drop = {1, 77, 429496730, 1.0f / 0.9f}};
    ql_cuda_q4_set_path(path);
    /* dequantize, base GEMM, LoRA GEMMs, bf16 copies, concat, dropout (x'·Aᵀ
     * and Eᵀ·x' apply the mask as they read x: no dropout phase of their own;
     * the dequant path's dx still has one) */
    const int64_t want[2][QL_Q4_PHASES] = {{0, 2, 3, 4, 0, 0}, {2, 2, 3, 4, 1, 1}};
    /* Four calls: timing off; on; on with W kept dequantized for another
     * rank's layout (not used); on with it kept for this one (no dequantize
     * pass on the dequant path, the rest as before). */
    static const char *const cases[4] = {"timing off", "timing on", "kept for r 0",
                                         "kept for this r"};
    for (int k = 0; k < 4; k++) {
        const int on = k > 0, used = k == 3 && path == QL_CUDA_Q4_DEQUANT_BLAS;
        if (k >= 2) GTRY(gpu->q4_keep_dequantized(&dev, k == 3 ? r : 0));
        ql_cuda_q4_phases_enable(on);
        GTRY(gpu->q4_lora_fwd(&dev, &dl, gx, T, gy, gxa));
        GTRY(gpu->q4_lora_bwd(&dev, &dl, gx, gxa, gdy, T, gdx, gdA, gdB));
        double ms[QL_Q4_PHASES];
        int64_t calls[QL_Q4_PHASES];
        ql_cuda_q4_phases_get(ms, calls);
        for (int p = 0; p < QL_Q4_PHASES; p++) {
            const int64_t w = !on || (p == QL_Q4_PHASE_DEQUANT && used) ? 0 : want[path][p];
            CHECKF(calls[p] == w, "q4 phases %s, %s: %s %lld calls, want %lld",
                   path == QL_CUDA_Q4_FUSED ? "fused" : "dequant", cases[k],
                   ql_cuda_q4_phase_name(p), (long long)calls[p], (long long)w);
            CHECKF(ms[p] >= 0 && ms[p] < 1e9 && (on || ms[p] == 0), "q4 phase %s: %g ms",
                   ql_cuda_q4_phase_name(p), ms[p]);
        }
    }
    ql_cuda_q4_phases_enable(0);
    ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
    n_ops_run++;
    free(A), free(B), free(x), free(dy);
    gpu->free(gx), gpu->free(gdy), gpu->free(gA), gpu->free(gB), gpu->free(gy), gpu->free(gxa);
    gpu->free(gdx), gpu->free(gdA), gpu->free(gdB);
    gpu->q4_free(&dev);
    ql_q4_free(&host);
}

/* AUTO takes the fused kernel below ql_cuda_q4_fused_max_tokens() tokens and
 * the dequant path from there on: its forward and backward outputs are
 * those of the path the rule names, bit for bit (the two paths differ in
 * the last bits, so a wrong choice shows). */
static void test_auto_path(void) {
    const int64_t out = 256, in = 128, T = 48;
    const int r = 8;
    ql_q4 host = tops_q4(out, in, QL_QTYPE_NF4, 64, 1), dev;
    GTRY(gpu->q4_upload(&host, &dev));
    float *x = rand_bf16(T * in, -1, 1), *dy = rand_bf16(T * out, -1, 1);
    float *A = rand_bf16((int64_t)r * in, -0.1f, 0.1f), *B = rand_bf16(out * r, -0.1f, 0.1f);
    void *gx = up_act(x, T * in), *gdy = up_act(dy, T * out);
    void *gA = up_raw(A, (size_t)(r * in) * 4), *gB = up_raw(B, (size_t)(out * r) * 4);
    ql_lora dl = {.A = gA, .B = gB, .r = r, .scale = 2.0f};
    void *gy = dev_poisoned((size_t)(T * out) * 2), *gxa = dev_poisoned((size_t)(T * r) * 4);
    void *gdx = dev_poisoned((size_t)(T * in) * 2);
    void *gdA = dev_poisoned((size_t)(r * in) * 4), *gdB = dev_poisoned((size_t)(out * r) * 4);
    const size_t ybytes = (size_t)(T * out) * 2, dxbytes = (size_t)(T * in) * 2;
    void *y[4], *dx[4];
    int ran_fwd[4], ran_bwd[4];
    /* fused, dequant, auto with T below the limit, auto with T at it */
    const ql_cuda_q4_path paths[4] = {QL_CUDA_Q4_FUSED, QL_CUDA_Q4_DEQUANT_BLAS, QL_CUDA_Q4_AUTO,
                                      QL_CUDA_Q4_AUTO};
    const int64_t limits[4] = {-1, -1, T + 1, T};
    for (int k = 0; k < 4; k++) {
        ql_cuda_q4_set_path(paths[k]);
        ql_cuda_q4_set_fused_max_tokens(limits[k]);
        GTRY(gpu->zero_f32(gdA, (int64_t)r * in));
        GTRY(gpu->zero_f32(gdB, out * r));
        GTRY(gpu->q4_lora_fwd(&dev, &dl, gx, T, gy, gxa));
        ran_fwd[k] = ql_cuda_q4_last_path();
        GTRY(gpu->q4_lora_bwd(&dev, &dl, gx, gxa, gdy, T, gdx, gdA, gdB));
        ran_bwd[k] = ql_cuda_q4_last_path();
        y[k] = down_bytes(gy, ybytes);
        dx[k] = down_bytes(gdx, dxbytes);
    }
    /* Which path ran is checked by the backend's record: on a GPU the two
     * paths may round alike (both sum bf16 products in fp32, 16 at a time),
     * so equal bits alone would not show which one ran. */
    const int want[4] = {QL_CUDA_Q4_FUSED, QL_CUDA_Q4_DEQUANT_BLAS, QL_CUDA_Q4_FUSED,
                         QL_CUDA_Q4_DEQUANT_BLAS};
    for (int k = 0; k < 4; k++)
        CHECKF(ran_fwd[k] == want[k] && ran_bwd[k] == want[k],
               "q4_lora case %d: ran paths %d/%d, want %d", k, ran_fwd[k], ran_bwd[k], want[k]);
    if (!memcmp(y[0], y[1], ybytes) && !memcmp(dx[0], dx[1], dxbytes))
        printf("note: q4_lora's fused and dequant paths gave the same bits at T = %lld\n",
               (long long)T);
    CHECKF(!memcmp(y[2], y[0], ybytes) && !memcmp(dx[2], dx[0], dxbytes),
           "q4_lora auto, T = %lld below the limit %lld: not the fused path's bits", (long long)T,
           (long long)T + 1);
    CHECKF(!memcmp(y[3], y[1], ybytes) && !memcmp(dx[3], dx[1], dxbytes),
           "q4_lora auto, T = %lld at the limit: not the dequant path's bits", (long long)T);
    n_ops_run += 4;
    for (int k = 0; k < 4; k++) free(y[k]), free(dx[k]);
    ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
    ql_cuda_q4_set_fused_max_tokens(-1);
    gpu->free(gx), gpu->free(gdy), gpu->free(gA), gpu->free(gB), gpu->free(gy), gpu->free(gxa);
    gpu->free(gdx), gpu->free(gdA), gpu->free(gdB);
    free(x), free(dy), free(A), free(B);
    gpu->q4_free(&dev);
    ql_q4_free(&host);
}

/* --- dense matmul ------------------------------------------------------------------------------
 */

static void test_matmul(int64_t T, int64_t in, int64_t out, int force_fallback) {
    char what[128];
    snprintf(what, sizeof what, "matmul T=%lld in=%lld out=%lld%s", (long long)T, (long long)in,
             (long long)out, force_fallback ? " (tiled fallback)" : "");
    ql_cuda_gemm_force_fallback(force_fallback);
    float *W = rand_bf16(out * in, -1, 1), *x = rand_bf16(T * in, -1, 1);
    float *dy = rand_bf16(T * out, -1, 1);
    float *ry = tops_alloc(T * out), *rdx = tops_alloc(T * in);
    GTRY(ref->matmul_fwd(W, x, T, in, out, ry));
    GTRY(ref->matmul_bwd(W, dy, T, in, out, rdx));
    void *gW = up_act(W, out * in), *gx = up_act(x, T * in), *gdy = up_act(dy, T * out);
    void *gy = dev_poisoned((size_t)(T * out) * 2), *gdx = dev_poisoned((size_t)(T * in) * 2);
    GTRY(gpu->matmul_fwd(gW, gx, T, in, out, gy));
    GTRY(gpu->matmul_bwd(gW, gdy, T, in, out, gdx));
    float *y = down_act(gy, T * out), *dx = down_act(gdx, T * in);
    char w2[160];
    snprintf(w2, sizeof w2, "%s: y", what);
    TOPS_CLOSE(y, ry, T * out, TOL_ELEM, w2);
    snprintf(w2, sizeof w2, "%s: dx", what);
    TOPS_CLOSE(dx, rdx, T * in, TOL_ELEM, w2);
    void *y1 = down_bytes(gy, (size_t)(T * out) * 2);
    poison(gy, (size_t)(T * out) * 2);
    GTRY(gpu->matmul_fwd(gW, gx, T, in, out, gy));
    same_bits(gy, y1, (size_t)(T * out) * 2, what);
    n_ops_run += 2;
    ql_cuda_gemm_force_fallback(0);
    free(y1), free(y), free(dx), free(ry), free(rdx), free(W), free(x), free(dy);
    gpu->free(gW), gpu->free(gx), gpu->free(gdy), gpu->free(gy), gpu->free(gdx);
}

#ifdef QL_CUDA_EMULATED
/* ql_cuda_gemm_fallbacks on an emulated cuBLASLt whose kernels all need
 * 16-byte alignment (QL_EMU_CUBLASLT_MIN_ALIGN): a product with a 10-byte
 * output row stride has no algorithm, runs on the tiled kernel (still right)
 * and is counted with its shape; one with aligned strides is not counted. */
static void test_gemm_fallbacks(void) {
    setenv("QL_EMU_CUBLASLT_MIN_ALIGN", "16", 1);
    const int64_t T = 7, in = 32;
    for (int64_t out = 5; out <= 8; out += 3) {
        float *W = rand_bf16(out * in, -1, 1), *x = rand_bf16(T * in, -1, 1);
        float *ry = tops_alloc(T * out);
        GTRY(ref->matmul_fwd(W, x, T, in, out, ry));
        void *gW = up_act(W, out * in), *gx = up_act(x, T * in);
        void *gy = dev_poisoned((size_t)(T * out) * 2);
        const int64_t before = ql_cuda_gemm_fallbacks(NULL, 0);
        GTRY(gpu->matmul_fwd(gW, gx, T, in, out, gy));
        char first[192];
        const int64_t after = ql_cuda_gemm_fallbacks(first, sizeof first);
        float *y = down_act(gy, T * out);
        TOPS_CLOSE(y, ry, T * out, TOL_ELEM, "matmul under a 16-byte cuBLASLt");
        if (out == 5) {
            CHECKF(after == before + 1, "fallbacks %lld -> %lld, one more expected",
                   (long long)before, (long long)after);
            CHECKF(before > 0 || strstr(first, "[7 x 5 x 32] B^T, lda 32, ldb 32, ldc 5, bf16 out"),
                   "first fallback: \"%s\"", first);
        } else {
            CHECKF(after == before, "an aligned product was counted as a fallback (%lld -> %lld)",
                   (long long)before, (long long)after);
        }
        n_ops_run++;
        free(W), free(x), free(ry), free(y);
        gpu->free(gW), gpu->free(gx), gpu->free(gy);
    }
    unsetenv("QL_EMU_CUBLASLT_MIN_ALIGN");
}
#endif

/* --- elementwise and row ops ---------------------------------------------------------------- */

static void test_add_bias(int64_t T, int64_t n) {
    float *x = rand_bf16(T * n, -2, 2), *y = rand_bf16(T * n, -2, 2), *b = tops_rand(n, -1, 1);
    float *rs = tops_alloc(T * n), *rb = tops_copy(x, T * n);
    GTRY(ref->add(x, y, T * n, rs));
    GTRY(ref->bias_add(rb, b, T, n));
    void *gx = up_act(x, T * n), *gy = up_act(y, T * n), *gb = up_raw(b, (size_t)n * 4);
    void *gs = dev_poisoned((size_t)(T * n) * 2);
    GTRY(gpu->add(gx, gy, T * n, gs));
    float *s = down_act(gs, T * n);
    TOPS_CLOSE(s, rs, T * n, TOL_ELEM, "add");
    GTRY(gpu->add(gx, gy, T * n, gx)); /* out aliasing x */
    float *s2 = down_act(gx, T * n);
    CHECK(memcmp(s, s2, (size_t)(T * n) * 4) == 0);
    void *gz = up_act(x, T * n);
    GTRY(gpu->bias_add(gz, gb, T, n));
    float *z = down_act(gz, T * n);
    TOPS_CLOSE(z, rb, T * n, TOL_ELEM, "bias_add");
    n_ops_run += 2;
    free(x), free(y), free(b), free(rs), free(rb), free(s), free(s2), free(z);
    gpu->free(gx), gpu->free(gy), gpu->free(gb), gpu->free(gs), gpu->free(gz);
}

static void test_rmsnorm(int64_t T, int64_t d) {
    char what[96];
    snprintf(what, sizeof what, "rmsnorm T=%lld d=%lld", (long long)T, (long long)d);
    float *x = rand_bf16(T * d, -2, 2), *w = tops_rand(d, 0.5f, 1.5f),
          *dy = rand_bf16(T * d, -1, 1);
    float *ry = tops_alloc(T * d), *rr = tops_alloc(T), *rdx = tops_alloc(T * d);
    GTRY(ref->rmsnorm_fwd(x, w, 1e-5f, T, d, ry, rr));
    GTRY(ref->rmsnorm_bwd(dy, x, w, rr, T, d, rdx));
    void *gx = up_act(x, T * d), *gw = up_raw(w, (size_t)d * 4), *gdy = up_act(dy, T * d);
    void *gy = dev_poisoned((size_t)(T * d) * 2), *gr = dev_poisoned((size_t)T * 4);
    void *gdx = dev_poisoned((size_t)(T * d) * 2);
    GTRY(gpu->rmsnorm_fwd(gx, gw, 1e-5f, T, d, gy, gr));
    GTRY(gpu->rmsnorm_bwd(gdy, gx, gw, gr, T, d, gdx));
    float *y = down_act(gy, T * d), *rs = down_f32(gr, T), *dx = down_act(gdx, T * d);
    char w2[128];
    snprintf(w2, sizeof w2, "%s: y", what);
    TOPS_CLOSE(y, ry, T * d, TOL_ELEM, w2);
    snprintf(w2, sizeof w2, "%s: rstd", what);
    CHECK_CLOSE(rs, rr, T, 0.0, 1e-5, w2);
    snprintf(w2, sizeof w2, "%s: dx", what);
    TOPS_CLOSE(dx, rdx, T * d, TOL_ELEM, w2);
    void *dx1 = down_bytes(gdx, (size_t)(T * d) * 2);
    poison(gdx, (size_t)(T * d) * 2);
    GTRY(gpu->rmsnorm_bwd(gdy, gx, gw, gr, T, d, gdx));
    same_bits(gdx, dx1, (size_t)(T * d) * 2, what);
    n_ops_run += 2;
    free(dx1), free(x), free(w), free(dy), free(ry), free(rr), free(rdx), free(y), free(rs),
        free(dx);
    gpu->free(gx), gpu->free(gw), gpu->free(gdy), gpu->free(gy), gpu->free(gr), gpu->free(gdx);
}

static void test_rope(int64_t T, int n_heads, int head_dim) {
    char what[96];
    snprintf(what, sizeof what, "rope T=%lld heads=%d d=%d", (long long)T, n_heads, head_dim);
    ql_rope_config cfg = {QL_ROPE_LLAMA3, 500000.0f, 8.0f, 1.0f, 4.0f, 8192.0f};
    float *inv = tops_alloc(head_dim / 2);
    GTRY(ql_rope_inv_freq(&cfg, head_dim, inv));
    int32_t *pos = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(tops_u32() % 20000);
    const int64_t n = T * n_heads * head_dim;
    float *x = rand_bf16(n, -2, 2), *rx = tops_copy(x, n), *rb = tops_copy(x, n);
    GTRY(ref->rope_fwd(rx, pos, inv, T, n_heads, head_dim));
    GTRY(ref->rope_bwd(rb, pos, inv, T, n_heads, head_dim));
    void *gpos = up_raw(pos, (size_t)T * 4), *ginv = up_raw(inv, (size_t)head_dim / 2 * 4);
    void *gx = up_act(x, n), *gb = up_act(x, n);
    GTRY(gpu->rope_fwd(gx, gpos, ginv, T, n_heads, head_dim));
    GTRY(gpu->rope_bwd(gb, gpos, ginv, T, n_heads, head_dim));
    float *y = down_act(gx, n), *yb = down_act(gb, n);
    char w2[128];
    snprintf(w2, sizeof w2, "%s: fwd", what);
    TOPS_CLOSE(y, rx, n, TOL_ELEM, w2);
    snprintf(w2, sizeof w2, "%s: bwd", what);
    TOPS_CLOSE(yb, rb, n, TOL_ELEM, w2);
    n_ops_run += 2;
    free(inv), free(pos), free(x), free(rx), free(rb), free(y), free(yb);
    gpu->free(gpos), gpu->free(ginv), gpu->free(gx), gpu->free(gb);
}

static void test_swiglu(int64_t n) {
    float *g = rand_bf16(n, -6, 6), *u = rand_bf16(n, -2, 2), *d = rand_bf16(n, -1, 1);
    float *ro = tops_alloc(n), *rg = tops_alloc(n), *ru = tops_alloc(n);
    GTRY(ref->swiglu_fwd(g, u, n, ro));
    GTRY(ref->swiglu_bwd(d, g, u, n, rg, ru));
    void *gg = up_act(g, n), *gu = up_act(u, n), *gd = up_act(d, n);
    void *go = dev_poisoned((size_t)n * 2), *ggr = dev_poisoned((size_t)n * 2);
    void *gur = dev_poisoned((size_t)n * 2);
    GTRY(gpu->swiglu_fwd(gg, gu, n, go));
    GTRY(gpu->swiglu_bwd(gd, gg, gu, n, ggr, gur));
    float *o = down_act(go, n), *og = down_act(ggr, n), *ou = down_act(gur, n);
    CHECK_CLOSE(o, ro, n, 1e-6, TOL_ELEM, "swiglu fwd");
    CHECK_CLOSE(og, rg, n, 1e-6, TOL_ELEM, "swiglu bwd dgate");
    CHECK_CLOSE(ou, ru, n, 1e-6, TOL_ELEM, "swiglu bwd dup");
    n_ops_run += 2;
    free(g), free(u), free(d), free(ro), free(rg), free(ru), free(o), free(og), free(ou);
    gpu->free(gg), gpu->free(gu), gpu->free(gd), gpu->free(go), gpu->free(ggr), gpu->free(gur);
}

/* The LoRA input x ⊙ mask (ql_cuda_dropout_bf16) against the generator on
 * the host, bit for bit: at an aligned and an odd start, with an odd n (a
 * lone last element), and nothing written past n. */
static void test_dropout_input(int64_t n, uint64_t thresh) {
    const ql_dropout d = {1, tops_u32() * 0x100000001ull + 12345, thresh, 3.0f};
    float *x = rand_bf16(n, -1, 1);
    uint16_t *want = malloc((size_t)n * 2);
    for (int64_t e = 0; e < n; e++)
        want[e] = ql_dropout_keep(d.seed, d.thresh, e) ? ql_f32_to_bf16(x[e]) : 0;
    void *gx = up_act(x, n);
    uint16_t *out = dev_poisoned((size_t)(n + 3) * 2);
    for (int off = 0; off < 2; off++) {
        poison(out, (size_t)(n + 3) * 2);
        GTRY(ql_cuda_dropout_bf16(gx, &d, n, out + off));
        uint16_t *got = down_bytes(out, (size_t)(n + 3) * 2);
        CHECKF(memcmp(got + off, want, (size_t)n * 2) == 0, "dropout input n %lld offset %d",
               (long long)n, off);
        CHECKF(got[off + n] == 0xFFFF && (off == 0 || got[0] == 0xFFFF),
               "dropout input n %lld offset %d wrote outside its elements", (long long)n, off);
        free(got);
    }
    n_ops_run++;
    free(x), free(want);
    gpu->free(gx), gpu->free(out);
}

static void test_embed(int64_t V, int64_t d, int64_t T) {
    float *table = rand_bf16(V * d, -1, 1), *rout = tops_alloc(T * d);
    int32_t *ids = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)(tops_u32() % (uint32_t)V);
    GTRY(ref->embed_fwd(table, ids, T, d, rout));
    void *gt = up_act(table, V * d), *gi = up_raw(ids, (size_t)T * 4);
    void *go = dev_poisoned((size_t)(T * d) * 2);
    GTRY(gpu->embed_fwd(gt, gi, T, d, go));
    float *o = down_act(go, T * d);
    CHECK(memcmp(o, rout, (size_t)(T * d) * 4) == 0);
    n_ops_run++;
    free(table), free(rout), free(ids), free(o);
    gpu->free(gt), gpu->free(gi), gpu->free(go);
}

static void test_xent(int64_t T, int64_t V) {
    char what[96];
    snprintf(what, sizeof what, "xent T=%lld V=%lld", (long long)T, (long long)V);
    float *l = rand_bf16(T * V, -8, 8);
    int32_t *tg = malloc((size_t)T * 4);
    int n_valid = 0;
    for (int64_t t = 0; t < T; t++) {
        tg[t] = (t % 5 == 3) ? -100 : (int32_t)(tops_u32() % (uint32_t)V);
        n_valid += tg[t] >= 0;
    }
    const float gs = 1.0f / (float)(n_valid ? n_valid : 1);
    float *rloss = tops_alloc(T), *rd = tops_alloc(T * V);
    GTRY(ref->xent_fwd_bwd(l, tg, T, V, gs, rloss, rd));
    void *gl = up_act(l, T * V), *gt = up_raw(tg, (size_t)T * 4);
    void *gloss = dev_poisoned((size_t)T * 4), *gd = dev_poisoned((size_t)(T * V) * 2);
    GTRY(gpu->xent_fwd_bwd(gl, gt, T, V, gs, gloss, gd));
    float *loss = down_f32(gloss, T), *d = down_act(gd, T * V);
    char w2[128];
    snprintf(w2, sizeof w2, "%s: loss", what);
    CHECK_CLOSE(loss, rloss, T, 1e-4, 1e-5, w2);
    snprintf(w2, sizeof w2, "%s: dlogits", what);
    CHECK_CLOSE(d, rd, T * V, 1e-3 * gs, TOL_ELEM, w2);
    /* No gradient asked for. */
    poison(gloss, (size_t)T * 4);
    GTRY(gpu->xent_fwd_bwd(gl, gt, T, V, gs, gloss, NULL));
    float *loss2 = down_f32(gloss, T);
    CHECK(memcmp(loss, loss2, (size_t)T * 4) == 0);
    /* In place: dlogits aliasing logits gives the same bits. */
    GTRY(gpu->xent_fwd_bwd(gl, gt, T, V, gs, gloss, gl));
    float *d2 = down_act(gl, T * V);
    CHECKF(memcmp(d, d2, (size_t)(T * V) * 4) == 0, "%s: in place differs", what);
    /* A target outside the vocabulary is refused, naming the position: on
     * CUDA by the next wait for the device (the op itself queues a check and
     * returns), here the sync after a good call and a bad one; the wait
     * after that has nothing left to report. */
    tg[T / 2] = (int32_t)V;
    void *gt_bad = up_raw(tg, (size_t)T * 4);
    ql_error_clear();
    GTRY(gpu->xent_fwd_bwd(gl, gt, T, V, gs, gloss, NULL));
    ql_status st = gpu->xent_fwd_bwd(gl, gt_bad, T, V, gs, gloss, NULL);
    CHECKF(st == QL_OK, "bad target: the op itself waited (%s)", ql_status_name(st));
    st = gpu->sync();
    char pos[64];
    snprintf(pos, sizeof pos, "target %lld at token %lld", (long long)V, (long long)(T / 2));
    CHECKF(st == QL_EINVAL && strstr(ql_error_message(), pos), "bad target: %s: %s",
           ql_status_name(st), ql_error_message());
    float *bad_loss = down_f32(gloss, T);
    CHECKF(isnan(bad_loss[T / 2]) && !isnan(bad_loss[0]), "bad target: loss %g at the bad token",
           (double)bad_loss[T / 2]);
    CHECK(gpu->sync() == QL_OK);
    free(bad_loss);
    gpu->free(gt_bad);
    n_ops_run += 3;
    free(l), free(tg), free(rloss), free(rd), free(loss), free(d), free(loss2), free(d2);
    gpu->free(gl), gpu->free(gt), gpu->free(gloss), gpu->free(gd);
}

static void test_adamw(int64_t n) {
    float *p = tops_rand(n, -1, 1), *m = tops_rand(n, -0.01f, 0.01f), *v = tops_rand(n, 0, 1e-4f);
    float *rp = tops_copy(p, n), *rm = tops_copy(m, n), *rv = tops_copy(v, n);
    void *gp = up_raw(p, (size_t)n * 4), *gm = up_raw(m, (size_t)n * 4),
         *gv = up_raw(v, (size_t)n * 4);
    ql_adamw h = {2e-4f, 0.9f, 0.999f, 1e-8f, 0.01f};
    for (int step = 1; step <= 3; step++) {
        float *g = tops_rand(n, -0.1f, 0.1f);
        GTRY(ref->adamw(rp, g, rm, rv, n, &h, step));
        void *gg = up_raw(g, (size_t)n * 4);
        GTRY(gpu->adamw(gp, gg, gm, gv, n, &h, step));
        gpu->free(gg);
        free(g);
    }
    float *op = down_f32(gp, n), *om = down_f32(gm, n), *ov = down_f32(gv, n);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += op[i] != rp[i] || om[i] != rm[i] || ov[i] != rv[i];
    CHECKF(diff == 0, "adamw: %lld of %lld elements not bit-identical to cpu-ref", (long long)diff,
           (long long)n);
    n_ops_run++;
    free(p), free(m), free(v), free(rp), free(rm), free(rv), free(op), free(om), free(ov);
    gpu->free(gp), gpu->free(gm), gpu->free(gv);
}

/* --- attention ----------------------------------------------------------------------------------
 */

static void test_attn(int64_t batch, int64_t seq, int H, int KV, int D, int docs) {
    char what[128];
    snprintf(what, sizeof what, "attn b=%lld S=%lld H=%d KV=%d D=%d docs=%d", (long long)batch,
             (long long)seq, H, KV, D, docs);
    ql_attn_shape s = {batch, seq, H, KV, D};
    const int64_t nq = batch * seq * H * D, nk = batch * seq * KV * D, nl = batch * H * seq;
    float *q = rand_bf16(nq, -2, 2), *k = rand_bf16(nk, -2, 2), *v = rand_bf16(nk, -1, 1);
    float *dout = rand_bf16(nq, -1, 1);
    int32_t *doc = docs ? tops_docs(batch, seq, docs) : NULL;
    float *ro = tops_alloc(nq), *rl = tops_alloc(nl), *rdq = tops_alloc(nq);
    float *rdk = tops_alloc(nk), *rdv = tops_alloc(nk);
    GTRY(ref->attn_fwd(q, k, v, doc, &s, ro, rl));
    /* The CUDA backward gets the CUDA forward's out (bf16); give the
     * reference the same out so that both compute dS from the same D. */
    void *gq = up_act(q, nq), *gk = up_act(k, nk), *gv = up_act(v, nk), *gdo = up_act(dout, nq);
    void *gdoc = doc ? up_raw(doc, (size_t)(batch * seq) * 4) : NULL;
    void *go = dev_poisoned((size_t)nq * 2), *gl = dev_poisoned((size_t)nl * 4);
    void *gdq = dev_poisoned((size_t)nq * 2), *gdk = dev_poisoned((size_t)nk * 2);
    void *gdv = dev_poisoned((size_t)nk * 2);
    GTRY(gpu->attn_fwd(gq, gk, gv, gdoc, &s, go, gl));
    float *o = down_act(go, nq), *l = down_f32(gl, nl);
    GTRY(ref->attn_bwd(dout, q, k, v, o, rl, doc, &s, rdq, rdk, rdv));
    GTRY(gpu->attn_bwd(gdo, gq, gk, gv, go, gl, gdoc, &s, gdq, gdk, gdv));
    float *dq = down_act(gdq, nq), *dk = down_act(gdk, nk), *dv = down_act(gdv, nk);
    char w2[192];
    snprintf(w2, sizeof w2, "%s: out", what);
    TOPS_CLOSE(o, ro, nq, TOL_ATTN, w2);
    snprintf(w2, sizeof w2, "%s: lse", what);
    CHECK_CLOSE(l, rl, nl, 2e-4, 1e-4, w2);
    /* dq and dk vanish exactly when each query sees only itself (S = 1):
     * dP - rowsum(dout * out) is 0 in exact arithmetic but not from a bf16
     * out. Their tolerance is then relative to dv's scale. */
    double dv_scale = 0.0;
    for (int64_t i = 0; i < nk; i++) dv_scale = fmax(dv_scale, fabs((double)rdv[i]));
    snprintf(w2, sizeof w2, "%s: dq", what);
    tops_close_(dq, rdq, nq, TOL_ATTN, dv_scale, w2, __FILE__, __LINE__);
    snprintf(w2, sizeof w2, "%s: dk", what);
    tops_close_(dk, rdk, nk, TOL_ATTN, dv_scale, w2, __FILE__, __LINE__);
    snprintf(w2, sizeof w2, "%s: dv", what);
    TOPS_CLOSE(dv, rdv, nk, TOL_ATTN, w2);

    void *o1 = down_bytes(go, (size_t)nq * 2), *dq1 = down_bytes(gdq, (size_t)nq * 2);
    void *dk1 = down_bytes(gdk, (size_t)nk * 2);
    poison(go, (size_t)nq * 2), poison(gdq, (size_t)nq * 2), poison(gdk, (size_t)nk * 2);
    GTRY(gpu->attn_fwd(gq, gk, gv, gdoc, &s, go, gl));
    GTRY(gpu->attn_bwd(gdo, gq, gk, gv, go, gl, gdoc, &s, gdq, gdk, gdv));
    same_bits(go, o1, (size_t)nq * 2, what);
    same_bits(gdq, dq1, (size_t)nq * 2, what);
    same_bits(gdk, dk1, (size_t)nk * 2, what);
    n_ops_run += 2;

    free(o1), free(dq1), free(dk1);
    free(q), free(k), free(v), free(dout), free(doc), free(ro), free(rl), free(rdq), free(rdk);
    free(rdv), free(o), free(l), free(dq), free(dk), free(dv);
    gpu->free(gq), gpu->free(gk), gpu->free(gv), gpu->free(gdo), gpu->free(go), gpu->free(gl);
    gpu->free(gdq), gpu->free(gdk), gpu->free(gdv);
    if (gdoc) gpu->free(gdoc);
}

/* Generation's attention over a cache (rows pos0..pos0+T-1 of a sequence of
 * pos0 + T tokens) against cpu-ref's attn_fwd over the whole sequence, and
 * a row's bits the same whether its call has T rows or one. */
static void test_attn_cached(int64_t pos0, int64_t T, int H, int KV, int D) {
    char what[128];
    snprintf(what, sizeof what, "attn_cached pos0=%lld T=%lld H=%d KV=%d D=%d", (long long)pos0,
             (long long)T, H, KV, D);
    const int64_t S = pos0 + T, qdim = (int64_t)H * D, nk = S * KV * D;
    ql_attn_shape s = {1, S, H, KV, D};
    float *q = rand_bf16(S * qdim, -2, 2), *k = rand_bf16(nk, -2, 2), *v = rand_bf16(nk, -1, 1);
    float *ro = tops_alloc(S * qdim), *rl = tops_alloc((int64_t)H * S);
    GTRY(ref->attn_fwd(q, k, v, NULL, &s, ro, rl));
    void *gq = up_act(q + pos0 * qdim, T * qdim), *gk = up_act(k, nk), *gv = up_act(v, nk);
    void *go = dev_poisoned((size_t)(T * qdim) * 2);
    GTRY(gpu->attn_cached_fwd(gq, gk, gv, T, pos0, &s, go));
    float *o = down_act(go, T * qdim);
    TOPS_CLOSE(o, ro + pos0 * qdim, T * qdim, TOL_ELEM, what);
    void *first = down_bytes(go, (size_t)(T * qdim) * 2);
    poison(go, (size_t)(T * qdim) * 2);
    for (int64_t t = 0; t < T; t++)
        GTRY(gpu->attn_cached_fwd((char *)gq + t * qdim * 2, gk, gv, 1, pos0 + t, &s,
                                  (char *)go + t * qdim * 2));
    same_bits(go, first, (size_t)(T * qdim) * 2, what);
    n_ops_run += 1;
    free(q), free(k), free(v), free(ro), free(rl), free(o), free(first);
    gpu->free(gq), gpu->free(gk), gpu->free(gv), gpu->free(go);
}

int main(void) {
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    gpu = ql_backend_cuda_impl();
    ref = ql_backend_cpu_ref();
    if (!gpu) {
        fprintf(stderr, "cuda backend: %s\n", ql_error_message());
        return 1;
    }
    ql_cuda_device_info info;
    if (ql_cuda_get_device_info(0, &info) == QL_OK)
        printf("device 0: %s (sm_%d%d, %d SMs)\n", info.name, info.cc_major, info.cc_minor,
               info.sm_count);
    tops_seed(8);

    test_memory();
    test_dequantize(45, 77, QL_QTYPE_NF4, 64, 1);
    test_dequantize(256, 512, QL_QTYPE_FP4, 128, 0);

    /* The fused kernel: fast path (dims % 16 == 0) and general path; partial
     * tiles in every dimension; both LoRA paths of dx (dropout or not). */
    static const lora_case cases[] = {
        {768, 512, 200, QL_QTYPE_NF4, 64, 1, 16, 0, 1}, /* fast, several tiles */
        {768, 512, 200, QL_QTYPE_NF4, 64, 1, 16, 1, 1}, /* fast, dropout */
        {384, 1024, 129, QL_QTYPE_FP4, 32, 0, 5, 0, 1}, /* fast, FP4, odd r */
        {400, 256, 64, QL_QTYPE_NF4, 256, 1, 8, 1, 0},  /* fast, no dx */
        {256, 256, 37, QL_QTYPE_NF4, 64, 0, 0, 0, 1},   /* no LoRA */
        {45, 77, 33, QL_QTYPE_NF4, 64, 1, 8, 0, 1},     /* general: odd dims */
        {45, 77, 33, QL_QTYPE_NF4, 64, 1, 8, 1, 1},     /* general, dropout */
        {130, 200, 5, QL_QTYPE_FP4, 128, 1, 3, 0, 1},   /* general, few tokens */
        {1, 64, 1, QL_QTYPE_NF4, 64, 0, 1, 0, 1},       /* one output, one token */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_lora(&cases[i], QL_CUDA_Q4_FUSED);
        test_lora(&cases[i], QL_CUDA_Q4_DEQUANT_BLAS);
    }
    for (int p = 0; p < 2; p++) {
        test_lora_dropout_pattern(256, 128, 130, (ql_cuda_q4_path)p); /* fast tiles */
        test_lora_dropout_pattern(40, 77, 19, (ql_cuda_q4_path)p);    /* odd in */
    }
    test_lora_skinny(200, 520, 16, 1); /* 3 and 2 splits, partial tiles */
    test_lora_skinny(200, 520, 16, 0);
    test_lora_skinny(37, 64, 40, 0);   /* rpad 48 */
    test_lora_skinny(300, 136, 64, 1); /* rpad 64 */
    test_lora_skinny(16, 8, 20, 1);    /* rpad 32, one chunk */
    test_lora_skinny(1, 24, 1, 1);
    test_lora_skinny_refuses();
    test_auto_path();
    test_q4_phases(QL_CUDA_Q4_FUSED);
    test_q4_phases(QL_CUDA_Q4_DEQUANT_BLAS);

    test_matmul(100, 256, 300, 0);
    test_matmul(33, 77, 45, 0);
    test_matmul(33, 77, 45, 1);
#ifdef QL_CUDA_EMULATED
    test_gemm_fallbacks();
#endif
    test_add_bias(37, 300);
    test_rmsnorm(37, 4096);
    test_rmsnorm(5, 100);
    test_rope(50, 8, 128);
    test_rope(7, 3, 64);
    test_swiglu(100003);
    test_dropout_input(100003, 1ull << 30);
    test_dropout_input(13, 429496729);
    test_embed(1000, 256, 77);
    test_xent(33, 50257);
    test_xent(4, 1000);
    test_adamw(100001);

    /* Tensor-core attention (D 64, 128), plain kernels (D 32), GQA 1 and 4,
     * sequences not a multiple of the 64-row tiles, documents. */
    test_attn(2, 200, 8, 2, 128, 4);
    test_attn(1, 130, 4, 4, 64, 0);
    test_attn(2, 70, 4, 1, 64, 3);
    test_attn(1, 1, 2, 1, 128, 0);
    test_attn(2, 50, 4, 2, 32, 3);
    /* Generation's attention: decode and a later prompt chunk, past one
     * tile of 128 keys, head_dim 64, 128, 256 and an odd 24, GQA 1 to 4. */
    test_attn_cached(0, 1, 2, 1, 64);
    test_attn_cached(300, 1, 8, 2, 128);
    test_attn_cached(130, 7, 4, 4, 24);
    test_attn_cached(40, 90, 6, 3, 64);
    test_attn_cached(5, 3, 2, 1, 256);

    ql_cuda_release_cache();
    printf("%d CUDA op runs compared with cpu-ref\n", n_ops_run);
    char first[192];
    const int64_t fb = ql_cuda_gemm_fallbacks(first, sizeof first);
    /* For the record (odd shapes here may lack a cuBLASLt algorithm). */
    printf("products cuBLASLt had no algorithm for: %lld%s%s\n", (long long)fb,
           fb ? ", the first " : "", first);
    return CHECK_DONE();
}

#else
int main(void) {
    printf("built without the CUDA backend: skipped\n");
    return 77;
}
#endif
