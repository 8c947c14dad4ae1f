#include "core/dtype.h"

#include <math.h>

static const struct {
    const char *name;
    size_t size;
    int st_order; /* position in safetensors' Dtype enum */
} dtype_info[QL_DT_COUNT] = {
    [QL_DT_BOOL] = {"BOOL", 1, 0},  [QL_DT_U8] = {"U8", 1, 4},    [QL_DT_I8] = {"I8", 1, 5},
    [QL_DT_I16] = {"I16", 2, 11},   [QL_DT_U16] = {"U16", 2, 12}, [QL_DT_F16] = {"F16", 2, 13},
    [QL_DT_BF16] = {"BF16", 2, 14}, [QL_DT_I32] = {"I32", 4, 15}, [QL_DT_U32] = {"U32", 4, 16},
    [QL_DT_F32] = {"F32", 4, 17},   [QL_DT_F64] = {"F64", 8, 19}, [QL_DT_I64] = {"I64", 8, 20},
    [QL_DT_U64] = {"U64", 8, 21},
};

int ql_dtype_from_name(const char *name) {
    for (int i = 0; i < QL_DT_COUNT; i++)
        if (strcmp(name, dtype_info[i].name) == 0) return i;
    return -1;
}

const char *ql_dtype_name(ql_dtype dt) { return dt < QL_DT_COUNT ? dtype_info[dt].name : "?"; }

size_t ql_dtype_size(ql_dtype dt) { return dt < QL_DT_COUNT ? dtype_info[dt].size : 0; }

int ql_dtype_st_order(ql_dtype dt) { return dt < QL_DT_COUNT ? dtype_info[dt].st_order : -1; }

float ql_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return ql_f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24, exact in float32 */
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    return ql_f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t ql_f32_to_f16(float f) {
    uint32_t u = ql_bits_from_f32(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;      /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;     /* rounds to inf */
    if (a < 0x38800000u) {                           /* result is subnormal or zero */
        float v = ql_f32_from_bits(a) * 16777216.0f; /* scale by 2^24: exact */
        /* nearbyintf rounds half to even in the default rounding mode */
        return sign | (uint16_t)nearbyintf(v);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return sign | (uint16_t)(r >> 13);
}

int ql_dtype_to_f32(ql_dtype dt, const void *src, float *dst, size_t n) {
    switch (dt) {
    case QL_DT_F32: memcpy(dst, src, n * 4); return 0;
    case QL_DT_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = ql_bf16_to_f32(s[i]);
        return 0;
    }
    case QL_DT_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = ql_f16_to_f32(s[i]);
        return 0;
    }
    case QL_DT_F64: {
        const double *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return 0;
    }
    default: return -1;
    }
}

int ql_dtype_from_f32(ql_dtype dt, const float *src, void *dst, size_t n) {
    switch (dt) {
    case QL_DT_F32: memcpy(dst, src, n * 4); return 0;
    case QL_DT_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = ql_f32_to_bf16(src[i]);
        return 0;
    }
    case QL_DT_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = ql_f32_to_f16(src[i]);
        return 0;
    }
    default: return -1;
    }
}
