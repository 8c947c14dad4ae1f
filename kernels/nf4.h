/* bitsandbytes 4-bit (NF4, FP4) and 8-bit dynamic-map math, shared by the C
 * and CUDA builds. This is the only copy of these tables in the project.
 *
 * Sources (shared FORMATS.md §1): bitsandbytes functional.py get_4bit_type and
 * create_dynamic_map, csrc/kernels.cu dQuantizeNF4, dQuantizeFP4, dQuantize<0>
 * and kDequantizeBlockwise. The encoders mirror the CUDA kernels that produced
 * real checkpoints, except that 1/absmax is an IEEE division where CUDA uses
 * fast-math's approximate reciprocal (FORMATS §7): the two agree except for
 * rare one-ulp flips right at a threshold.
 *
 * Tables are written as float32 bit patterns, so no decimal rounding is
 * involved. Build with floating-point contraction off (-ffp-contract=off) so
 * `code * absmax2 + offset` stays two roundings, as bitsandbytes does it. */
#ifndef QL_NF4_H
#define QL_NF4_H

#include <stdint.h>

#if defined(__CUDACC__)
#define QL_HD static __host__ __device__ __forceinline__
#else
#define QL_HD static inline
#endif

typedef enum ql_qtype { QL_QTYPE_NF4 = 0, QL_QTYPE_FP4 = 1 } ql_qtype;

/* Elements per absmax block: bitsandbytes accepts these and no others. */
#define QL_Q4_DEFAULT_BLOCKSIZE 64
/* The double-quant block is fixed at 256 by bitsandbytes' quantize_4bit. */
#define QL_NESTED_BLOCKSIZE 256

// clang-format off
/* NF4 code book, index = 4-bit code. */
#define QL_NF4_BITS { \
    0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u, \
    0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u \
}

/* dQuantizeNF4's 15 thresholds: the float32 midpoints of adjacent codes. */
#define QL_NF4_THRESHOLD_BITS { \
    0xbf591cd8u, 0xbf1c5270u, 0xbeeb8480u, 0xbeadea76u, 0xbe703cecu, 0xbe0d38bcu, 0xbd3a7871u, 0x3d22faffu, \
    0x3df64862u, 0x3e5067e0u, 0x3e9582d4u, 0x3ec753f9u, 0x3f006d04u, 0x3f248dafu, 0x3f5c89dau \
}

/* FP4 decode table (kernels.cu dDequantizeFP4Tree): bit 3 is the sign, so code 8
 * decodes to -0.0 (the quant_map bitsandbytes stores has +0.0 there). */
#define QL_FP4_BITS { \
    0x00000000u, 0x3baaaaabu, 0x3f2aaaabu, 0x3f800000u, 0x3eaaaaabu, 0x3f000000u, 0x3e2aaaabu, 0x3e800000u, \
    0x80000000u, 0xbbaaaaabu, 0xbf2aaaabu, 0xbf800000u, 0xbeaaaaabu, 0xbf000000u, 0xbe2aaaabu, 0xbe800000u \
}

/* The signed 8-bit dynamic map, create_dynamic_map(signed=True), sorted:
 * index 127 is 0, index 255 is 1.0. Used to quantize absmax in double quant. */
#define QL_DYNMAP_BITS { \
    0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au, 0xbf650000u, \
    0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u, 0xbf4bcccdu, 0xbf483333u, \
    0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6666u, \
    0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au, \
    0xbf0b0000u, 0xbf076666u, 0xbf03ccccu, 0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au, \
    0xbedc6666u, 0xbed53333u, 0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u, \
    0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu, \
    0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u, \
    0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c2au, 0xbda1999au, \
    0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147bu, 0xbd728f5du, 0xbd670a3du, \
    0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u, 0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u, \
    0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u, \
    0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u, \
    0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du, \
    0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu, \
    0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u, 0xb513a3b7u, 0x00000000u, \
    0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu, \
    0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du, \
    0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u, \
    0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u, \
    0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u, \
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du, \
    0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au, \
    0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u, \
    0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu, \
    0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u, \
    0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au, \
    0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au, \
    0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u, \
    0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u, \
    0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u, \
    0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u \
}
// clang-format on

