/* Flat fp32 vectors on the device: zeroing, the squared norm and scaling of
 * the adapter gradient, so that an optimizer step never copies the gradient
 * to the host (train/optim.c). Only the squared norm comes back: 8 bytes.
 *
 * The sum is deterministic: its grouping depends on n alone (the grid is a
 * function of n, not of the device), each thread adds its strided elements
 * in order in double, blocks reduce with a fixed butterfly and then one
 * block adds the block sums in order. It groups differently from the CPU's
 * index-order sum, so the two can differ in the last bits of the double. */
#include <string.h>

#include "kernels/cuda/cuda_ops.h"

#define VEC_THREADS 256
#define SQ_MAX_BLOCKS 1024

__global__ void k_scale_f32(float *x, int64_t n, float s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

/* Sum over a block of VEC_THREADS threads in double: fixed butterfly per
 * warp, then warp 0 adds the warp sums. Thread 0 gets the total. */
static __device__ double block_sum_d(double v, double *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double t = 0.0;
    if (warp == 0) {
        t = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    }
    return t;
}

__global__ void k_sq_partial(const float *x, int64_t n, double *partial) {
    __shared__ double red[32];
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double v = (double)x[i];
        s = __dadd_rn(s, __dmul_rn(v, v));
    }
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void k_sq_final(const double *partial, int nb, double *out) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) s = __dadd_rn(s, partial[i]);
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) *out = s;
}

extern "C" ql_status ql_zero_f32_cuda(float *x, int64_t n) {
    if (n <= 0) return QL_OK;
    return ql_cuda_memset(x, 0, (size_t)n * sizeof *x, (void *)ql_cuda_stream());
}

extern "C" ql_status ql_sq_sum_f32_cuda(const float *x, int64_t n, double *sum) {
    *sum = 0.0;
    if (n <= 0) return QL_OK;
    int64_t nb = (n + 4 * VEC_THREADS - 1) / (4 * VEC_THREADS); /* >= 4 elements per thread */
    if (nb > SQ_MAX_BLOCKS) nb = SQ_MAX_BLOCKS;
    void *buf;
    QL_TRY(ql_cuda_scratch(QL_SCRATCH_NORM, (size_t)(nb + 1) * sizeof(double), &buf));
    double *partial = (double *)buf, *out = partial + nb;
    QL_LAUNCH(((unsigned)nb, VEC_THREADS, 0, ql_cuda_stream()), k_sq_partial)(x, n, partial);
    QL_CUDA_LAUNCHED();
    QL_LAUNCH((1, VEC_THREADS, 0, ql_cuda_stream()), k_sq_final)(partial, (int)nb, out);
    QL_CUDA_LAUNCHED();
    /* A synchronous copy on the legacy stream: waits for the two kernels. */
    return ql_cuda_download(sum, out, sizeof *sum);
}

extern "C" ql_status ql_scale_f32_cuda(float *x, int64_t n, float s) {
    if (n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(n, VEC_THREADS), VEC_THREADS, 0, ql_cuda_stream()), k_scale_f32)
    (x, n, s);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

extern "C" void ql_mem_stats_cuda(ql_mem_stats *s) {
    memset(s, 0, sizeof *s);
    ql_cuda_mem_counts(&s->in_use, &s->peak);
    if (ql_cuda_mem_info(&s->device_used, &s->device_total) != QL_OK)
        s->device_used = s->device_total = 0;
}

extern "C" void ql_mem_reset_peak_cuda(void) { ql_cuda_mem_reset_peak(); }
