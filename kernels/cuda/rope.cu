/* RoPE forward and backward, in place on bf16 [T, n_heads, head_dim], HF's
 * half-split pairing (i, i + d/2). One thread per (token, head, pair): the
 * angle is the float32 product pos[t]·inv_freq[i] and cosf/sinf are CUDA's
 * accurate versions (no fast math), as the CPU backends compute them; the
 * rotated pair is rounded to bf16 once. The backward rotates by −angle (the
 * rotation's transpose). */
#include "kernels/cuda/cuda_ops.h"

#define ROPE_THREADS 256

__global__ void k_rope(ql_bf16 *x, const int32_t *pos, const float *inv_freq, int64_t T,
                       int n_heads, int half, float sign) {
    const int64_t total = T * n_heads * half;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % half);
        const int64_t th = e / half; /* token * n_heads + head */
        const int64_t t = th / n_heads;
        const float angle = (float)pos[t] * inv_freq[i];
        const float c = cosf(angle), s = sign * sinf(angle);
        ql_bf16 *xh = x + th * (2 * half);
        const float a = ql_ld_bf16(xh + i), b = ql_ld_bf16(xh + i + half);
        xh[i] = ql_bf16_bits(a * c - b * s);
        xh[i + half] = ql_bf16_bits(b * c + a * s);
    }
}

static ql_status rope_launch(ql_act *x, const int32_t *pos, const float *inv_freq, int64_t T,
                             int n_heads, int head_dim, float sign) {
    QL_ASSERT(head_dim % 2 == 0 && head_dim > 0 && n_heads > 0);
    if (T <= 0) return QL_OK;
    const int half = head_dim / 2;
    QL_LAUNCH((ql_cuda_grid(T * n_heads * half, ROPE_THREADS), ROPE_THREADS, 0, ql_cuda_stream()),
              k_rope)
    ((ql_bf16 *)x, pos, inv_freq, T, n_heads, half, sign);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

extern "C" ql_status ql_rope_fwd_cuda(ql_act *x, const int32_t *pos, const float *inv_freq,
                                      int64_t T, int n_heads, int head_dim) {
    return rope_launch(x, pos, inv_freq, T, n_heads, head_dim, 1.0f);
}

extern "C" ql_status ql_rope_bwd_cuda(ql_act *dx, const int32_t *pos, const float *inv_freq,
                                      int64_t T, int n_heads, int head_dim) {
    return rope_launch(dx, pos, inv_freq, T, n_heads, head_dim, -1.0f);
}
