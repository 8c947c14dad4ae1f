/* Fused AdamW over the flat fp32 adapter vector: one thread per element
 * (grid-stride), the same float32 operations in the same order as
 * ql_adamw_elem (kernels/cpu/cpu_ops.h), with the step's scalars computed on
 * the host by the same ql_adamw_scalars_for. The build has --fmad=false and
 * IEEE division and square root, and the two multiply-adds torch fuses are
 * explicit __fmaf_rn, so the result is bit-identical to the CPU backends. */
#include "kernels/cuda/cuda_ops.h"

extern "C" {
#include "kernels/cpu/cpu_ops.h"
}

#define ADAMW_THREADS 256

__global__ void k_adamw(float *param, const float *grad, float *m, float *v, int64_t n,
                        ql_adamw_scalars c) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = grad[i];
        const float p = __fmul_rn(param[i], c.decay);
        const float mi = __fmaf_rn(c.one_minus_beta1, g, __fmul_rn(m[i], c.beta1));
        const float vi = __fmaf_rn(__fmul_rn(c.one_minus_beta2, g), g, __fmul_rn(v[i], c.beta2));
        m[i] = mi;
        v[i] = vi;
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
        param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(c.neg_step, mi), denom));
    }
}

extern "C" ql_status ql_adamw_cuda(float *param, const float *grad, float *m, float *v, int64_t n,
                                   const ql_adamw *h, int64_t step) {
    if (n <= 0) return QL_OK;
    ql_adamw_scalars c = ql_adamw_scalars_for(h, step);
    QL_LAUNCH((ql_cuda_grid(n, ADAMW_THREADS), ADAMW_THREADS, 0, ql_cuda_stream()), k_adamw)
    (param, grad, m, v, n, c);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
