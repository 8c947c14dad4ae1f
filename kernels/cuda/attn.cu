/* The op table's attn_fwd / attn_bwd on CUDA: picks the tensor-core flash
 * kernels (attn_fwd.cu, attn_bwd.cu) for head_dim 64 or 128 with 16-byte
 * aligned tensors, the plain kernels (attn_simt.cu) otherwise, and computes
 * the backward's Dvec = rowsum(dout ⊙ out) once for both. */
#include "kernels/cuda/attn_common.cuh"

extern "C" {
#include "kernels/cpu/cpu_ops.h"
}

static bool attn_tc_ok(const attn_geom &g, const void *const *ptrs, int n) {
    if (g.D != 64 && g.D != 128) return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] & 15u) return false;
    return true;
}

static ql_status attn_check(const ql_attn_shape *s) {
    ql_attn_check_shape(s);
    QL_ASSERT(s->n_heads <= 65535 && s->batch <= 65535);
    if (s->head_dim > ATT_SIMT_MAX_D)
        return ql_error(QL_EUNSUPPORTED, "CUDA attention: head_dim %d (at most %d supported)",
                        s->head_dim, ATT_SIMT_MAX_D);
    return QL_OK;
}

extern "C" ql_status ql_attn_fwd_cuda(const ql_act *q, const ql_act *k, const ql_act *v,
                                      const int32_t *doc, const ql_attn_shape *s, ql_act *out,
                                      float *lse) {
    QL_TRY(attn_check(s));
    const attn_geom g = attn_geom_of(s);
    const void *ptrs[] = {q, k, v, out};
    if (attn_tc_ok(g, ptrs, 4))
        return ql_attn_fwd_tc(g, (const ql_bf16 *)q, (const ql_bf16 *)k, (const ql_bf16 *)v, doc,
                              (ql_bf16 *)out, lse);
    return ql_attn_fwd_simt(g, (const ql_bf16 *)q, (const ql_bf16 *)k, (const ql_bf16 *)v, doc,
                            (ql_bf16 *)out, lse);
}

/* One warp per (b, i, h) row: lanes take every 32nd element, then a fixed
 * butterfly. dvec is [batch, heads, seq] like lse. */
__global__ void k_attn_dvec(const attn_geom g, const ql_bf16 *dout, const ql_bf16 *out,
                            float *dvec) {
    const int64_t rows = g.batch * g.S * g.H;
    const int lane = threadIdx.x & 31;
    for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; r < rows;
         r += ((int64_t)gridDim.x * blockDim.x) >> 5) {
        const ql_bf16 *a = dout + r * g.D, *o = out + r * g.D;
        float s = 0.0f;
        for (int c = lane; c < g.D; c += 32) s += ql_ld_bf16(a + c) * ql_ld_bf16(o + c);
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) {
            const int64_t h = r % g.H, bi = r / g.H; /* bi = b * S + i */
            const int64_t b = bi / g.S, i = bi % g.S;
            dvec[(b * g.H + h) * g.S + i] = s;
        }
    }
}

extern "C" ql_status ql_attn_bwd_cuda(const ql_act *dout, const ql_act *q, const ql_act *k,
                                      const ql_act *v, const ql_act *out, const float *lse,
                                      const int32_t *doc, const ql_attn_shape *s, ql_act *dq,
                                      ql_act *dk, ql_act *dv) {
    QL_TRY(attn_check(s));
    const attn_geom g = attn_geom_of(s);
    float *dvec;
    QL_TRY(ql_cuda_scratch(QL_SCRATCH_ATTN_D, (size_t)(g.batch * g.H * g.S) * sizeof(float),
                           (void **)&dvec));
    const int64_t rows = g.batch * g.S * g.H;
    QL_LAUNCH((ql_cuda_grid(rows * 32, 256), 256, 0, ql_cuda_stream()), k_attn_dvec)
    (g, (const ql_bf16 *)dout, (const ql_bf16 *)out, dvec);
    QL_CUDA_LAUNCHED();
    const void *ptrs[] = {dout, q, k, v, dq, dk, dv};
    if (attn_tc_ok(g, ptrs, 7))
        return ql_attn_bwd_tc(g, (const ql_bf16 *)dout, (const ql_bf16 *)q, (const ql_bf16 *)k,
                              (const ql_bf16 *)v, lse, dvec, doc, (ql_bf16 *)dq, (ql_bf16 *)dk,
                              (ql_bf16 *)dv);
    return ql_attn_bwd_simt(g, (const ql_bf16 *)dout, (const ql_bf16 *)q, (const ql_bf16 *)k,
                            (const ql_bf16 *)v, lse, dvec, doc, (ql_bf16 *)dq, (ql_bf16 *)dk,
                            (ql_bf16 *)dv);
}
