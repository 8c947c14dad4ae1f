/* AVX2 decoding of 4-bit codes, shared by the tile dequantizer and the fused
 * small-batch kernel. The 16-entry code book fits two registers: each nibble
 * selects its value with two 8-lane permutes and a blend on bit 3, so 16
 * weights cost a handful of instructions and no memory lookups. The values
 * are code_value * absmax, one float32 multiply, as bitsandbytes computes
 * them, so results are bit-identical to ql_q4_dequantize. */
#ifndef QL_CPU_AVX2_H
#define QL_CPU_AVX2_H

#ifdef __AVX2__
#include <immintrin.h>
#include <stdint.h>

static inline __m256 ql_avx2_lookup8(__m256 lo, __m256 hi, __m256i code) {
    __m256 a = _mm256_permutevar8x32_ps(lo, code);
    __m256 b = _mm256_permutevar8x32_ps(hi, code);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
}

/* 16 weights from 8 packed bytes (even element = high nibble). */
static inline void ql_avx2_decode16(const uint8_t *p, __m256 lo, __m256 hi, __m256 amax, __m256 *w0,
                                    __m256 *w1) {
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    const __m256i nib = _mm256_set1_epi32(15);
    __m128i pairs = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)p), dup);
    __m256i c0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(pairs), shift), nib);
    __m256i c1 = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(pairs, 8)), shift), nib);
    *w0 = _mm256_mul_ps(ql_avx2_lookup8(lo, hi, c0), amax);
    *w1 = _mm256_mul_ps(ql_avx2_lookup8(lo, hi, c1), amax);
}

/* Lane sum in a fixed order. */
static inline float ql_avx2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#endif
