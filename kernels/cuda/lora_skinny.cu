/* The LoRA products that read the branch's input x' = x ⊙ mask, with the
 * mask applied as x is read (kernels/dropout.h), so x' is never written:
 *
 *   xa[T, r]  = alpha · x'·Aᵀ        (forward; A bf16 [rpad, in])
 *   dA[r, in] += alpha · Eᵀ·x'       (backward; E bf16 [T, rpad])
 *
 * Under dropout the composition they replace wrote x' [T, in] in bf16 and
 * read it back in a cuBLASLt GEMM: three passes over x where these take one.
 * Both are skinny (r ≤ 64 columns against in ≥ hundreds), so memory-bound:
 * tensor cores (mma.sync m16n8k16) do the products, the loads are what
 * matter.
 *
 * Deterministic without atomics: the reduction over K is split in a fixed
 * way that depends on the shapes alone (kernels/cuda_lora_plan.c); each block writes its
 * partial sums, reduced over its warps in warp order, to scratch, and
 * k_sum_parts adds the splits in index order. The same shapes give the same
 * bits on any run.
 *
 * Fragment trick: the reduction index of a product can be permuted freely if
 * both operands are permuted alike. So a lane loads 16 contiguous bytes of
 * x's row (8 elements) and hands them to two mma.sync as if they were the
 * fragment's k pairs (2c, 2c+1, 2c+8, 2c+9); A's row is loaded the same way.
 * In the backward the reduction runs over tokens, which the storage puts in
 * different rows: there the *output* index is permuted instead (a lane packs
 * two rows' low halves for one column and their high halves for the next),
 * and the store puts each sum where it belongs. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mma.cuh"

#define SK_WARPS QL_LORA_SKINNY_WARPS /* kernels/cuda_lora_plan.c splits for this many */
#define SK_THREADS (SK_WARPS * 32)

/* Bits of the bf16 pair (x[2j], x[2j+1]) that the mask keeps. */
static __device__ __forceinline__ uint32_t keep_bits(const ql_dropout &d, uint64_t j) {
    const uint64_t u = ql_dropout_draw(d.seed, j);
    return (ql_dropout_keep_half(u, 0, d.thresh) ? 0x0000ffffu : 0u) |
           (ql_dropout_keep_half(u, 1, d.thresh) ? 0xffff0000u : 0u);
}

/* ------------------------------------------------------------------ forward: x'·Aᵀ */

/* Block (tile, split): rows XA_ROWS·tile.., two 16-row MMA tiles, so that
 * each fragment of A (read from L2, as often as x itself at r = 16) serves
 * both; the split's K range; warp w takes the range's 32-wide chunks w,
 * w + 8, .... Partial sums part[split][t][n], the warps' added in warp order. */
