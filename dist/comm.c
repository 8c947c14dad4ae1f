/* dist/comm.h over three transports: a rank alone (no MPI), MPI
 * (dist/comm_mpi.c) and NCCL (dist/comm_nccl.c). What is common lives here:
 * the slice partition, opening and closing, the watchdog around every
 * collective, argument checks, and all-reduce as reduce-scatter + all-gather
 * (so that its sums have the same fixed rank order). */
#include "dist/comm_impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef QL_HAVE_CUDA
#include "kernels/cuda_api.h"
#endif

#define DEFAULT_TIMEOUT_S 600.0
#define DEFAULT_BUCKET (4 << 20) /* elements: 16 MiB of float32 */

void ql_dist_slice(int64_t n, int size, int rank, int64_t *off, int64_t *len) {
    int64_t base = n / size, extra = n % size;
    *len = base + (rank < extra ? 1 : 0);
    *off = (int64_t)rank * base + (rank < extra ? rank : extra);
}

static ql_status timeout_from_env(double *out) {
    const char *v = getenv("QL_DIST_TIMEOUT_S");
    *out = DEFAULT_TIMEOUT_S;
    if (!v || !*v) return QL_OK;
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || end == v || *end || !(t >= 0) || !isfinite(t))
        return ql_error(QL_EINVAL,
                        "environment variable QL_DIST_TIMEOUT_S = '%s': expected seconds >= 0 "
                        "(0: no limit)",
                        v);
    *out = t;
    return QL_OK;
}

/* The watchdog's end of the job: say so on this rank, then take every rank
 * down. If MPI_Abort itself hung, SIGALRM's default action ends this rank. */
static void on_stuck(void *ctx, const char *message) {
    ql_comm *c = ctx;
    fprintf(stderr, "qlora: error: rank %d (%s): %s\n", c->rank, c->w.host, message);
    fflush(stderr);
    alarm(30);
    ql_comm_abort(c, 1);
}

ql_status ql_comm_open(const ql_world *w, ql_comm **out) {
    *out = NULL;
    double timeout;
    QL_TRY(timeout_from_env(&timeout));
    ql_comm *c = ql_calloc(1, sizeof *c, "the communicator");
    if (!c) return QL_ENOMEM;
    c->w = *w;
    c->failed_rank = -1;
    c->bucket_elems = DEFAULT_BUCKET;
    /* A world of one needs no MPI; PMIx worlds say their size only through
     * MPI (size 0). */
    if (w->size == 1) {
        c->kind = QL_COMM_SELF;
        c->rank = 0;
        c->size = 1;
        *out = c;
        return QL_OK;
    }
    c->kind = QL_COMM_MPI;
    ql_status st = ql_mpi_open(c);
    if (st == QL_OK) st = ql_watchdog_start(timeout, on_stuck, c, &c->wd);
    if (st != QL_OK) {
        ql_mpi_close(c);
        free(c);
        return st;
    }
    *out = c;
    return QL_OK;
}

ql_status ql_comm_close(ql_comm *c) {
    if (!c) return QL_OK;
    switch (c->kind) {
    case QL_COMM_SELF: break;
    case QL_COMM_MPI:
        ql_watchdog_stop(c->wd);
        ql_mpi_close(c);
        break;
    case QL_COMM_NCCL:
#ifdef QL_HAVE_NCCL
        ql_nccl_close(c);
#endif
        break;
    }
    free(c);
    return QL_OK;
}

int ql_comm_rank(const ql_comm *c) { return c->rank; }
int ql_comm_size(const ql_comm *c) { return c->size; }
const ql_world *ql_comm_world(const ql_comm *c) { return &c->w; }

/* The communicator that carries host-memory traffic and the watchdog. */
static ql_comm *host_of(ql_comm *c) { return c->kind == QL_COMM_NCCL ? c->host : c; }

void ql_comm_set_timeout(ql_comm *c, double seconds) {
    ql_watchdog_set_timeout(host_of(c)->wd, seconds);
}
double ql_comm_timeout(const ql_comm *c) {
    const ql_comm *h = c->kind == QL_COMM_NCCL ? c->host : c;
    return h->wd ? ql_watchdog_timeout(h->wd) : 0;
}

void ql_comm_set_phase(ql_comm *c, const char *fmt, ...) {
    ql_comm *h = host_of(c);
    if (!h->wd) return;
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ql_watchdog_set_phase(h->wd, buf);
}