QL_HD float ql_bits_to_f32(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } c;
    c.u = u;
    return c.f;
}

QL_HD float ql_nf4_value(unsigned code) {
    const uint32_t t[16] = QL_NF4_BITS;
    return ql_bits_to_f32(t[code & 15u]);
}

QL_HD float ql_fp4_value(unsigned code) {
    const uint32_t t[16] = QL_FP4_BITS;
    return ql_bits_to_f32(t[code & 15u]);
}

QL_HD float ql_q4_value(ql_qtype type, unsigned code) {
    return type == QL_QTYPE_NF4 ? ql_nf4_value(code) : ql_fp4_value(code);
}

QL_HD float ql_dynmap_value(unsigned code) {
    const uint32_t t[256] = QL_DYNMAP_BITS;
    return ql_bits_to_f32(t[code & 255u]);
}

/* NF4 code of x (already scaled by 1/absmax): the number of thresholds below
 * x. Equal to dQuantizeNF4's decision tree: strict `>` so an exact tie takes
 * the lower code, and NaN (0 * inf from an all-zero block) gives code 0. */
QL_HD unsigned ql_nf4_encode(float x) {
    const uint32_t t[15] = QL_NF4_THRESHOLD_BITS;
    unsigned code = 0;
    for (int k = 0; k < 15; k++) code += x > ql_bits_to_f32(t[k]);
    return code;
}

/* FP4 code of x (scaled), dQuantizeFP4's tree with its literals. */
QL_HD unsigned ql_fp4_encode(float x) {
    unsigned sign = x < 0.0f ? 8u : 0u;
    float a = x < 0.0f ? -x : x;
    unsigned c;
    if (a > 0.29166667f)
        c = a > 0.583333f ? (a > 0.8333333f ? 3u : 2u) : (a > 0.4166667f ? 5u : 4u);
    else
        c = a > 0.0859375f ? (a > 0.20833333f ? 7u : 6u) : (a > 0.00260417f ? 1u : 0u);
    return c | sign;
}

QL_HD unsigned ql_q4_encode(ql_qtype type, float x) {
    return type == QL_QTYPE_NF4 ? ql_nf4_encode(x) : ql_fp4_encode(x);
}

/* 8-bit code of x (scaled to [-1,1]) in a sorted 256-entry map: bnb's
 * dQuantize<0> binary search, kept step for step so ties resolve the same way
 * (an exact midpoint goes to the even index; NaN gives index 0). */
QL_HD unsigned ql_dynmap_encode(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[127];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[255];
    if (lower_pivot == 0) lower = code[0];
    if (x > val) {
        float mid = (upper + val) * 0.5f;
        return (unsigned)(x > mid ? upper_pivot : pivot);
    }
    float mid = (lower + val) * 0.5f;
    return (unsigned)(x < mid ? lower_pivot : pivot);
}

/* The 4-bit code of flat element e in a packed buffer: even elements sit in
 * the high nibble (kernels.cu: qvals[j] = q(v[2j]) << 4 | q(v[2j+1])). */
QL_HD unsigned ql_q4_nibble(const uint8_t *packed, int64_t e) {
    uint8_t byte = packed[e >> 1];
    return (e & 1) ? (byte & 0x0Fu) : (unsigned)(byte >> 4);
}

/* Double-quant absmax of block b: two separate roundings (multiply, then add
 * the offset), as dequantize_blockwise followed by `+ offset` does it. */
QL_HD float ql_dq_absmax(const float *dynmap, const uint8_t *absmax_q, const float *nested_absmax,
                         float offset, int64_t b) {
    float scaled = dynmap[absmax_q[b]] * nested_absmax[b / QL_NESTED_BLOCKSIZE];
    return scaled + offset;
}

QL_HD int ql_q4_blocksize_ok(int64_t bs) {
    return bs == 32 || bs == 64 || bs == 128 || bs == 256 || bs == 512 || bs == 1024 ||
           bs == 2048 || bs == 4096;
}

#endif