#define XA_ROWS QL_LORA_SKINNY_XA_ROWS
#define XA_TILES (XA_ROWS / 16)
template <int NT>
__global__ void k_lora_xa_part(const ql_bf16 *x, const ql_bf16 *A, ql_dropout d, int64_t T,
                               int64_t in, int64_t k_per_split, float *part) {
    __shared__ float red[XA_ROWS][NT * 16];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
    const int64_t t0 = (int64_t)blockIdx.x * XA_ROWS, k_lo = (int64_t)blockIdx.y * k_per_split;
    const int64_t k_hi = k_lo + k_per_split < in ? k_lo + k_per_split : in;
    float acc[XA_TILES][NT][2][4] = {};
    for (int64_t k0 = k_lo + 32 * warp; k0 < k_hi; k0 += 32 * SK_WARPS) {
        const int64_t seg = k0 + 8 * c; /* in % 8 == 0: a segment is in or out whole */
        uint32_t a_lo[XA_TILES][4], a_hi[XA_TILES][4];
        for (int tt = 0; tt < XA_TILES; tt++) {
            uint4 xr[2] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            for (int h = 0; h < 2; h++) {
                const int64_t t = t0 + 16 * tt + g + 8 * h;
                if (seg >= k_hi || t >= T) continue;
                uint4 v = *(const uint4 *)(x + t * in + seg);
                if (d.on) {
                    const uint64_t j = (uint64_t)(t * in + seg) / 2;
                    v.x &= keep_bits(d, j);
                    v.y &= keep_bits(d, j + 1);
                    v.z &= keep_bits(d, j + 2);
                    v.w &= keep_bits(d, j + 3);
                }
                xr[h] = v;
            }
            a_lo[tt][0] = xr[0].x, a_lo[tt][1] = xr[1].x, a_lo[tt][2] = xr[0].y;
            a_lo[tt][3] = xr[1].y;
            a_hi[tt][0] = xr[0].z, a_hi[tt][1] = xr[1].z, a_hi[tt][2] = xr[0].w;
            a_hi[tt][3] = xr[1].w;
        }
        for (int nt = 0; nt < NT; nt++)
            for (int h = 0; h < 2; h++) {
                uint4 b = {0, 0, 0, 0};
                if (seg < k_hi) b = *(const uint4 *)(A + (int64_t)(16 * nt + 8 * h + g) * in + seg);
                for (int tt = 0; tt < XA_TILES; tt++) {
                    ql_mma_bf16(acc[tt][nt][h], a_lo[tt], b.x, b.y);
                    ql_mma_bf16(acc[tt][nt][h], a_hi[tt], b.z, b.w);
                }
            }
    }
    for (int w = 0; w < SK_WARPS; w++) {
        if (warp == w)
            for (int tt = 0; tt < XA_TILES; tt++)
                for (int nt = 0; nt < NT; nt++)
                    for (int h = 0; h < 2; h++)
                        for (int f = 0; f < 4; f++) {
                            const int row = 16 * tt + g + 8 * (f >> 1);
                            const int n = 16 * nt + 8 * h + 2 * c + (f & 1);
                            red[row][n] = (w ? red[row][n] : 0.0f) + acc[tt][nt][h][f];
                        }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < XA_ROWS * NT * 16; e += SK_THREADS) {
        const int row = e / (NT * 16), n = e % (NT * 16);
        if (t0 + row < T) part[((int64_t)blockIdx.y * T + t0 + row) * (NT * 16) + n] = red[row][n];
    }
}

/* ----------------------------------------------------------------- backward: Eᵀ·x' */

/* Two bf16 from the low (high) halves of a and b: (a, b) as one pair. */
static __device__ __forceinline__ uint32_t pack_lo(uint32_t a, uint32_t b) {
    return (a & 0xffffu) | (b << 16);
}
static __device__ __forceinline__ uint32_t pack_hi(uint32_t a, uint32_t b) {
    return (a >> 16) | (b & 0xffff0000u);
}

/* Block (column tile, split): 32 columns i0.. of x', the split's rows; warp
 * w takes the range's 16-row steps w, w + 8, .... The product is computed as
 * P[i, n] = Σ_t x'[t, i]·E[t, n] (M = columns of x, K = tokens). Lane (g, c)
 * loads x's words (columns i0 + 2g, +1) and (i0 + 16 + 2g, +1) of rows
 * k0 + 2c, +1, +8, +9: the low halves make the fragment of the mma whose
 * output rows g, g + 8 are columns i0 + 2g, i0 + 16 + 2g, the high halves the
 * one for columns i0 + 2g + 1, i0 + 17 + 2g. Partial sums
 * part[split][n][i], the warps' added in warp order. */
