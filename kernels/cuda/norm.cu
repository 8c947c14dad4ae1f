/* RMSNorm forward and backward, one block per token row. The row's sum is
 * taken in float32: each thread sums a fixed strided subset in order, then
 * ql_block_sum combines the threads in a fixed tree, so the result depends
 * only on the data (the block size is a constant). Rounding points follow
 * transformers' LlamaRMSNorm: rstd and x·rstd are float32 before the weight
 * multiplies. */
#include "kernels/cuda/cuda_ops.h"

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS)
    k_rmsnorm_fwd(const ql_bf16 *x, const float *w, float eps, int64_t d, ql_bf16 *y, float *rstd) {
    __shared__ float red[32];
    const int64_t t = blockIdx.x;
    const ql_bf16 *xt = x + t * d;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += NORM_THREADS) {
        float v = ql_ld_bf16(xt + i);
        ss += v * v;
    }
    ss = ql_block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    if (threadIdx.x == 0) rstd[t] = r;
    ql_bf16 *yt = y + t * d;
    for (int64_t i = threadIdx.x; i < d; i += NORM_THREADS)
        yt[i] = ql_bf16_bits(w[i] * (ql_ld_bf16(xt + i) * r));
}

extern "C" ql_status ql_rmsnorm_fwd_cuda(const ql_act *x, const float *w, float eps, int64_t T,
                                         int64_t d, ql_act *y, float *rstd) {
    if (T <= 0 || d <= 0) return QL_OK;
    QL_ASSERT(T <= 0x7fffffff);
    QL_LAUNCH(((unsigned)T, NORM_THREADS, 0, ql_cuda_stream()), k_rmsnorm_fwd)
    ((const ql_bf16 *)x, w, eps, d, (ql_bf16 *)y, rstd);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* dx_j = r (w_j dy_j − x_j c), c = r² Σ_i w_i dy_i x_i / d. The row is read
 * twice (the second time from cache); dx may alias dy. */
__global__ void __launch_bounds__(NORM_THREADS)
    k_rmsnorm_bwd(const ql_bf16 *dy, const ql_bf16 *x, const float *w, const float *rstd, int64_t d,
                  ql_bf16 *dx) {
    __shared__ float red[32];
    const int64_t t = blockIdx.x;
    const ql_bf16 *xt = x + t * d, *dyt = dy + t * d;
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += NORM_THREADS)
        dot += w[i] * ql_ld_bf16(dyt + i) * ql_ld_bf16(xt + i);
    dot = ql_block_sum(dot, red);
    const float r = rstd[t];
    const float c = r * r * dot / (float)d;
    ql_bf16 *dxt = dx + t * d;
    for (int64_t i = threadIdx.x; i < d; i += NORM_THREADS)
        dxt[i] = ql_bf16_bits(r * (w[i] * ql_ld_bf16(dyt + i) - ql_ld_bf16(xt + i) * c));
}

extern "C" ql_status ql_rmsnorm_bwd_cuda(const ql_act *dy, const ql_act *x, const float *w,
                                         const float *rstd, int64_t T, int64_t d, ql_act *dx) {
    if (T <= 0 || d <= 0) return QL_OK;
    QL_ASSERT(T <= 0x7fffffff);
    QL_LAUNCH(((unsigned)T, NORM_THREADS, 0, ql_cuda_stream()), k_rmsnorm_bwd)
    ((const ql_bf16 *)dy, (const ql_bf16 *)x, w, rstd, d, (ql_bf16 *)dx);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
