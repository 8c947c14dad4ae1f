#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/clip.h"

ql_optim_config ql_optim_config_from(const ql_config *c) {
    ql_optim_config o = {
        .weight_decay = c->train.weight_decay,
        .beta1 = c->train.adam_beta1,
        .beta2 = c->train.adam_beta2,
        .eps = c->train.adam_epsilon,
        .max_grad_norm = c->train.max_grad_norm,
        .on_nonfinite = (ql_nonfinite)c->train.on_nonfinite,
        .max_nonfinite_in_a_row = c->train.max_nonfinite_in_a_row,
    };
    return o;
}

static ql_status upload_zeros(const ql_backend *be, float *dst, float *host, int64_t n) {
    memset(host, 0, (size_t)n * sizeof *host);
    return be->upload(dst, host, (size_t)n * sizeof *host);
}

ql_status ql_optim_init(ql_optim *o, const ql_backend *be, int64_t n) {
    memset(o, 0, sizeof *o);
    o->be = be;
    o->n = n;
    /* The CPU backends' memory is the host's: no copies needed. */
    o->host_memory = !strncmp(be->name, "cpu", 3);
    size_t bytes = (size_t)n * sizeof(float);
    o->host = ql_malloc(bytes ? bytes : 1, "the host gradient buffer");
    if (!o->host) return QL_ENOMEM;
    ql_status st = be->alloc(bytes ? bytes : 1, (void **)&o->m);
    if (st == QL_OK) st = be->alloc(bytes ? bytes : 1, (void **)&o->v);
    if (st == QL_OK) st = upload_zeros(be, o->m, o->host, n);
    if (st == QL_OK) st = upload_zeros(be, o->v, o->host, n);
    if (st != QL_OK) ql_optim_free(o);
    return st;
}

void ql_optim_free(ql_optim *o) {
    if (o->be) {
        if (o->m) o->be->free(o->m);
        if (o->v) o->be->free(o->v);
    }
    free(o->host);
    memset(o, 0, sizeof *o);
}

ql_status ql_optim_zero_grads(ql_optim *o, float *grads) {
    if (o->host_memory) {
        memset(grads, 0, (size_t)o->n * sizeof *grads);
        return QL_OK;
    }
    return upload_zeros(o->be, grads, o->host, o->n);
}

ql_status ql_optim_step(ql_optim *o, const ql_optim_config *c, int64_t step, double loss, double lr,
                        float *params, float *grads, ql_step_result *r) {
    memset(r, 0, sizeof *r);
    float *g = grads;
    if (!o->host_memory) {
        QL_TRY(o->be->download(o->host, grads, (size_t)o->n * sizeof *g));
        g = o->host;
    }
    r->grad_norm = ql_grad_norm(g, o->n);
    r->clip_coef = 1.0f;
    if (!isfinite(loss) || !isfinite(r->grad_norm)) {
        r->skipped = 1;
        o->nonfinite_in_a_row++;
        o->nonfinite_total++;
        const char *what = !isfinite(loss) ? "loss" : "gradient norm";
        double bad = !isfinite(loss) ? loss : r->grad_norm;
        if (c->on_nonfinite == QL_NONFINITE_STOP)
            return ql_error(QL_EINVAL,
                            "step %lld: the %s is %s and train.on_nonfinite is stop; lower "
                            "train.lr or check the data",
                            (long long)step, what, isnan(bad) ? "NaN" : "infinite");
        if (o->nonfinite_in_a_row >= c->max_nonfinite_in_a_row)
            return ql_error(QL_EINVAL,
                            "step %lld: the loss or the gradient was NaN/Inf in %lld steps in a "
                            "row (train.max_nonfinite_in_a_row = %lld; last: %s %s); lower "
                            "train.lr or check the data",
                            (long long)step, (long long)o->nonfinite_in_a_row,
                            (long long)c->max_nonfinite_in_a_row, what,
                            isnan(bad) ? "NaN" : "infinite");
        return QL_OK;
    }
    o->nonfinite_in_a_row = 0;
    r->clip_coef = ql_clip_coef(r->grad_norm, c->max_grad_norm);
    if (r->clip_coef != 1.0f) {
        ql_grad_scale(g, o->n, r->clip_coef);
        if (!o->host_memory) QL_TRY(o->be->upload(grads, g, (size_t)o->n * sizeof *g));
    }
    ql_adamw h = {.lr = (float)lr,
                  .beta1 = (float)c->beta1,
                  .beta2 = (float)c->beta2,
                  .eps = (float)c->eps,
                  .weight_decay = (float)c->weight_decay};
    o->t++;
    return o->be->adamw(params, grads, o->m, o->v, o->n, &h, o->t);
}
