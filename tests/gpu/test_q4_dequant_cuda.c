/* The CUDA 4-bit dequantize kernel against the CPU reference ql_q4_dequantize,
 * bit for bit: NF4 and FP4, double quant on and off, every block size
 * bitsandbytes allows, odd element counts, blocks straddling rows, an all-zero
 * block, several tiles, misaligned buffers (the scalar path), float32 and
 * bf16 output. The output buffer is poisoned with 0xFF (NaN in both dtypes)
 * before every run, and guard bytes after it must stay untouched. Strided
 * output (rows ldo apart) leaves the gaps between rows untouched.
 *
 * Exits 77 (skipped) when no CUDA device is visible. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/cuda_api.h"
#include "kernels/quant4.h"

#ifdef QL_HAVE_CUDA

#define GUARD 64 /* bytes after the output that must stay 0xFF */

static ql_rng rng;
static int rng_ready;
static float rng_uniform(float lo, float hi) {
    if (!rng_ready) {
        ql_rng_seed(&rng, 0x2545f4914f6cdd1dull);
        rng_ready = 1;
    }
    return ql_rng_uniform_range(&rng, lo, hi);
}

/* Weights with a scale that changes along the matrix, so absmax varies from
 * block to block; block `zero_block` (if >= 0) is all zeros. */
static float *make_weights(int64_t rows, int64_t cols, int bs, int64_t zero_block) {
    int64_t n = rows * cols;
    float *w = malloc((size_t)n * sizeof(float));
    if (!w) return NULL;
    for (int64_t e = 0; e < n; e++) {
        float scale = 0.01f + 0.5f * (float)((e * 7919) % 1000) / 1000.0f;
        w[e] = rng_uniform(-1.0f, 1.0f) * scale;
    }
    if (zero_block >= 0) {
        for (int64_t e = zero_block * bs; e < n && e < (zero_block + 1) * bs; e++) w[e] = 0.0f;
    }
    return w;
}

static int cases_run;

/* Dequantizes q (already on the device as d) into out_dtype at a byte offset
 * into the output buffer and compares with the reference `ref`. */
static void check_one(const ql_q4 *d, const float *ref, ql_dtype dt, size_t out_offset,
                      const char *what) {
    size_t esz = ql_dtype_size(dt);
    size_t bytes = (size_t)d->n * esz;
    size_t total = out_offset + bytes + GUARD;
    uint8_t *host = malloc(total);
    void *dev = NULL;
    if (!host || ql_cuda_malloc(total, &dev) != QL_OK) {
        CHECKF(0, "%s: allocation: %s", what, ql_error_message());
        free(host);
        return;
    }
    CHECK(ql_cuda_memset(dev, 0xFF, total, NULL) == QL_OK);
    ql_status st = ql_cuda_q4_dequantize(d, dt, (uint8_t *)dev + out_offset, NULL);
    CHECKF(st == QL_OK, "%s: %s", what, ql_error_message());
    CHECK(ql_cuda_sync() == QL_OK);
    CHECK(ql_cuda_download(host, dev, total) == QL_OK);
    cases_run++;

    int64_t bad = -1, n_bad = 0;
    const uint8_t *out = host + out_offset;
    for (int64_t e = 0; e < d->n; e++) {
        int ok;
        if (dt == QL_DT_F32) {
            uint32_t got;
            memcpy(&got, out + e * 4, 4);
            ok = got == ql_bits_from_f32(ref[e]);
        } else {
            uint16_t got;
            memcpy(&got, out + e * 2, 2);
            ok = got == ql_f32_to_bf16(ref[e]);
        }
        if (!ok) {
            if (bad < 0) bad = e;
            n_bad++;
        }
    }
    CHECKF(n_bad == 0, "%s (%s): %lld of %lld elements differ, first at %lld (want %.9g)", what,
           ql_dtype_name(dt), (long long)n_bad, (long long)d->n, (long long)bad,
           bad >= 0 ? (double)ref[bad] : 0.0);
    int before_ok = 1, after_ok = 1;
    for (size_t i = 0; i < out_offset; i++) before_ok &= host[i] == 0xFF;
    for (size_t i = out_offset + bytes; i < total; i++) after_ok &= host[i] == 0xFF;
    CHECKF(before_ok && after_ok, "%s (%s): wrote outside the output", what, ql_dtype_name(dt));
    ql_cuda_free(dev);
    free(host);
}

/* Quantizes a random matrix on the host, uploads it, and checks both output
 * dtypes (aligned), plus misaligned output when asked. */
