/* NF4 / FP4 quantization on the GPU, byte for byte what ql_q4_quantize
 * (kernels/cpu/quant4.c) produces, so that a model can be loaded as float32
 * into device memory and quantized there instead of on the host.
 *
 * Why the bits agree with the host:
 * - absmax of a block is max |x| with fmaxf starting from +0: fmaxf drops a
 *   NaN operand and every operand is >= +0, so the result does not depend on
 *   the order the reduction takes (a shuffle tree here, a loop there).
 * - Each element is scaled by r = 1/absmax (an IEEE division, __fdiv_rn) with
 *   one multiply (__fmul_rn) and encoded by the same nf4.h functions the host
 *   calls; the build has --fmad=false / -ffp-contract=off. Elements past n
 *   are loaded as 0.0f, which is exactly the host's `0.0f * r` for the
 *   nibble that pads an odd element count.
 * - Double quantization subtracts the mean of the float32 absmax, which the
 *   host sums in double in index order, one rounding per addition. That order
 *   is reproduced without a single-thread loop in the usual case: when every
 *   nonzero absmax is a multiple of 2^k and their sum is below 2^(k+53)
 *   (checked from the largest exponent and the block count), every partial
 *   sum in any order is exactly representable, so a parallel sum is the
 *   host's sum bit for bit. Weights that come from bf16 have 8 significant
 *   bits, which leaves 45 bits for the block count and the ratio of the
 *   largest to the smallest nonzero absmax. Otherwise (magnitudes too far
 *   apart, or an infinite absmax) one thread adds them in index order, as
 *   the host does.
 * - The absmax codes use ql_dynmap_encode on the same map; the nested scale is
 *   fmaxf over |absmax - offset| again (order-free) and its reciprocal an
 *   IEEE division.
 *
 * Work split of the main kernel: a CTA of 256 threads takes 4096 consecutive
 * elements, 16 per thread (four float4 loads, one 8-byte store of packed
 * nibbles). Block sizes are powers of two from 32 to 4096, so a tile holds
 * whole blocks and a block is bs/16 consecutive threads: a shuffle reduction
 * within a warp, and through shared memory when a block spans warps. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda_api.h"
#include "kernels/nf4.h"
#include "kernels/quant4.h"

#define QZ_THREADS 256
#define QZ_PER_THREAD 16
#define QZ_TILE (QZ_THREADS * QZ_PER_THREAD)
#define QZ_WARPS (QZ_THREADS / 32)
#define QZ_FULL_MASK 0xffffffffu

/* --- the 4-bit codes and the block absmax ------------------------------------- */

template <bool NF4, bool VEC>
__global__ void __launch_bounds__(QZ_THREADS)
    k_q4_quantize(const float *w, int64_t n, int bs_shift, uint8_t *packed, float *absmax,
                  int64_t n_blocks) {
    __shared__ float s_warp[QZ_WARPS];
    const int tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5;
    const int64_t e0 = (int64_t)blockIdx.x * QZ_TILE + (int64_t)tid * QZ_PER_THREAD;

    float x[QZ_PER_THREAD];
    if (VEC && e0 + QZ_PER_THREAD <= n) {
        const float4 *w4 = (const float4 *)(w + e0);
#pragma unroll
        for (int k = 0; k < QZ_PER_THREAD / 4; k++) {
            float4 v = __ldg(w4 + k);
            x[4 * k] = v.x;
            x[4 * k + 1] = v.y;
            x[4 * k + 2] = v.z;
            x[4 * k + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < QZ_PER_THREAD; k++) x[k] = e0 + k < n ? __ldg(w + e0 + k) : 0.0f;
    }

    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < QZ_PER_THREAD; k++) m = fmaxf(m, fabsf(x[k]));
    /* A block is g = bs/16 consecutive threads, g a power of two >= 2. */
    const int g = 1 << (bs_shift - 4);
    for (int o = 1; o < 32 && o < g; o <<= 1) m = fmaxf(m, __shfl_xor_sync(QZ_FULL_MASK, m, o));
    if (g > 32) {
        if (lane == 0) s_warp[warp] = m;
        __syncthreads();
        const int wpg = g >> 5, first = warp & ~(wpg - 1);
        m = 0.0f;
        for (int i = 0; i < wpg; i++) m = fmaxf(m, s_warp[first + i]);
    }
    const float r = __fdiv_rn(1.0f, m);

    if ((tid & (g - 1)) == 0) {
        const int64_t b = e0 >> bs_shift;
        if (b < n_blocks) absmax[b] = m;
    }

    uint32_t word[2] = {0u, 0u};
#pragma unroll
    for (int j = 0; j < QZ_PER_THREAD / 2; j++) {
        float hi = __fmul_rn(x[2 * j], r), lo = __fmul_rn(x[2 * j + 1], r);
        unsigned c = NF4 ? (ql_nf4_encode(hi) << 4) | ql_nf4_encode(lo)
                         : (ql_fp4_encode(hi) << 4) | ql_fp4_encode(lo);
        word[j >> 2] |= (uint32_t)c << (8 * (j & 3));
    }
    const int64_t p0 = e0 / 2, n_bytes = (n + 1) / 2;
    if (p0 + QZ_PER_THREAD / 2 <= n_bytes) {
        /* p0 is a multiple of 8 and the packed buffer is our own allocation. */
        uint2 v;
        v.x = word[0];
        v.y = word[1];
        *(uint2 *)(packed + p0) = v;
    } else {
        for (int j = 0; j < QZ_PER_THREAD / 2 && p0 + j < n_bytes; j++)
            packed[p0 + j] = (uint8_t)(word[j >> 2] >> (8 * (j & 3)));
    }
}

