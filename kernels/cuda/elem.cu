/* Elementwise ops on bf16 activations: residual add, frozen bias, SwiGLU
 * forward/backward, embedding gather, and the small conversions the LoRA code
 * needs. Each output element is computed by one thread from its own inputs in
 * float32 and rounded once to bf16, so results do not depend on the launch
 * shape. Grid-stride loops over int64 indices. */
#include "kernels/cuda/cuda_ops.h"

#define ELEM_THREADS 256

__global__ void k_add(const ql_bf16 *x, const ql_bf16 *y, int64_t n, ql_bf16 *out) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = ql_bf16_bits(ql_ld_bf16(x + i) + ql_ld_bf16(y + i));
}

extern "C" ql_status ql_add_cuda(const ql_act *x, const ql_act *y, int64_t n, ql_act *out) {
    if (n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()), k_add)
    ((const ql_bf16 *)x, (const ql_bf16 *)y, n, (ql_bf16 *)out);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

__global__ void k_bias_add(ql_bf16 *y, const float *b, int64_t T, int64_t n) {
    const int64_t total = T * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = ql_bf16_bits(ql_ld_bf16(y + i) + b[i % n]);
}

extern "C" ql_status ql_bias_add_cuda(ql_act *y, const float *b, int64_t T, int64_t n) {
    if (T <= 0 || n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(T * n, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()), k_bias_add)
    ((ql_bf16 *)y, b, T, n);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* silu(g)·u = g / (1 + e^-g) · u, as the fast CPU backend writes it. */
__global__ void k_swiglu_fwd(const ql_bf16 *gate, const ql_bf16 *up, int64_t n, ql_bf16 *out) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = ql_ld_bf16(gate + i);
        out[i] = ql_bf16_bits(g / (1.0f + expf(-g)) * ql_ld_bf16(up + i));
    }
}

extern "C" ql_status ql_swiglu_fwd_cuda(const ql_act *gate, const ql_act *up, int64_t n,
                                        ql_act *out) {
    if (n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()), k_swiglu_fwd)
    ((const ql_bf16 *)gate, (const ql_bf16 *)up, n, (ql_bf16 *)out);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* silu'(g) = σ(g)(1 + g(1 − σ(g))). All reads of element i happen before its
 * writes, so dgate/dup may alias the inputs element for element. */
__global__ void k_swiglu_bwd(const ql_bf16 *dout, const ql_bf16 *gate, const ql_bf16 *up, int64_t n,
                             ql_bf16 *dgate, ql_bf16 *dup) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = ql_ld_bf16(gate + i), u = ql_ld_bf16(up + i), d = ql_ld_bf16(dout + i);
        float sig = 1.0f / (1.0f + expf(-g));
        float silu = g * sig;
        dgate[i] = ql_bf16_bits(d * u * (sig * (1.0f + g * (1.0f - sig))));
        dup[i] = ql_bf16_bits(d * silu);
    }
}