template <int NT>
__global__ void k_lora_dA_part(const ql_bf16 *E, int64_t lde, const ql_bf16 *x, ql_dropout d,
                               int64_t T, int64_t in, int64_t rows_per_split, float *part) {
    __shared__ float red[NT * 16][32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
    const int64_t i0 = (int64_t)blockIdx.x * 32, t_lo = (int64_t)blockIdx.y * rows_per_split;
    const int64_t t_hi = t_lo + rows_per_split < T ? t_lo + rows_per_split : T;
    float acc[2][2 * NT][4] = {}; /* [low/high halves][n tile of 8][fragment] */
    for (int64_t k0 = t_lo + 16 * warp; k0 < t_hi; k0 += 16 * SK_WARPS) {
        /* rows k0 + 2c, +1, +8, +9 as q = 0..3 */
        uint32_t xw[4][2]; /* [row q][column pair: i0 + 2g, i0 + 16 + 2g] */
        uint16_t ev[4][2 * NT];
        for (int q = 0; q < 4; q++) {
            const int64_t t = k0 + 2 * c + (q & 1) + 8 * (q >> 1);
            for (int p = 0; p < 2; p++) {
                const int64_t i = i0 + 16 * p + 2 * g;
                uint32_t v = 0;
                if (t < t_hi && i < in) {
                    v = *(const uint32_t *)(x + t * in + i);
                    if (d.on) v &= keep_bits(d, (uint64_t)(t * in + i) / 2);
                }
                xw[q][p] = v;
            }
            for (int nb = 0; nb < 2 * NT; nb++) ev[q][nb] = t < t_hi ? E[t * lde + 8 * nb + g] : 0;
        }
        const uint32_t a_lo[4] = {pack_lo(xw[0][0], xw[1][0]), pack_lo(xw[0][1], xw[1][1]),
                                  pack_lo(xw[2][0], xw[3][0]), pack_lo(xw[2][1], xw[3][1])};
        const uint32_t a_hi[4] = {pack_hi(xw[0][0], xw[1][0]), pack_hi(xw[0][1], xw[1][1]),
                                  pack_hi(xw[2][0], xw[3][0]), pack_hi(xw[2][1], xw[3][1])};
        for (int nb = 0; nb < 2 * NT; nb++) {
            const uint32_t b0 = (uint32_t)ev[0][nb] | (uint32_t)ev[1][nb] << 16;
            const uint32_t b1 = (uint32_t)ev[2][nb] | (uint32_t)ev[3][nb] << 16;
            ql_mma_bf16(acc[0][nb], a_lo, b0, b1);
            ql_mma_bf16(acc[1][nb], a_hi, b0, b1);
        }
    }
    /* Output row m = g (+8) of half hh is column i0 + 2g + hh (+16). */
    for (int w = 0; w < SK_WARPS; w++) {
        if (warp == w)
            for (int hh = 0; hh < 2; hh++)
                for (int nb = 0; nb < 2 * NT; nb++)
                    for (int f = 0; f < 4; f++) {
                        const int n = 8 * nb + 2 * c + (f & 1);
                        const int col = 2 * g + hh + 16 * (f >> 1);
                        red[n][col] = (w ? red[n][col] : 0.0f) + acc[hh][nb][f];
                    }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < NT * 16 * 32; e += SK_THREADS) {
        const int n = e / 32, col = e % 32;
        if (i0 + col < in)
            part[((int64_t)blockIdx.y * (NT * 16) + n) * in + i0 + col] = red[n][col];
    }
}

/* ------------------------------------------------------------------ the splits' sum */

/* out[row·ld + col] = (acc ? out[...] : 0) + alpha · Σ_s part[s][row][col]
 * for row < rows, col < cols; split s starts at part + s·pstride, its rows
 * pcols wide. */
__global__ void k_sum_parts(const float *part, int64_t splits, int64_t pstride, int64_t rows,
                            int64_t pcols, int64_t cols, float alpha, int acc, float *out,
                            int64_t ld) {
    const int64_t n = rows * cols;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = e / cols, col = e % cols;
        float s = 0.0f;
        for (int64_t k = 0; k < splits; k++) s += part[k * pstride + row * pcols + col];
        float *o = out + row * ld + col;
        *o = acc ? *o + alpha * s : alpha * s;
    }
}

