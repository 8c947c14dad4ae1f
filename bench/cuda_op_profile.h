/* Where a training step's device time goes, op by op: a ql_backend that
 * forwards every call to another one and times each compute op with CUDA
 * events around it (bench_cuda_train --profile). The stop waits for the
 * device, so a profiled step runs op after op with gaps between them: the
 * sum of the ops' times is the device's work, not the step's wall time
 * (the unprofiled step time beside it shows what the gaps and launches
 * cost). Memory ops pass through untimed. Header-only: one benchmark uses
 * it. */
#ifndef QL_CUDA_OP_PROFILE_H
#define QL_CUDA_OP_PROFILE_H

#include "cuda_bench_util.h"

#ifdef QL_HAVE_CUDA

#define PROF_OPS(X)                                                                                \
    X(q4_dequantize)                                                                               \
    X(q4_lora_fwd)                                                                                 \
    X(q4_lora_bwd)                                                                                 \
    X(bias_add)                                                                                    \
    X(add)                                                                                         \
    X(matmul_fwd)                                                                                  \
    X(matmul_bwd)                                                                                  \
    X(rmsnorm_fwd)                                                                                 \
    X(rmsnorm_bwd)                                                                                 \
    X(rope_fwd)                                                                                    \
    X(rope_bwd)                                                                                    \
    X(swiglu_fwd)                                                                                  \
    X(swiglu_bwd)                                                                                  \
    X(attn_fwd)                                                                                    \
    X(attn_bwd)                                                                                    \
    X(embed_fwd)                                                                                   \
    X(xent_fwd_bwd)                                                                                \
    X(adamw)                                                                                       \
    X(zero_f32)                                                                                    \
    X(sq_sum_f32)                                                                                  \
    X(scale_f32)

enum {
#define PROF_ENUM(name) PROF_##name,
    PROF_OPS(PROF_ENUM)
#undef PROF_ENUM
        PROF_N
};

static const char *const prof_names[PROF_N] = {
#define PROF_NAME(name) #name,
    PROF_OPS(PROF_NAME)
#undef PROF_NAME
};

static const ql_backend *prof_inner;
static ql_cuda_timer *prof_timer;
static double prof_ms[PROF_N];
static int prof_calls[PROF_N];

static void prof_begin(void) { BTRY(ql_cuda_timer_start(prof_timer, NULL)); }
static ql_status prof_end(int op, ql_status st) {
    float ms = 0;
    BTRY(ql_cuda_timer_stop(prof_timer, NULL, &ms));
    prof_ms[op] += ms;
    prof_calls[op]++;
    return st;
}

/* One wrapper per op: time the inner call. */
#define PROF_WRAP(name, params, args)                                                              \
    static ql_status prof_##name params {                                                          \
        prof_begin();                                                                              \
        return prof_end(PROF_##name, prof_inner->name args);                                       \
    }
PROF_WRAP(q4_dequantize, (const ql_q4 *w, ql_act *out), (w, out))
PROF_WRAP(q4_lora_fwd,
          (const ql_q4 *w, const ql_lora *l, const ql_act *x, int64_t T, ql_act *y, float *xa),
          (w, l, x, T, y, xa))
PROF_WRAP(q4_lora_bwd,
          (const ql_q4 *w, const ql_lora *l, const ql_act *x, const float *xa, const ql_act *dy,
           int64_t T, ql_act *dx, float *dA, float *dB),
          (w, l, x, xa, dy, T, dx, dA, dB))
PROF_WRAP(bias_add, (ql_act * y, const float *b, int64_t T, int64_t n), (y, b, T, n))
PROF_WRAP(add, (const ql_act *x, const ql_act *y, int64_t n, ql_act *out), (x, y, n, out))
PROF_WRAP(matmul_fwd,
          (const ql_act *W, const ql_act *x, int64_t T, int64_t in, int64_t out, ql_act *y),
          (W, x, T, in, out, y))
PROF_WRAP(matmul_bwd,
          (const ql_act *W, const ql_act *dy, int64_t T, int64_t in, int64_t out, ql_act *dx),
          (W, dy, T, in, out, dx))
PROF_WRAP(rmsnorm_fwd,
          (const ql_act *x, const float *w, float eps, int64_t T, int64_t d, ql_act *y,
           float *rstd),
          (x, w, eps, T, d, y, rstd))
PROF_WRAP(rmsnorm_bwd,
          (const ql_act *dy, const ql_act *x, const float *w, const float *rstd, int64_t T,
           int64_t d, ql_act *dx),
          (dy, x, w, rstd, T, d, dx))
PROF_WRAP(rope_fwd, (ql_act * x, const int32_t *pos, const float *f, int64_t T, int nh, int hd),
          (x, pos, f, T, nh, hd))
PROF_WRAP(rope_bwd, (ql_act * dx, const int32_t *pos, const float *f, int64_t T, int nh, int hd),
          (dx, pos, f, T, nh, hd))
PROF_WRAP(swiglu_fwd, (const ql_act *g, const ql_act *u, int64_t n, ql_act *out), (g, u, n, out))
PROF_WRAP(swiglu_bwd,
          (const ql_act *d, const ql_act *g, const ql_act *u, int64_t n, ql_act *dg, ql_act *du),
          (d, g, u, n, dg, du))
PROF_WRAP(attn_fwd,
          (const ql_act *q, const ql_act *k, const ql_act *v, const int32_t *doc,
           const ql_attn_shape *s, ql_act *out, float *lse),
          (q, k, v, doc, s, out, lse))
PROF_WRAP(attn_bwd,
          (const ql_act *dout, const ql_act *q, const ql_act *k, const ql_act *v, const ql_act *out,
           const float *lse, const int32_t *doc, const ql_attn_shape *s, ql_act *dq, ql_act *dk,
           ql_act *dv),
          (dout, q, k, v, out, lse, doc, s, dq, dk, dv))
PROF_WRAP(embed_fwd, (const ql_act *t, const int32_t *ids, int64_t T, int64_t d, ql_act *out),
          (t, ids, T, d, out))
PROF_WRAP(xent_fwd_bwd,
          (const ql_act *l, const int32_t *t, int64_t T, int64_t V, float gs, float *losses,
           ql_act *dl),
          (l, t, T, V, gs, losses, dl))
PROF_WRAP(adamw,
          (float *p, const float *g, float *m, float *v, int64_t n, const ql_adamw *h,
           int64_t step),
          (p, g, m, v, n, h, step))
PROF_WRAP(zero_f32, (float *x, int64_t n), (x, n))
PROF_WRAP(sq_sum_f32, (const float *x, int64_t n, double *sum), (x, n, sum))
PROF_WRAP(scale_f32, (float *x, int64_t n, float s), (x, n, s))
#undef PROF_WRAP

/* The timing wrapper of `inner` (which must have every op of PROF_OPS);
 * the counters start at zero. */
static const ql_backend *prof_wrap(const ql_backend *inner) {
    static ql_backend w;
    prof_inner = inner;
    if (!prof_timer) BTRY(ql_cuda_timer_create(&prof_timer));
    memset(prof_ms, 0, sizeof prof_ms);
    memset(prof_calls, 0, sizeof prof_calls);
    w = *inner;
#define PROF_SET(name) w.name = inner->name ? prof_##name : NULL;
    PROF_OPS(PROF_SET)
#undef PROF_SET
    return &w;
}

#endif /* QL_HAVE_CUDA */
#endif
