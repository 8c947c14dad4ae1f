/* NF4 / FP4 / double quantization against bitsandbytes' definitions.
 *
 * Reference values: the code book as written in bitsandbytes' source
 * (functional.py get_4bit_type), the test vectors of shared FORMATS.md §8, the
 * dynamic-map generator of FORMATS §1.8 (torch's linspace with FMA), and
 * brute-force nearest-code searches written here independently of the
 * encoder's threshold form. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/nf4.h"
#include "kernels/quant4.h"

/* The values as printed in bitsandbytes' functional.py (doubles). */
static const double nf4_source[16] = {-1.0,
                                      -0.6961928009986877,
                                      -0.5250730514526367,
                                      -0.39491748809814453,
                                      -0.28444138169288635,
                                      -0.18477343022823334,
                                      -0.09105003625154495,
                                      0.0,
                                      0.07958029955625534,
                                      0.16093020141124725,
                                      0.24611230194568634,
                                      0.33791524171829224,
                                      0.44070982933044434,
                                      0.5626170039176941,
                                      0.7229568362236023,
                                      1.0};

static ql_rng rng;
static int rng_ready;
static float rng_uniform(float lo, float hi) {
    if (!rng_ready) {
        ql_rng_seed(&rng, 0x9e3779b97f4a7c15ull);
        rng_ready = 1;
    }
    return ql_rng_uniform_range(&rng, lo, hi);
}

static void test_codebook(void) {
    for (unsigned c = 0; c < 16; c++) CHECKF(ql_nf4_value(c) == (float)nf4_source[c], "code %u", c);
    /* FP4: [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3] / 12 */
    static const float fp4_num[16] = {0,     0.0625f,  8,  12,  4,  6,  2,  3,
                                      -0.0f, -0.0625f, -8, -12, -4, -6, -2, -3};
    for (unsigned c = 0; c < 16; c++) {
        float want = fp4_num[c] / 12.0f;
        CHECKF(ql_bits_from_f32(ql_fp4_value(c)) == ql_bits_from_f32(want), "fp4 code %u", c);
    }
}

/* Thresholds are the float32 midpoints of adjacent codes. */
static void test_thresholds(void) {
    const uint32_t t[15] = QL_NF4_THRESHOLD_BITS;
    for (int k = 0; k < 15; k++) {
        float mid = (ql_nf4_value((unsigned)k) + ql_nf4_value((unsigned)k + 1)) / 2.0f;
        CHECKF(ql_bits_from_f32(mid) == t[k], "threshold %d", k);
        /* a tie goes to the lower code; the next float up to the upper one */
        CHECKF(ql_nf4_encode(mid) == (unsigned)k, "tie at %d", k);
        CHECKF(ql_nf4_encode(nextafterf(mid, 2.0f)) == (unsigned)k + 1, "above tie %d", k);
    }
    CHECK(ql_nf4_encode(NAN) == 0);
    CHECK(ql_nf4_encode(5.0f) == 15);
    CHECK(ql_nf4_encode(-5.0f) == 0);
    for (unsigned c = 0; c < 16; c++) {
        CHECKF(ql_nf4_encode(ql_nf4_value(c)) == c, "nf4 round trip %u", c);
        CHECKF(ql_fp4_encode(ql_fp4_value(c)) == (c == 8 ? 0u : c), "fp4 round trip %u", c);
    }
}

/* Nearest code by distance in double, ties to the lower code. bitsandbytes
 * compares against float32 midpoints, so an x that *is* a float32 midpoint
 * takes the lower code even when the real midpoint lies just below it. */
static unsigned nf4_brute(float x) {
    unsigned best = 0;
    double bd = INFINITY;
    for (unsigned c = 0; c < 16; c++) {
        double d = fabs((double)x - (double)ql_nf4_value(c));
        if (d < bd) {
            bd = d;
            best = c;
        }
    }
    return best;
}

static void test_encode_brute_force(void) {
    long mismatches = 0;
    for (long i = 0; i < 1000000; i++) {
        float x = rng_uniform(-1.05f, 1.05f);
        unsigned want = nf4_brute(x);
        for (unsigned k = 0; k < 15; k++)
            if (x == (ql_nf4_value(k) + ql_nf4_value(k + 1)) / 2.0f) want = k;
        if (ql_nf4_encode(x) != want) {
            if (mismatches < 5)
                fprintf(stderr, "x=%.9g encode %u brute %u\n", x, ql_nf4_encode(x), want);
            mismatches++;
        }
    }
    CHECKF(mismatches == 0, "%ld of 1e6 differ from the nearest code", mismatches);
}