void ql_comm_set_bucket(ql_comm *c, int64_t elements) {
    c->bucket_elems = elements > 0 ? elements : 1;
}

int ql_comm_failed_rank(const ql_comm *c) { return host_of((ql_comm *)c)->failed_rank; }
const char *ql_comm_agreed_message(const ql_comm *c) { return host_of((ql_comm *)c)->agreed; }
int ql_comm_broken(const ql_comm *c) {
    return c->broken || (c->kind == QL_COMM_NCCL && c->host->broken);
}

int ql_comm_device_memory(const ql_comm *c) { return c->kind == QL_COMM_NCCL; }

/* --- the collectives ------------------------------------------------------- */

/* NCCL's calls poll with the same limit themselves (dist/comm_nccl.c) and
 * abort the NCCL communicator first; the watchdog guards MPI's. */
#define ENTER(c, name)                                                                             \
    do {                                                                                           \
        if ((c)->kind != QL_COMM_NCCL) ql_watchdog_enter((c)->wd, name);                           \
    } while (0)
#define LEAVE(c)                                                                                   \
    do {                                                                                           \
        if ((c)->kind != QL_COMM_NCCL) ql_watchdog_leave((c)->wd);                                 \
    } while (0)

ql_status ql_comm_agree(ql_comm *c, ql_status local) {
    ql_comm *h = host_of(c);
    if (h->kind == QL_COMM_SELF) {
        h->failed_rank = local == QL_OK ? -1 : 0;
        h->agreed[0] = h->agreed_raw[0] = '\0';
        snprintf(h->agreed_host, sizeof h->agreed_host, "%s", h->w.host);
        if (local != QL_OK) {
            snprintf(h->agreed_raw, sizeof h->agreed_raw, "%s", ql_error_message());
            snprintf(h->agreed, sizeof h->agreed, "rank 0 (%s): %s", h->w.host, h->agreed_raw);
        }
        return local;
    }
    ENTER(h, "agree");
    ql_status st = ql_mpi_agree(h, local);
    LEAVE(h);
    return st;
}

ql_status ql_comm_barrier(ql_comm *c) {
    ql_comm *h = host_of(c);
    if (h->kind == QL_COMM_SELF) return QL_OK;
    ENTER(h, "barrier");
    ql_status st = ql_mpi_barrier(h);
    LEAVE(h);
    return st;
}

ql_status ql_comm_bcast(ql_comm *c, void *buf, int64_t bytes, int root) {
    ql_comm *h = host_of(c);
    QL_ASSERT(root >= 0 && root < h->size && bytes >= 0);
    if (h->kind == QL_COMM_SELF) return QL_OK;
    ENTER(h, "broadcast");
    ql_status st = ql_mpi_bcast(h, buf, bytes, root);
    LEAVE(h);
    return st;
}

static int summable(ql_dtype dt) { return dt == QL_DT_F32 || dt == QL_DT_F64 || dt == QL_DT_I64; }

ql_status ql_comm_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n,
                                     ql_dtype dt) {
    QL_ASSERT(n >= 0 && summable(dt));
    if (c->kind == QL_COMM_SELF) {
        if (out != in) memmove(out, in, (size_t)n * ql_dtype_size(dt));
        return QL_OK;
    }
    ENTER(c, "reduce-scatter");
    ql_status st;
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL)
        st = ql_nccl_reduce_scatter_sum(c, in, out, n, dt);
    else
#endif
        st = ql_mpi_reduce_scatter_sum(c, in, out, n, dt);
    LEAVE(c);
    return st;
}

int ql_comm_can_overlap(const ql_comm *c) { return c->kind == QL_COMM_NCCL; }

ql_status ql_comm_reduce_scatter_sum_start(ql_comm *c, const void *in, void *out, int64_t n,
                                           int64_t lo, int64_t hi, ql_dtype dt) {
    QL_ASSERT(n >= 0 && lo >= 0 && lo <= hi && hi <= n && summable(dt));
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL) return ql_nccl_reduce_scatter_sum_start(c, in, out, n, lo, hi, dt);
#endif
    (void)in, (void)out;
    return ql_error(QL_EINTERNAL, "ql_comm_reduce_scatter_sum_start: this communicator cannot "
                                  "overlap (check ql_comm_can_overlap)");
}

