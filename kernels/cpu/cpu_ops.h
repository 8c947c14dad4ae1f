/* Internal to the CPU backends: the functions the "cpu-ref" and "cpu" op
 * tables point at. Not part of the public API; callers use kernels/backend.h. */
#ifndef QL_CPU_OPS_H
#define QL_CPU_OPS_H

#include <math.h>

#include "kernels/backend.h"

/* Memory: both CPU backends share host memory, so these serve both tables. */
ql_status ql_alloc_cpu(size_t bytes, void **out);
void ql_free_cpu(void *p);
ql_status ql_upload_cpu(void *dst, const void *host_src, size_t bytes);
ql_status ql_download_cpu(void *host_dst, const void *src, size_t bytes);
ql_status ql_copy_cpu(void *dst, const void *src, size_t bytes);
ql_status ql_q4_upload_cpu(const ql_q4 *host, ql_q4 *dst);
void ql_q4_free_cpu(ql_q4 *dst);
ql_status ql_dense_upload_cpu(const float *host_w, int64_t rows, int64_t cols, int64_t r,
                              ql_q4 *dst);
ql_status ql_sync_cpu(void);
void ql_mem_stats_cpu(ql_mem_stats *s);
void ql_mem_reset_peak_cpu(void);
/* Flat fp32 vectors (kernels/cpu/cpu_vec.c), the same for both tables. */
ql_status ql_zero_f32_cpu(float *x, int64_t n);
ql_status ql_sq_sum_f32_cpu(const float *x, int64_t n, double *sum);
ql_status ql_scale_f32_cpu(float *x, int64_t n, float s);

/* Declares one op under both suffixes. */
#define QL_CPU_DECLARE(ret, name, args)                                                            \
    ret name##_ref args;                                                                           \
    ret name##_cpu args;

QL_CPU_DECLARE(ql_status, ql_q4_dequantize, (const ql_q4 *w, ql_act *out))
QL_CPU_DECLARE(ql_status, ql_q4_lora_fwd,
               (const ql_q4 *w, const ql_lora *lora, const ql_act *x, int64_t T, ql_act *y,
                float *xa))
QL_CPU_DECLARE(ql_status, ql_q4_lora_bwd,
               (const ql_q4 *w, const ql_lora *lora, const ql_act *x, const float *xa,
                const ql_act *dy, int64_t T, ql_act *dx, float *dA, float *dB))
QL_CPU_DECLARE(ql_status, ql_matmul_fwd,
               (const ql_act *W, const ql_act *x, int64_t T, int64_t in, int64_t out, ql_act *y))
QL_CPU_DECLARE(ql_status, ql_matmul_bwd,
               (const ql_act *W, const ql_act *dy, int64_t T, int64_t in, int64_t out, ql_act *dx))
QL_CPU_DECLARE(ql_status, ql_rmsnorm_fwd,
               (const ql_act *x, const float *w, float eps, int64_t T, int64_t d, ql_act *y,
                float *rstd))
QL_CPU_DECLARE(ql_status, ql_rmsnorm_bwd,
               (const ql_act *dy, const ql_act *x, const float *w, const float *rstd, int64_t T,
                int64_t d, ql_act *dx))
QL_CPU_DECLARE(ql_status, ql_rope_fwd,
               (ql_act * x, const int32_t *pos, const float *inv_freq, int64_t T, int n_heads,
                int head_dim))
QL_CPU_DECLARE(ql_status, ql_rope_bwd,
               (ql_act * dx, const int32_t *pos, const float *inv_freq, int64_t T, int n_heads,
                int head_dim))
QL_CPU_DECLARE(ql_status, ql_swiglu_fwd,
               (const ql_act *gate, const ql_act *up, int64_t n, ql_act *out))
QL_CPU_DECLARE(ql_status, ql_swiglu_bwd,
               (const ql_act *dout, const ql_act *gate, const ql_act *up, int64_t n, ql_act *dgate,
                ql_act *dup))
QL_CPU_DECLARE(ql_status, ql_attn_fwd,
               (const ql_act *q, const ql_act *k, const ql_act *v, const int32_t *doc,
                const ql_attn_shape *s, ql_act *out, float *lse))
QL_CPU_DECLARE(ql_status, ql_attn_bwd,
               (const ql_act *dout, const ql_act *q, const ql_act *k, const ql_act *v,
                const ql_act *out, const float *lse, const int32_t *doc, const ql_attn_shape *s,
                ql_act *dq, ql_act *dk, ql_act *dv))
QL_CPU_DECLARE(ql_status, ql_attn_cached_fwd,
               (const ql_act *q, const ql_act *k, const ql_act *v, int64_t T, int64_t pos0,
                const ql_attn_shape *s, ql_act *out))
QL_CPU_DECLARE(ql_status, ql_embed_fwd,
               (const ql_act *table, const int32_t *ids, int64_t T, int64_t d, ql_act *out))
QL_CPU_DECLARE(ql_status, ql_xent_fwd_bwd,
               (const ql_act *logits, const int32_t *targets, int64_t T, int64_t V,
                float grad_scale, float *losses, ql_act *dlogits))
QL_CPU_DECLARE(ql_status, ql_adamw,
               (float *param, const float *grad, float *m, float *v, int64_t n, const ql_adamw *h,
                int64_t step))

/* Element e of the LoRA branch's input (kernels/dropout.h). */
static inline float ql_lora_input(const ql_lora *l, const float *x, int64_t e) {
    return ql_dropout_apply(&l->drop, x[e], e);
}

QL_CPU_DECLARE(ql_status, ql_bias_add, (ql_act * y, const float *b, int64_t T, int64_t n))
QL_CPU_DECLARE(ql_status, ql_add, (const ql_act *x, const ql_act *y, int64_t n, ql_act *out))

#undef QL_CPU_DECLARE

/* Shared by both backends so that they agree on what is rejected. */
ql_status ql_xent_check_targets(const int32_t *targets, int64_t T, int64_t V);
void ql_attn_check_shape(const ql_attn_shape *s);

/* Scalars of one AdamW step, rounded to float32 as torch's single-tensor
 * AdamW rounds its Python-float scalars when it applies them. */
typedef struct ql_adamw_scalars {
    float decay; /* 1 - lr * weight_decay */
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float bc2_sqrt; /* sqrt(1 - beta2^t) */
    float neg_step; /* -lr / (1 - beta1^t) */
    float eps;
} ql_adamw_scalars;
ql_adamw_scalars ql_adamw_scalars_for(const ql_adamw *h, int64_t step);

/* One element of the AdamW step, shared by both CPU backends so they agree
 * bit for bit. torch's vectorized add(alpha=) and addcmul contract to fused
 * multiply-adds, hence the fmaf. */
static inline void ql_adamw_elem(const ql_adamw_scalars *c, float *param, float g, float *m,
                                 float *v) {
    float p = *param * c->decay;
    *m = fmaf(c->one_minus_beta1, g, *m * c->beta1);
    *v = fmaf(c->one_minus_beta2 * g, g, *v * c->beta2);
    float denom = sqrtf(*v) / c->bc2_sqrt + c->eps;
    *param = p + c->neg_step * *m / denom;
}

#endif
