/* NF4 / FP4 dequantization on the GPU, bit-identical to ql_q4_dequantize
 * (kernels/cpu/quant4.c): w[e] = code[nibble(e)] * absmax[e / blocksize], one
 * float32 rounding, then round-to-nearest-even to bf16 when asked. With
 * double quantization absmax[b] = (dyn[absmax_q[b]] * nested[b / 256]) +
 * offset, two roundings (__fmul_rn, then __fadd_rn; the build also has
 * --fmad=false).
 *
 * Work split. An "item" is the elements one 16-byte store writes: 8 bf16
 * (4 packed bytes, one 32-bit load) or 4 float32 (2 packed bytes, one 16-bit
 * load). Consecutive threads take consecutive items, so every warp load and
 * store instruction touches one contiguous span (128 or 64 bytes read, 512
 * bytes written). A CTA of 256 threads owns a tile of 8 items per thread
 * (16384 bf16 or 8192 float32 elements). It first issues all 8 packed loads
 * of each thread, then, while they are in flight, works out the float32
 * absmax of every quantization block of the tile once into shared memory
 * (block sizes are powers of two from 32 to 4096 and divide the tile, so a
 * tile never starts inside a block and an item never straddles one), waits
 * at one barrier, and decodes and stores. The code book comes from nf4.h
 * (ql_q4_value) into shared memory; the dynamic map comes with the weight
 * (ql_q4.nested_map, the file's map on load) as a kernel parameter.
 *
 * The elements after the last whole item (n % items, fewer than 8) are done
 * one by one by the last tile. Output or packed pointers that are not aligned
 * for 16-byte stores / 4-byte loads take the same kernel with scalar memory
 * accesses. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda_api.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/nf4.h"
#include "kernels/quant4.h"

#define Q4_THREADS 256
#define Q4_ITEMS 8

/* Everything the kernel reads besides the packed data, by value. */
struct q4_args {
    const uint8_t *packed;
    const float *absmax;     /* plain float32 absmax, or NULL */
    const uint8_t *absmax_q; /* double quant: 8-bit codes */
    const float *nested;     /* double quant: one scale per 256 blocks */
    int64_t n;
    int64_t n_blocks;
    int64_t cols, ldo; /* output row stride in elements; ldo == cols: contiguous */
    float offset;
    int bs_shift; /* log2(blocksize) */
    int type;     /* ql_qtype */
    int dq;
    float dynmap[256];
};

/* float32 -> bf16 bits, round to nearest even, NaN kept quiet: the same rule
 * as ql_f32_to_bf16 (core/dtype.h), so outputs match bit for bit. */
static __device__ __forceinline__ uint32_t q4_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return u >> 16;
}

/* The packed bytes of item i (PB = 2 or 4 bytes, little-endian in a word). */
template <int PB, bool VEC>
static __device__ __forceinline__ uint32_t q4_load_item(const uint8_t *pk, int i) {
    if (VEC) {
        if (PB == 4) return __ldg((const unsigned int *)pk + i);
        return __ldg((const unsigned short *)pk + i);
    }
    uint32_t w = 0;
#pragma unroll
    for (int k = 0; k < PB; k++) w |= (uint32_t)__ldg(pk + (int64_t)i * PB + k) << (8 * k);
    return w;
}

/* Nibble of element j of an item: byte j/2, even elements in the high half. */
static __device__ __forceinline__ unsigned q4_item_code(uint32_t w, int j) {
    return (w >> (8 * (j >> 1) + ((j & 1) ? 0 : 4))) & 15u;
}

/* Where element e of W goes in the output. */
static __device__ __forceinline__ int64_t q4_dst(const q4_args &a, int64_t e) {
    return a.ldo == a.cols ? e : (e / a.cols) * a.ldo + e % a.cols;
}

/* Item e (its first element's index in W). VEC: the item is one row's
 * (the launch checks cols % EPI == 0 when the output is strided). */