extern "C" ql_status ql_swiglu_bwd_cuda(const ql_act *dout, const ql_act *gate, const ql_act *up,
                                        int64_t n, ql_act *dgate, ql_act *dup) {
    if (n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(n, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()), k_swiglu_bwd)
    ((const ql_bf16 *)dout, (const ql_bf16 *)gate, (const ql_bf16 *)up, n, (ql_bf16 *)dgate,
     (ql_bf16 *)dup);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* One block per token row. A negative id is a programmer error the CPU
 * backends assert on; a kernel cannot stop the job, so the row is filled
 * with NaN, which the loss turns into a visible failure. */
__global__ void k_embed_fwd(const ql_bf16 *table, const int32_t *ids, int64_t d, ql_bf16 *out) {
    const int64_t t = blockIdx.x;
    const int32_t id = ids[t];
    ql_bf16 *o = out + t * d;
    if (id < 0) {
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = 0x7fc0;
        return;
    }
    const ql_bf16 *row = table + (int64_t)id * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = row[i];
}

extern "C" ql_status ql_embed_fwd_cuda(const ql_act *table, const int32_t *ids, int64_t T,
                                       int64_t d, ql_act *out) {
    if (T <= 0 || d <= 0) return QL_OK;
    QL_ASSERT(T <= 0x7fffffff);
    QL_LAUNCH(((unsigned)T, ELEM_THREADS, 0, ql_cuda_stream()), k_embed_fwd)
    ((const ql_bf16 *)table, ids, d, (ql_bf16 *)out);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* --- LoRA helpers ------------------------------------------------------------------- */

/* Up to QL_CUDA_PAD_JOBS_MAX conversions in one launch: a LoRA call's
 * few small copies (A, B, xa; thousands to a few hundred thousand
 * elements each) would otherwise be a launch each, and at small shapes
 * the launches, not the bytes, are the cost. Thread i takes element i of
 * the jobs laid end to end; an element's value is the same expression as
 * one job alone. */
struct pad_jobs {
    ql_cuda_pad_job job[QL_CUDA_PAD_JOBS_MAX];
    int64_t end[QL_CUDA_PAD_JOBS_MAX]; /* jobs 0..j hold elements [0, end[j]) */
    int n;
};

__global__ void k_f32_to_bf16_pad(const __grid_constant__ pad_jobs p) {
    const int64_t total = p.end[p.n - 1];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int j = 0;
        while (i >= p.end[j]) j++;
        const ql_cuda_pad_job &b = p.job[j];
        const int64_t e = i - (j ? p.end[j - 1] : 0), r = e / b.dcols, c = e % b.dcols;
        b.dst[r * b.ldd + c] =
            r < b.rows && c < b.cols ? ql_bf16_bits(b.src[r * b.lds + c] * b.scale) : (ql_bf16)0;
    }
}

ql_status ql_cuda_f32_to_bf16_pad_n(const ql_cuda_pad_job *jobs, int n) {
    QL_ASSERT(n >= 0 && n <= QL_CUDA_PAD_JOBS_MAX);
    pad_jobs p;
    memset(&p, 0, sizeof p);
    int64_t total = 0;
    for (int j = 0; j < n; j++) {
        const ql_cuda_pad_job &b = jobs[j];
        if (b.drows <= 0 || b.dcols <= 0) continue; /* nothing to write */
        QL_ASSERT(b.ldd >= b.dcols && b.dcols >= b.cols && b.drows >= b.rows);
        total += b.drows * b.dcols;
        p.job[p.n] = b;
        p.end[p.n++] = total;
    }
    if (!p.n) return QL_OK;
    QL_LAUNCH((ql_cuda_grid(total, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()),
              k_f32_to_bf16_pad)
    (p);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

ql_status ql_cuda_f32_to_bf16_pad(const float *src, int64_t rows, int64_t cols, int64_t lds,
                                  float scale, ql_bf16 *dst, int64_t dcols, int64_t ldd) {
    const ql_cuda_pad_job j = {src, rows, cols, lds, scale, dst, rows, dcols, ldd};
    return ql_cuda_f32_to_bf16_pad_n(&j, 1);
}

/* One thread per pair of elements: one draw of the generator decides both. */
__global__ void k_dropout_bf16(const ql_bf16 *x, ql_dropout d, int64_t n, ql_bf16 *out) {
    const int64_t pairs = (n + 1) / 2;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < pairs;
         j += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t u = ql_dropout_draw(d.seed, (uint64_t)j);
        const int64_t e = 2 * j;
        out[e] = ql_dropout_keep_half(u, 0, d.thresh) ? x[e] : (ql_bf16)0;
        if (e + 1 < n) out[e + 1] = ql_dropout_keep_half(u, 1, d.thresh) ? x[e + 1] : (ql_bf16)0;
    }
}

ql_status ql_cuda_dropout_bf16(const ql_bf16 *x, const ql_dropout *d, int64_t n, ql_bf16 *out) {
    QL_ASSERT(d->on);
    if (n <= 0) return QL_OK;
    QL_LAUNCH((ql_cuda_grid((n + 1) / 2, ELEM_THREADS), ELEM_THREADS, 0, ql_cuda_stream()),
              k_dropout_bf16)
    (x, *d, n, out);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* Thread: one column i, DX_ROWS rows; a block's 256 columns read A's rows
 * coalesced and, over its rows, from L1. Rows come as a grid-stride loop in y. */
#define DX_ROWS 8

__global__ void k_lora_dx_dropout(const float *acc, const ql_bf16 *E, int64_t lde, const ql_bf16 *A,
                                  int64_t r, ql_dropout d, int64_t T, int64_t in, ql_bf16 *dx) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= in) return;
    for (int64_t t0 = blockIdx.y * (int64_t)DX_ROWS; t0 < T; t0 += (int64_t)gridDim.y * DX_ROWS)
        for (int64_t t = t0; t < t0 + DX_ROWS && t < T; t++) {
            const int64_t e = t * in + i;
            float v = acc[e];
            if (ql_dropout_keep(d.seed, d.thresh, e)) {
                float low = 0.0f;
                for (int64_t k = 0; k < r; k++)
                    low += ql_ld_bf16(E + t * lde + k) * ql_ld_bf16(A + k * in + i);
                v += low * d.scale;
            }
            dx[e] = ql_bf16_bits(v);
        }
}

ql_status ql_cuda_lora_dx_dropout(const float *acc, const ql_bf16 *E, int64_t lde, const ql_bf16 *A,
                                  int64_t r, const ql_dropout *d, int64_t T, int64_t in,
                                  ql_bf16 *dx) {
    QL_ASSERT(d->on);
    if (T <= 0 || in <= 0) return QL_OK;
    const int64_t gx = (in + ELEM_THREADS - 1) / ELEM_THREADS;
    int64_t gy = (T + DX_ROWS - 1) / DX_ROWS;
    if (gy > 65535) gy = 65535;
    if (gx > 0x7fffffff)
        return ql_error(QL_EUNSUPPORTED, "LoRA dropout dx: %lld columns is too many",
                        (long long)in);
    QL_LAUNCH((dim3((unsigned)gx, (unsigned)gy), ELEM_THREADS, 0, ql_cuda_stream()),
              k_lora_dx_dropout)
    (acc, E, lde, A, r, *d, T, in, dx);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