static const char *hex(const uint8_t *p, size_t n, char *buf) {
    for (size_t i = 0; i < n; i++) sprintf(buf + 2 * i, "%02x", p[i]);
    return buf;
}

/* FORMATS §8 A: one block, x[e] = (e-32)/32. */
static void test_vector_a(void) {
    float x[64];
    for (int e = 0; e < 64; e++) x[e] = (float)(e - 32) / 32.0f;
    ql_q4 q;
    CHECK(ql_q4_quantize(x, 1, 64, QL_QTYPE_NF4, 64, 0, &q) == QL_OK);
    char buf[129];
    CHECK(q.absmax[0] == 1.0f);
    CHECK(!strcmp(hex(q.packed, 32, buf),
                  "000001111111122222333344455566677788999aaabbbccccddddeeeeeeeffff"));
    ql_q4_free(&q);
}

/* FORMATS §8 B: double quant of a [4,128] matrix. */
static void test_vector_b(void) {
    float w[512];
    for (int e = 0; e < 512; e++) w[e] = (float)(sin(0.37 * e) * (1 + (e / 64) * 0.5));
    ql_q4 q;
    CHECK(ql_q4_quantize(w, 4, 128, QL_QTYPE_NF4, 64, 1, &q) == QL_OK);
    static const uint8_t codes[8] = {0, 20, 40, 61, 194, 214, 234, 254};
    static const double deq[8] = {1.0098235607147217, 1.5017153024673462, 1.9936072826385498,
                                  2.5100936889648438, 3.007451057434082,  3.499342679977417,
                                  3.99123477935791,   4.483126640319824};
    CHECK(q.n_blocks == 8);
    CHECK(q.nested_offset == (float)2.7464749813079834);
    CHECK(q.nested_absmax[0] == (float)1.7489486932754517);
    CHECK(!memcmp(q.absmax_q, codes, 8));
    float am[8];
    ql_q4_absmax_f32(&q, am);
    for (int b = 0; b < 8; b++) CHECKF(am[b] == (float)deq[b], "dequantized absmax %d", b);
    char buf[64];
    CHECK(!strcmp(hex(q.packed, 16, buf), "7befffed9521000137befffed9521000"));
    ql_q4_free(&q);
}

/* An all-zero block behaves as on CUDA: absmax 0, 0*inf = NaN, nibble 0,
 * dequantized to -0.0. */
static void test_zero_block(void) {
    float w[128] = {0};
    for (int e = 64; e < 128; e++) w[e] = (float)(e - 96) / 8.0f;
    ql_q4 q;
    CHECK(ql_q4_quantize(w, 2, 64, QL_QTYPE_NF4, 64, 0, &q) == QL_OK);
    CHECK(q.absmax[0] == 0.0f);
    int all0 = 1;
    for (int i = 0; i < 32; i++) all0 &= q.packed[i] == 0;
    CHECK(all0);
    float out[128];
    ql_q4_dequantize(&q, out);
    CHECK(out[0] == 0.0f && signbit(out[0]));
    ql_q4_free(&q);
}

/* Odd element counts pad the last low nibble with the code of 0 (7 for NF4);
 * blocks straddle rows when cols % blocksize != 0. */
static void test_odd_and_straddling(void) {
    float w[7 * 13];
    for (int e = 0; e < 7 * 13; e++) w[e] = rng_uniform(-3, 3);
    ql_q4 q;
    CHECK(ql_q4_quantize(w, 7, 13, QL_QTYPE_NF4, 32, 0, &q) == QL_OK);
    CHECK(q.n == 91 && q.n_blocks == 3 && ql_q4_packed_bytes(&q) == 46);
    CHECK((q.packed[45] & 0x0F) == 7);
    float out[91];
    ql_q4_dequantize(&q, out);
    /* each element within half the largest NF4 gap (0.3038) of its block's absmax */
    int ok = 1;
    for (int e = 0; e < 91; e++) ok &= fabsf(out[e] - w[e]) <= q.absmax[e / 32] * 0.152f;
    CHECK(ok);
    /* the encoding of every element equals the brute-force nearest code */
    int same = 1;
    for (int e = 0; e < 91; e++)
        same &= ql_q4_nibble(q.packed, e) == nf4_brute(w[e] * (1.0f / q.absmax[e / 32]));
    CHECK(same);
    ql_q4_free(&q);
    CHECK(ql_q4_quantize(w, 7, 13, QL_QTYPE_NF4, 48, 0, &q) == QL_EINVAL);
    CHECK(ql_q4_quantize(w, 0, 13, QL_QTYPE_NF4, 64, 0, &q) == QL_EINVAL);
}

