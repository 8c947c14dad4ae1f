/* Internal to kernels/cuda/: the functions the "cuda" op table points at, and
 * what the .cu files share (the stream, scratch buffers, the GEMM wrapper,
 * bf16 helpers). Not part of the public API: C callers use kernels/backend.h
 * and kernels/cuda_api.h.
 *
 * Every op runs on one stream (ql_cuda_stream(), the legacy default stream),
 * so ops are ordered and scratch buffers can be reused from one op to the
 * next without events. */
#ifndef QL_CUDA_OPS_H
#define QL_CUDA_OPS_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda_api.h"

extern "C" {
#include "kernels/backend.h"
}

typedef uint16_t ql_bf16; /* bf16 bits in device memory */

static inline cudaStream_t ql_cuda_stream(void) { return (cudaStream_t)0; }

/* --- scratch ----------------------------------------------------------------- */
/* Named device buffers that grow on demand and are kept for the next call.
 * Two ops never use the same slot at the same time (one stream, and an op
 * finishes its launches before the next op starts enqueuing). */
enum {
    QL_SCRATCH_LORA_A,    /* bf16 copy of LoRA A, [rpad, in] */
    QL_SCRATCH_LORA_B,    /* bf16 copy of LoRA B, [out, rpad] */
    QL_SCRATCH_LORA_T,    /* bf16 [T, rpad]: s·xa (fwd) or s·(dy·B) (bwd) */
    QL_SCRATCH_LORA_G,    /* fp32 [T, rpad]: dy·B (bwd) */
    QL_SCRATCH_LORA_XA,   /* bf16 [T, rpad]: xa for dB (bwd) */
    QL_SCRATCH_XDROP,     /* bf16 [T, in]: x ⊙ dropout mask */
    QL_SCRATCH_DEQUANT,   /* bf16 W whole with LoRA's B columns or A rows: the dequant path */
    QL_SCRATCH_CONCAT,    /* bf16 [T, k + rpad]: [x | s·xa] or [dy | s·dy·B], the dequant path */
    QL_SCRATCH_F32_OUT,   /* fp32 [T, in]: the dequant path's dy·W under dropout */
    QL_SCRATCH_LORA_PART, /* fp32: lora_skinny.cu's partial sums (ql_cuda_lora_skinny_scratch) */
    QL_SCRATCH_ATTN_D,    /* fp32 [batch, heads, seq]: rowsum(dout ⊙ out) */
    QL_SCRATCH_FLAG,      /* small: the cross-entropy target check's word (xent.cu) */
    QL_SCRATCH_NORM,      /* fp64 block sums of sq_sum_f32 (kernels/cuda/vec.cu) */
    QL_SCRATCH_COUNT
};
ql_status ql_cuda_scratch(int slot, size_t bytes, void **out);

/* --- GEMM (kernels/cuda/blas.cu) ------------------------------------------------ */
/* ql_cuda_gemm_bf16 (cuda_api.h) with typed pointers. */
static inline ql_status ql_cuda_gemm(int64_t M, int64_t N, int64_t K, float alpha, const ql_bf16 *A,
                                     int64_t lda, int trans_a, const ql_bf16 *B, int64_t ldb,
                                     int trans_b, float beta, void *C, ql_dtype c_dtype,
                                     int64_t ldc) {
    return ql_cuda_gemm_bf16(M, N, K, alpha, A, lda, trans_a, B, ldb, trans_b, beta, C, c_dtype,
                             ldc);
}
void ql_cuda_blas_release(void);

/* --- fused NF4 GEMM (kernels/cuda/q4_gemm.cu) -------------------------------------- */
/* One launch of the fused kernel:
 *   fwd (kn = 0): C[M, W.rows] = X[M, W.cols]·Wᵀ + E[M, Ke]·Fᵀ, F [W.rows, Ke]
 *   bwd (kn = 1): C[M, W.cols] = X[M, W.rows]·W  + E[M, Ke]·F,  F [Ke, W.cols]
 * W is dequantized tile by tile in the main loop. E/F (bf16, row strides lde,
 * ldf) are the LoRA columns; Ke = 0 for none. With drop.on (kn = 1 only) the
 * E·F term is kept apart and added where the mask keeps element (m, n), times
 * drop.scale, and dropped elsewhere (LoRA dropout in dx). */
typedef struct ql_q4_gemm_args {
    const ql_q4 *w;
    int kn;
    int64_t M;
    const ql_bf16 *X;
    int64_t ldx;
    const ql_bf16 *E;
    int64_t lde;
    const ql_bf16 *F;
    int64_t ldf;
    int64_t Ke;
    ql_dropout drop; /* mask element (m, n) at e = m·N + n */
    ql_bf16 *C;
    int64_t ldc;
} ql_q4_gemm_args;
ql_status ql_cuda_q4_gemm(const ql_q4_gemm_args *a);