static ql_status sum_parts(const float *part, int64_t splits, int64_t pstride, int64_t rows,
                           int64_t pcols, int64_t cols, float alpha, int acc, float *out,
                           int64_t ld) {
    QL_LAUNCH((ql_cuda_grid(rows * cols, 256), 256, 0, ql_cuda_stream()), k_sum_parts)
    (part, splits, pstride, rows, pcols, cols, alpha, acc, out, ld);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* ------------------------------------------------------------------------ host side */

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

ql_status ql_cuda_lora_xa(const ql_bf16 *x, const ql_bf16 *A, int64_t rpad, int64_t r,
                          const ql_dropout *d, float alpha, int64_t T, int64_t in, float *xa) {
    if (!ql_cuda_lora_skinny_ok(in, rpad) || r > rpad || !aligned16(x) || !aligned16(A))
        return ql_error(QL_EUNSUPPORTED,
                        "LoRA x·Aᵀ kernel: in %lld, rpad %lld, r %lld or alignment unsupported",
                        (long long)in, (long long)rpad, (long long)r);
    if (T <= 0) return QL_OK;
    int64_t splits;
    const int64_t tiles = (T + XA_ROWS - 1) / XA_ROWS;
    const int64_t per = ql_cuda_lora_split(tiles, in, 32, &splits);
    float *part;
    const size_t bytes = ql_cuda_lora_skinny_scratch(T, in, rpad);
    QL_ASSERT((size_t)(splits * T * rpad) * sizeof(float) <= bytes);
    QL_TRY(ql_cuda_scratch(QL_SCRATCH_LORA_PART, bytes, (void **)&part));
    if (tiles > 0x7fffffff)
        return ql_error(QL_EUNSUPPORTED, "LoRA x·Aᵀ kernel: %lld rows is too many", (long long)T);
    const ql_dropout dd = d ? *d : ql_dropout{0, 0, 0, 1.0f};
    const dim3 grid((unsigned)tiles, (unsigned)splits);
    switch (rpad / 16) {
    case 1:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_xa_part<1>)
        (x, A, dd, T, in, per, part);
        break;
    case 2:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_xa_part<2>)
        (x, A, dd, T, in, per, part);
        break;
    case 3:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_xa_part<3>)
        (x, A, dd, T, in, per, part);
        break;
    default:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_xa_part<4>)
        (x, A, dd, T, in, per, part);
    }
    QL_CUDA_LAUNCHED();
    return sum_parts(part, splits, T * rpad, T, rpad, r, alpha, 0, xa, r);
}

ql_status ql_cuda_lora_dA(const ql_bf16 *E, int64_t lde, const ql_bf16 *x, const ql_dropout *d,
                          float alpha, int64_t r, int64_t rpad, int64_t T, int64_t in, float *dA) {
    if (!ql_cuda_lora_skinny_ok(in, rpad) || r > rpad || lde < rpad || !aligned16(x))
        return ql_error(QL_EUNSUPPORTED,
                        "LoRA Eᵀ·x kernel: in %lld, rpad %lld, r %lld or alignment unsupported",
                        (long long)in, (long long)rpad, (long long)r);
    if (T <= 0) return QL_OK;
    int64_t splits;
    const int64_t per = ql_cuda_lora_split((in + 31) / 32, T, 16, &splits);
    float *part;
    const size_t bytes = ql_cuda_lora_skinny_scratch(T, in, rpad);
    QL_ASSERT((size_t)(splits * rpad * in) * sizeof(float) <= bytes);
    QL_TRY(ql_cuda_scratch(QL_SCRATCH_LORA_PART, bytes, (void **)&part));
    const ql_dropout dd = d ? *d : ql_dropout{0, 0, 0, 1.0f};
    const dim3 grid((unsigned)((in + 31) / 32), (unsigned)splits);
    switch (rpad / 16) {
    case 1:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_dA_part<1>)
        (E, lde, x, dd, T, in, per, part);
        break;
    case 2:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_dA_part<2>)
        (E, lde, x, dd, T, in, per, part);
        break;
    case 3:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_dA_part<3>)
        (E, lde, x, dd, T, in, per, part);
        break;
    default:
        QL_LAUNCH((grid, SK_THREADS, 0, ql_cuda_stream()), k_lora_dA_part<4>)
        (E, lde, x, dd, T, in, per, part);
    }
    QL_CUDA_LAUNCHED();
    return sum_parts(part, splits, rpad * in, r, in, in, alpha, 1, dA, in);
}
