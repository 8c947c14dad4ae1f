/* Eight floats as one value (GCC/Clang vector extensions), and exp over them.
 *
 * The fast CPU backend's softmaxes and SiLU called glibc's expf once per
 * element: about a tenth of a training step on the 135M model. ql_v8_exp is
 * Cephes' expf (range reduction by ln 2 in two parts, a degree-5 polynomial)
 * written on vector types, so the compiler emits eight lanes at a time
 * (AVX2 under -march=x86-64-v3, two SSE halves without it) and every lane,
 * thread and run gives the same bits for the same input.
 *
 * Accuracy (tests/unit/test_cpu_v8.c, against libm's double exp): within
 * 2 ulp over the normal range; results below FLT_MIN are subnormals within
 * one subnormal step; x < -104 gives 0, x > 88.7228 gives +inf, NaN gives
 * NaN, -inf gives 0. */
#ifndef QL_CPU_V8_H
#define QL_CPU_V8_H

#include <stdint.h>
#include <string.h>

typedef float ql_v8f __attribute__((vector_size(32)));
typedef int32_t ql_v8i __attribute__((vector_size(32)));

static inline ql_v8f ql_v8_load(const float *p) {
    ql_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void ql_v8_store(float *p, ql_v8f v) { memcpy(p, &v, sizeof v); }

static inline ql_v8f ql_v8_splat(float x) { return (ql_v8f){x, x, x, x, x, x, x, x}; }

/* Lanes of a where mask is all ones, of b where it is zero. */
static inline ql_v8f ql_v8_select(ql_v8i mask, ql_v8f a, ql_v8f b) {
    return (ql_v8f)(((ql_v8i)a & mask) | ((ql_v8i)b & ~mask));
}

static inline ql_v8f ql_v8_max(ql_v8f a, ql_v8f b) { return ql_v8_select(a > b, a, b); }

/* The lanes added in a fixed order (the one ql_lanes_total uses). */
static inline float ql_v8_total(ql_v8f v) {
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

static inline float ql_v8_hmax(ql_v8f v) {
    float m = v[0];
    for (int l = 1; l < 8; l++) m = v[l] > m ? v[l] : m;
    return m;
}

static inline ql_v8f ql_v8_exp(ql_v8f x) {
    const ql_v8f lo = ql_v8_splat(-104.0f), hi = ql_v8_splat(88.72283905206835f);
    const ql_v8f round = ql_v8_splat(12582912.0f); /* 1.5 * 2^23 */
    ql_v8i under = x<lo, over = x> hi;
    /* Clamped so 2^n below stays in range; NaN passes both tests unchanged. */
    ql_v8f xc = ql_v8_select(under, lo, ql_v8_select(over, hi, x));
    ql_v8f t = xc * 1.44269504088896341f + round; /* round to nearest, n in the low bits */
    ql_v8f n = t - round;
    ql_v8i ni = (ql_v8i)t - (ql_v8i)round;
    ql_v8f r = xc - n * 0.693359375f; /* ln 2 = 0.693359375 - 2.12194440e-4, the first exact */
    r = r - n * -2.12194440e-4f;
    ql_v8f p = ql_v8_splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* 2^n as two factors, each a normal float for n in [-150, 128]: the
     * first product is exact, the second rounds once (into a subnormal
     * where the result is one). */
    ql_v8i a = ni >> 1, b = ni - a;
    ql_v8f y = p * (ql_v8f)((a + 127) << 23) * (ql_v8f)((b + 127) << 23);
    y = ql_v8_select(under, ql_v8_splat(0.0f), y);
    return ql_v8_select(over, ql_v8_splat(__builtin_inff()), y);
}

/* y[i] = exp(x[i]) for i < n; y may be x. */
static inline void ql_exp_f32(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) ql_v8_store(y + i, ql_v8_exp(ql_v8_load(x + i)));
    if (i < n) {
        float tail[8] = {0};
        memcpy(tail, x + i, (size_t)(n - i) * sizeof(float));
        ql_v8f e = ql_v8_exp(ql_v8_load(tail));
        memcpy(y + i, &e, (size_t)(n - i) * sizeof(float));
    }
}

#endif
