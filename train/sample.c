/* Token sampling (train/sample.h). */
#include "train/sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

ql_status ql_sampler_init(ql_sampler *s, int64_t V) {
    s->V = V;
    s->p = ql_malloc((size_t)V * sizeof *s->p, "sampling probabilities");
    s->cand = ql_malloc((size_t)V * sizeof *s->cand, "sampling candidates");
    if (!s->p || !s->cand) {
        ql_sampler_free(s);
        return QL_ENOMEM;
    }
    return QL_OK;
}

void ql_sampler_free(ql_sampler *s) {
    free(s->p);
    free(s->cand);
    s->p = NULL;
    s->cand = NULL;
}

/* Candidates by logit, largest first; equal logits by id (deterministic). */
static int by_logit(const void *a, const void *b) {
    const ql_sample_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The k-th largest of n candidates' logits: Hoare quickselect (descending)
 * on a copy, so only the survivors need sorting. */
static float kth_largest(const ql_sample_cand *c, int64_t n, int64_t k, float *tmp) {
    for (int64_t i = 0; i < n; i++) tmp[i] = c[i].logit;
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = tmp[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (tmp[i] > pivot) i++;
            while (tmp[j] < pivot) j--;
            if (i <= j) {
                float t = tmp[i];
                tmp[i] = tmp[j];
                tmp[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return tmp[want];
}

ql_status ql_sample(ql_sampler *s, const float *logits, const ql_sampling *c, ql_rng *rng,
                    int32_t *out) {
    const int64_t V = s->V;
    int64_t n = 0;
    int32_t best = -1;
    for (int64_t v = 0; v < V; v++) {
        if (!isfinite(logits[v])) continue;
        s->cand[n++] = (ql_sample_cand){.logit = logits[v], .id = (int32_t)v};
        if (best < 0 || logits[v] > logits[best]) best = (int32_t)v;
    }
    if (n == 0) return ql_error(QL_EINVAL, "sampling: every logit is -inf or NaN");
    if (!(c->temperature > 0.0)) {
        *out = best;
        return QL_OK;
    }
    /* top-k: keep logits >= the k-th largest, then the first k of those. */
    if (c->top_k > 0 && c->top_k < n) {
        float th = kth_largest(s->cand, n, c->top_k, s->p);
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (s->cand[i].logit >= th) s->cand[m++] = s->cand[i];
        n = m;
    }
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit);
    if (c->top_k > 0 && n > c->top_k) n = c->top_k; /* ties at the threshold: lowest ids */
    /* Softmax of logits / T over the candidates, in double. */
    const double inv_t = 1.0 / c->temperature, top = (double)s->cand[0].logit * inv_t;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = exp((double)s->cand[i].logit * inv_t - top);
        s->p[i] = (float)e;
        sum += e;
    }
    /* top-p: token i stays while the probability before it is below top_p. */
    if (c->top_p < 1.0) {
        double cum = 0.0;
        int64_t m = 0;
        while (m < n && (m == 0 || cum < c->top_p * sum)) cum += s->p[m++];
        n = m;
        sum = cum;
    }
    double u = (double)ql_rng_uniform(rng) * sum, acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        acc += s->p[i];
        if (u < acc) {
            *out = s->cand[i].id;
            return QL_OK;
        }
    }
    *out = s->cand[n - 1].id; /* rounding at the very end of the range */
    return QL_OK;
}

void ql_sampling_describe(const ql_sampling *c, char *buf, int n) {
    if (!(c->temperature > 0.0)) {
        snprintf(buf, (size_t)n, "greedy");
        return;
    }
    int k = snprintf(buf, (size_t)n, "temperature %g", c->temperature);
    if (k > 0 && k < n && c->top_k > 0)
        k += snprintf(buf + k, (size_t)(n - k), ", top-k %lld", (long long)c->top_k);
    if (k > 0 && k < n && c->top_p < 1.0)
        snprintf(buf + k, (size_t)(n - k), ", top-p %g", c->top_p);
}
