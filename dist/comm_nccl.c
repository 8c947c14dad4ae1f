/* The NCCL transport of dist/comm.h (CUDA builds with NCCL): device memory,
 * a stream of its own, a communicator created non-blocking from a unique id
 * that rank 0 broadcasts over MPI.
 *
 * No call here waits without a limit. NCCL's non-blocking mode returns
 * ncclInProgress instead of blocking; every operation is then polled
 * (ncclCommGetAsyncError, cudaStreamQuery) until it completes, fails, or the
 * host communicator's timeout (dist.timeout_s) passes, when ncclCommAbort
 * frees this rank from the collective and the call returns QL_EBACKEND; the
 * launcher then ends the job (NVIDIA/nccl#585: a blocking collective whose
 * peer died never returns).
 *
 * Determinism: unless the user set them, NCCL_ALGO=Ring and NCCL_PROTO=Simple
 * are set before the communicator is created, so the reduction order is
 * fixed for a given world size and machine (docs/distributed.md, "NCCL").
 * The partition is ql_dist_slice's, which may be uneven: reduce-scatter is a
 * group of ncclReduce calls, one to each slice's owner, and all-gather a
 * group of ncclBroadcast calls from each owner; the traffic is that of
 * ncclReduceScatter / ncclAllGather. */
#ifdef QL_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "dist/comm_impl.h"

typedef struct nccl_state {
    ncclComm_t comm;
    cudaStream_t stream;
    int device;
    cudaEvent_t queued; /* overlap: the compute stream's work so far */
    cudaEvent_t *parts; /* all-gather part k is done when parts[k] is reached */
    int n_parts, cap_parts;
} nccl_state;

static ql_status nccl_fail(ql_comm *c, const char *what, ncclResult_t r) {
    c->broken = 1;
    nccl_state *s = c->nccl;
    /* NULL is a valid argument: the reason matters most when there is no
     * communicator yet (a failed ncclCommInitRankConfig). */
    const char *last = ncclGetLastError(s ? s->comm : NULL);
    return ql_error(QL_EBACKEND, "rank %d: NCCL %s failed: %s%s%s", c->rank, what,
                    ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}

static ql_status cuda_fail(ql_comm *c, const char *what, cudaError_t e) {
    c->broken = 1;
    return ql_error(QL_EBACKEND, "rank %d: %s failed: %s", c->rank, what, cudaGetErrorString(e));
}

static double limit_s(ql_comm *c) {
    double t = c->host ? ql_comm_timeout(c->host) : 0;
    return t > 0 ? t : 1e30;
}

/* Waits until the communicator has no operation in progress and the stream
 * has drained, or aborts the communicator after the time limit. */
static ql_status wait_done(ql_comm *c, const char *what, int stream_too) {
    nccl_state *s = c->nccl;
    double t0 = ql_clock_s(), limit = limit_s(c);
    for (;;) {
        ncclResult_t ar = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(s->comm, &ar);
        if (r != ncclSuccess) return nccl_fail(c, what, r);
        if (ar != ncclSuccess && ar != ncclInProgress) return nccl_fail(c, what, ar);
        if (ar == ncclSuccess) {
            if (!stream_too) return QL_OK;
            cudaError_t e = cudaStreamQuery(s->stream);
            if (e == cudaSuccess) return QL_OK;
            if (e != cudaErrorNotReady) return cuda_fail(c, what, e);
        }
        if (ql_clock_s() - t0 > limit) {
            ncclCommAbort(s->comm);
            s->comm = NULL;
            c->broken = 1;
            return ql_error(QL_EBACKEND,
                            "rank %d (%s): NCCL %s did not complete in %g s (dist.timeout_s or "
                            "QL_DIST_TIMEOUT_S); a rank is stuck or has died; the NCCL "
                            "communicator was aborted",
                            c->rank, c->w.host, what, limit);
        }
        struct timespec nap = {0, 50000}; /* 50 us: a short wait, a cheap poll */
        nanosleep(&nap, NULL);
    }
}

/* An NCCL call in non-blocking mode: ncclInProgress is not an error. */
#define NCCL_ENQ(c, what, call)                                                                    \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess && r_ != ncclInProgress) return nccl_fail((c), (what), r_);          \
    } while (0)
