/* Flash-attention forward on tensor cores (mma.sync m16n8k16, bf16 in, fp32
 * accumulate), never materialising the S x S score matrix.
 *
 * One CTA = 64 queries of one head of one batch row; 4 warps, each owning 16
 * query rows for the whole pass. For each 64-key tile up to the diagonal:
 * S = Q·Kᵀ (fp32), scale and mask (causal, document, sequence end), online
 * softmax in the exp2 domain (running max m and per-thread partial row sums
 * l), P rounded to bf16 and O += P·V. K and V tiles pass through shared
 * memory; Q stays in registers as A fragments. At the end O / l is written in
 * bf16 and lse = (m + log2 l)·ln 2.
 *
 * Every output is a fixed-order sequence of operations of one warp (keys in
 * ascending tiles), so the result is deterministic. */
#include "kernels/cuda/attn_common.cuh"
#include "kernels/cuda/mma.cuh"

#define AF_BQ 64
#define AF_BK 64
#define AF_THREADS 128

template <int D> static constexpr int af_smem_bytes() {
    return 3 * 64 * (D + 8) * 2 + 2 * 64 * (int)sizeof(int);
}

template <int D>
__global__ void __launch_bounds__(AF_THREADS)
    k_attn_fwd(const attn_geom g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
               const int32_t *doc, ql_bf16 *out, float *lse) {
    constexpr int LD = D + 8;
    QL_DYN_SMEM(att_smem);
    ql_bf16 *Qs = (ql_bf16 *)att_smem;
    ql_bf16 *Ks = Qs + AF_BQ * LD;
    ql_bf16 *Vs = Ks + AF_BK * LD;
    int *doc_q = (int *)(Vs + AF_BK * LD);
    int *doc_k = doc_q + AF_BQ;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, cq = lane & 3;
    const int64_t q0 = (int64_t)blockIdx.x * AF_BQ;
    const int h = blockIdx.y;
    const int64_t b = blockIdx.z;
    const int kvh = h / g.group;
    const int32_t *doc_row = doc ? doc + b * g.S : NULL;
    const ql_bf16 *qb = q + attn_row(g, b, 0, g.H, h);
    const ql_bf16 *kb = k + attn_row(g, b, 0, g.KV, kvh);
    const ql_bf16 *vb = v + attn_row(g, b, 0, g.KV, kvh);
    const int64_t qstride = (int64_t)g.H * D, kstride = (int64_t)g.KV * D;

    attn_load_rows<D, AF_BQ, AF_THREADS>(Qs, qb, qstride, q0, g.S);
    attn_load_doc<AF_BQ, AF_THREADS>(doc_q, doc_row, q0, g.S);
    __syncthreads();

    /* Q fragments of this warp's 16 rows, for each 16-wide slice of D. */
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ql_ldmatrix_x4(qf[kk], Qs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);

    /* Rows of this thread: r[0] = warp*16 + gq, r[1] = r[0] + 8. */
    const int row0 = warp * 16 + gq;
    const int64_t i0 = q0 + row0, i1 = i0 + 8;
    const int dq0 = doc_q[row0], dq1 = doc_q[row0 + 8];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;

    const int64_t kv_end = q0 + AF_BQ < g.S ? q0 + AF_BQ : g.S; /* causal */
    for (int64_t kv0 = 0; kv0 < kv_end; kv0 += AF_BK) {
        __syncthreads(); /* the previous tile's K, V are no longer read */
        attn_load_rows<D, AF_BK, AF_THREADS>(Ks, kb, kstride, kv0, g.S);
        attn_load_rows<D, AF_BK, AF_THREADS>(Vs, vb, kstride, kv0, g.S);
        attn_load_doc<AF_BK, AF_THREADS>(doc_k, doc_row, kv0, g.S);
        __syncthreads();

        /* S = Q·Kᵀ: 8 tiles of 16 x 8 (keys 8 nt ..). Kᵀ's fragments come from
         * Ks[key][d] read as [n][k]. */
        float s[AF_BK / 8][4];
#pragma unroll
        for (int i = 0; i < AF_BK / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < AF_BK / 16; np++) {
                uint32_t r[4];
                ql_ldmatrix_x4(r, Ks + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 +
                                      ((lane >> 3) & 1) * 8);
                ql_mma_bf16(s[2 * np], qf[kk], r[0], r[1]);
                ql_mma_bf16(s[2 * np + 1], qf[kk], r[2], r[3]);
            }

        /* Scale, mask, and the tile's row maxima. */
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < AF_BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = nt * 8 + 2 * cq + (e & 1);
                const int64_t j = kv0 + col;
                const bool vis = e < 2 ? attn_visible(i0, j, g.S, dq0, doc_k[col])
                                       : attn_visible(i1, j, g.S, dq1, doc_k[col]);
                const float x = vis ? s[nt][e] * g.scale_log2 : -INFINITY;
                s[nt][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        float alpha[2], mu[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]);
            mu[r] = mn == -INFINITY ? 0.0f : mn; /* nothing visible yet: keep exp2 finite */
            alpha[r] = exp2f(m[r] - mu[r]);      /* 0 when m was -inf */
            m[r] = mn;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= alpha[0];
            o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1];
            o[dt][3] *= alpha[1];
        }

        /* P = exp2(s − m) as bf16 A fragments (C layout of keys 16 kk2 .. is
         * the A layout of a 16-wide k slice), and this thread's row sums. */
        uint32_t pa[AF_BK / 16][4];
