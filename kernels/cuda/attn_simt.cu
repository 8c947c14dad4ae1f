/* Plain attention kernels for head sizes the tensor-core kernels do not take
 * (head_dim other than 64 or 128, up to ATT_SIMT_MAX_D) or unaligned tensors:
 * one thread per query row (forward, dq) or per key row (dk, dv), float32
 * throughout, keys or queries in ascending order. Slow but short enough to
 * check by eye, and deterministic. */
#include "kernels/cuda/attn_common.cuh"

#define AS_THREADS 128

static __device__ __forceinline__ float as_dot(const ql_bf16 *a, const ql_bf16 *b, int D) {
    float s = 0.0f;
    for (int c = 0; c < D; c++) s += ql_ld_bf16(a + c) * ql_ld_bf16(b + c);
    return s;
}

static __device__ __forceinline__ int as_doc(const int32_t *doc_row, int64_t i) {
    return doc_row ? doc_row[i] : 0;
}

/* Thread = (b, h, i), i fastest. Online softmax over the visible keys. */
__global__ void k_attn_fwd_simt(const attn_geom g, const ql_bf16 *q, const ql_bf16 *k,
                                const ql_bf16 *v, const int32_t *doc, ql_bf16 *out, float *lse) {
    const int64_t n = g.batch * g.H * g.S;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t % g.S, b = t / g.S / g.H;
        const int h = (int)(t / g.S % g.H), kvh = h / g.group;
        const int32_t *doc_row = doc ? doc + b * g.S : NULL;
        const int di = as_doc(doc_row, i);
        const ql_bf16 *qi = q + attn_row(g, b, i, g.H, h);
        float acc[ATT_SIMT_MAX_D];
        for (int c = 0; c < g.D; c++) acc[c] = 0.0f;
        float m = -INFINITY, l = 0.0f;
        for (int64_t j = 0; j <= i; j++) {
            if (!attn_visible(i, j, g.S, di, as_doc(doc_row, j))) continue;
            const float s = as_dot(qi, k + attn_row(g, b, j, g.KV, kvh), g.D) * g.scale;
            if (s > m) {
                const float a = m == -INFINITY ? 0.0f : expf(m - s);
                l *= a;
                for (int c = 0; c < g.D; c++) acc[c] *= a;
                m = s;
            }
            const float p = expf(s - m);
            l += p;
            const ql_bf16 *vj = v + attn_row(g, b, j, g.KV, kvh);
            for (int c = 0; c < g.D; c++) acc[c] += p * ql_ld_bf16(vj + c);
        }
        ql_bf16 *oi = out + attn_row(g, b, i, g.H, h);
        for (int c = 0; c < g.D; c++) oi[c] = ql_bf16_bits(acc[c] / l);
        lse[(b * g.H + h) * g.S + i] = m + logf(l);
    }
}

/* Thread = (b, h, i): dq_i = scale Σ_j P_ij (dP_ij − D_i) k_j. */
__global__ void k_attn_dq_simt(const attn_geom g, const ql_bf16 *dout, const ql_bf16 *q,
                               const ql_bf16 *k, const ql_bf16 *v, const float *lse,
                               const float *dvec, const int32_t *doc, ql_bf16 *dq) {
    const int64_t n = g.batch * g.H * g.S;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t % g.S, b = t / g.S / g.H;
        const int h = (int)(t / g.S % g.H), kvh = h / g.group;
        const int32_t *doc_row = doc ? doc + b * g.S : NULL;
        const int di = as_doc(doc_row, i);
        const int64_t qrow = attn_row(g, b, i, g.H, h), stat = (b * g.H + h) * g.S + i;
        const float li = lse[stat], Di = dvec[stat];
        float acc[ATT_SIMT_MAX_D];
        for (int c = 0; c < g.D; c++) acc[c] = 0.0f;
        for (int64_t j = 0; j <= i; j++) {
            if (!attn_visible(i, j, g.S, di, as_doc(doc_row, j))) continue;
            const ql_bf16 *kj = k + attn_row(g, b, j, g.KV, kvh);
            const float p = expf(as_dot(q + qrow, kj, g.D) * g.scale - li);
            const float ds = p * (as_dot(dout + qrow, v + attn_row(g, b, j, g.KV, kvh), g.D) - Di);
            for (int c = 0; c < g.D; c++) acc[c] += ds * ql_ld_bf16(kj + c);
        }
        for (int c = 0; c < g.D; c++) dq[qrow + c] = ql_bf16_bits(acc[c] * g.scale);
    }
}

