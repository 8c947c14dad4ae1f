/* Shared by the attention kernels (attn_fwd.cu, attn_bwd.cu, attn_simt.cu,
 * attn.cu): geometry, the visibility rule and tile loads.
 *
 * Layouts (kernels/backend.h): q, out, dout, dq [batch, seq, n_heads, D];
 * k, v, dk, dv [batch, seq, n_kv, D]; lse and the backward's D-vector
 * [batch, n_heads, seq]; doc [batch * seq]. Query head h reads kv head
 * h / (n_heads / n_kv). Key j is visible to query i iff j <= i and, with doc,
 * doc[j] == doc[i] (same batch row). */
#ifndef QL_ATTN_COMMON_CUH
#define QL_ATTN_COMMON_CUH

#include "kernels/cuda/cuda_ops.h"

#define ATT_LOG2E 1.4426950408889634f
#define ATT_LN2 0.6931471805599453f

struct attn_geom {
    int64_t batch, S;
    int H, KV, group, D;
    float scale;      /* 1 / sqrt(D) */
    float scale_log2; /* scale · log2(e): scores in the exp2 domain */
};

static inline attn_geom attn_geom_of(const ql_attn_shape *s) {
    attn_geom g;
    g.batch = s->batch;
    g.S = s->seq;
    g.H = s->n_heads;
    g.KV = s->n_kv_heads;
    g.group = s->n_heads / s->n_kv_heads;
    g.D = s->head_dim;
    g.scale = (float)(1.0 / sqrt((double)s->head_dim));
    g.scale_log2 = g.scale * ATT_LOG2E;
    return g;
}

/* Row i of head `head` in batch row b of a [batch, S, heads, D] tensor. */
static __device__ __forceinline__ int64_t attn_row(const attn_geom &g, int64_t b, int64_t i,
                                                   int heads, int head) {
    return ((b * g.S + i) * heads + head) * (int64_t)g.D;
}

static __device__ __forceinline__ bool attn_visible(int64_t i, int64_t j, int64_t S, int doc_i,
                                                    int doc_j) {
    return j <= i && i < S && doc_i == doc_j;
}

/* ROWS rows (r0.. of one head) of a [batch, S, heads, D] bf16 tensor into
 * shared memory s[ROWS][D + 8], 16-byte vectors; rows at or past S are 0. */
template <int D, int ROWS, int NTHREADS>
static __device__ __forceinline__ void attn_load_rows(ql_bf16 *s, const ql_bf16 *base,
                                                      int64_t row_stride, int64_t r0, int64_t S) {
    constexpr int VPR = D / 8; /* vectors per row */
    for (int v = threadIdx.x; v < ROWS * VPR; v += NTHREADS) {
        const int row = v / VPR, col = (v % VPR) * 8;
        uint4 q = make_uint4(0, 0, 0, 0);
        if (r0 + row < S) q = *(const uint4 *)(base + (r0 + row) * row_stride + col);
        *(uint4 *)(s + row * (D + 8) + col) = q;
    }
}

/* doc ids of rows r0.. (0 without a mask or past S). */
template <int ROWS, int NTHREADS>
static __device__ __forceinline__ void attn_load_doc(int *s, const int32_t *doc_row, int64_t r0,
                                                     int64_t S) {
    for (int i = threadIdx.x; i < ROWS; i += NTHREADS)
        s[i] = (doc_row && r0 + i < S) ? doc_row[r0 + i] : 0;
}

/* Launchers (kernels/cuda/attn_*.cu). The tensor-core ones take D = 64 or 128
 * and 16-byte aligned tensors; the plain ones any D up to ATT_SIMT_MAX_D. */
#define ATT_SIMT_MAX_D 256
ql_status ql_attn_fwd_tc(const attn_geom &g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
                         const int32_t *doc, ql_bf16 *out, float *lse);
ql_status ql_attn_bwd_tc(const attn_geom &g, const ql_bf16 *dout, const ql_bf16 *q,
                         const ql_bf16 *k, const ql_bf16 *v, const float *lse, const float *dvec,
                         const int32_t *doc, ql_bf16 *dq, ql_bf16 *dk, ql_bf16 *dv);
ql_status ql_attn_fwd_simt(const attn_geom &g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
                           const int32_t *doc, ql_bf16 *out, float *lse);
ql_status ql_attn_bwd_simt(const attn_geom &g, const ql_bf16 *dout, const ql_bf16 *q,
                           const ql_bf16 *k, const ql_bf16 *v, const float *lse, const float *dvec,
                           const int32_t *doc, ql_bf16 *dq, ql_bf16 *dk, ql_bf16 *dv);

#endif