static void check_case(int64_t rows, int64_t cols, ql_qtype type, int bs, int dq,
                       int64_t zero_block, int misaligned) {
    char what[160];
    snprintf(what, sizeof what, "%s bs=%d dq=%d [%lld,%lld] zero_block=%lld",
             type == QL_QTYPE_NF4 ? "nf4" : "fp4", bs, dq, (long long)rows, (long long)cols,
             (long long)zero_block);
    float *w = make_weights(rows, cols, bs, zero_block);
    ql_q4 q, d;
    memset(&d, 0, sizeof d);
    if (!w || ql_q4_quantize(w, rows, cols, type, bs, dq, &q) != QL_OK) {
        CHECKF(0, "%s: quantize: %s", what, ql_error_message());
        free(w);
        return;
    }
    float *ref = malloc((size_t)q.n * sizeof(float));
    ql_q4_dequantize(&q, ref);
    ql_status st = ql_cuda_q4_upload(&q, &d);
    CHECKF(st == QL_OK, "%s: upload: %s", what, ql_error_message());
    if (st == QL_OK) {
        check_one(&d, ref, QL_DT_F32, 0, what);
        check_one(&d, ref, QL_DT_BF16, 0, what);
        if (misaligned) {
            check_one(&d, ref, QL_DT_F32, 4, what);
            check_one(&d, ref, QL_DT_BF16, 2, what);
        }
        ql_cuda_q4_free(&d);
    }
    free(ref);
    free(w);
    ql_q4_free(&q);
}

/* Packed data starting at an odd device address: the scalar load path. */
static void check_misaligned_packed(void) {
    int64_t rows = 33, cols = 77;
    float *w = make_weights(rows, cols, 64, -1);
    ql_q4 q, d;
    if (!w || ql_q4_quantize(w, rows, cols, QL_QTYPE_NF4, 64, 1, &q) != QL_OK) {
        CHECKF(0, "misaligned packed: quantize: %s", ql_error_message());
        free(w);
        return;
    }
    float *ref = malloc((size_t)q.n * sizeof(float));
    ql_q4_dequantize(&q, ref);
    CHECK(ql_cuda_q4_upload(&q, &d) == QL_OK);
    size_t pb = (size_t)ql_q4_packed_bytes(&q);
    void *base = NULL;
    CHECK(ql_cuda_malloc(pb + 1, &base) == QL_OK);
    CHECK(ql_cuda_upload((uint8_t *)base + 1, q.packed, pb) == QL_OK);
    uint8_t *aligned_packed = d.packed;
    d.packed = (uint8_t *)base + 1;
    check_one(&d, ref, QL_DT_F32, 0, "nf4 dq packed at odd address");
    check_one(&d, ref, QL_DT_BF16, 0, "nf4 dq packed at odd address");
    d.packed = aligned_packed;
    ql_cuda_free(base);
    ql_cuda_q4_free(&d);
    free(ref);
    free(w);
    ql_q4_free(&q);
}

/* Output rows ldo elements apart (the dequant path writes W beside LoRA's B):
 * W's elements bit-identical, the columns between rows left as they were.
 * cols % 8 == 0 with ldo % 8 == 0 takes the 16-byte stores; else scalar. */
static void check_strided(int64_t rows, int64_t cols, int64_t ldo, ql_dtype dt) {
    char what[128];
    snprintf(what, sizeof what, "strided [%lld,%lld] ldo=%lld %s", (long long)rows, (long long)cols,
             (long long)ldo, ql_dtype_name(dt));
    float *w = make_weights(rows, cols, 64, -1);
    ql_q4 q, d;
    memset(&d, 0, sizeof d);
    if (!w || ql_q4_quantize(w, rows, cols, QL_QTYPE_NF4, 64, 1, &q) != QL_OK) {
        CHECKF(0, "%s: quantize: %s", what, ql_error_message());
        free(w);
        return;
    }
    float *ref = malloc((size_t)q.n * sizeof(float));
    ql_q4_dequantize(&q, ref);
    CHECK(ql_cuda_q4_upload(&q, &d) == QL_OK);
    const size_t esz = ql_dtype_size(dt), bytes = (size_t)(rows * ldo) * esz;
    uint8_t *host = malloc(bytes);
    void *dev = NULL;
    CHECK(ql_cuda_malloc(bytes, &dev) == QL_OK);
    CHECK(ql_cuda_memset(dev, 0xFF, bytes, NULL) == QL_OK);
    CHECKF(ql_cuda_q4_dequantize_ld(&d, dt, dev, ldo, NULL) == QL_OK, "%s: %s", what,
           ql_error_message());
    CHECK(ql_cuda_sync() == QL_OK && ql_cuda_download(host, dev, bytes) == QL_OK);
    int64_t bad = 0, gap_bad = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < ldo; j++) {
            const uint8_t *p = host + (size_t)(i * ldo + j) * esz;
            if (j >= cols) {
                for (size_t b = 0; b < esz; b++) gap_bad += p[b] != 0xFF;
                continue;
            }
            const float want = ref[i * cols + j];
            if (dt == QL_DT_F32) {
                uint32_t got;
                memcpy(&got, p, 4);
                bad += got != ql_bits_from_f32(want);
            } else {
                uint16_t got;
                memcpy(&got, p, 2);
                bad += got != ql_f32_to_bf16(want);
            }
        }
    CHECKF(bad == 0, "%s: %lld elements differ", what, (long long)bad);
    CHECKF(gap_bad == 0, "%s: %lld bytes between rows were written", what, (long long)gap_bad);
    /* A stride below the row length is refused. */
    CHECK(ql_cuda_q4_dequantize_ld(&d, dt, dev, cols - 1, NULL) == QL_EINVAL);
    cases_run++;
    ql_cuda_free(dev);
    ql_cuda_q4_free(&d);
    ql_q4_free(&q);
    free(host), free(ref), free(w);
}

