/* The fused 4-bit GEMM: a bf16 tensor-core GEMM (mma.sync m16n8k16, fp32
 * accumulators) whose main loop reads the NF4/FP4 weight (with or without
 * double quant) and decodes it into shared memory tile by tile, so W is never
 * materialised as a bf16 matrix. After the K1 columns of the base product it
 * runs Ke more columns from a bf16 pair E, F: the LoRA term as extra K
 * columns, [X | E]·[W ; F] (see cuda_ops.h, ql_q4_gemm_args).
 *
 *   fwd (KN = false): C[M, out] = X[M, in]·Wᵀ + E·Fᵀ; the W tile is [n][k]
 *   bwd (KN = true):  C[M, in]  = X[M, out]·W + E·F;  the W tile is [k][n]
 * In both cases the tile is a plain row-major block of W (rows = out, cols =
 * in); only its role differs, and the bwd B fragments come from ldmatrix.trans.
 *
 * Tiles: CTA 128 (M) x 128 (N) x 32 (K), 8 warps as 2 (M) x 4 (N), each warp
 * 64 x 32 = 4 x 4 mma tiles. Two shared-memory buffers; the next tile's
 * global loads are issued into registers before the current tile's mma and
 * written (decoded) to the other buffer after it, one barrier per tile.
 *
 * Decoding is the dequantize kernel's arithmetic: code[nibble] · absmax as one
 * float32 multiply (absmax = dyn[q] · nested + offset with double quant, two
 * roundings), rounded to bf16 to nearest even. So this kernel multiplies
 * exactly the bf16 W that ql_cuda_q4_dequantize produces.
 *
 * FAST (chosen per launch): every row length and stride a multiple of 16
 * elements and 16-byte aligned buffers; then activations move as 16-byte
 * vectors and W as 8-byte words of 16 nibbles inside one quantization block.
 * Otherwise every element is loaded alone with its own bounds check and its
 * own block lookup (any shape works).
 *
 * Determinism: every output element is the sum of its K products in a fixed
 * order (one warp's mma chain), no split-K, no atomics. */
#include <string.h>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/nf4.h"

#define G_BM 128
#define G_BN 128
#define G_BK 32
#define G_THREADS 256
#define G_PAD 8                     /* bf16 of padding per smem row: no ldmatrix bank conflicts */
#define G_LDA (G_BK + G_PAD)        /* As row: 40 bf16 = 80 bytes */
#define G_LDB_NK (G_BK + G_PAD)     /* [n][k] row */
#define G_LDB_KN (G_BN + G_PAD)     /* [k][n] row: 136 bf16 = 272 bytes */
#define G_B_ELEMS (G_BN * G_LDB_NK) /* >= G_BK * G_LDB_KN (5120 vs 4352) */

struct q4g_params {
    /* W */
    const uint8_t *packed;
    const float *absmax;
    const uint8_t *absmax_q;
    const float *nested;
    float offset;
    int bs_shift;
    int type;
    int dq;
    int64_t rows, cols;
    /* operands */
    int64_t M, N, K1, Ke;
    const ql_bf16 *X;
    int64_t ldx;
    const ql_bf16 *E;
    int64_t lde;
    const ql_bf16 *F;
    int64_t ldf;
    ql_dropout drop;
    ql_bf16 *C;
    int64_t ldc;
    int c_pairs; /* ldc even and C 4-byte aligned: store bf16 pairs */
    float dynmap[256];
};

/* What one thread carries from the global loads of a tile to its shared
 * memory stores: 16 bf16 of the A tile and 16 of the B tile (as 8 words), or
 * for a FAST weight tile 16 nibbles (b[0], b[1]) and their absmax. */
struct q4g_stage {
    uint32_t a[8];
    uint32_t b[8];
    float amax;
};

static __device__ __forceinline__ float q4g_absmax(const q4g_params &p, int64_t blk) {
    if (p.dq) {
        float code = p.dynmap[__ldg(p.absmax_q + blk)];
        return __fadd_rn(__fmul_rn(code, __ldg(p.nested + blk / QL_NESTED_BLOCKSIZE)), p.offset);
    }
    return __ldg(p.absmax + blk);
}

