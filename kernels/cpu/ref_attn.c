/* Reference causal attention with GQA and the per-document mask, one query
 * row at a time, in double. The backward recomputes the probabilities from
 * the saved lse, as a flash-attention backward does, so it checks that the
 * lse the forward saves is the one the backward needs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void ql_attn_check_shape(const ql_attn_shape *s) {
    QL_ASSERT(s->batch > 0 && s->seq > 0 && s->head_dim > 0);
    QL_ASSERT(s->n_kv_heads > 0 && s->n_heads % s->n_kv_heads == 0);
}

/* Key j is visible to query i (same row of the batch). */
static int visible(const int32_t *doc_row, int64_t i, int64_t j) {
    return j <= i && (!doc_row || doc_row[j] == doc_row[i]);
}

/* Query row i over keys 0..i that it sees (all of them without doc_row):
 * out = softmax(q·kᵀ·scale)·v in double; returns the row's lse. Key j's
 * vectors are k + j·stride, v + j·stride; score and acc are scratch of
 * i + 1 and D doubles. */
static double attend_row(const float *qi, const float *k, const float *v, int64_t stride, int64_t D,
                         double scale, const int32_t *doc_row, int64_t i, double *score,
                         double *acc, float *out) {
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; j++) {
        if (!visible(doc_row, i, j)) continue;
        const float *kj = k + j * stride;
        double dot = 0.0;
        for (int64_t c = 0; c < D; c++) dot += (double)qi[c] * kj[c];
        score[j] = dot * scale;
        if (score[j] > mx) mx = score[j];
    }
    double sum = 0.0;
    memset(acc, 0, (size_t)D * sizeof(double));
    for (int64_t j = 0; j <= i; j++) {
        if (!visible(doc_row, i, j)) continue;
        double p = exp(score[j] - mx);
        sum += p;
        const float *vj = v + j * stride;
        for (int64_t c = 0; c < D; c++) acc[c] += p * vj[c];
    }
    for (int64_t c = 0; c < D; c++) out[c] = (float)(acc[c] / sum);
    return mx + log(sum);
}

ql_status ql_attn_fwd_ref(const ql_act *q_, const ql_act *k_, const ql_act *v_, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *out_, float *lse) {
    ql_attn_check_shape(s);
    const float *q = q_, *k = k_, *v = v_;
    float *out = out_;
    const int64_t S = s->seq, D = s->head_dim, H = s->n_heads, KV = s->n_kv_heads;
    const int group = (int)(H / KV);
    const double scale = 1.0 / sqrt((double)D);
    double *score = malloc((size_t)S * sizeof(double));
    double *acc = malloc((size_t)D * sizeof(double));
    if (!score || !acc) {
        free(score);
        free(acc);
        return ql_error(QL_ENOMEM, "cpu-ref attn_fwd: out of memory");
    }
    for (int64_t b = 0; b < s->batch; b++) {
        const int32_t *doc_row = doc ? doc + b * S : NULL;
        for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / group, at = (b * S * KV + g) * D;
            for (int64_t i = 0; i < S; i++)
                lse[(b * H + h) * S + i] = (float)attend_row(
                    q + ((b * S + i) * H + h) * D, k + at, v + at, KV * D, D, scale, doc_row, i,
                    score, acc, out + ((b * S + i) * H + h) * D);
        }
    }
    free(score);
    free(acc);
    return QL_OK;
}

/* p_ij = exp(s_ij - lse_i); dP_ij = dout_i·v_j; D_i = dout_i·out_i;
 * dS_ij = p_ij (dP_ij - D_i); dq_i = scale Σ_j dS_ij k_j; dk_j = scale Σ_i dS_ij q_i;
 * dv_j = Σ_i p_ij dout_i, summed over the query heads sharing a kv head. */