static void check_errors(void) {
    /* An unsupported dtype is refused before any launch. */
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = (float)i;
    ql_q4 q, d;
    CHECK(ql_q4_quantize(w, 1, 64, QL_QTYPE_NF4, 64, 0, &q) == QL_OK);
    CHECK(ql_cuda_q4_upload(&q, &d) == QL_OK);
    void *out = NULL;
    CHECK(ql_cuda_malloc(64 * 8, &out) == QL_OK);
    ql_status st = ql_cuda_q4_dequantize(&d, QL_DT_I32, out, NULL);
    CHECKF(st == QL_EUNSUPPORTED && strstr(ql_error_message(), "I32"), "got %s: %s",
           ql_status_name(st), ql_error_message());
    ql_cuda_free(out);
    ql_cuda_q4_free(&d);
    ql_q4_free(&q);

    /* Out of device memory comes back as ENOMEM with the size asked for
     * (2^62 bytes = 2^42 MiB) and the device's figures. */
    void *p = NULL;
    st = ql_cuda_malloc((size_t)1 << 62, &p);
    CHECKF(st == QL_ENOMEM && p == NULL &&
               strstr(ql_error_message(),
                      "out of GPU memory: 4611686018427387904 bytes (4398046511104.0 MiB) asked") &&
               strstr(ql_error_message(), "GiB in use"),
           "got %s: %s", ql_status_name(st), ql_error_message());
    /* ...and does not poison later calls. */
    CHECK(ql_cuda_sync() == QL_OK);
}

int main(void) {
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    ql_cuda_device_info info;
    if (ql_cuda_get_device_info(0, &info) == QL_OK)
        printf("device 0: %s (sm_%d%d, %d SMs)\n", info.name, info.cc_major, info.cc_minor,
               info.sm_count);

    static const int bss[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};
    for (int t = 0; t < 2; t++) {
        ql_qtype type = t ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
        for (int dq = 0; dq < 2; dq++) {
            for (size_t k = 0; k < sizeof bss / sizeof bss[0]; k++) {
                int bs = bss[k];
                /* odd n (7 x 9 = 63: less than one item of the tail path) */
                check_case(7, 9, type, bs, dq, -1, 0);
                /* odd n, rows not a multiple of the block, several tiles,
                 * more than 256 blocks at small block sizes, a zero block */
                check_case(129, 257, type, bs, dq, 3, 1);
                /* even n, not a multiple of 8 */
                check_case(3, 1234, type, bs, dq, 0, 0);
                /* a large, aligned shape whose last block is the zero one */
                check_case(512, 576, type, bs, dq, (512 * 576 - 1) / bs, 0);
            }
        }
    }
    /* Many tiles and many nested blocks (> 256 * 256 elements at bs = 64). */
    check_case(1536, 577, QL_QTYPE_NF4, 64, 1, 1000, 1);
    /* A single element. */
    check_case(1, 1, QL_QTYPE_NF4, 64, 1, -1, 1);
    check_misaligned_packed();
    check_strided(40, 64, 80, QL_DT_BF16); /* 16-byte stores, [W | B] of r = 16 */
    check_strided(40, 64, 80, QL_DT_F32);
    check_strided(33, 77, 93, QL_DT_BF16);    /* rows straddle items: scalar stores */
    check_strided(300, 256, 264, QL_DT_BF16); /* several tiles */
    check_errors();
    printf("%d dequantize runs compared\n", cases_run);
    return CHECK_DONE();
}
#else
/* CMake found nvcc but built no CUDA library (no CUDA sources yet). */
int main(void) {
    printf("built without the CUDA backend: skipped\n");
    return 77;
}
#endif