/* --- small kernels shared by the LoRA code (kernels/cuda/elem.cu) ----------------- */
/* dst[rows, dcols] (bf16, row stride ldd >= dcols) = src[rows, cols] (fp32) ·
 * scale, columns cols..dcols-1 zero; columns dcols..ldd-1 not touched. */
ql_status ql_cuda_f32_to_bf16_pad(const float *src, int64_t rows, int64_t cols, int64_t lds,
                                  float scale, ql_bf16 *dst, int64_t dcols, int64_t ldd);
/* Several such conversions in one launch; a job's rows rows..drows-1 are
 * written as zeros too (dst is [drows, dcols]). */
typedef struct ql_cuda_pad_job {
    const float *src;
    int64_t rows, cols, lds;
    float scale;
    ql_bf16 *dst;
    int64_t drows, dcols, ldd;
} ql_cuda_pad_job;
#define QL_CUDA_PAD_JOBS_MAX 4
ql_status ql_cuda_f32_to_bf16_pad_n(const ql_cuda_pad_job *jobs, int n);
/* ql_cuda_dropout_bf16: kernels/cuda_api.h. */

/* Phase timing of q4_lora (kernels/cuda/q4_phases.cu; the public half is in
 * cuda_api.h): begin/end bracket one phase (mark -1 when timing is off),
 * flush ends a call. */
ql_status ql_cuda_q4_phase_begin(int phase, int *mark);
ql_status ql_cuda_q4_phase_end(int mark);
ql_status ql_cuda_q4_phases_flush(void);
/* f() as phase `phase` of the current q4_lora call. */
template <typename F> static ql_status ql_cuda_q4_timed(int phase, F f) {
    int mark;
    QL_TRY(ql_cuda_q4_phase_begin(phase, &mark));
    const ql_status st = f();
    return st == QL_OK ? ql_cuda_q4_phase_end(mark) : st;
}
/* LoRA's dx under dropout on the dequant path, one rounding:
 *   dx[t, i] = bf16(acc[t, i] + (Σ_{k<r} E[t, k]·A[k, i]) · d->scale)  where
 *              the mask d keeps element t·in + i,
 *   dx[t, i] = bf16(acc[t, i])                                           where not.
 * acc = dy·W in fp32 (the GEMM's output); E [T, ≥ r] (row stride lde) and
 * A [≥ r, in] in bf16 (their padding, zero, is not read). The rank-r term is
 * summed here (k ascending, fp32) instead of by a second GEMM into another
 * fp32 [T, in] buffer: at r = 16 the 16 products per element cost less than
 * that buffer's write and read. */
ql_status ql_cuda_lora_dx_dropout(const float *acc, const ql_bf16 *E, int64_t lde, const ql_bf16 *A,
                                  int64_t r, const ql_dropout *d, int64_t T, int64_t in,
                                  ql_bf16 *dx);

/* ql_cuda_lora_xa, ql_cuda_lora_dA: kernels/cuda_api.h. */

/* The cross-entropy target check of the calls since the last one
 * (kernels/cuda/xent.cu): QL_EINVAL naming the first target outside the
 * vocabulary. Waits for the device; the backend's download and sync call it
 * after their own wait. _forget drops pending checks (their word is freed). */
extern "C" ql_status ql_cuda_xent_check(void);
extern "C" void ql_cuda_xent_forget(void);

/* --- the ops ------------------------------------------------------------------------ */
#define QL_CUDA_DECLARE(ret, name, args) extern "C" ret name##_cuda args;

QL_CUDA_DECLARE(ql_status, ql_q4_dequantize, (const ql_q4 *w, ql_act *out))
QL_CUDA_DECLARE(ql_status, ql_q4_lora_fwd,
                (const ql_q4 *w, const ql_lora *lora, const ql_act *x, int64_t T, ql_act *y,
                 float *xa))
QL_CUDA_DECLARE(ql_status, ql_q4_lora_bwd,
                (const ql_q4 *w, const ql_lora *lora, const ql_act *x, const float *xa,
                 const ql_act *dy, int64_t T, ql_act *dx, float *dA, float *dB))
QL_CUDA_DECLARE(ql_status, ql_matmul_fwd,
                (const ql_act *W, const ql_act *x, int64_t T, int64_t in, int64_t out, ql_act *y))
QL_CUDA_DECLARE(ql_status, ql_matmul_bwd,
                (const ql_act *W, const ql_act *dy, int64_t T, int64_t in, int64_t out, ql_act *dx))