/* --- double quantization: the mean of absmax ------------------------------------- */

#define DQ_THREADS 256
#define DQ_UNROLL 8
#define DQ_STAGE 2048 /* floats staged in shared memory for the ordered sum */
#define DQ_NONE_LO 100000
#define DQ_NONE_HI (-100000)
#define DQ_INF_HI (1 << 24) /* beyond any DQ_NONE_LO + 53 */

/* For a finite v > 0: lo = the exponent of its lowest set bit (v is a
 * multiple of 2^lo), hi = an exponent with v < 2^hi. Infinity gets a hi no
 * check can pass, so the ordered sum runs (and gives infinity, as the host). */
static __device__ __forceinline__ void dq_exponents(float v, int *lo, int *hi) {
    const uint32_t u = __float_as_uint(v);
    const int be = (int)(u >> 23);
    if (u == 0u) {
        *lo = DQ_NONE_LO;
        *hi = DQ_NONE_HI;
        return;
    }
    if (be == 255) {
        *lo = DQ_NONE_LO;
        *hi = DQ_INF_HI;
        return;
    }
    uint32_t man = u & 0x7fffffu;
    int base = -149;
    if (be > 0) {
        man |= 0x800000u;
        base = be - 150;
    }
    /* man & -man is a power of two below 2^24: its float conversion is exact
     * and its exponent field is the position of the lowest set bit. */
    const float lowbit = (float)(man & (0u - man));
    *lo = base + (int)(__float_as_uint(lowbit) >> 23) - 127;
    *hi = be > 0 ? be - 126 : -126;
}

/* One CTA: writes (float)(Σ absmax[b] in index order, in double / n_blocks)
 * to *offset, exactly as ql_q4_absmax_mean computes it. */