ql_status ql_attn_bwd_ref(const ql_act *dout_, const ql_act *q_, const ql_act *k_, const ql_act *v_,
                          const ql_act *out_, const float *lse, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *dq_, ql_act *dk_, ql_act *dv_) {
    ql_attn_check_shape(s);
    const float *dout = dout_, *q = q_, *k = k_, *v = v_, *out = out_;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const int64_t S = s->seq, D = s->head_dim, H = s->n_heads, KV = s->n_kv_heads;
    const int group = (int)(H / KV);
    const double scale = 1.0 / sqrt((double)D);
    size_t nkv = (size_t)(s->batch * S * KV * D);
    double *dk_acc = calloc(nkv, sizeof(double));
    double *dv_acc = calloc(nkv, sizeof(double));
    double *dq_acc = calloc((size_t)D, sizeof(double));
    if (!dk_acc || !dv_acc || !dq_acc) {
        free(dk_acc);
        free(dv_acc);
        free(dq_acc);
        return ql_error(QL_ENOMEM, "cpu-ref attn_bwd: out of memory");
    }
    for (int64_t b = 0; b < s->batch; b++) {
        const int32_t *doc_row = doc ? doc + b * S : NULL;
        for (int64_t h = 0; h < H; h++) {
            int64_t g = h / group;
            for (int64_t i = 0; i < S; i++) {
                int64_t qrow = ((b * S + i) * H + h) * D;
                const float *qi = q + qrow, *doi = dout + qrow, *oi = out + qrow;
                double Di = 0.0;
                for (int64_t c = 0; c < D; c++) Di += (double)doi[c] * oi[c];
                double l = lse[(b * H + h) * S + i];
                memset(dq_acc, 0, (size_t)D * sizeof(double));
                for (int64_t j = 0; j <= i; j++) {
                    if (!visible(doc_row, i, j)) continue;
                    int64_t krow = ((b * S + j) * KV + g) * D;
                    const float *kj = k + krow, *vj = v + krow;
                    double dot = 0.0, dp = 0.0;
                    for (int64_t c = 0; c < D; c++) {
                        dot += (double)qi[c] * kj[c];
                        dp += (double)doi[c] * vj[c];
                    }
                    double p = exp(dot * scale - l);
                    double ds = p * (dp - Di);
                    for (int64_t c = 0; c < D; c++) {
                        dq_acc[c] += ds * kj[c];
                        dk_acc[krow + c] += ds * qi[c];
                        dv_acc[krow + c] += p * doi[c];
                    }
                }
                for (int64_t c = 0; c < D; c++) dq[qrow + c] = (float)(dq_acc[c] * scale);
            }
        }
    }
    for (size_t e = 0; e < nkv; e++) {
        dk[e] = (float)(dk_acc[e] * scale);
        dv[e] = (float)dv_acc[e];
    }
    free(dk_acc);
    free(dv_acc);
    free(dq_acc);
    return QL_OK;
}

/* Row t (position pos0 + t) over cached keys 0..pos0 + t, in double. */
ql_status ql_attn_cached_fwd_ref(const ql_act *q_, const ql_act *k_, const ql_act *v_, int64_t T,
                                 int64_t pos0, const ql_attn_shape *s, ql_act *out_) {
    QL_ASSERT(T > 0 && pos0 >= 0 && s->head_dim > 0 && s->n_kv_heads > 0 &&
              s->n_heads % s->n_kv_heads == 0);
    const float *q = q_, *k = k_, *v = v_;
    float *out = out_;
    const int64_t H = s->n_heads, D = s->head_dim, KV = s->n_kv_heads, group = H / KV;
    const double scale = 1.0 / sqrt((double)D);
    double *score = malloc((size_t)(pos0 + T) * sizeof(double));
    double *acc = malloc((size_t)D * sizeof(double));
    if (!score || !acc) {
        free(score);
        free(acc);
        return ql_error(QL_ENOMEM, "cpu-ref attn_cached_fwd: out of memory");
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++)
            attend_row(q + (t * H + h) * D, k + (h / group) * D, v + (h / group) * D, KV * D, D,
                       scale, NULL, pos0 + t, score, acc, out + (t * H + h) * D);
    free(score);
    free(acc);
    return QL_OK;
}
