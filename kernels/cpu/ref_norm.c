/* Reference RMSNorm, RoPE, SwiGLU and embedding lookup. RMSNorm and RoPE keep
 * the float32 rounding points of transformers' modeling_llama.py (rstd and the
 * normalized value are float32 before the weight multiplies; cos/sin of a
 * float32 angle) so the reference is close to what HF computes, while sums
 * are taken in double. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

ql_status ql_rmsnorm_fwd_ref(const ql_act *x_, const float *w, float eps, int64_t T, int64_t d,
                             ql_act *y_, float *rstd) {
    const float *x = x_;
    float *y = y_;
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * d;
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++) ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        rstd[t] = r;
        for (int64_t i = 0; i < d; i++) y[t * d + i] = w[i] * (xt[i] * r);
    }
    return QL_OK;
}

/* y_i = w_i x_i r with r = (mean(x²) + eps)^-1/2, and dr/dx_j = -r³ x_j / d, so
 * dx_j = r (w_j dy_j - x_j r² Σ_i w_i dy_i x_i / d). */
ql_status ql_rmsnorm_bwd_ref(const ql_act *dy_, const ql_act *x_, const float *w, const float *rstd,
                             int64_t T, int64_t d, ql_act *dx_) {
    const float *dy = dy_, *x = x_;
    float *dx = dx_;
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * d, *dyt = dy + t * d;
        double r = rstd[t];
        double dot = 0.0;
        for (int64_t i = 0; i < d; i++) dot += (double)w[i] * dyt[i] * xt[i];
        double c = r * r * dot / (double)d;
        for (int64_t i = 0; i < d; i++)
            dx[t * d + i] = (float)(r * ((double)w[i] * dyt[i] - (double)xt[i] * c));
    }
    return QL_OK;
}

/* Rotates each (i, i + d/2) pair of every head by `sign` · angle. */
static void rope_rotate(float *x, const int32_t *pos, const float *inv_freq, int64_t T, int n_heads,
                        int head_dim, float sign) {
    int half = head_dim / 2;
    for (int64_t t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float angle = (float)pos[t] * inv_freq[i];
                float c = cosf(angle), s = sign * sinf(angle);
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
}

ql_status ql_rope_fwd_ref(ql_act *x, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim) {
    QL_ASSERT(head_dim % 2 == 0);
    rope_rotate(x, pos, inv_freq, T, n_heads, head_dim, 1.0f);
    return QL_OK;
}

/* The rotation is orthogonal: its transpose is the rotation by -angle. */
ql_status ql_rope_bwd_ref(ql_act *dx, const int32_t *pos, const float *inv_freq, int64_t T,
                          int n_heads, int head_dim) {
    QL_ASSERT(head_dim % 2 == 0);
    rope_rotate(dx, pos, inv_freq, T, n_heads, head_dim, -1.0f);
    return QL_OK;
}

ql_status ql_swiglu_fwd_ref(const ql_act *gate_, const ql_act *up_, int64_t n, ql_act *out_) {
    const float *gate = gate_, *up = up_;
    float *out = out_;
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        double silu = g / (1.0 + exp(-g));
        out[i] = (float)(silu * up[i]);
    }
    return QL_OK;
}

/* silu'(g) = σ(g) (1 + g (1 - σ(g))). */
ql_status ql_swiglu_bwd_ref(const ql_act *dout_, const ql_act *gate_, const ql_act *up_, int64_t n,
                            ql_act *dgate_, ql_act *dup_) {
    const float *dout = dout_, *gate = gate_, *up = up_;
    float *dgate = dgate_, *dup = dup_;
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        double sig = 1.0 / (1.0 + exp(-g));
        double silu = g * sig;
        double dsilu = sig * (1.0 + g * (1.0 - sig));
        double u = up[i], d = dout[i];
        dgate[i] = (float)(d * u * dsilu);
        dup[i] = (float)(d * silu);
    }
    return QL_OK;
}

ql_status ql_embed_fwd_ref(const ql_act *table_, const int32_t *ids, int64_t T, int64_t d,
                           ql_act *out_) {
    const float *table = table_;
    float *out = out_;
    for (int64_t t = 0; t < T; t++) {
        QL_ASSERT(ids[t] >= 0);
        memcpy(out + t * d, table + (int64_t)ids[t] * d, (size_t)d * sizeof(float));
    }
    return QL_OK;
}
