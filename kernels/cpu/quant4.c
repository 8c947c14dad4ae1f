#include "kernels/quant4.h"

#include <math.h>
#include <string.h>

ql_status ql_q4_alloc(ql_q4 *q) {
    if (q->rows <= 0 || q->cols <= 0)
        return ql_error(QL_EINVAL, "4-bit matrix shape [%lld, %lld] must be positive",
                        (long long)q->rows, (long long)q->cols);
    if (!ql_q4_blocksize_ok(q->blocksize))
        return ql_error(QL_EINVAL,
                        "4-bit block size %d is not one bitsandbytes allows "
                        "(32, 64, 128, 256, 512, 1024, 2048, 4096)",
                        q->blocksize);
    q->n = q->rows * q->cols;
    q->n_blocks = (q->n + q->blocksize - 1) / q->blocksize;
    q->owns = 1;
    q->dense = NULL;
    q->dense_pad = 0;
    q->packed = NULL;
    q->absmax = NULL;
    q->absmax_q = NULL;
    q->nested_absmax = NULL;
    q->packed = ql_malloc((size_t)ql_q4_packed_bytes(q), "4-bit packed weight");
    if (!q->packed) goto oom;
    if (q->double_quant) {
        q->absmax_q = ql_malloc((size_t)q->n_blocks, "4-bit absmax codes");
        q->nested_absmax =
            ql_malloc((size_t)ql_q4_nested_blocks(q) * sizeof(float), "4-bit nested absmax");
        if (!q->absmax_q || !q->nested_absmax) goto oom;
        for (unsigned i = 0; i < 256; i++) q->nested_map[i] = ql_dynmap_value(i);
    } else {
        q->absmax = ql_malloc((size_t)q->n_blocks * sizeof(float), "4-bit absmax");
        if (!q->absmax) goto oom;
    }
    return QL_OK;
oom:
    ql_q4_free(q);
    return QL_ENOMEM;
}

void ql_q4_free(ql_q4 *q) {
    if (!q->owns) return;
    free(q->packed);
    free(q->absmax);
    free(q->absmax_q);
    free(q->nested_absmax);
    q->packed = NULL;
    q->absmax = NULL;
    q->absmax_q = NULL;
    q->nested_absmax = NULL;
    q->owns = 0;
}

float ql_q4_absmax_mean(const float *absmax, int64_t n_blocks) {
    double sum = 0.0;
    for (int64_t b = 0; b < n_blocks; b++) sum += absmax[b];
    return (float)(sum / (double)n_blocks);
}

/* One block: absmax in float32, then every element scaled by the IEEE
 * reciprocal (multiply, never divide, as the kernel does). */
static float quantize_block(const float *w, int64_t len, ql_qtype type, uint8_t *packed,
                            int64_t first) {
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(w[i]));
    float r = 1.0f / amax;
    for (int64_t i = 0; i < len; i++) {
        int64_t e = first + i;
        unsigned c = ql_q4_encode(type, w[i] * r);
        if (e & 1)
            packed[e >> 1] |= (uint8_t)c;
        else
            packed[e >> 1] = (uint8_t)(c << 4);
    }
    /* An odd tail is zero-padded, as the kernel loads it. */
    int64_t end = first + len;
    if (end & 1) packed[end >> 1] |= (uint8_t)ql_q4_encode(type, 0.0f * r);
    return amax;
}

ql_status ql_q4_quantize(const float *w, int64_t rows, int64_t cols, ql_qtype type, int blocksize,
                         int double_quant, ql_q4 *out) {
    memset(out, 0, sizeof *out);
    out->type = type;
    out->rows = rows;
    out->cols = cols;
    out->blocksize = blocksize;
    out->double_quant = double_quant;
    QL_TRY(ql_q4_alloc(out));

    float *absmax = out->absmax;
    if (double_quant) {
        absmax = ql_malloc((size_t)out->n_blocks * sizeof(float), "4-bit absmax");
        if (!absmax) {
            ql_q4_free(out);
            return QL_ENOMEM;
        }
    }
    int64_t nb = out->n_blocks;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t first = b * blocksize;
        int64_t len = out->n - first < blocksize ? out->n - first : blocksize;
        absmax[b] = quantize_block(w + first, len, type, out->packed, first);
    }

    if (double_quant) {
        float offset = ql_q4_absmax_mean(absmax, nb);
        out->nested_offset = offset;
        for (int64_t g = 0; g < ql_q4_nested_blocks(out); g++) {
            int64_t first = g * QL_NESTED_BLOCKSIZE;
            int64_t len = nb - first < QL_NESTED_BLOCKSIZE ? nb - first : QL_NESTED_BLOCKSIZE;
            float a2 = 0.0f;
            for (int64_t i = 0; i < len; i++) a2 = fmaxf(a2, fabsf(absmax[first + i] - offset));
            float r2 = 1.0f / a2;
            out->nested_absmax[g] = a2;
            for (int64_t i = 0; i < len; i++)
                out->absmax_q[first + i] =
                    (uint8_t)ql_dynmap_encode(out->nested_map, (absmax[first + i] - offset) * r2);
        }
        free(absmax);
    }
    return QL_OK;
}

void ql_q4_absmax_f32(const ql_q4 *q, float *absmax) {
    if (!q->double_quant) {
        memcpy(absmax, q->absmax, (size_t)q->n_blocks * sizeof(float));
        return;
    }
    for (int64_t b = 0; b < q->n_blocks; b++)
        absmax[b] = ql_dq_absmax(q->nested_map, q->absmax_q, q->nested_absmax, q->nested_offset, b);
}

void ql_q4_dequantize(const ql_q4 *q, float *w) {
    for (int64_t e = 0; e < q->n; e++) {
        int64_t b = e / q->blocksize;
        float amax = q->double_quant ? ql_dq_absmax(q->nested_map, q->absmax_q, q->nested_absmax,
                                                    q->nested_offset, b)
                                     : q->absmax[b];
        w[e] = ql_q4_value(q->type, ql_q4_nibble(q->packed, e)) * amax;
    }
}