__global__ void __launch_bounds__(DQ_THREADS)
    k_q4_absmax_mean(const float *absmax, int64_t n_blocks, float *offset) {
    __shared__ double s_sum[DQ_THREADS / 32];
    __shared__ int s_lo[DQ_THREADS / 32], s_hi[DQ_THREADS / 32];
    __shared__ int s_exact;
    __shared__ float s_stage[DQ_STAGE];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    double sum = 0.0;
    int lo = DQ_NONE_LO, hi = DQ_NONE_HI;
    for (int64_t c = 0; c < n_blocks; c += (int64_t)DQ_THREADS * DQ_UNROLL) {
        float v[DQ_UNROLL];
#pragma unroll
        for (int u = 0; u < DQ_UNROLL; u++) {
            int64_t b = c + (int64_t)u * DQ_THREADS + tid;
            v[u] = b < n_blocks ? __ldg(absmax + b) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < DQ_UNROLL; u++) {
            int l, h;
            dq_exponents(v[u], &l, &h);
            lo = l < lo ? l : lo;
            hi = h > hi ? h : hi;
            sum = __dadd_rn(sum, (double)v[u]);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        sum = __dadd_rn(sum, __shfl_xor_sync(QZ_FULL_MASK, sum, o));
        int l = __shfl_xor_sync(QZ_FULL_MASK, lo, o), h = __shfl_xor_sync(QZ_FULL_MASK, hi, o);
        lo = l < lo ? l : lo;
        hi = h > hi ? h : hi;
    }
    if (lane == 0) {
        s_sum[warp] = sum;
        s_lo[warp] = lo;
        s_hi[warp] = hi;
    }
    __syncthreads();
    if (tid == 0) {
        double total = 0.0;
        int kmin = DQ_NONE_LO, emax = DQ_NONE_HI;
        for (int i = 0; i < DQ_THREADS / 32; i++) {
            total = __dadd_rn(total, s_sum[i]);
            kmin = s_lo[i] < kmin ? s_lo[i] : kmin;
            emax = s_hi[i] > emax ? s_hi[i] : emax;
        }
        /* n_blocks <= 2^L, every value < 2^emax: the sum is below 2^(emax+L). */
        int L = 0;
        while (((int64_t)1 << L) < n_blocks) L++;
        s_exact = emax == DQ_NONE_HI || emax + L <= kmin + 53;
        if (s_exact) *offset = (float)(total / (double)n_blocks);
    }
    __syncthreads();
    if (s_exact) return; /* the same for every thread of the CTA */

    /* The host's order: staged through shared memory so that the one thread
     * that adds waits on shared, not global, loads. */
    double seq = 0.0;
    for (int64_t c = 0; c < n_blocks; c += DQ_STAGE) {
        const int len = n_blocks - c < DQ_STAGE ? (int)(n_blocks - c) : DQ_STAGE;
        for (int i = tid; i < len; i += DQ_THREADS) s_stage[i] = __ldg(absmax + c + i);
        __syncthreads();
        if (tid == 0)
            for (int i = 0; i < len; i++) seq = __dadd_rn(seq, (double)s_stage[i]);
        __syncthreads();
    }
    if (tid == 0) *offset = (float)(seq / (double)n_blocks);
}

/* --- double quantization: 8-bit codes of absmax - offset ------------------------- */

struct dq_args {
    float dynmap[256];
};

/* One CTA per 256 blocks (QL_NESTED_BLOCKSIZE): nested[g] = max |absmax -
 * offset| over the group, codes = dynmap code of (absmax - offset) / that. */
__global__ void __launch_bounds__(QL_NESTED_BLOCKSIZE)
    k_q4_absmax_codes(const __grid_constant__ dq_args a, const float *absmax, int64_t n_blocks,
                      const float *offset, uint8_t *absmax_q, float *nested) {
    __shared__ float s_map[256];
    __shared__ float s_warp[QL_NESTED_BLOCKSIZE / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    s_map[tid] = a.dynmap[tid];
    const int64_t b = (int64_t)blockIdx.x * QL_NESTED_BLOCKSIZE + tid;
    const bool in = b < n_blocks;
    const float d = in ? __ldg(absmax + b) - __ldg(offset) : 0.0f;
    float m = fmaxf(0.0f, fabsf(d));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(QZ_FULL_MASK, m, o));
    if (lane == 0) s_warp[warp] = m;
    __syncthreads();
    m = 0.0f;
    for (int i = 0; i < QL_NESTED_BLOCKSIZE / 32; i++) m = fmaxf(m, s_warp[i]);
    const float r = __fdiv_rn(1.0f, m);
    if (tid == 0) nested[blockIdx.x] = m;
    if (in) absmax_q[b] = (uint8_t)ql_dynmap_encode(s_map, __fmul_rn(d, r));
}

/* --- host side ------------------------------------------------------------------- */

template <bool NF4>
static void q4_launch_codes(unsigned grid, bool vec, const float *w, int64_t n, int bs_shift,
                            uint8_t *packed, float *absmax, int64_t n_blocks) {
    const cudaStream_t s = (cudaStream_t)0;
    if (vec) {
        QL_LAUNCH((grid, QZ_THREADS, 0, s), k_q4_quantize<NF4, true>)
        (w, n, bs_shift, packed, absmax, n_blocks);
    } else {
        QL_LAUNCH((grid, QZ_THREADS, 0, s), k_q4_quantize<NF4, false>)
        (w, n, bs_shift, packed, absmax, n_blocks);
    }
}

static ql_status q4_quantize_run(const float *dev_w, ql_q4 *q, float *amax, float *offset) {
    int bs_shift = 0;
    while ((1 << bs_shift) < q->blocksize) bs_shift++;
    const int64_t grid = (q->n + QZ_TILE - 1) / QZ_TILE;
    if (grid > 0x7fffffff)
        return ql_error(QL_EUNSUPPORTED, "4-bit quantize on CUDA: %lld elements is too many",
                        (long long)q->n);
    const bool vec = (uintptr_t)dev_w % 16 == 0;
    if (q->type == QL_QTYPE_NF4)
        q4_launch_codes<true>((unsigned)grid, vec, dev_w, q->n, bs_shift, q->packed, amax,
                              q->n_blocks);
    else
        q4_launch_codes<false>((unsigned)grid, vec, dev_w, q->n, bs_shift, q->packed, amax,
                               q->n_blocks);
    QL_CUDA_TRY(cudaGetLastError());
    if (!q->double_quant) return QL_OK;

    QL_LAUNCH((1, DQ_THREADS, 0, (cudaStream_t)0), k_q4_absmax_mean)(amax, q->n_blocks, offset);
    QL_CUDA_TRY(cudaGetLastError());
    dq_args a;
    memcpy(a.dynmap, q->nested_map, sizeof a.dynmap);
    const int64_t groups = ql_q4_nested_blocks(q);
    if (groups > 0x7fffffff)
        return ql_error(QL_EUNSUPPORTED, "4-bit quantize on CUDA: %lld absmax groups is too many",
                        (long long)groups);
    QL_LAUNCH(((unsigned)groups, QL_NESTED_BLOCKSIZE, 0, (cudaStream_t)0), k_q4_absmax_codes)
    (a, amax, q->n_blocks, offset, q->absmax_q, q->nested_absmax);
    QL_CUDA_TRY(cudaGetLastError());
    /* The offset lives in the host struct, as ql_cuda_q4_upload leaves it. */
    return ql_cuda_download(&q->nested_offset, offset, sizeof(float));
}

static ql_status q4_dev_alloc(void **p, size_t bytes, const char *what) {
    ql_status st = ql_cuda_malloc(bytes, p);
    if (st != QL_OK) return ql_error_wrap(st, "4-bit quantize on CUDA: allocating %s: ", what);
    return QL_OK;
}

extern "C" ql_status ql_cuda_q4_quantize(const float *dev_w, int64_t rows, int64_t cols,
                                         ql_qtype type, int blocksize, int double_quant,
                                         ql_q4 *dev_out) {
    if (!dev_out) return ql_error(QL_EINVAL, "4-bit quantize on CUDA: no output given");
    memset(dev_out, 0, sizeof *dev_out);
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols)
        return ql_error(QL_EINVAL, "4-bit quantize on CUDA: shape [%lld, %lld] is not valid",
                        (long long)rows, (long long)cols);
    if (!ql_q4_blocksize_ok(blocksize))
        return ql_error(QL_EINVAL,
                        "4-bit quantize on CUDA: block size %d is not one bitsandbytes allows "
                        "(32, 64, 128, 256, 512, 1024, 2048, 4096)",
                        blocksize);
    if (type != QL_QTYPE_NF4 && type != QL_QTYPE_FP4)
        return ql_error(QL_EINVAL, "4-bit quantize on CUDA: unknown quant type %d", (int)type);
    if (!dev_w) return ql_error(QL_EINVAL, "4-bit quantize on CUDA: the input is NULL");

    ql_q4 q;
    memset(&q, 0, sizeof q);
    q.type = type;
    q.rows = rows;
    q.cols = cols;
    q.n = rows * cols;
    q.blocksize = blocksize;
    q.n_blocks = (q.n + blocksize - 1) / blocksize;
    q.double_quant = double_quant ? 1 : 0;
    q.owns = 0; /* device buffers: ql_cuda_q4_free, never ql_q4_free */

    ql_status st;
    void *p = NULL;
    float *amax = NULL; /* with double quant: float32 absmax, then the offset */
    QL_TRY_GOTO(st, q4_dev_alloc(&p, (size_t)ql_q4_packed_bytes(&q), "the packed codes"), fail);
    q.packed = (uint8_t *)p;
    if (q.double_quant) {
        for (unsigned i = 0; i < 256; i++) q.nested_map[i] = ql_dynmap_value(i);
        QL_TRY_GOTO(st, q4_dev_alloc(&p, (size_t)q.n_blocks, "the absmax codes"), fail);
        q.absmax_q = (uint8_t *)p;
        QL_TRY_GOTO(
            st,
            q4_dev_alloc(&p, (size_t)ql_q4_nested_blocks(&q) * sizeof(float), "the nested absmax"),
            fail);
        q.nested_absmax = (float *)p;
        QL_TRY_GOTO(st, q4_dev_alloc(&p, (size_t)(q.n_blocks + 1) * sizeof(float), "scratch"),
                    fail);
        amax = (float *)p;
        QL_TRY_GOTO(st, q4_quantize_run(dev_w, &q, amax, amax + q.n_blocks), fail);
        ql_cuda_free(amax);
        amax = NULL;
    } else {
        QL_TRY_GOTO(st, q4_dev_alloc(&p, (size_t)q.n_blocks * sizeof(float), "the absmax"), fail);
        q.absmax = (float *)p;
        QL_TRY_GOTO(st, q4_quantize_run(dev_w, &q, q.absmax, NULL), fail);
    }
    *dev_out = q;
    return QL_OK;
fail:
    ql_cuda_free(amax);
    ql_cuda_q4_free(&q);
    return st;
}