/* Weight element (r, c), decoded, as bf16 bits; 0 outside the matrix. */
static __device__ __forceinline__ uint32_t q4g_w_elem(const q4g_params &p, const float *s_code,
                                                      int64_t r, int64_t c) {
    if (r >= p.rows || c >= p.cols) return 0;
    const int64_t e = r * p.cols + c;
    const uint8_t byte = __ldg(p.packed + (e >> 1));
    const unsigned code = (e & 1) ? (byte & 15u) : (unsigned)(byte >> 4);
    return ql_bf16_bits(__fmul_rn(s_code[code], q4g_absmax(p, e >> p.bs_shift)));
}

static __device__ __forceinline__ uint32_t q4g_bf16_elem(const ql_bf16 *P, int64_t ld, int64_t rows,
                                                         int64_t cols, int64_t r, int64_t c) {
    return (r < rows && c < cols) ? (uint32_t)P[r * ld + c] : 0u;
}

/* A bf16 tile of TR x TC elements (TR * TC = 4096) at (r0, c0) of P[rows, cols]
 * into 8 words: FAST as two 16-byte vectors (vector v = tid + 256 i covers row
 * v / (TC/8), columns 8 (v % (TC/8)) ..), else 16 single elements (element
 * j = tid + 256 i at row j / TC, column j % TC). */
template <int TC, bool FAST>
static __device__ __forceinline__ void q4g_load_bf16(uint32_t (&w)[8], const ql_bf16 *P, int64_t ld,
                                                     int64_t rows, int64_t cols, int64_t r0,
                                                     int64_t c0) {
    const int tid = threadIdx.x;
    if (FAST) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int v = tid + G_THREADS * i;
            const int64_t r = r0 + v / (TC / 8), c = c0 + (v % (TC / 8)) * 8;
            uint4 q = make_uint4(0, 0, 0, 0);
            if (r < rows && c < cols) q = __ldg((const uint4 *)(P + r * ld + c));
            w[4 * i + 0] = q.x;
            w[4 * i + 1] = q.y;
            w[4 * i + 2] = q.z;
            w[4 * i + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int j0 = tid + G_THREADS * (2 * i), j1 = j0 + G_THREADS;
            uint32_t lo = q4g_bf16_elem(P, ld, rows, cols, r0 + j0 / TC, c0 + j0 % TC);
            uint32_t hi = q4g_bf16_elem(P, ld, rows, cols, r0 + j1 / TC, c0 + j1 % TC);
            w[i] = lo | (hi << 16);
        }
    }
}

/* The counterpart of q4g_load_bf16: the same element positions, into s[TR][LD]. */
template <int TC, int LD, bool FAST>
static __device__ __forceinline__ void q4g_store_bf16(const uint32_t (&w)[8], ql_bf16 *s) {
    const int tid = threadIdx.x;
    if (FAST) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int v = tid + G_THREADS * i;
            *(uint4 *)(s + (v / (TC / 8)) * LD + (v % (TC / 8)) * 8) =
                make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int j0 = tid + G_THREADS * (2 * i), j1 = j0 + G_THREADS;
            s[(j0 / TC) * LD + j0 % TC] = (ql_bf16)(w[i] & 0xffffu);
            s[(j1 / TC) * LD + j1 % TC] = (ql_bf16)(w[i] >> 16);
        }
    }
}

/* Weight tile: TR x TC elements of W at (r0, c0). FAST: thread tid takes 16
 * consecutive elements, row tid / (TC/16), columns 16 (tid % (TC/16)) ..; the
 * 16 nibbles are one aligned 8-byte word inside one quantization block
 * (cols % 16 == 0 and block sizes are multiples of 32). Otherwise the
 * elements of q4g_load_bf16's scalar order, decoded now. */