template <bool F32, bool VEC>
static __device__ __forceinline__ void q4_store_item(const q4_args &a, void *out, int64_t e,
                                                     uint32_t w, float am, const float *s_code) {
    if (F32) {
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = __fmul_rn(s_code[q4_item_code(w, j)], am);
        float *o = (float *)out;
        if (VEC) {
            *(float4 *)(o + q4_dst(a, e)) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) o[q4_dst(a, e + j)] = v[j];
        }
    } else {
        uint32_t p[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float lo = __fmul_rn(s_code[q4_item_code(w, 2 * k)], am);
            float hi = __fmul_rn(s_code[q4_item_code(w, 2 * k + 1)], am);
            p[k] = q4_bf16_bits(lo) | (q4_bf16_bits(hi) << 16);
        }
        uint16_t *o = (uint16_t *)out;
        if (VEC) {
            *(uint4 *)(o + q4_dst(a, e)) = make_uint4(p[0], p[1], p[2], p[3]);
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                o[q4_dst(a, e + 2 * k)] = (uint16_t)(p[k] & 0xffffu);
                o[q4_dst(a, e + 2 * k + 1)] = (uint16_t)(p[k] >> 16);
            }
        }
    }
}

template <bool F32, bool VEC>
__global__ void __launch_bounds__(Q4_THREADS)
    k_q4_dequantize(const __grid_constant__ q4_args a, void *out) {
    constexpr int EPI = F32 ? 4 : 8; /* elements per item */
    constexpr int PB = EPI / 2;      /* packed bytes per item */
    constexpr int TILE_ITEMS = Q4_THREADS * Q4_ITEMS;
    constexpr int TILE = TILE_ITEMS * EPI;
    __shared__ float s_code[16];
    __shared__ float s_amax[TILE / 32]; /* blocks of >= 32 elements */

    const int tid = threadIdx.x;
    const int64_t e0 = (int64_t)blockIdx.x * TILE;
    const int64_t n_items = a.n / EPI;
    const int64_t item0 = e0 / EPI;
    const int64_t left = n_items - item0;
    const int lim = left < TILE_ITEMS ? (int)(left > 0 ? left : 0) : TILE_ITEMS;
    const uint8_t *pk = a.packed + item0 * PB;

    /* 1. All packed loads of this thread in flight at once. */
    uint32_t w[Q4_ITEMS];
#pragma unroll
    for (int u = 0; u < Q4_ITEMS; u++) {
        int i = u * Q4_THREADS + tid;
        w[u] = i < lim ? q4_load_item<PB, VEC>(pk, i) : 0u;
    }

    /* 2. Meanwhile: the code book and the absmax of each block of the tile. */
    if (tid < 16) s_code[tid] = ql_q4_value((ql_qtype)a.type, (unsigned)tid);
    const int64_t b0 = e0 >> a.bs_shift;
    const int64_t nb_left = a.n_blocks - b0;
    const int nb = nb_left < (TILE >> a.bs_shift) ? (int)nb_left : (TILE >> a.bs_shift);
    for (int i = tid; i < nb; i += Q4_THREADS) {
        int64_t b = b0 + i;
        float am;
        if (a.dq) {
            float code = a.dynmap[__ldg(a.absmax_q + b)];
            am = __fadd_rn(__fmul_rn(code, __ldg(a.nested + b / QL_NESTED_BLOCKSIZE)), a.offset);
        } else {
            am = __ldg(a.absmax + b);
        }
        s_amax[i] = am;
    }
    __syncthreads();

    /* 3. Decode and store whole items. */
#pragma unroll
    for (int u = 0; u < Q4_ITEMS; u++) {
        int i = u * Q4_THREADS + tid;
        if (i < lim)
            q4_store_item<F32, VEC>(a, out, e0 + (int64_t)i * EPI, w[u],
                                    s_amax[(i * EPI) >> a.bs_shift], s_code);
    }

    /* 4. The last n % EPI elements, one per thread, in the tile that has them. */
    const int64_t tail0 = n_items * EPI;
    if (tail0 < a.n && tail0 >= e0 && tail0 < e0 + TILE) {
        int64_t e = tail0 + tid;
        if (e < a.n) {
            float v =
                __fmul_rn(s_code[ql_q4_nibble(a.packed, e)], s_amax[(int)((e - e0) >> a.bs_shift)]);
            if (F32)
                ((float *)out)[q4_dst(a, e)] = v;
            else
                ((uint16_t *)out)[q4_dst(a, e)] = (uint16_t)q4_bf16_bits(v);
        }
    }
}

