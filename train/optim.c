#include "core/clock.h"
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* dst[n] = 0 in backend memory: the backend's zero op, or zeros uploaded
 * from `host` (n floats of scratch) where it has none. */
static ql_status zero_backend(const ql_backend *be, float *dst, float *host, int64_t n) {
    if (be->zero_f32) return be->zero_f32(dst, n);
    memset(host, 0, (size_t)n * sizeof *host);
    return be->upload(dst, host, (size_t)n * sizeof *host);
}

ql_status ql_optim_init(ql_optim *o, const ql_backend *be, int64_t n) {
    return ql_optim_init_dist(o, be, n, NULL, NULL);
}

ql_status ql_optim_init_dist(ql_optim *o, const ql_backend *be, int64_t n, ql_comm *comm,
                             ql_comm *dcomm) {
    memset(o, 0, sizeof *o);
    o->be = be;
    o->n = n;
    o->comm = comm;
    o->dcomm = dcomm;
    o->off = 0;
    o->len = n;
    if (comm) ql_dist_slice(n, ql_comm_size(comm), ql_comm_rank(comm), &o->off, &o->len);
    const char *ov = getenv("QL_OVERLAP");
    o->overlap = dcomm && comm && ql_comm_size(comm) > 1 && ql_comm_can_overlap(dcomm) &&
                 !(ov && !strcmp(ov, "0"));
    o->ready_lo = o->sent_lo = n;
    const char *bb = getenv("QL_OVERLAP_BUCKET_BYTES");
    o->bucket_bytes = bb && *bb ? strtoll(bb, NULL, 10) : QL_OPTIM_BUCKET_BYTES;
    /* The CPU backends' memory is the host's: no copies needed. */
    o->host_memory = !strncmp(be->name, "cpu", 3);
    if (o->overlap) {
        o->gather_lo = ql_malloc((QL_OPTIM_MAX_GATHER_PARTS + 1) * sizeof *o->gather_lo,
                                 "the all-gather parts");
        o->gather_id =
            ql_malloc(QL_OPTIM_MAX_GATHER_PARTS * sizeof *o->gather_id, "the all-gather parts");
        if (!o->gather_lo || !o->gather_id) {
            ql_optim_free(o);
            return QL_ENOMEM;
        }
    }
    /* A host copy of the gradient only where the step needs one: a device
     * backend without the vector ops, or several ranks reducing through MPI
     * in host memory (no device communicator). */
    int staged = !o->host_memory && (!be->sq_sum_f32 || !be->scale_f32 || !be->zero_f32 ||
                                     (comm && ql_comm_size(comm) > 1 && !dcomm));
    size_t bytes = (size_t)(staged ? n : o->len) * sizeof(float),
           sbytes = (size_t)o->len * sizeof(float);
    o->host = ql_malloc(bytes ? bytes : 1, "the host gradient buffer");
    if (!o->host) return QL_ENOMEM;
    o->staged = staged;
    ql_status st = be->alloc(sbytes ? sbytes : 1, (void **)&o->m);
    if (st == QL_OK) st = be->alloc(sbytes ? sbytes : 1, (void **)&o->v);
    if (st == QL_OK) st = zero_backend(be, o->m, o->host, o->len);
    if (st == QL_OK) st = zero_backend(be, o->v, o->host, o->len);
    if (st != QL_OK) ql_optim_free(o);
    return st;
}

void ql_optim_free(ql_optim *o) {
    if (o->be) {
        if (o->m) o->be->free(o->m);
        if (o->v) o->be->free(o->v);
    }
    free(o->host);
    free(o->gather_lo);
    free(o->gather_id);
    memset(o, 0, sizeof *o);
}

int ql_optim_can_overlap(const ql_optim *o) { return o->overlap; }

/* Starts reducing [lo, hi) on the device communicator's stream. */
static ql_status start_part(ql_optim *o, float *grads, int64_t lo, int64_t hi) {
    ql_status st =
        ql_comm_reduce_scatter_sum_start(o->dcomm, grads, grads + o->off, o->n, lo, hi, QL_DT_F32);
    o->sent_lo = lo;
    return st;
}

ql_status ql_optim_grads_ready(ql_optim *o, float *grads, int64_t lo, int64_t hi) {
    if (!o->overlap || lo >= hi || hi != o->ready_lo) return QL_OK;
    o->ready_lo = lo;
    if (lo == 0 || (o->sent_lo - lo) * (int64_t)sizeof(float) >= o->bucket_bytes)
        return start_part(o, grads, lo, o->sent_lo);
    return QL_OK;
}