template <int TC, bool FAST>
static __device__ __forceinline__ void q4g_load_w(q4g_stage &st, const q4g_params &p,
                                                  const float *s_code, int64_t r0, int64_t c0) {
    const int tid = threadIdx.x;
    if (FAST) {
        const int64_t r = r0 + tid / (TC / 16), c = c0 + (tid % (TC / 16)) * 16;
        st.b[0] = st.b[1] = 0;
        st.amax = 0.0f;
        if (r < p.rows && c < p.cols) {
            const int64_t e = r * p.cols + c;
            const uint2 q = __ldg((const uint2 *)(p.packed + (e >> 1)));
            st.b[0] = q.x;
            st.b[1] = q.y;
            st.amax = q4g_absmax(p, e >> p.bs_shift);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int j0 = tid + G_THREADS * (2 * i), j1 = j0 + G_THREADS;
            uint32_t lo = q4g_w_elem(p, s_code, r0 + j0 / TC, c0 + j0 % TC);
            uint32_t hi = q4g_w_elem(p, s_code, r0 + j1 / TC, c0 + j1 % TC);
            st.b[i] = lo | (hi << 16);
        }
    }
}

template <int TC, int LD, bool FAST>
static __device__ __forceinline__ void q4g_store_w(const q4g_stage &st, const float *s_code,
                                                   ql_bf16 *s) {
    if (FAST) {
        const int tid = threadIdx.x;
        uint32_t out[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            /* byte k of the 8: elements 2k (high nibble) and 2k + 1 (low). */
            const uint32_t byte = (st.b[k >> 2] >> (8 * (k & 3))) & 0xffu;
            const float lo = __fmul_rn(s_code[byte >> 4], st.amax);
            const float hi = __fmul_rn(s_code[byte & 15u], st.amax);
            out[k] = ql_pack_bf16x2(lo, hi);
        }
        ql_bf16 *dst = s + (tid / (TC / 16)) * LD + (tid % (TC / 16)) * 16;
        *(uint4 *)dst = make_uint4(out[0], out[1], out[2], out[3]);
        *(uint4 *)(dst + 8) = make_uint4(out[4], out[5], out[6], out[7]);
    } else {
        q4g_store_bf16<TC, LD, false>(st.b, s);
    }
}

/* Global loads of k-tile kt (phase 1: X and W; phase 2: E and F). */
template <bool KN, bool FAST>
static __device__ __forceinline__ void q4g_load(q4g_stage &st, const q4g_params &p,
                                                const float *s_code, int kt, int nt1, int64_t m0,
                                                int64_t n0) {
    if (kt < nt1) {
        const int64_t k0 = (int64_t)kt * G_BK;
        q4g_load_bf16<G_BK, FAST>(st.a, p.X, p.ldx, p.M, p.K1, m0, k0);
        if (KN)
            q4g_load_w<G_BN, FAST>(st, p, s_code, k0, n0); /* rows k (out), cols n (in) */
        else
            q4g_load_w<G_BK, FAST>(st, p, s_code, n0, k0); /* rows n (out), cols k (in) */
    } else {
        const int64_t k0 = (int64_t)(kt - nt1) * G_BK;
        q4g_load_bf16<G_BK, FAST>(st.a, p.E, p.lde, p.M, p.Ke, m0, k0);
        if (KN)
            q4g_load_bf16<G_BN, FAST>(st.b, p.F, p.ldf, p.Ke, p.N, k0, n0); /* F [Ke, N] */
        else
            q4g_load_bf16<G_BK, FAST>(st.b, p.F, p.ldf, p.N, p.Ke, n0, k0); /* F [N, Ke] */
    }
}

template <bool KN, bool FAST>
static __device__ __forceinline__ void q4g_store(const q4g_stage &st, const float *s_code, int kt,
                                                 int nt1, ql_bf16 *sA, ql_bf16 *sB) {
    q4g_store_bf16<G_BK, G_LDA, FAST>(st.a, sA);
    if (kt < nt1) {
        if (KN)
            q4g_store_w<G_BN, G_LDB_KN, FAST>(st, s_code, sB);
        else
            q4g_store_w<G_BK, G_LDB_NK, FAST>(st, s_code, sB);
    } else {
        if (KN)
            q4g_store_bf16<G_BN, G_LDB_KN, FAST>(st.b, sB);
        else
            q4g_store_bf16<G_BK, G_LDB_NK, FAST>(st.b, sB);
    }
}