/* FORMATS §1.8: regenerate the map the way torch builds it. */
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static void test_dynamic_map(void) {
    const double sc[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
    float v[256];
    int nv = 0;
    for (int i = 0; i < 7; i++) {
        int n = (1 << i) + 1;
        float b[65];
        float step = (1.0f - 0.1f) / (float)(n - 1);
        for (int k = 0; k < n; k++)
            b[k] = (k < n / 2) ? fmaf(step, (float)k, 0.1f) : fmaf(-step, (float)(n - 1 - k), 1.0f);
        for (int k = 0; k < n - 1; k++) {
            float m = (b[k] + b[k + 1]) / 2.0f;
            float x = (float)sc[i] * m;
            v[nv++] = x;
            v[nv++] = -x;
        }
    }
    v[nv++] = 0.0f;
    v[nv++] = 1.0f;
    CHECK(nv == 256);
    qsort(v, 256, sizeof v[0], cmp_float);
    int same = 1;
    for (unsigned i = 0; i < 256; i++)
        same &= ql_bits_from_f32(v[i]) == ql_bits_from_f32(ql_dynmap_value(i));
    CHECK(same);
    CHECK(ql_dynmap_value(1) == (float)-0.9789062738418579);
    CHECK(ql_dynmap_value(127) == 0.0f && ql_dynmap_value(255) == 1.0f);

    /* dQuantize: nearest code, exact midpoints to the even index, NaN to 0 */
    float map[256];
    for (unsigned i = 0; i < 256; i++) map[i] = ql_dynmap_value(i);
    int nearest = 1;
    for (int i = 0; i < 200000; i++) {
        float x = rng_uniform(-1, 1);
        if (i % 2) x *= 1e-3f;
        unsigned got = ql_dynmap_encode(map, x);
        double dg = fabs((double)x - map[got]);
        for (unsigned c = 0; c < 256; c++) nearest &= fabs((double)x - map[c]) >= dg;
    }
    CHECK(nearest);
    int even = 1;
    for (unsigned k = 0; k < 255; k++) {
        float mid = (map[k] + map[k + 1]) * 0.5f;
        if (mid == map[k] || mid == map[k + 1]) continue;
        even &= ql_dynmap_encode(map, mid) == ((k & 1) ? k + 1 : k);
    }
    CHECK(even);
    CHECK(ql_dynmap_encode(map, NAN) == 0);
}

/* Round trips and error bounds for every block size, both types, with and
 * without double quantization. */
static void test_all_blocksizes(void) {
    const int sizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};
    int64_t rows = 33, cols = 1000;
    float *w = malloc(sizeof(float) * rows * cols), *out = malloc(sizeof(float) * rows * cols);
    for (int64_t e = 0; e < rows * cols; e++) w[e] = rng_uniform(-1, 1) * (1 + (float)(e % 7));
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 8; s++)
            for (int dq = 0; dq < 2; dq++) {
                ql_q4 q;
                CHECK(ql_q4_quantize(w, rows, cols, (ql_qtype)t, sizes[s], dq, &q) == QL_OK);
                float *am = malloc(sizeof(float) * q.n_blocks);
                ql_q4_absmax_f32(&q, am);
                ql_q4_dequantize(&q, out);
                /* NF4's largest half-gap is 0.152 of absmax, FP4's 0.167; double
                 * quant adds the 8-bit absmax error (under 2%). */
                float tol = (t == 0 ? 0.152f : 0.167f) * (dq ? 1.03f : 1.0f) + 1e-6f;
                int ok = 1;
                for (int64_t e = 0; e < q.n; e++) {
                    float a = am[e / sizes[s]];
                    ok &= fabsf(out[e] - w[e]) <= tol * fmaxf(a, fabsf(w[e]));
                }
                CHECKF(ok, "type %d blocksize %d dq %d", t, sizes[s], dq);
                free(am);
                ql_q4_free(&q);
            }
    free(w);
    free(out);
}

int main(void) {
    test_codebook();
    test_thresholds();
    test_encode_brute_force();
    test_vector_a();
    test_vector_b();
    test_zero_block();
    test_odd_and_straddling();
    test_dynamic_map();
    test_all_blocksizes();
    return CHECK_DONE();
}
