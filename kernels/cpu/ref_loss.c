/* Reference cross-entropy (with ignored targets) and AdamW. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_ops.h"

ql_status ql_xent_check_targets(const int32_t *targets, int64_t T, int64_t V) {
    for (int64_t t = 0; t < T; t++)
        if (targets[t] >= V)
            return ql_error(QL_EINVAL,
                            "cross-entropy: target %d at token %lld is outside the vocabulary "
                            "of %lld (use a negative target to ignore a position)",
                            targets[t], (long long)t, (long long)V);
    return QL_OK;
}

/* loss = logsumexp(l) - l[target], max-subtracted; the gradient row is
 * written after the row's lse is known, so dlogits may alias logits. */
ql_status ql_xent_fwd_bwd_ref(const ql_act *logits_, const int32_t *targets, int64_t T, int64_t V,
                              float grad_scale, float *losses, ql_act *dlogits_) {
    const float *logits = logits_;
    float *dlogits = dlogits_;
    QL_TRY(ql_xent_check_targets(targets, T, V));
    for (int64_t t = 0; t < T; t++) {
        const float *lt = logits + t * V;
        if (targets[t] < 0) {
            losses[t] = 0.0f;
            if (dlogits)
                for (int64_t j = 0; j < V; j++) dlogits[t * V + j] = 0.0f;
            continue;
        }
        double mx = -INFINITY;
        for (int64_t j = 0; j < V; j++)
            if (lt[j] > mx) mx = lt[j];
        double sum = 0.0;
        for (int64_t j = 0; j < V; j++) sum += exp((double)lt[j] - mx);
        double lse = mx + log(sum);
        losses[t] = (float)(lse - lt[targets[t]]);
        if (dlogits)
            for (int64_t j = 0; j < V; j++) {
                double p = exp((double)lt[j] - lse);
                dlogits[t * V + j] = (float)(grad_scale * (p - (j == targets[t] ? 1.0 : 0.0)));
            }
    }
    return QL_OK;
}

/* The double a config value most likely was before it was stored as float:
 * the shortest decimal that rounds to f (0.999f -> 0.999, not
 * 0.99900001287). torch computes 1 - beta2 and beta^t from that double;
 * doing it from the float would put 1 - beta2 off by ~1e-5 relative. */
static double intended(float f) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return f;
}

/* torch/optim/adamw.py _single_tensor_adamw: Python-float scalars (double),
 * each rounded to float32 where it meets a float32 tensor. */
ql_adamw_scalars ql_adamw_scalars_for(const ql_adamw *h, int64_t step) {
    QL_ASSERT(step >= 1);
    double lr = intended(h->lr), b1 = intended(h->beta1), b2 = intended(h->beta2);
    double bc1 = 1.0 - pow(b1, (double)step);
    double bc2 = 1.0 - pow(b2, (double)step);
    ql_adamw_scalars c;
    c.decay = (float)(1.0 - lr * intended(h->weight_decay));
    c.beta1 = h->beta1;
    c.one_minus_beta1 = (float)(1.0 - b1);
    c.beta2 = h->beta2;
    c.one_minus_beta2 = (float)(1.0 - b2);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.neg_step = (float)(-(lr / bc1));
    c.eps = h->eps;
    return c;
}

ql_status ql_adamw_ref(float *param, const float *grad, float *m, float *v, int64_t n,
                       const ql_adamw *h, int64_t step) {
    ql_adamw_scalars c = ql_adamw_scalars_for(h, step);
    for (int64_t i = 0; i < n; i++) ql_adamw_elem(&c, &param[i], grad[i], &m[i], &v[i]);
    return QL_OK;
}