/* Thread = (b, kv head, j): sums over the group's query heads, then i >= j. */
__global__ void k_attn_dkdv_simt(const attn_geom g, const ql_bf16 *dout, const ql_bf16 *q,
                                 const ql_bf16 *k, const ql_bf16 *v, const float *lse,
                                 const float *dvec, const int32_t *doc, ql_bf16 *dk, ql_bf16 *dv) {
    const int64_t n = g.batch * g.KV * g.S;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = t % g.S, b = t / g.S / g.KV;
        const int kvh = (int)(t / g.S % g.KV);
        const int32_t *doc_row = doc ? doc + b * g.S : NULL;
        const int dj = as_doc(doc_row, j);
        const int64_t krow = attn_row(g, b, j, g.KV, kvh);
        float ak[ATT_SIMT_MAX_D], av[ATT_SIMT_MAX_D];
        for (int c = 0; c < g.D; c++) ak[c] = av[c] = 0.0f;
        for (int hh = 0; hh < g.group; hh++) {
            const int h = kvh * g.group + hh;
            for (int64_t i = j; i < g.S; i++) {
                if (!attn_visible(i, j, g.S, as_doc(doc_row, i), dj)) continue;
                const int64_t qrow = attn_row(g, b, i, g.H, h), stat = (b * g.H + h) * g.S + i;
                const float p = expf(as_dot(q + qrow, k + krow, g.D) * g.scale - lse[stat]);
                const float ds = p * (as_dot(dout + qrow, v + krow, g.D) - dvec[stat]);
                for (int c = 0; c < g.D; c++) {
                    ak[c] += ds * ql_ld_bf16(q + qrow + c);
                    av[c] += p * ql_ld_bf16(dout + qrow + c);
                }
            }
        }
        for (int c = 0; c < g.D; c++) {
            dk[krow + c] = ql_bf16_bits(ak[c] * g.scale);
            dv[krow + c] = ql_bf16_bits(av[c]);
        }
    }
}

ql_status ql_attn_fwd_simt(const attn_geom &g, const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v,
                           const int32_t *doc, ql_bf16 *out, float *lse) {
    const int64_t n = g.batch * g.H * g.S;
    QL_LAUNCH((ql_cuda_grid(n, AS_THREADS), AS_THREADS, 0, ql_cuda_stream()), k_attn_fwd_simt)
    (g, q, k, v, doc, out, lse);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

ql_status ql_attn_bwd_simt(const attn_geom &g, const ql_bf16 *dout, const ql_bf16 *q,
                           const ql_bf16 *k, const ql_bf16 *v, const float *lse, const float *dvec,
                           const int32_t *doc, ql_bf16 *dq, ql_bf16 *dk, ql_bf16 *dv) {
    const int64_t nq = g.batch * g.H * g.S, nk = g.batch * g.KV * g.S;
    QL_LAUNCH((ql_cuda_grid(nq, AS_THREADS), AS_THREADS, 0, ql_cuda_stream()), k_attn_dq_simt)
    (g, dout, q, k, v, lse, dvec, doc, dq);
    QL_CUDA_LAUNCHED();
    QL_LAUNCH((ql_cuda_grid(nk, AS_THREADS), AS_THREADS, 0, ql_cuda_stream()), k_attn_dkdv_simt)
    (g, dout, q, k, v, lse, dvec, doc, dk, dv);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
