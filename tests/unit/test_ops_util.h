/* Helpers shared by the backend op tests (test_ops*.c, test_grad*.c):
 * a seeded RNG, random tensors and 4-bit weights, and comparisons. */
#ifndef QL_TEST_OPS_UTIL_H
#define QL_TEST_OPS_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/backend.h"
#include "kernels/quant4.h"

static uint64_t tops_rng = 0x243f6a8885a308d3ull;
static inline void tops_seed(uint64_t s) { tops_rng = s * 0x9e3779b97f4a7c15ull + 1; }
static inline uint32_t tops_u32(void) {
    tops_rng ^= tops_rng << 13;
    tops_rng ^= tops_rng >> 7;
    tops_rng ^= tops_rng << 17;
    return (uint32_t)(tops_rng >> 32);
}
static inline float tops_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((tops_u32() >> 8) * (1.0 / 16777216.0));
}

static inline float *tops_alloc(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) abort();
    return p;
}
static inline float *tops_rand(int64_t n, float lo, float hi) {
    float *p = tops_alloc(n);
    for (int64_t i = 0; i < n; i++) p[i] = tops_uniform(lo, hi);
    return p;
}
static inline float *tops_copy(const float *src, int64_t n) {
    float *p = tops_alloc(n);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

/* A random 4-bit weight [rows, cols] whose blocks have varied scales. */
static inline ql_q4 tops_q4(int64_t rows, int64_t cols, ql_qtype type, int bs, int dq) {
    float *w = tops_alloc(rows * cols);
    for (int64_t e = 0; e < rows * cols; e++)
        w[e] = tops_uniform(-1.0f, 1.0f) * (0.02f + 0.1f * (float)((e / bs) % 7));
    ql_q4 q;
    if (ql_q4_quantize(w, rows, cols, type, bs, dq, &q) != QL_OK) abort();
    free(w);
    return q;
}

/* Passes if max |a - ref| <= tol · max(max |ref|, floor): a tolerance relative
 * to the tensor's scale, for results that are sums of many terms. */
static inline int tops_close_(const float *a, const float *ref, int64_t n, double tol, double floor,
                              const char *what, const char *file, int line) {
    double scale = floor, worst = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
            if (isnan(d)) break;
        }
    }
    if (worst <= tol * scale) {
        check_passed_++;
        return 1;
    }
    check_failed_++;
    fprintf(
        stderr,
        "%s:%d: %s: element %lld: got %.9g, want %.9g (|diff| %.3g > %.3g = tol %g x scale %.3g)\n",
        file, line, what, (long long)at, (double)a[at], (double)ref[at], worst, tol * scale, tol,
        scale);
    return 0;
}
#define TOPS_CLOSE(a, ref, n, tol, what)                                                           \
    tops_close_((a), (ref), (n), (tol), 1e-30, (what), __FILE__, __LINE__)

static inline int tops_same_bytes(const void *a, const void *b, size_t bytes) {
    return memcmp(a, b, bytes) == 0;
}

/* Document ids for a packed [batch, seq] batch: each row is cut into a few
 * documents of random lengths (ids restart per row, as a packer writes them). */
static inline int32_t *tops_docs(int64_t batch, int64_t seq, int max_docs) {
    int32_t *doc = malloc((size_t)(batch * seq) * sizeof(int32_t));
    if (!doc) abort();
    for (int64_t b = 0; b < batch; b++) {
        int id = 0;
        int64_t left = seq;
        int64_t t = 0;
        while (left > 0) {
            int64_t len = id + 1 >= max_docs ? left : 1 + (int64_t)(tops_u32() % (uint32_t)left);
            for (int64_t i = 0; i < len; i++) doc[b * seq + t++] = id;
            left -= len;
            id++;
        }
    }
    return doc;
}

#endif