ql_status ql_comm_allgather_start(ql_comm *c, const void *in, void *out, int64_t n, int64_t lo,
                                  int64_t hi, ql_dtype dt, int *part) {
    QL_ASSERT(n >= 0 && lo >= 0 && lo <= hi && hi <= n);
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL) return ql_nccl_allgather_start(c, in, out, n, lo, hi, dt, part);
#endif
    (void)in, (void)out, (void)dt, (void)part;
    return ql_error(QL_EINTERNAL, "ql_comm_allgather_start: this communicator cannot overlap "
                                  "(check ql_comm_can_overlap)");
}

ql_status ql_comm_join(ql_comm *c, int part) {
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL) return ql_nccl_join(c, part);
#endif
    (void)c, (void)part;
    return QL_OK;
}

ql_status ql_comm_wait(ql_comm *c) {
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL) return ql_nccl_wait(c);
#endif
    (void)c;
    return QL_OK;
}

ql_status ql_comm_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt) {
    QL_ASSERT(n >= 0);
    if (c->kind == QL_COMM_SELF) {
        if (out != in) memmove(out, in, (size_t)n * ql_dtype_size(dt));
        return QL_OK;
    }
    ENTER(c, "all-gather");
    ql_status st;
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL)
        st = ql_nccl_allgather(c, in, out, n, dt);
    else
#endif
        st = ql_mpi_allgather(c, in, out, n, dt);
    LEAVE(c);
    return st;
}

ql_status ql_comm_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes) {
    ql_comm *h = host_of(c);
    QL_ASSERT(bytes >= 0);
    if (h->kind == QL_COMM_SELF) {
        if (out != in) memmove(out, in, (size_t)bytes);
        return QL_OK;
    }
    ENTER(h, "all-gather");
    ql_status st = ql_mpi_allgather_bytes(h, in, out, bytes);
    LEAVE(h);
    return st;
}

/* Reduce-scatter into this rank's slice of buf itself, then all-gather the
 * slices: every element is the same rank-ordered sum as reduce-scatter's. */
ql_status ql_comm_allreduce_sum(ql_comm *c, void *buf, int64_t count, ql_dtype dt) {
    QL_ASSERT(count >= 0 && summable(dt));
    if (c->kind == QL_COMM_SELF) return QL_OK;
    ENTER(c, "all-reduce");
    ql_status st;
#ifdef QL_HAVE_NCCL
    if (c->kind == QL_COMM_NCCL) {
        st = ql_nccl_allreduce_sum(c, buf, count, dt);
        LEAVE(c);
        return st;
    }
#endif
    int64_t off, len;
    ql_dist_slice(count, c->size, c->rank, &off, &len);
    char *slice = (char *)buf + off * (int64_t)ql_dtype_size(dt);
    st = ql_mpi_reduce_scatter_sum(c, buf, slice, count, dt);
    if (st == QL_OK) st = ql_mpi_allgather(c, slice, buf, count, dt);
    LEAVE(c);
    return st;
}

void ql_comm_abort(ql_comm *c, int exit_code) {
    fflush(stdout);
    fflush(stderr);
    ql_comm *h = c ? host_of(c) : NULL;
    if (h && h->kind == QL_COMM_MPI) ql_mpi_abort(h, exit_code);
    _exit(exit_code);
}

/* --- devices --------------------------------------------------------------- */

ql_status ql_comm_bind_device(const ql_comm *c, int *device) {
    *device = -1;
#ifdef QL_HAVE_CUDA
    int n = ql_cuda_device_count();
    if (n <= 0) return QL_OK;
    int local = c->w.local_rank >= 0 ? c->w.local_rank : 0;
    /* CUDA_VISIBLE_DEVICES already narrowed what CUDA numbers 0..n-1: a
     * launcher that gives each task its own GPU leaves one, device 0. */
    *device = local % n;
    ql_status st = ql_cuda_set_device(*device);
    if (st != QL_OK)
        return ql_error_wrap(st, "rank %d: binding GPU %d of %d visible: ", c->rank, *device, n);
#else
    (void)c;
#endif
    return QL_OK;
}

#ifndef QL_HAVE_NCCL
ql_status ql_comm_open_device(ql_comm *host, ql_comm **out) {
    (void)host;
    *out = NULL;
    return ql_error(QL_EUNSUPPORTED,
                    "this build has no NCCL (built without CUDA, or nccl.h/libnccl were not found "
                    "next to the CUDA toolkit): device communicators are unavailable");
}
#endif
