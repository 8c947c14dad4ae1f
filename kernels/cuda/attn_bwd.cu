/* Flash-attention backward on tensor cores, deterministic: no atomics.
 *
 * FA2 accumulates dq across key tiles with atomics; here dq and (dk, dv) are
 * two kernels that each own their outputs, at the cost of computing Q·Kᵀ and
 * dO·Vᵀ twice:
 *
 *   k_attn_dq:   CTA = 64 queries of one head. For each key tile up to the
 *                diagonal: S = Q·Kᵀ, P = exp2(S·scale·log2e − lse·log2e),
 *                dP = dO·Vᵀ, dS = P ⊙ (dP − Dvec), dq += dS·K. dq *= scale.
 *   k_attn_dkdv: CTA = 64 keys of one kv head. For each query head of the
 *                group, for each query tile from the diagonal on: Sᵀ = K·Qᵀ,
 *                Pᵀ, dPᵀ = V·dOᵀ, dSᵀ, dv += Pᵀ·dO, dk += dSᵀ·Q. dk *= scale.
 *
 * Dvec[i] = Σ_d dout_i·out_i comes from k_attn_dvec (attn.cu). Each warp owns
 * 16 rows (queries or keys) of its CTA's outputs and sums in a fixed order. */
#include "kernels/cuda/attn_common.cuh"
#include "kernels/cuda/mma.cuh"

#define AB_THREADS 128
#define AB_ROWS 64 /* queries per dq CTA, keys per dkdv CTA */
#define AB_KT 64   /* key tile of the dq kernel */

/* ------------------------------------------------------------------------------------ dq */

template <int D> static constexpr int adq_smem_bytes() {
    return 4 * 64 * (D + 8) * 2 + 4 * 64 * (int)sizeof(int);
}

