/* ggml tensor types: sizes of every type a GGUF may hold, and float32
 * dequantization of the ones this project reads (FORMATS.md §5.2, §5.3; ggml
 * src/ggml-common.h, src/ggml-quants.c dequantize_row_*). The arithmetic is
 * ggml's, in the same order, so results are bit-exact with it (the build's
 * -ffp-contract=off keeps Q4_1's d*q + m two roundings). */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "model/gguf.h"

typedef struct type_info {
    const char *name;
    int64_t block;
    uint64_t bytes;
} type_info;

/* Indexed by ggml type id; ids 4, 5 and 31..33, 36..38 were removed from
 * ggml and are unknown here, as they are to ggml's reader. */
static const type_info types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},    [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},
};

static const type_info *info(uint32_t type) {
    if (type >= sizeof types / sizeof types[0] || !types[type].name) return NULL;
    return &types[type];
}

const char *ql_gguf_type_name(uint32_t type) {
    const type_info *t = info(type);
    return t ? t->name : NULL;
}

int ql_gguf_type_size(uint32_t type, int64_t *block, uint64_t *bytes) {
    const type_info *t = info(type);
    if (!t) return 0;
    *block = t->block;
    *bytes = t->bytes;
    return 1;
}

int ql_gguf_can_dequantize(uint32_t type) {
    switch (type) {
    case QL_GGML_F32:
    case QL_GGML_F16:
    case QL_GGML_BF16:
    case QL_GGML_Q8_0:
    case QL_GGML_Q4_0:
    case QL_GGML_Q4_1: return 1;
    default: return 0;
    }
}

static float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ql_f16_to_f32(h);
}

/* Blocks are independent, so threads cannot change the result. */
#define PAR_MIN_BLOCKS 4096

static void deq_q8_0(const uint8_t *src, int64_t nb, float *y) {
#pragma omp parallel for schedule(static) if (nb >= PAR_MIN_BLOCKS)
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = src + b * 34;
        const float d = half_at(blk);
        const int8_t *qs = (const int8_t *)(blk + 2);
        float *o = y + b * 32;
        for (int j = 0; j < 32; j++) o[j] = qs[j] * d;
    }
}

/* Q4_0 and Q4_1: byte j holds element j in its low nibble and element j+16
 * in its high nibble (not bitsandbytes' order). */
static void deq_q4_0(const uint8_t *src, int64_t nb, float *y) {
#pragma omp parallel for schedule(static) if (nb >= PAR_MIN_BLOCKS)
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = src + b * 18;
        const float d = half_at(blk);
        const uint8_t *qs = blk + 2;
        float *o = y + b * 32;
        for (int j = 0; j < 16; j++) {
            const int x0 = (qs[j] & 0x0f) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            o[j] = x0 * d;
            o[j + 16] = x1 * d;
        }
    }
}

static void deq_q4_1(const uint8_t *src, int64_t nb, float *y) {
#pragma omp parallel for schedule(static) if (nb >= PAR_MIN_BLOCKS)
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = src + b * 20;
        const float d = half_at(blk);
        const float m = half_at(blk + 2);
        const uint8_t *qs = blk + 4;
        float *o = y + b * 32;
        for (int j = 0; j < 16; j++) {
            const int x0 = qs[j] & 0x0f;
            const int x1 = qs[j] >> 4;
            o[j] = x0 * d + m;
            o[j + 16] = x1 * d + m;
        }
    }
}

ql_status ql_gguf_dequantize(uint32_t type, const void *src, int64_t n, float *dst) {
    const type_info *t = info(type);
    if (!t || !ql_gguf_can_dequantize(type))
        return ql_error(QL_EUNSUPPORTED, "cannot dequantize ggml type %u (%s)", type,
                        t ? t->name : "unknown");
    if (n < 0 || n % t->block)
        return ql_error(QL_EINVAL,
                        "%" PRId64 " elements of %s: not a whole number of blocks of %" PRId64, n,
                        t->name, t->block);
    const uint8_t *s = src;
    switch (type) {
    case QL_GGML_F32: memcpy(dst, s, (size_t)n * 4); break;
    case QL_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = half_at(s + 2 * i);
        break;
    case QL_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = ql_bf16_to_f32(h);
        }
        break;
    case QL_GGML_Q8_0: deq_q8_0(s, n / 32, dst); break;
    case QL_GGML_Q4_0: deq_q4_0(s, n / 32, dst); break;
    case QL_GGML_Q4_1: deq_q4_1(s, n / 32, dst); break;
    }
    return QL_OK;
}

ql_status ql_gguf_tensor_f32(const ql_gguf_file *f, const ql_gguf_tensor *t, float *out) {
    if (!ql_gguf_can_dequantize(t->type)) {
        const char *name = ql_gguf_type_name(t->type);
        return ql_error(QL_EUNSUPPORTED,
                        "%s: tensor '%s' has type %s (%u); qlora reads F32, F16, BF16, Q8_0, "
                        "Q4_0 and Q4_1",
                        f->path, t->name, name ? name : "unknown", t->type);
    }
    return ql_gguf_dequantize(t->type, t->data, t->numel, out);
}

/* ggml's quantize_row_q8_0_ref: per 32 elements d = absmax / 127 (stored as
 * F16), q = roundf(x / d) (half away from zero), with the reciprocal of the
 * float d, not of its F16 rounding, as ggml does. */
void ql_gguf_quantize_q8_0(const float *x, int64_t n, void *dst) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32, out += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = ql_f32_to_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < 32; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}
