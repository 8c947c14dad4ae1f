/* Generation's attention over a sequence's key/value cache (the backend op
 * attn_cached_fwd): a handful of new query rows, each against every cached
 * key up to its own position, so that a decode step never leaves the device.
 *
 * One CTA per (head, row), 128 threads. The keys go by in tiles of 128, one
 * key per thread: its score (a dot product over head_dim in order), the
 * tile's max and sum over the block in a fixed tree (ql_block_max,
 * ql_block_sum), the running max and sum rescaled as in flash attention, and
 * each thread adds the tile's p_j·v_j in key order into the output elements
 * it owns (head_dim <= 256: at most two). No atomics, a fixed order: the same
 * bits every time, and a row's result depends only on its own keys. Simple
 * rather than fast: at decode the cache is read once per head, and the
 * linear layers dominate. */
#include "kernels/cuda/cuda_ops.h"

#define AC_THREADS 128
#define AC_MAX_D (2 * AC_THREADS)

__global__ void __launch_bounds__(AC_THREADS)
    k_attn_cached(const ql_bf16 *q, const ql_bf16 *k, const ql_bf16 *v, int64_t pos0, int H, int KV,
                  int D, float scale, ql_bf16 *out) {
    __shared__ float s_q[AC_MAX_D];
    __shared__ float s_p[AC_THREADS];
    __shared__ float red[32];
    const int h = blockIdx.x;
    const int64_t t = blockIdx.y;
    const int64_t qdim = (int64_t)H * D, kvdim = (int64_t)KV * D;
    const int64_t kh = (int64_t)(h / (H / KV)) * D, n = pos0 + t + 1;
    const ql_bf16 *qr = q + t * qdim + (int64_t)h * D;
    for (int e = threadIdx.x; e < D; e += AC_THREADS) s_q[e] = ql_ld_bf16(qr + e);
    __syncthreads();
    const int e0 = threadIdx.x, e1 = threadIdx.x + AC_THREADS;
    float mx = -INFINITY, sum = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += AC_THREADS) {
        const int64_t j = j0 + threadIdx.x;
        float sc = -INFINITY;
        if (j < n) {
            const ql_bf16 *kr = k + j * kvdim + kh;
            float dot = 0.0f;
            for (int e = 0; e < D; e++) dot += s_q[e] * ql_ld_bf16(kr + e);
            sc = dot * scale;
        }
        /* Every tile has at least one key, so the new max is finite and the
         * first tile's rescale is exp(-inf) = 0 of zeros. */
        const float m_new = fmaxf(mx, ql_block_max(sc, red));
        const float p = j < n ? expf(sc - m_new) : 0.0f;
        s_p[threadIdx.x] = p; /* read after ql_block_sum's barriers */
        const float corr = expf(mx - m_new);
        sum = sum * corr + ql_block_sum(p, red);
        acc0 *= corr;
        acc1 *= corr;
        const int64_t tile = n - j0 < AC_THREADS ? n - j0 : AC_THREADS;
        for (int64_t i = 0; i < tile; i++) {
            const ql_bf16 *vr = v + (j0 + i) * kvdim + kh;
            const float pi = s_p[i];
            if (e0 < D) acc0 += pi * ql_ld_bf16(vr + e0);
            if (e1 < D) acc1 += pi * ql_ld_bf16(vr + e1);
        }
        mx = m_new;
        __syncthreads(); /* s_p is rewritten by the next tile */
    }
    const float inv = 1.0f / sum;
    ql_bf16 *o = out + t * qdim + (int64_t)h * D;
    if (e0 < D) o[e0] = ql_bf16_bits(acc0 * inv);
    if (e1 < D) o[e1] = ql_bf16_bits(acc1 * inv);
}

extern "C" ql_status ql_attn_cached_fwd_cuda(const ql_act *q, const ql_act *k, const ql_act *v,
                                             int64_t T, int64_t pos0, const ql_attn_shape *s,
                                             ql_act *out) {
    if (T <= 0) return QL_OK;
    if (s->head_dim <= 0 || s->head_dim > AC_MAX_D || s->n_kv_heads <= 0 ||
        s->n_heads % s->n_kv_heads != 0 || T > 65535 || pos0 < 0)
        return ql_error(QL_EUNSUPPORTED,
                        "cuda attn_cached_fwd: %lld rows at position %lld, %d heads over %d, "
                        "head_dim %d (at most 65535 rows and head_dim %d)",
                        (long long)T, (long long)pos0, s->n_heads, s->n_kv_heads, s->head_dim,
                        AC_MAX_D);
    const dim3 grid((unsigned)s->n_heads, (unsigned)T);
    QL_LAUNCH((grid, AC_THREADS, 0, ql_cuda_stream()), k_attn_cached)
    ((const ql_bf16 *)q, (const ql_bf16 *)k, (const ql_bf16 *)v, pos0, s->n_heads, s->n_kv_heads,
     s->head_dim, 1.0f / sqrtf((float)s->head_dim), (ql_bf16 *)out);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
