/* Element types as safetensors names them, and scalar conversions to float32.
 * Conversions are exact or round-to-nearest-even, as torch does them. */
#ifndef QL_DTYPE_H
#define QL_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum ql_dtype {
    QL_DT_BOOL,
    QL_DT_U8,
    QL_DT_I8,
    QL_DT_I16,
    QL_DT_U16,
    QL_DT_F16,
    QL_DT_BF16,
    QL_DT_I32,
    QL_DT_U32,
    QL_DT_F32,
    QL_DT_F64,
    QL_DT_I64,
    QL_DT_U64,
    QL_DT_COUNT
} ql_dtype;

/* "BF16" -> QL_DT_BF16; returns -1 for a name this project does not handle. */
int ql_dtype_from_name(const char *name);
const char *ql_dtype_name(ql_dtype dt);
size_t ql_dtype_size(ql_dtype dt);
/* Rank in the safetensors writer's enum order (used to order tensors in a file). */
int ql_dtype_st_order(ql_dtype dt);

static inline float ql_f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t ql_bits_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float ql_bf16_to_f32(uint16_t h) { return ql_f32_from_bits((uint32_t)h << 16); }

/* Round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t ql_f32_to_bf16(float f) {
    uint32_t u = ql_bits_from_f32(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ql_f16_to_f32(uint16_t h);
uint16_t ql_f32_to_f16(float f);

/* Converts n elements of a floating dtype (F32, F16, BF16, F64) to float32. */
int ql_dtype_to_f32(ql_dtype dt, const void *src, float *dst, size_t n);
/* Converts n float32 values to F32, F16 or BF16. */
int ql_dtype_from_f32(ql_dtype dt, const float *src, void *dst, size_t n);

#endif