QL_CUDA_DECLARE(ql_status, ql_rmsnorm_fwd,
                (const ql_act *x, const float *w, float eps, int64_t T, int64_t d, ql_act *y,
                 float *rstd))
QL_CUDA_DECLARE(ql_status, ql_rmsnorm_bwd,
                (const ql_act *dy, const ql_act *x, const float *w, const float *rstd, int64_t T,
                 int64_t d, ql_act *dx))
QL_CUDA_DECLARE(ql_status, ql_rope_fwd,
                (ql_act * x, const int32_t *pos, const float *inv_freq, int64_t T, int n_heads,
                 int head_dim))
QL_CUDA_DECLARE(ql_status, ql_rope_bwd,
                (ql_act * dx, const int32_t *pos, const float *inv_freq, int64_t T, int n_heads,
                 int head_dim))
QL_CUDA_DECLARE(ql_status, ql_swiglu_fwd,
                (const ql_act *gate, const ql_act *up, int64_t n, ql_act *out))
QL_CUDA_DECLARE(ql_status, ql_swiglu_bwd,
                (const ql_act *dout, const ql_act *gate, const ql_act *up, int64_t n, ql_act *dgate,
                 ql_act *dup))
QL_CUDA_DECLARE(ql_status, ql_attn_fwd,
                (const ql_act *q, const ql_act *k, const ql_act *v, const int32_t *doc,
                 const ql_attn_shape *s, ql_act *out, float *lse))
QL_CUDA_DECLARE(ql_status, ql_attn_bwd,
                (const ql_act *dout, const ql_act *q, const ql_act *k, const ql_act *v,
                 const ql_act *out, const float *lse, const int32_t *doc, const ql_attn_shape *s,
                 ql_act *dq, ql_act *dk, ql_act *dv))
QL_CUDA_DECLARE(ql_status, ql_attn_cached_fwd,
                (const ql_act *q, const ql_act *k, const ql_act *v, int64_t T, int64_t pos0,
                 const ql_attn_shape *s, ql_act *out))
QL_CUDA_DECLARE(ql_status, ql_embed_fwd,
                (const ql_act *table, const int32_t *ids, int64_t T, int64_t d, ql_act *out))
QL_CUDA_DECLARE(ql_status, ql_xent_fwd_bwd,
                (const ql_act *logits, const int32_t *targets, int64_t T, int64_t V,
                 float grad_scale, float *losses, ql_act *dlogits))
QL_CUDA_DECLARE(ql_status, ql_adamw,
                (float *param, const float *grad, float *m, float *v, int64_t n, const ql_adamw *h,
                 int64_t step))
QL_CUDA_DECLARE(ql_status, ql_bias_add, (ql_act * y, const float *b, int64_t T, int64_t n))
QL_CUDA_DECLARE(ql_status, ql_add, (const ql_act *x, const ql_act *y, int64_t n, ql_act *out))
QL_CUDA_DECLARE(ql_status, ql_zero_f32, (float *x, int64_t n))
QL_CUDA_DECLARE(ql_status, ql_sq_sum_f32, (const float *x, int64_t n, double *sum))
QL_CUDA_DECLARE(ql_status, ql_scale_f32, (float *x, int64_t n, float s))
QL_CUDA_DECLARE(void, ql_mem_stats, (ql_mem_stats * s))
QL_CUDA_DECLARE(void, ql_mem_reset_peak, (void))

#undef QL_CUDA_DECLARE

/* --- device helpers ------------------------------------------------------------------ */
static __device__ __forceinline__ float ql_ld_bf16(const ql_bf16 *p) {
    return __uint_as_float((uint32_t)*p << 16);
}
/* Round to nearest even (cvt.rn.bf16.f32); equal to ql_f32_to_bf16 except
 * for the payload of a NaN. */
static __device__ __forceinline__ ql_bf16 ql_bf16_bits(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* Grid for a grid-stride loop over n elements with `threads` per block. */
static inline unsigned ql_cuda_grid(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16;
    return (unsigned)b;
}

/* Sum of v over a block of blockDim.x threads (a multiple of 32, at most
 * 1024): a fixed butterfly in each warp, then the warp sums in order by warp
 * 0. The same launch shape gives the same bits every time. `red` is 32
 * floats of shared memory; every thread gets the total. Contains barriers:
 * call from all threads. */
static __device__ __forceinline__ float ql_block_sum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? red[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

/* The largest v over the block, as ql_block_sum (fmaxf in the same fixed
 * tree; the same barriers and `red`). */
static __device__ __forceinline__ float ql_block_max(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? red[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
        if (lane == 0) red[0] = t;
    }
    __syncthreads();
    return red[0];
}

#define QL_CUDA_LAUNCHED() QL_CUDA_TRY(cudaGetLastError())

#endif