ql_status ql_optim_zero_grads(ql_optim *o, float *grads) {
    o->ready_lo = o->sent_lo = o->n;
    if (o->host_memory) {
        memset(grads, 0, (size_t)o->n * sizeof *grads);
        return QL_OK;
    }
    if (o->be->zero_f32) return o->be->zero_f32(grads, o->n);
    /* Staged: o->host has room for the whole vector. */
    return zero_backend(o->be, grads, o->host, o->n);
}

static int ranks(const ql_optim *o) { return o->comm ? ql_comm_size(o->comm) : 1; }

/* Sums the ranks' gradients into this rank's slice. Afterwards the summed
 * slice is either in backend memory at grads + off (*g = NULL: host-memory
 * backends, where that is the host's, and device backends that reduce on
 * the device), or in host memory at *g (staged device backends: the slice
 * goes back up before AdamW). */
static ql_status reduce_grads(ql_optim *o, float *grads, float **g, double *comm_s) {
    *g = NULL;
    if (ranks(o) == 1) {
        if (!o->staged) return QL_OK;
        *g = o->host;
        return o->be->download(o->host, grads, (size_t)o->len * sizeof(float));
    }
    double t0 = ql_clock_s();
    ql_status st;
    if (o->host_memory) {
        st = ql_comm_reduce_scatter_sum(o->comm, grads, grads + o->off, o->n, QL_DT_F32);
    } else if (o->dcomm) {
        /* NCCL on device memory; the slice stays on the device. Parts the
         * backward pass started (ql_optim_grads_ready): start the rest, wait. */
        if (o->sent_lo < o->n) {
            st = o->sent_lo > 0 ? start_part(o, grads, 0, o->sent_lo) : QL_OK;
            if (st == QL_OK) st = ql_comm_wait(o->dcomm);
            o->ready_lo = o->sent_lo = o->n;
        } else {
            st = ql_comm_reduce_scatter_sum(o->dcomm, grads, grads + o->off, o->n, QL_DT_F32);
        }
        if (st == QL_OK && o->staged)
            st = o->be->download(o->host, grads + o->off, (size_t)o->len * sizeof(float));
        if (o->staged) *g = o->host;
    } else {
        *g = o->host + o->off;
        st = o->be->download(o->host, grads, (size_t)o->n * sizeof(float));
        if (st == QL_OK) st = ql_comm_reduce_scatter_sum(o->comm, o->host, *g, o->n, QL_DT_F32);
    }
    *comm_s += ql_clock_s() - t0;
    return st;
}

/* The global norm: the slices' squared norms (double), summed in rank
 * order. One rank: exactly ql_grad_norm on the host; on a device backend its
 * sq_sum_f32 op (only the 8-byte sum crosses to the host). */
static ql_status global_norm(ql_optim *o, const float *g, const float *dev_slice, double *norm,
                             double *comm_s) {
    double sq;
    if (g)
        sq = ql_grad_sq_sum(g, o->len);
    else if (o->host_memory)
        sq = ql_grad_sq_sum(dev_slice, o->len);
    else
        QL_TRY(o->be->sq_sum_f32(dev_slice, o->len, &sq));
    int R = ranks(o);
    if (R > 1) {
        double t0 = ql_clock_s(), *all = ql_malloc((size_t)R * sizeof *all, "the gradient norms");
        if (!all) return QL_ENOMEM;
        ql_status st = ql_comm_allgather_bytes(o->comm, &sq, all, (int64_t)sizeof sq);
        if (st == QL_OK) {
            sq = all[0];
            for (int r = 1; r < R; r++) sq += all[r];
        }
        free(all);
        *comm_s += ql_clock_s() - t0;
        QL_TRY(st);
    }
    *norm = sqrt(sq);
    return QL_OK;
}

/* Overlap: the all-gather in parts of about the bucket size (at most
 * QL_OPTIM_MAX_GATHER_PARTS), from element 0 up, started behind AdamW. */