#pragma unroll
        for (int kk2 = 0; kk2 < AF_BK / 16; kk2++) {
            float p[2][4];
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    p[t][e] = exp2f(s[2 * kk2 + t][e] - mu[e >> 1]);
                    l[e >> 1] += p[t][e];
                }
            pa[kk2][0] = ql_pack_bf16x2(p[0][0], p[0][1]);
            pa[kk2][1] = ql_pack_bf16x2(p[0][2], p[0][3]);
            pa[kk2][2] = ql_pack_bf16x2(p[1][0], p[1][1]);
            pa[kk2][3] = ql_pack_bf16x2(p[1][2], p[1][3]);
        }

        /* O += P·V: V's fragments from Vs[key][d] read as [k][n] (transposed). */
#pragma unroll
        for (int kk2 = 0; kk2 < AF_BK / 16; kk2++)
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t r[4];
                ql_ldmatrix_x4_trans(r, Vs + (kk2 * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD +
                                            dp * 16 + (lane >> 4) * 8);
                ql_mma_bf16(o[2 * dp], pa[kk2], r[0], r[1]);
                ql_mma_bf16(o[2 * dp + 1], pa[kk2], r[2], r[3]);
            }
    }

    /* Row sums over the quad (a butterfly: both lanes add the same pair). */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t i = r ? i1 : i0;
        if (i >= g.S) continue;
        const float inv = 1.0f / l[r];
        ql_bf16 *orow = out + attn_row(g, b, i, g.H, h);
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *(uint32_t *)(orow + dt * 8 + 2 * cq) =
                ql_pack_bf16x2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
        if (cq == 0) lse[((int64_t)b * g.H + h) * g.S + i] = (m[r] + log2f(l[r])) * ATT_LN2;
    }
}

template <int D>
static ql_status af_launch(const attn_geom &g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
                           const int32_t *doc, ql_bf16 *out, float *lse) {
    constexpr int smem = af_smem_bytes<D>();
    static bool configured = false;
    if (!configured) {
        QL_CUDA_TRY(
            cudaFuncSetAttribute(k_attn_fwd<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        configured = true;
    }
    dim3 grid((unsigned)((g.S + AF_BQ - 1) / AF_BQ), (unsigned)g.H, (unsigned)g.batch);
    QL_LAUNCH((grid, AF_THREADS, smem, ql_cuda_stream()), k_attn_fwd<D>)(g, q, k, v, doc, out, lse);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

ql_status ql_attn_fwd_tc(const attn_geom &g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
                         const int32_t *doc, ql_bf16 *out, float *lse) {
    if (g.D == 64) return af_launch<64>(g, q, k, v, doc, out, lse);
    if (g.D == 128) return af_launch<128>(g, q, k, v, doc, out, lse);
    return ql_error(QL_EINTERNAL, "attention: no tensor-core kernel for head_dim %d", g.D);
}