/* The same inside ncclGroupStart/End: a failure closes the group first, or
 * every later NCCL call of this thread would be queued into it. */
#define NCCL_ENQ_GROUP(c, what, call)                                                              \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess && r_ != ncclInProgress) {                                           \
            ql_status st_ = nccl_fail((c), (what), r_);                                            \
            ncclGroupEnd();                                                                        \
            return st_;                                                                            \
        }                                                                                          \
    } while (0)

static ncclDataType_t nccl_type(ql_dtype dt) {
    switch (dt) {
    case QL_DT_F32: return ncclFloat32;
    case QL_DT_F64: return ncclFloat64;
    case QL_DT_I64: return ncclInt64;
    default: QL_ASSERT(!"an NCCL-summable dtype"); return ncclFloat32;
    }
}

/* The compute work that produced the input is on other streams: finish it. */
static ql_status before(ql_comm *c, const char *what) {
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? QL_OK : cuda_fail(c, what, e);
}

ql_status ql_comm_open_device(ql_comm *host, ql_comm **out) {
    *out = NULL;
    if (host->kind == QL_COMM_NCCL)
        return ql_error(QL_EINTERNAL, "ql_comm_open_device: the host communicator is NCCL's");
    /* Fixed algorithm and protocol: the reduction order does not change from
     * one run (or one message size) to the next. A user's choice wins. */
    setenv("NCCL_ALGO", "Ring", 0);
    setenv("NCCL_PROTO", "Simple", 0);
    ql_comm *c = ql_calloc(1, sizeof *c, "the NCCL communicator");
    nccl_state *s = c ? ql_calloc(1, sizeof *s, "the NCCL communicator") : NULL;
    if (!s) {
        free(c);
        return QL_ENOMEM;
    }
    c->kind = QL_COMM_NCCL;
    c->w = host->w;
    c->rank = host->rank;
    c->size = host->size;
    c->host = host;
    c->failed_rank = -1;
    c->nccl = s;
    ql_status st = QL_OK;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    cudaError_t e = cudaGetDevice(&s->device);
    if (e != cudaSuccess) st = cuda_fail(c, "cudaGetDevice", e);
    if (st == QL_OK && c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) st = nccl_fail(c, "ncclGetUniqueId", r);
    }
    /* Rank 0's failure to make an id must not leave the others waiting. */
    st = ql_comm_agree(host, st);
    if (st == QL_OK) st = ql_comm_bcast(host, &id, (int64_t)sizeof id, 0);
    if (st == QL_OK) {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        ncclResult_t r = ncclCommInitRankConfig(&s->comm, c->size, id, c->rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress)
            st = nccl_fail(c, "ncclCommInitRankConfig", r);
        else
            st = wait_done(c, "communicator initialisation", 0);
    }
    if (st == QL_OK) {
        e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) st = cuda_fail(c, "cudaStreamCreateWithFlags", e);
    }
    st = ql_comm_agree(host, st);
    if (st != QL_OK) {
        /* Another rank may have no communicator: finalizing would wait for
         * it until the timeout. Abort instead. */
        c->broken = 1;
        ql_nccl_close(c);
        free(c);
        return st;
    }
    *out = c;
    return QL_OK;
}

void ql_nccl_close(ql_comm *c) {
    nccl_state *s = c->nccl;
    if (!s) return;
    if (s->comm) {
        if (c->broken) {
            ncclCommAbort(s->comm);
        } else {
            ncclResult_t r = ncclCommFinalize(s->comm);
            if ((r == ncclSuccess || r == ncclInProgress) &&
                wait_done(c, "communicator finalisation", 0) == QL_OK && s->comm)
                ncclCommDestroy(s->comm);
            else if (s->comm)
                ncclCommAbort(s->comm);
        }
        s->comm = NULL;
    }
    if (s->queued) cudaEventDestroy(s->queued);
    for (int k = 0; k < s->cap_parts; k++) cudaEventDestroy(s->parts[k]);
    free(s->parts);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
    c->nccl = NULL;
}