static ql_status start_gather(ql_optim *o, float *params) {
    int64_t part = o->bucket_bytes / (int64_t)sizeof(float);
    const int64_t least = (o->n + QL_OPTIM_MAX_GATHER_PARTS - 1) / QL_OPTIM_MAX_GATHER_PARTS;
    if (part < least) part = least;
    if (part < 1) part = 1;
    o->n_gather = o->joined = 0;
    o->gathering = 1;
    for (int64_t lo = 0; lo < o->n; lo += part) {
        const int64_t hi = o->n - lo < part ? o->n : lo + part;
        o->gather_lo[o->n_gather] = lo;
        o->gather_lo[o->n_gather + 1] = hi;
        QL_TRY(ql_comm_allgather_start(o->dcomm, params + o->off, params, o->n, lo, hi, QL_DT_F32,
                                       &o->gather_id[o->n_gather]));
        o->n_gather++;
    }
    return QL_OK;
}

ql_status ql_optim_params_needed(ql_optim *o, int64_t lo, int64_t hi) {
    (void)lo;
    if (!o->gathering) return QL_OK;
    int k = o->joined; /* parts [joined, k) start below hi */
    while (k < o->n_gather && o->gather_lo[k] < hi) k++;
    if (k > o->joined) {
        QL_TRY(ql_comm_join(o->dcomm, o->gather_id[k - 1]));
        o->joined = k;
    }
    if (o->joined < o->n_gather) return QL_OK;
    o->gathering = 0;
    return ql_comm_wait(o->dcomm);
}

ql_status ql_optim_params_sync(ql_optim *o) { return ql_optim_params_needed(o, 0, o->n); }

ql_status ql_optim_drain(ql_optim *o) {
    if (!o->overlap || !o->dcomm) return QL_OK;
    o->gathering = 0;
    o->ready_lo = o->sent_lo = o->n;
    return ql_comm_wait(o->dcomm);
}

/* Every rank's updated slice into every rank's params. */
static ql_status gather_params(ql_optim *o, float *params, double *comm_s) {
    if (ranks(o) == 1) return QL_OK;
    double t0 = ql_clock_s();
    ql_status st;
    if (o->overlap) {
        st = start_gather(o, params);
    } else if (o->host_memory) {
        st = ql_comm_allgather(o->comm, params + o->off, params, o->n, QL_DT_F32);
    } else if (o->dcomm) {
        st = ql_comm_allgather(o->dcomm, params + o->off, params, o->n, QL_DT_F32);
    } else {
        st = o->be->download(o->host + o->off, params + o->off, (size_t)o->len * sizeof(float));
        if (st == QL_OK)
            st = ql_comm_allgather(o->comm, o->host + o->off, o->host, o->n, QL_DT_F32);
        if (st == QL_OK) st = o->be->upload(params, o->host, (size_t)o->n * sizeof(float));
    }
    *comm_s += ql_clock_s() - t0;
    return st;
}

ql_status ql_optim_step(ql_optim *o, const ql_optim_config *c, int64_t step, double loss, double lr,
                        float *params, float *grads, ql_step_result *r) {
    memset(r, 0, sizeof *r);
    QL_TRY(ql_optim_params_sync(o)); /* AdamW rewrites this rank's slice */
    float *g;                        /* the summed slice in host memory when staged, else NULL */
    QL_TRY(reduce_grads(o, grads, &g, &r->comm_s));
    QL_TRY(global_norm(o, g, grads + o->off, &r->grad_norm, &r->comm_s));
    r->clip_coef = 1.0f;
    /* loss and norm are the same on every rank: so is every decision below. */
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
    if (g) {
        /* Staged on the host: clip there, and the slice goes back up when it
         * changed (clipped, or summed over MPI). */
        if (r->clip_coef != 1.0f) ql_grad_scale(g, o->len, r->clip_coef);
        if (r->clip_coef != 1.0f || (ranks(o) > 1 && !o->dcomm))
            QL_TRY(o->be->upload(grads + o->off, g, (size_t)o->len * sizeof *g));
    } else if (r->clip_coef != 1.0f) {
        if (o->host_memory)
            ql_grad_scale(grads + o->off, o->len, r->clip_coef);
        else
            QL_TRY(o->be->scale_f32(grads + o->off, o->len, r->clip_coef));
    }
    ql_adamw h = {.lr = (float)lr,
                  .beta1 = (float)c->beta1,
                  .beta2 = (float)c->beta2,
                  .eps = (float)c->eps,
                  .weight_decay = (float)c->weight_decay};
    o->t++;
    QL_TRY(o->be->adamw(params + o->off, grads + o->off, o->m, o->v, o->len, &h, o->t));
    return gather_params(o, params, &r->comm_s);
}
