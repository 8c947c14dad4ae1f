/* Fast causal attention: the same math as the reference in float32, with
 * OpenMP over (batch, head) in the forward and over (batch, kv head) in the
 * backward, so the threads that sum into a kv head's dk/dv are never more
 * than one. Scores are recomputed in the backward from the saved lse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_lanes.h"
#include "kernels/cpu/cpu_ops.h"

static int visible(const int32_t *doc_row, int64_t i, int64_t j) {
    return !doc_row || doc_row[j] == doc_row[i];
}

ql_status ql_attn_fwd_cpu(const ql_act *q_, const ql_act *k_, const ql_act *v_, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *out_, float *lse) {
    ql_attn_check_shape(s);
    const float *q = q_, *k = k_, *v = v_;
    float *out = out_;
    const int64_t S = s->seq, D = s->head_dim, H = s->n_heads, KV = s->n_kv_heads;
    const int64_t group = H / KV;
    const float scale = (float)(1.0 / sqrt((double)D));
    int failed = 0;
#pragma omp parallel
    {
        float *score = malloc((size_t)S * sizeof(float));
        float *acc = malloc((size_t)D * sizeof(float));
        if (!score || !acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < s->batch * H; bh++) {
            if (!score || !acc) continue;
            int64_t b = bh / H, h = bh % H, g = h / group;
            const int32_t *doc_row = doc ? doc + b * S : NULL;
            for (int64_t i = 0; i < S; i++) {
                const float *qi = q + ((b * S + i) * H + h) * D;
                float mx = -INFINITY;
                for (int64_t j = 0; j <= i; j++) {
                    if (!visible(doc_row, i, j)) continue;
                    score[j] = ql_dot_lanes(qi, k + ((b * S + j) * KV + g) * D, D) * scale;
                    mx = score[j] > mx ? score[j] : mx;
                }
                float sum = 0.0f;
                memset(acc, 0, (size_t)D * sizeof(float));
                for (int64_t j = 0; j <= i; j++) {
                    if (!visible(doc_row, i, j)) continue;
                    float p = expf(score[j] - mx);
                    sum += p;
                    const float *vj = v + ((b * S + j) * KV + g) * D;
                    for (int64_t c = 0; c < D; c++) acc[c] += p * vj[c];
                }
                float inv = 1.0f / sum;
                float *oi = out + ((b * S + i) * H + h) * D;
                for (int64_t c = 0; c < D; c++) oi[c] = acc[c] * inv;
                lse[(b * H + h) * S + i] = mx + logf(sum);
            }
        }
        free(score);
        free(acc);
    }
    return failed ? ql_error(QL_ENOMEM, "cpu attn_fwd: out of memory") : QL_OK;
}

ql_status ql_attn_bwd_cpu(const ql_act *dout_, const ql_act *q_, const ql_act *k_, const ql_act *v_,
                          const ql_act *out_, const float *lse, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *dq_, ql_act *dk_, ql_act *dv_) {
    ql_attn_check_shape(s);
    const float *dout = dout_, *q = q_, *k = k_, *v = v_, *out = out_;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const int64_t S = s->seq, D = s->head_dim, H = s->n_heads, KV = s->n_kv_heads;
    const int64_t group = H / KV;
    const float scale = (float)(1.0 / sqrt((double)D));
    int failed = 0;
#pragma omp parallel
    {
        float *dq_acc = malloc((size_t)D * sizeof(float));
        if (!dq_acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t bg = 0; bg < s->batch * KV; bg++) {
            if (!dq_acc) continue;
            int64_t b = bg / KV, g = bg % KV;
            const int32_t *doc_row = doc ? doc + b * S : NULL;
            for (int64_t j = 0; j < S; j++) {
                memset(dk + ((b * S + j) * KV + g) * D, 0, (size_t)D * sizeof(float));
                memset(dv + ((b * S + j) * KV + g) * D, 0, (size_t)D * sizeof(float));
            }
            for (int64_t h = g * group; h < (g + 1) * group; h++)
                for (int64_t i = 0; i < S; i++) {
                    int64_t qrow = ((b * S + i) * H + h) * D;
                    const float *qi = q + qrow, *doi = dout + qrow;
                    float Di = ql_dot_lanes(doi, out + qrow, D);
                    float l = lse[(b * H + h) * S + i];
                    memset(dq_acc, 0, (size_t)D * sizeof(float));
                    for (int64_t j = 0; j <= i; j++) {
                        if (!visible(doc_row, i, j)) continue;
                        int64_t krow = ((b * S + j) * KV + g) * D;
                        const float *kj = k + krow, *vj = v + krow;
                        float p = expf(ql_dot_lanes(qi, kj, D) * scale - l);
                        float ds = p * (ql_dot_lanes(doi, vj, D) - Di);
                        float dss = ds * scale;
                        float *dkj = dk + krow, *dvj = dv + krow;
                        for (int64_t c = 0; c < D; c++) {
                            dq_acc[c] += ds * kj[c];
                            dkj[c] += dss * qi[c];
                            dvj[c] += p * doi[c];
                        }
                    }
                    for (int64_t c = 0; c < D; c++) dq[qrow + c] = dq_acc[c] * scale;
                }
        }
        free(dq_acc);
    }
    return failed ? ql_error(QL_ENOMEM, "cpu attn_bwd: out of memory") : QL_OK;
}