ql_status ql_nccl_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n,
                                     ql_dtype dt) {
    nccl_state *s = c->nccl;
    size_t es = ql_dtype_size(dt);
    QL_TRY(before(c, "reduce-scatter"));
    NCCL_ENQ(c, "ncclGroupStart", ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        int64_t off, len;
        ql_dist_slice(n, c->size, r, &off, &len);
        if (len == 0) continue; /* the same on every rank */
        NCCL_ENQ_GROUP(c, "ncclReduce",
                       ncclReduce((const char *)in + (size_t)off * es, out, (size_t)len,
                                  nccl_type(dt), ncclSum, r, s->comm, s->stream));
    }
    NCCL_ENQ(c, "ncclGroupEnd", ncclGroupEnd());
    return wait_done(c, "reduce-scatter", 1);
}

ql_status ql_nccl_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt) {
    nccl_state *s = c->nccl;
    size_t es = ql_dtype_size(dt);
    QL_TRY(before(c, "all-gather"));
    NCCL_ENQ(c, "ncclGroupStart", ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        int64_t off, len;
        ql_dist_slice(n, c->size, r, &off, &len);
        if (len == 0) continue;
        char *dst = (char *)out + (size_t)off * es;
        NCCL_ENQ_GROUP(c, "ncclBroadcast",
                       ncclBroadcast(r == c->rank ? in : dst, dst, (size_t)len, nccl_type(dt), r,
                                     s->comm, s->stream));
    }
    NCCL_ENQ(c, "ncclGroupEnd", ncclGroupEnd());
    return wait_done(c, "all-gather", 1);
}

ql_status ql_nccl_allreduce_sum(ql_comm *c, void *buf, int64_t count, ql_dtype dt) {
    nccl_state *s = c->nccl;
    QL_TRY(before(c, "all-reduce"));
    NCCL_ENQ(c, "ncclAllReduce",
             ncclAllReduce(buf, buf, (size_t)count, nccl_type(dt), ncclSum, s->comm, s->stream));
    return wait_done(c, "all-reduce", 1);
}

