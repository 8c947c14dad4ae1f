/* Fast row-wise and elementwise ops: float32 arithmetic, OpenMP over rows or
 * elements, each row reduced by one thread in a fixed order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_lanes.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_v8.h"

ql_status ql_rmsnorm_fwd_cpu(const ql_act *x_, const float *w, float eps, int64_t T, int64_t d,
                             ql_act *y_, float *rstd) {
    const float *x = x_;
    float *y = y_;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * d;
        float r = 1.0f / sqrtf(ql_dot_lanes(xt, xt, d) / (float)d + eps);
        rstd[t] = r;
        float *yt = y + t * d;
        for (int64_t i = 0; i < d; i++) yt[i] = w[i] * (xt[i] * r);
    }
    return QL_OK;
}

ql_status ql_rmsnorm_bwd_cpu(const ql_act *dy_, const ql_act *x_, const float *w, const float *rstd,
                             int64_t T, int64_t d, ql_act *dx_) {
    const float *dy = dy_, *x = x_;
    float *dx = dx_;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * d, *dyt = dy + t * d;
        float *dxt = dx + t * d;
        float acc[QL_LANES] = {0};
        int64_t i = 0;
        for (; i + QL_LANES <= d; i += QL_LANES)
            for (int l = 0; l < QL_LANES; l++) acc[l] += w[i + l] * dyt[i + l] * xt[i + l];
        for (int l = 0; i < d; i++, l++) acc[l] += w[i] * dyt[i] * xt[i];
        float r = rstd[t];
        float c = r * r * ql_lanes_total(acc) / (float)d;
        for (i = 0; i < d; i++) dxt[i] = r * (w[i] * dyt[i] - xt[i] * c);
    }
    return QL_OK;
}

/* cos/sin once per token, shared by its heads. */
static ql_status rope_rotate(float *x, const int32_t *pos, const float *inv_freq, int64_t T,
                             int n_heads, int head_dim, float sign) {
    QL_ASSERT(head_dim % 2 == 0);
    const int half = head_dim / 2;
    int failed = 0;
#pragma omp parallel
    {
        float *cs = malloc((size_t)head_dim * sizeof(float));
        if (!cs) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            if (!cs) continue;
            for (int i = 0; i < half; i++) {
                float angle = (float)pos[t] * inv_freq[i];
                cs[i] = cosf(angle);
                cs[half + i] = sign * sinf(angle);
            }
            for (int h = 0; h < n_heads; h++) {
                float *xh = x + (t * n_heads + h) * head_dim;
                for (int i = 0; i < half; i++) {
                    float a = xh[i], b = xh[i + half], c = cs[i], s = cs[half + i];
                    xh[i] = a * c - b * s;
                    xh[i + half] = b * c + a * s;
                }
            }
        }
        free(cs);
    }
    return failed ? ql_error(QL_ENOMEM, "cpu rope: out of memory") : QL_OK;
}

ql_status ql_rope_fwd_cpu(ql_act *x, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim) {
    return rope_rotate(x, pos, inv_freq, T, n_heads, head_dim, 1.0f);
}

ql_status ql_rope_bwd_cpu(ql_act *dx, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim) {
    return rope_rotate(dx, pos, inv_freq, T, n_heads, head_dim, -1.0f);
}

/* SiLU's exp for a chunk of gates at a time, eight lanes at once. */
#define SWIGLU_CHUNK 512

static void neg_exp(float *e, const float *gate, int64_t n) {
    for (int64_t i = 0; i < n; i++) e[i] = -gate[i];
    ql_exp_f32(e, e, n);
}

ql_status ql_swiglu_fwd_cpu(const ql_act *gate_, const ql_act *up_, int64_t n, ql_act *out_) {
    const float *gate = gate_, *up = up_;
    float *out = out_;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n; c += SWIGLU_CHUNK) {
        int64_t len = n - c < SWIGLU_CHUNK ? n - c : SWIGLU_CHUNK;
        float e[SWIGLU_CHUNK];
        neg_exp(e, gate + c, len);
        for (int64_t i = 0; i < len; i++) out[c + i] = gate[c + i] / (1.0f + e[i]) * up[c + i];
    }
    return QL_OK;
}

ql_status ql_swiglu_bwd_cpu(const ql_act *dout_, const ql_act *gate_, const ql_act *up_, int64_t n,
                            ql_act *dgate_, ql_act *dup_) {
    const float *dout = dout_, *gate = gate_, *up = up_;
    float *dgate = dgate_, *dup = dup_;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n; c += SWIGLU_CHUNK) {
        int64_t len = n - c < SWIGLU_CHUNK ? n - c : SWIGLU_CHUNK;
        float e[SWIGLU_CHUNK];
        neg_exp(e, gate + c, len);
        for (int64_t k = 0; k < len; k++) {
            int64_t i = c + k;
            float g = gate[i], u = up[i], d = dout[i];
            float sig = 1.0f / (1.0f + e[k]);
            float silu = g * sig;
            dgate[i] = d * u * (sig * (1.0f + g * (1.0f - sig)));
            dup[i] = d * silu;
        }
    }
    return QL_OK;
}

ql_status ql_embed_fwd_cpu(const ql_act *table_, const int32_t *ids, int64_t T, int64_t d,
                           ql_act *out_) {
    const float *table = table_;
    float *out = out_;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        QL_ASSERT(ids[t] >= 0);
        memcpy(out + t * d, table + (int64_t)ids[t] * d, (size_t)d * sizeof(float));
    }
    return QL_OK;
}

#define XENT_CHUNK 1024

ql_status ql_xent_fwd_bwd_cpu(const ql_act *logits_, const int32_t *targets, int64_t T, int64_t V,
                              float grad_scale, float *losses, ql_act *dlogits_) {
    const float *logits = logits_;
    float *dlogits = dlogits_;
    QL_TRY(ql_xent_check_targets(targets, T, V));
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *lt = logits + t * V;
        float *dt = dlogits ? dlogits + t * V : NULL;
        int32_t y = targets[t];
        if (y < 0) {
            losses[t] = 0.0f;
            if (dt) memset(dt, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY, picked = lt[y];
        for (int64_t j = 0; j < V; j++) mx = lt[j] > mx ? lt[j] : mx;
        /* exp(l - max) once, into the gradient row where there is one, else
         * a chunk at a time; summed in 8 lanes in index order either way. */
        float acc[QL_LANES] = {0}, chunk[XENT_CHUNK];
        for (int64_t j0 = 0; j0 < V; j0 += XENT_CHUNK) {
            int64_t len = V - j0 < XENT_CHUNK ? V - j0 : XENT_CHUNK;
            float *e = dt ? dt + j0 : chunk;
            for (int64_t j = 0; j < len; j++) e[j] = lt[j0 + j] - mx;
            ql_exp_f32(e, e, len);
            ql_lanes_add(acc, e, len); /* XENT_CHUNK is a multiple of the lanes */
        }
        float sum = ql_lanes_total(acc);
        float lse = mx + logf(sum);
        losses[t] = lse - picked;
        if (dt) {
            float inv = grad_scale / sum;
            for (int64_t j = 0; j < V; j++) dt[j] *= inv;
            dt[y] -= grad_scale;
        }
    }
    return QL_OK;
}

/* Elementwise, so identical to the reference bit for bit. */
ql_status ql_adamw_cpu(float *param, const float *grad, float *m, float *v, int64_t n,
                       const ql_adamw *h, int64_t step) {
    ql_adamw_scalars c = ql_adamw_scalars_for(h, step);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) ql_adamw_elem(&c, &param[i], grad[i], &m[i], &v[i]);
    return QL_OK;
}