template <int D>
__global__ void __launch_bounds__(AB_THREADS)
    k_attn_dq(const attn_geom g, const ql_bf16 *dout, const ql_bf16 *q, const ql_bf16 *k,
              const ql_bf16 *v, const float *lse, const float *dvec, const int32_t *doc,
              ql_bf16 *dq) {
    constexpr int LD = D + 8;
    QL_DYN_SMEM(att_smem);
    ql_bf16 *Qs = (ql_bf16 *)att_smem;
    ql_bf16 *dOs = Qs + AB_ROWS * LD;
    ql_bf16 *Ks = dOs + AB_ROWS * LD;
    ql_bf16 *Vs = Ks + AB_KT * LD;
    int *doc_q = (int *)(Vs + AB_KT * LD);
    int *doc_k = doc_q + AB_ROWS;
    float *lse_s = (float *)(doc_k + AB_KT);
    float *dv_s = lse_s + AB_ROWS;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, cq = lane & 3;
    const int64_t q0 = (int64_t)blockIdx.x * AB_ROWS;
    const int h = blockIdx.y;
    const int64_t b = blockIdx.z;
    const int kvh = h / g.group;
    const int32_t *doc_row = doc ? doc + b * g.S : NULL;
    const int64_t qstride = (int64_t)g.H * D, kstride = (int64_t)g.KV * D;
    const int64_t stat0 = ((int64_t)b * g.H + h) * g.S; /* lse / dvec row of (b, h) */

    attn_load_rows<D, AB_ROWS, AB_THREADS>(Qs, q + attn_row(g, b, 0, g.H, h), qstride, q0, g.S);
    attn_load_rows<D, AB_ROWS, AB_THREADS>(dOs, dout + attn_row(g, b, 0, g.H, h), qstride, q0, g.S);
    attn_load_doc<AB_ROWS, AB_THREADS>(doc_q, doc_row, q0, g.S);
    for (int i = tid; i < AB_ROWS; i += AB_THREADS) {
        const bool in = q0 + i < g.S;
        lse_s[i] = in ? lse[stat0 + q0 + i] * ATT_LOG2E : 0.0f;
        dv_s[i] = in ? dvec[stat0 + q0 + i] : 0.0f;
    }
    __syncthreads();

    const int row0 = warp * 16 + gq;
    const int64_t i0 = q0 + row0, i1 = i0 + 8;
    const int dq0 = doc_q[row0], dq1 = doc_q[row0 + 8];
    const float l0 = lse_s[row0], l1 = lse_s[row0 + 8];
    const float D0 = dv_s[row0], D1 = dv_s[row0 + 8];
    float acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

    const ql_bf16 *kb = k + attn_row(g, b, 0, g.KV, kvh);
    const ql_bf16 *vb = v + attn_row(g, b, 0, g.KV, kvh);
    const int64_t kv_end = q0 + AB_ROWS < g.S ? q0 + AB_ROWS : g.S;
    for (int64_t kv0 = 0; kv0 < kv_end; kv0 += AB_KT) {
        __syncthreads();
        attn_load_rows<D, AB_KT, AB_THREADS>(Ks, kb, kstride, kv0, g.S);
        attn_load_rows<D, AB_KT, AB_THREADS>(Vs, vb, kstride, kv0, g.S);
        attn_load_doc<AB_KT, AB_THREADS>(doc_k, doc_row, kv0, g.S);
        __syncthreads();

        /* S = Q·Kᵀ and dP = dO·Vᵀ: A from Qs / dOs, B from Ks / Vs as [n][k]. */
        float s[AB_KT / 8][4], dp[AB_KT / 8][4];
#pragma unroll
        for (int i = 0; i < AB_KT / 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[4], da[4];
            ql_ldmatrix_x4(qa, Qs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
            ql_ldmatrix_x4(da, dOs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < AB_KT / 16; np++) {
                const int off =
                    (np * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8;
                uint32_t r[4];
                ql_ldmatrix_x4(r, Ks + off);
                ql_mma_bf16(s[2 * np], qa, r[0], r[1]);
                ql_mma_bf16(s[2 * np + 1], qa, r[2], r[3]);
                ql_ldmatrix_x4(r, Vs + off);
                ql_mma_bf16(dp[2 * np], da, r[0], r[1]);
                ql_mma_bf16(dp[2 * np + 1], da, r[2], r[3]);
            }
        }

        /* dS = P ⊙ (dP − Dvec), as bf16 A fragments over keys. */
        uint32_t dsa[AB_KT / 16][4];
#pragma unroll
        for (int kk2 = 0; kk2 < AB_KT / 16; kk2++) {
            float ds[2][4];
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int nt = 2 * kk2 + t;
                    const int col = nt * 8 + 2 * cq + (e & 1);
                    const int64_t j = kv0 + col;
                    const bool hi = e >= 2;
                    const bool vis = attn_visible(hi ? i1 : i0, j, g.S, hi ? dq1 : dq0, doc_k[col]);
                    const float p = vis ? exp2f(s[nt][e] * g.scale_log2 - (hi ? l1 : l0)) : 0.0f;
                    ds[t][e] = p * (dp[nt][e] - (hi ? D1 : D0));
                }
            dsa[kk2][0] = ql_pack_bf16x2(ds[0][0], ds[0][1]);
            dsa[kk2][1] = ql_pack_bf16x2(ds[0][2], ds[0][3]);
            dsa[kk2][2] = ql_pack_bf16x2(ds[1][0], ds[1][1]);
            dsa[kk2][3] = ql_pack_bf16x2(ds[1][2], ds[1][3]);
        }

        /* dq += dS·K: K's fragments from Ks[key][d] read as [k][n]. */
#pragma unroll
        for (int kk2 = 0; kk2 < AB_KT / 16; kk2++)
#pragma unroll
            for (int dp2 = 0; dp2 < D / 16; dp2++) {
                uint32_t r[4];
                ql_ldmatrix_x4_trans(r, Ks + (kk2 * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD +
                                            dp2 * 16 + (lane >> 4) * 8);
                ql_mma_bf16(acc[2 * dp2], dsa[kk2], r[0], r[1]);
                ql_mma_bf16(acc[2 * dp2 + 1], dsa[kk2], r[2], r[3]);
            }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t i = r ? i1 : i0;
        if (i >= g.S) continue;
        ql_bf16 *row = dq + attn_row(g, b, i, g.H, h);
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *(uint32_t *)(row + dt * 8 + 2 * cq) =
                ql_pack_bf16x2(acc[dt][2 * r] * g.scale, acc[dt][2 * r + 1] * g.scale);
    }
}

/* ---------------------------------------------------------------------------------- dk, dv */

template <int D> struct adkv_cfg {
    static constexpr int BQ = D > 64 ? 32 : 64; /* query tile: keeps registers in bounds */
};

template <int D> static constexpr int adkv_smem_bytes() {
    return 2 * 64 * (D + 8) * 2 + 2 * adkv_cfg<D>::BQ * (D + 8) * 2 +
           (64 + 3 * adkv_cfg<D>::BQ) * (int)sizeof(int);
}

template <int D>
__global__ void __launch_bounds__(AB_THREADS)
    k_attn_dkdv(const attn_geom g, const ql_bf16 *dout, const ql_bf16 *q, const ql_bf16 *k,
                const ql_bf16 *v, const float *lse, const float *dvec, const int32_t *doc,
                ql_bf16 *dk, ql_bf16 *dv) {
    constexpr int LD = D + 8;
    constexpr int BQ = adkv_cfg<D>::BQ;
    QL_DYN_SMEM(att_smem);
    ql_bf16 *Ks = (ql_bf16 *)att_smem;
    ql_bf16 *Vs = Ks + AB_ROWS * LD;
    ql_bf16 *Qs = Vs + AB_ROWS * LD;
    ql_bf16 *dOs = Qs + BQ * LD;
    int *doc_k = (int *)(dOs + BQ * LD);
    int *doc_q = doc_k + AB_ROWS;
    float *lse_s = (float *)(doc_q + BQ);
    float *dv_s = lse_s + BQ;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, cq = lane & 3;
    const int64_t kv0 = (int64_t)blockIdx.x * AB_ROWS;
    const int kvh = blockIdx.y;
    const int64_t b = blockIdx.z;
    const int32_t *doc_row = doc ? doc + b * g.S : NULL;
    const int64_t qstride = (int64_t)g.H * D, kstride = (int64_t)g.KV * D;

    attn_load_rows<D, AB_ROWS, AB_THREADS>(Ks, k + attn_row(g, b, 0, g.KV, kvh), kstride, kv0, g.S);
    attn_load_rows<D, AB_ROWS, AB_THREADS>(Vs, v + attn_row(g, b, 0, g.KV, kvh), kstride, kv0, g.S);
    attn_load_doc<AB_ROWS, AB_THREADS>(doc_k, doc_row, kv0, g.S);

    /* This thread's keys (rows of Sᵀ): warp*16 + gq and + 8. */
    const int krow0 = warp * 16 + gq;
    const int64_t j0 = kv0 + krow0, j1 = j0 + 8;
    float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk_acc[i][e] = dv_acc[i][e] = 0.0f;

    for (int hh = 0; hh < g.group; hh++) {
        const int h = kvh * g.group + hh;
        const ql_bf16 *qb = q + attn_row(g, b, 0, g.H, h);
        const ql_bf16 *db = dout + attn_row(g, b, 0, g.H, h);
        const int64_t stat0 = ((int64_t)b * g.H + h) * g.S;
        /* Query tiles that can see a key of this CTA: from the one holding kv0. */
        for (int64_t q0 = kv0 / BQ * BQ; q0 < g.S; q0 += BQ) {
            __syncthreads(); /* previous tile's Qs, dOs, stats no longer read */
            attn_load_rows<D, BQ, AB_THREADS>(Qs, qb, qstride, q0, g.S);
            attn_load_rows<D, BQ, AB_THREADS>(dOs, db, qstride, q0, g.S);
            attn_load_doc<BQ, AB_THREADS>(doc_q, doc_row, q0, g.S);
            for (int i = tid; i < BQ; i += AB_THREADS) {
                const bool in = q0 + i < g.S;
                lse_s[i] = in ? lse[stat0 + q0 + i] * ATT_LOG2E : 0.0f;
                dv_s[i] = in ? dvec[stat0 + q0 + i] : 0.0f;
            }
            __syncthreads();
            const int dk0 = doc_k[krow0], dk1 = doc_k[krow0 + 8];

            /* Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (16 keys x BQ queries per warp):
             * A from Ks / Vs, B from Qs / dOs read as [n][k]. */
            float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
            for (int i = 0; i < BQ / 8; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t ka[4], va[4];
                ql_ldmatrix_x4(ka, Ks + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
                ql_ldmatrix_x4(va, Vs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
                for (int np = 0; np < BQ / 16; np++) {
                    const int off = (np * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 +
                                    ((lane >> 3) & 1) * 8;
                    uint32_t r[4];
                    ql_ldmatrix_x4(r, Qs + off);
                    ql_mma_bf16(st[2 * np], ka, r[0], r[1]);
                    ql_mma_bf16(st[2 * np + 1], ka, r[2], r[3]);
                    ql_ldmatrix_x4(r, dOs + off);
                    ql_mma_bf16(dpt[2 * np], va, r[0], r[1]);
                    ql_mma_bf16(dpt[2 * np + 1], va, r[2], r[3]);
                }
            }

            /* Pᵀ and dSᵀ as bf16 A fragments over queries. Element (key row,
             * query col): rows j0 (e < 2) and j1, query q0 + col. */
            uint32_t pa[BQ / 16][4], dsa[BQ / 16][4];
#pragma unroll
            for (int kk2 = 0; kk2 < BQ / 16; kk2++) {
                float p[2][4], ds[2][4];
#pragma unroll
                for (int t = 0; t < 2; t++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int nt = 2 * kk2 + t;
                        const int col = nt * 8 + 2 * cq + (e & 1);
                        const int64_t i = q0 + col;
                        const bool hi = e >= 2;
                        const bool vis =
                            attn_visible(i, hi ? j1 : j0, g.S, doc_q[col], hi ? dk1 : dk0);
                        const float pv = vis ? exp2f(st[nt][e] * g.scale_log2 - lse_s[col]) : 0.0f;
                        p[t][e] = pv;
                        ds[t][e] = pv * (dpt[nt][e] - dv_s[col]);
                    }
                pa[kk2][0] = ql_pack_bf16x2(p[0][0], p[0][1]);
                pa[kk2][1] = ql_pack_bf16x2(p[0][2], p[0][3]);
                pa[kk2][2] = ql_pack_bf16x2(p[1][0], p[1][1]);
                pa[kk2][3] = ql_pack_bf16x2(p[1][2], p[1][3]);
                dsa[kk2][0] = ql_pack_bf16x2(ds[0][0], ds[0][1]);
                dsa[kk2][1] = ql_pack_bf16x2(ds[0][2], ds[0][3]);
                dsa[kk2][2] = ql_pack_bf16x2(ds[1][0], ds[1][1]);
                dsa[kk2][3] = ql_pack_bf16x2(ds[1][2], ds[1][3]);
            }

            /* dv += Pᵀ·dO, dk += dSᵀ·Q: B from dOs / Qs read as [k][n]. */
#pragma unroll
            for (int kk2 = 0; kk2 < BQ / 16; kk2++)
#pragma unroll
                for (int dp2 = 0; dp2 < D / 16; dp2++) {
                    const int off = (kk2 * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD +
                                    dp2 * 16 + (lane >> 4) * 8;
                    uint32_t r[4];
                    ql_ldmatrix_x4_trans(r, dOs + off);
                    ql_mma_bf16(dv_acc[2 * dp2], pa[kk2], r[0], r[1]);
                    ql_mma_bf16(dv_acc[2 * dp2 + 1], pa[kk2], r[2], r[3]);
                    ql_ldmatrix_x4_trans(r, Qs + off);
                    ql_mma_bf16(dk_acc[2 * dp2], dsa[kk2], r[0], r[1]);
                    ql_mma_bf16(dk_acc[2 * dp2 + 1], dsa[kk2], r[2], r[3]);
                }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t j = r ? j1 : j0;
        if (j >= g.S) continue;
        ql_bf16 *krow = dk + attn_row(g, b, j, g.KV, kvh);
        ql_bf16 *vrow = dv + attn_row(g, b, j, g.KV, kvh);
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            *(uint32_t *)(krow + dt * 8 + 2 * cq) =
                ql_pack_bf16x2(dk_acc[dt][2 * r] * g.scale, dk_acc[dt][2 * r + 1] * g.scale);
            *(uint32_t *)(vrow + dt * 8 + 2 * cq) =
                ql_pack_bf16x2(dv_acc[dt][2 * r], dv_acc[dt][2 * r + 1]);
        }
    }
}

template <int D>
static ql_status ab_launch(const attn_geom &g, const ql_bf16 *dout, const ql_bf16 *q,
                           const ql_bf16 *k, const ql_bf16 *v, const float *lse, const float *dvec,
                           const int32_t *doc, ql_bf16 *dq, ql_bf16 *dk, ql_bf16 *dv) {
    constexpr int smem_dq = adq_smem_bytes<D>(), smem_kv = adkv_smem_bytes<D>();
    static bool configured = false;
    if (!configured) {
        QL_CUDA_TRY(cudaFuncSetAttribute(k_attn_dq<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         smem_dq));
        QL_CUDA_TRY(cudaFuncSetAttribute(k_attn_dkdv<D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem_kv));
        configured = true;
    }
    const unsigned tiles = (unsigned)((g.S + AB_ROWS - 1) / AB_ROWS);
    QL_LAUNCH(
        (dim3(tiles, (unsigned)g.H, (unsigned)g.batch), AB_THREADS, smem_dq, ql_cuda_stream()),
        k_attn_dq<D>)
    (g, dout, q, k, v, lse, dvec, doc, dq);
    QL_CUDA_LAUNCHED();
    QL_LAUNCH(
        (dim3(tiles, (unsigned)g.KV, (unsigned)g.batch), AB_THREADS, smem_kv, ql_cuda_stream()),
        k_attn_dkdv<D>)
    (g, dout, q, k, v, lse, dvec, doc, dk, dv);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

ql_status ql_attn_bwd_tc(const attn_geom &g, const ql_bf16 *dout, const ql_bf16 *q,
                         const ql_bf16 *k, const ql_bf16 *v, const float *lse, const float *dvec,
                         const int32_t *doc, ql_bf16 *dq, ql_bf16 *dk, ql_bf16 *dv) {
    if (g.D == 64) return ab_launch<64>(g, dout, q, k, v, lse, dvec, doc, dq, dk, dv);
    if (g.D == 128) return ab_launch<128>(g, dout, q, k, v, lse, dvec, doc, dq, dk, dv);
    return ql_error(QL_EINTERNAL, "attention backward: no tensor-core kernel for head_dim %d", g.D);
}