/* acc += the warp's 64 x 32 block of sA·sB over the tile's 32 k. */
template <bool KN>
static __device__ __forceinline__ void q4g_mma_tile(float (&acc)[4][4][4], const ql_bf16 *sA,
                                                    const ql_bf16 *sB, int wm, int wn) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int ks = 0; ks < G_BK / 16; ks++) {
        uint32_t a[4][4], b[4][2];
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
            ql_ldmatrix_x4(a[mt], sA + (wm * 64 + mt * 16 + (lane & 15)) * G_LDA + ks * 16 +
                                      (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 2; np++) {
            uint32_t r[4];
            if (KN) /* sB[k][n]: matrix j = lane/8 holds k 8(j%2).., n 8(j/2).. */
                ql_ldmatrix_x4_trans(
                    r, sB + (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * G_LDB_KN + wn * 32 +
                           np * 16 + (lane >> 4) * 8);
            else /* sB[n][k]: matrix j holds n 8(j/2).., k 8(j%2).. */
                ql_ldmatrix_x4(r,
                               sB + (wn * 32 + np * 16 + (lane & 7) + (lane >> 4) * 8) * G_LDB_NK +
                                   ks * 16 + ((lane >> 3) & 1) * 8);
            b[2 * np][0] = r[0];
            b[2 * np][1] = r[1];
            b[2 * np + 1][0] = r[2];
            b[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++) ql_mma_bf16(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
}

template <bool KN, bool DROP, bool FAST>
__global__ void __launch_bounds__(G_THREADS) k_q4_gemm(const __grid_constant__ q4g_params p) {
    __shared__ __align__(16) ql_bf16 sA[2][G_BM * G_LDA];
    __shared__ __align__(16) ql_bf16 sB[2][G_B_ELEMS];
    __shared__ float s_code[16];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int64_t m0 = (int64_t)blockIdx.y * G_BM, n0 = (int64_t)blockIdx.x * G_BN;
    const int nt1 = (int)((p.K1 + G_BK - 1) / G_BK);
    const int nt = nt1 + (int)((p.Ke + G_BK - 1) / G_BK);

    if (tid < 16) s_code[tid] = ql_q4_value((ql_qtype)p.type, (unsigned)tid);
    __syncthreads();

    /* acc2: the LoRA term kept apart under dropout (unused, and removed by
     * the compiler, otherwise). */
    float acc[4][4][4], acc2[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[i][j][k] = 0.0f;
    if (DROP) {
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int k = 0; k < 4; k++) acc2[i][j][k] = 0.0f;
    }

    q4g_stage st;
    q4g_load<KN, FAST>(st, p, s_code, 0, nt1, m0, n0);
    q4g_store<KN, FAST>(st, s_code, 0, nt1, sA[0], sB[0]);
    __syncthreads();
    for (int kt = 0; kt < nt; kt++) {
        const int buf = kt & 1;
        if (kt + 1 < nt) q4g_load<KN, FAST>(st, p, s_code, kt + 1, nt1, m0, n0);
        if (DROP && kt >= nt1)
            q4g_mma_tile<KN>(acc2, sA[buf], sB[buf], wm, wn);
        else
            q4g_mma_tile<KN>(acc, sA[buf], sB[buf], wm, wn);
        if (kt + 1 < nt) q4g_store<KN, FAST>(st, s_code, kt + 1, nt1, sA[buf ^ 1], sB[buf ^ 1]);
        __syncthreads();
    }

    /* Epilogue: c0,c1 at (g, 2c..), c2,c3 at (g + 8, 2c..) of each 16x8 tile. */
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int64_t m = m0 + wm * 64 + mt * 16 + g + half * 8;
            if (m >= p.M) continue;
#pragma unroll
            for (int nt_ = 0; nt_ < 4; nt_++) {
                const int64_t n = n0 + wn * 32 + nt_ * 8 + 2 * c;
                float v0 = acc[mt][nt_][2 * half], v1 = acc[mt][nt_][2 * half + 1];
                if (DROP) {
                    const unsigned k = ql_dropout_keep2(p.drop.seed, p.drop.thresh, m * p.N + n);
                    if (n < p.N && (k & 1)) v0 += acc2[mt][nt_][2 * half] * p.drop.scale;
                    if (n + 1 < p.N && (k & 2)) v1 += acc2[mt][nt_][2 * half + 1] * p.drop.scale;
                }
                ql_bf16 *out = p.C + m * p.ldc + n;
                if (n + 1 < p.N && p.c_pairs) {
                    *(uint32_t *)out = ql_pack_bf16x2(v0, v1);
                } else {
                    if (n < p.N) out[0] = ql_bf16_bits(v0);
                    if (n + 1 < p.N) out[1] = ql_bf16_bits(v1);
                }
            }
        }
}

template <bool KN, bool DROP, bool FAST> static ql_status q4g_launch(const q4g_params &p) {
    const int64_t gx = (p.N + G_BN - 1) / G_BN, gy = (p.M + G_BM - 1) / G_BM;
    if (gx > 0x7fffffff || gy > 65535)
        return ql_error(QL_EUNSUPPORTED, "fused 4-bit GEMM: %lld tokens x %lld outputs is too many",
                        (long long)p.M, (long long)p.N);
    QL_LAUNCH((dim3((unsigned)gx, (unsigned)gy), G_THREADS, 0, ql_cuda_stream()),
              k_q4_gemm<KN, DROP, FAST>)
    (p);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

ql_status ql_cuda_q4_gemm(const ql_q4_gemm_args *a) {
    const ql_q4 *w = a->w;
    QL_ASSERT(w->rows > 0 && w->cols > 0 && a->M >= 0 && a->Ke >= 0);
    QL_ASSERT(ql_q4_blocksize_ok(w->blocksize) && w->blocksize >= 32);
    if (a->M == 0) return QL_OK;
    q4g_params p;
    memset(&p, 0, sizeof p);
    p.packed = w->packed;
    p.absmax = w->absmax;
    p.absmax_q = w->absmax_q;
    p.nested = w->nested_absmax;
    p.offset = w->nested_offset;
    while ((1 << p.bs_shift) < w->blocksize) p.bs_shift++;
    p.type = (int)w->type;
    p.dq = w->double_quant ? 1 : 0;
    if (p.dq) memcpy(p.dynmap, w->nested_map, sizeof p.dynmap);
    p.rows = w->rows;
    p.cols = w->cols;
    p.M = a->M;
    p.N = a->kn ? w->cols : w->rows;
    p.K1 = a->kn ? w->rows : w->cols;
    p.Ke = a->E && a->F ? a->Ke : 0;
    p.X = a->X;
    p.ldx = a->ldx;
    p.E = a->E;
    p.lde = a->lde;
    p.F = a->F;
    p.ldf = a->ldf;
    p.drop = a->drop;
    p.C = a->C;
    p.ldc = a->ldc;
    p.c_pairs = a->ldc % 2 == 0 && ((uintptr_t)a->C & 3u) == 0;

    const bool fast = w->rows % 16 == 0 && w->cols % 16 == 0 && ((uintptr_t)w->packed & 7u) == 0 &&
                      p.ldx % 8 == 0 && aligned16(p.X) &&
                      (p.Ke == 0 || (p.Ke % 8 == 0 && p.lde % 8 == 0 && p.ldf % 8 == 0 &&
                                     aligned16(p.E) && aligned16(p.F)));
    const bool drop = a->kn && a->drop.on && p.Ke > 0;
    if (!a->kn)
        return fast ? q4g_launch<false, false, true>(p) : q4g_launch<false, false, false>(p);
    if (drop) return fast ? q4g_launch<true, true, true>(p) : q4g_launch<true, true, false>(p);
    return fast ? q4g_launch<true, false, true>(p) : q4g_launch<true, false, false>(p);
}