template <bool F32> static ql_status q4_launch(const q4_args *a, void *out, cudaStream_t stream) {
    constexpr int EPI = F32 ? 4 : 8;
    constexpr int64_t TILE = (int64_t)Q4_THREADS * Q4_ITEMS * EPI;
    const int64_t grid = (a->n + TILE - 1) / TILE;
    if (grid > 0x7fffffff)
        return ql_error(QL_EUNSUPPORTED, "4-bit dequantize: %lld elements is too many for one grid",
                        (long long)a->n);
    const bool vec = ((uintptr_t)out % 16 == 0) && ((uintptr_t)a->packed % (EPI / 2) == 0) &&
                     (a->ldo == a->cols || (a->cols % EPI == 0 && a->ldo % EPI == 0));
    if (vec)
        QL_LAUNCH(((unsigned)grid, Q4_THREADS, 0, stream), k_q4_dequantize<F32, true>)(*a, out);
    else
        QL_LAUNCH(((unsigned)grid, Q4_THREADS, 0, stream), k_q4_dequantize<F32, false>)(*a, out);
    QL_CUDA_TRY(cudaGetLastError());
    return QL_OK;
}

extern "C" ql_status ql_cuda_q4_dequantize(const ql_q4 *w, ql_dtype out_dtype, void *dev_out,
                                           void *stream) {
    return ql_cuda_q4_dequantize_ld(w, out_dtype, dev_out, w->cols, stream);
}

ql_status ql_cuda_q4_dequantize_ld(const ql_q4 *w, ql_dtype out_dtype, void *dev_out, int64_t ldo,
                                   void *stream) {
    if (out_dtype != QL_DT_BF16 && out_dtype != QL_DT_F32)
        return ql_error(QL_EUNSUPPORTED,
                        "4-bit dequantize on CUDA: output dtype %s (BF16 or F32 expected)",
                        ql_dtype_name(out_dtype));
    if (w->rows <= 0 || w->cols <= 0 || w->n != w->rows * w->cols)
        return ql_error(QL_EINVAL, "4-bit dequantize: shape [%lld, %lld] with n = %lld",
                        (long long)w->rows, (long long)w->cols, (long long)w->n);
    if (!ql_q4_blocksize_ok(w->blocksize))
        return ql_error(QL_EINVAL, "4-bit dequantize: block size %d is not one bitsandbytes allows",
                        w->blocksize);
    if (w->n_blocks != (w->n + w->blocksize - 1) / w->blocksize)
        return ql_error(QL_EINVAL, "4-bit dequantize: n_blocks %lld, expected ceil(%lld / %d)",
                        (long long)w->n_blocks, (long long)w->n, w->blocksize);
    if (w->type != QL_QTYPE_NF4 && w->type != QL_QTYPE_FP4)
        return ql_error(QL_EINVAL, "4-bit dequantize: unknown quant type %d", (int)w->type);
    if (ldo < w->cols)
        return ql_error(QL_EINVAL, "4-bit dequantize: output row stride %lld < %lld columns",
                        (long long)ldo, (long long)w->cols);
    if (!dev_out || !w->packed ||
        (w->double_quant ? !w->absmax_q || !w->nested_absmax : !w->absmax))
        return ql_error(QL_EINVAL, "4-bit dequantize: a device buffer is NULL");

    q4_args a;
    memset(&a, 0, sizeof a);
    a.packed = w->packed;
    a.absmax = w->absmax;
    a.absmax_q = w->absmax_q;
    a.nested = w->nested_absmax;
    a.n = w->n;
    a.n_blocks = w->n_blocks;
    a.cols = w->cols;
    a.ldo = ldo;
    a.offset = w->nested_offset;
    a.type = (int)w->type;
    a.dq = w->double_quant ? 1 : 0;
    while ((1 << a.bs_shift) < w->blocksize) a.bs_shift++;
    if (a.dq) memcpy(a.dynmap, w->nested_map, sizeof a.dynmap);

    cudaStream_t s = (cudaStream_t)stream;
    return out_dtype == QL_DT_F32 ? q4_launch<true>(&a, dev_out, s)
                                  : q4_launch<false>(&a, dev_out, s);
}