/* The NCCL stream waits for the compute stream's queued work. */
static ql_status behind_compute(ql_comm *c, const char *what) {
    nccl_state *s = c->nccl;
    cudaError_t e = cudaSuccess;
    if (!s->queued) e = cudaEventCreateWithFlags(&s->queued, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(s->queued, (cudaStream_t)0);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(s->stream, s->queued, 0);
    return e == cudaSuccess ? QL_OK : cuda_fail(c, what, e);
}

/* Rank r's slice [off, ...) of n elements, cut to [lo, hi): [a, b). 0 when
 * empty, which is the same on every rank. */
static int owner_piece(const ql_comm *c, int64_t n, int r, int64_t lo, int64_t hi, int64_t *off,
                       int64_t *a, int64_t *b) {
    int64_t len;
    ql_dist_slice(n, c->size, r, off, &len);
    *a = lo > *off ? lo : *off;
    *b = hi < *off + len ? hi : *off + len;
    return *a < *b;
}

/* One part of ql_nccl_reduce_scatter_sum: for each owner, the grouped
 * ncclReduce of its slice restricted to [lo, hi). A ring reduction adds an
 * element's contributions in ring order whatever the message's extent, so
 * the parts should give the whole call's bits (the emulator's rank-order sums
 * do by construction; on GPUs tests/gpu/run.sh has yet to show it). The
 * NCCL stream waits for an event on the legacy default stream (where every
 * op of the cuda backend runs), not for the whole device: the backward pass
 * queued after this keeps running. */
ql_status ql_nccl_reduce_scatter_sum_start(ql_comm *c, const void *in, void *out, int64_t n,
                                           int64_t lo, int64_t hi, ql_dtype dt) {
    nccl_state *s = c->nccl;
    const size_t es = ql_dtype_size(dt);
    QL_TRY(behind_compute(c, "queueing a reduce-scatter part"));
    NCCL_ENQ(c, "ncclGroupStart", ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        int64_t off, a, b;
        if (!owner_piece(c, n, r, lo, hi, &off, &a, &b)) continue;
        void *dst = r == c->rank ? (char *)out + (size_t)(a - off) * es : out;
        NCCL_ENQ_GROUP(c, "ncclReduce",
                       ncclReduce((const char *)in + (size_t)a * es, dst, (size_t)(b - a),
                                  nccl_type(dt), ncclSum, r, s->comm, s->stream));
    }
    NCCL_ENQ(c, "ncclGroupEnd", ncclGroupEnd());
    /* A non-blocking communicator takes no further call until the enqueue
     * itself has finished (not the transfer: the stream is not waited for). */
    return wait_done(c, "reduce-scatter part", 0);
}

/* One part of ql_nccl_allgather: each owner broadcasts the piece of its
 * slice inside [lo, hi). A broadcast copies bytes, so parts give the whole
 * call's result exactly. An event after the part lets the compute stream
 * wait for it alone (ql_nccl_join). */
ql_status ql_nccl_allgather_start(ql_comm *c, const void *in, void *out, int64_t n, int64_t lo,
                                  int64_t hi, ql_dtype dt, int *part) {
    nccl_state *s = c->nccl;
    const size_t es = ql_dtype_size(dt);
    if (s->n_parts == s->cap_parts) {
        int cap = s->cap_parts ? 2 * s->cap_parts : 16;
        cudaEvent_t *p = realloc(s->parts, (size_t)cap * sizeof *p);
        if (!p) return ql_error(QL_ENOMEM, "rank %d: the all-gather part events", c->rank);
        s->parts = p;
        for (; s->cap_parts < cap; s->cap_parts++) {
            cudaError_t e = cudaEventCreateWithFlags(&p[s->cap_parts], cudaEventDisableTiming);
            if (e != cudaSuccess) return cuda_fail(c, "cudaEventCreateWithFlags", e);
        }
    }
    QL_TRY(behind_compute(c, "queueing an all-gather part"));
    NCCL_ENQ(c, "ncclGroupStart", ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        int64_t off, a, b;
        if (!owner_piece(c, n, r, lo, hi, &off, &a, &b)) continue;
        char *dst = (char *)out + (size_t)a * es;
        const void *src = r == c->rank ? (const char *)in + (size_t)(a - off) * es : dst;
        NCCL_ENQ_GROUP(
            c, "ncclBroadcast",
            ncclBroadcast(src, dst, (size_t)(b - a), nccl_type(dt), r, s->comm, s->stream));
    }
    NCCL_ENQ(c, "ncclGroupEnd", ncclGroupEnd());
    QL_TRY(wait_done(c, "all-gather part", 0));
    cudaError_t e = cudaEventRecord(s->parts[s->n_parts], s->stream);
    if (e != cudaSuccess) return cuda_fail(c, "cudaEventRecord", e);
    *part = s->n_parts++;
    return QL_OK;
}

ql_status ql_nccl_join(ql_comm *c, int part) {
    nccl_state *s = c->nccl;
    QL_ASSERT(part >= 0 && part < s->n_parts);
    cudaError_t e = cudaStreamWaitEvent((cudaStream_t)0, s->parts[part], 0);
    return e == cudaSuccess ? QL_OK : cuda_fail(c, "waiting for an all-gather part", e);
}

ql_status ql_nccl_wait(ql_comm *c) {
    ql_status st = wait_done(c, "reduce-scatter or all-gather", 1);
    if (st == QL_OK) ((nccl_state *)c->nccl)->n_parts = 0;
    return st;
}

#else
/* This build has no NCCL: dist/comm.c answers ql_comm_open_device. */
typedef int ql_comm_nccl_unused;
#endif
