/* The MPI transport of dist/comm.h: host memory, MPI_COMM_WORLD duplicated.
 *
 * Sums never use MPI's reductions (whose order is the library's business):
 * reduce-scatter moves every rank's piece of each slice to the slice's owner
 * with MPI_Alltoallv, bucket by bucket, and the owner adds the pieces in rank
 * order 0, 1, ..., size-1. So the result is fixed by the world size alone,
 * and at one micro-batch per rank it is the very sum a single process makes
 * by accumulating the micro-batches one after another. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_impl.h"

/* A failed MPI call: QL_EBACKEND naming the call and MPI's words for it. */
static ql_status mpi_fail(ql_comm *c, const char *call, int rc) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, text, &len);
    c->broken = 1;
    return ql_error(QL_EBACKEND, "%s failed: %s", call, text);
}
#define MPI_TRY(c, call)                                                                           \
    do {                                                                                           \
        int mpi_rc_ = (call);                                                                      \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail((c), #call, mpi_rc_);                          \
    } while (0)

static MPI_Datatype mpi_type(ql_dtype dt) {
    switch (dt) {
    case QL_DT_F32: return MPI_FLOAT;
    case QL_DT_F64: return MPI_DOUBLE;
    case QL_DT_I64: return MPI_INT64_T;
    case QL_DT_I32: return MPI_INT32_T;
    case QL_DT_U8: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

static ql_status check_count(int64_t n, const char *what) {
    if (n > INT_MAX)
        return ql_error(QL_EUNSUPPORTED,
                        "%s of %lld elements: the MPI transport handles at most %d per call", what,
                        (long long)n, INT_MAX);
    return QL_OK;
}

/* Node index and count from the host names, in rank order of first
 * appearance, when the launcher did not say. */
static ql_status fill_nodes(ql_comm *c) {
    char *hosts = ql_malloc((size_t)c->size * QL_HOST_MAX, "the host names of the ranks");
    if (!hosts) return QL_ENOMEM;
    char mine[QL_HOST_MAX] = {0};
    snprintf(mine, sizeof mine, "%s", c->w.host);
    int rc = MPI_Allgather(mine, QL_HOST_MAX, MPI_CHAR, hosts, QL_HOST_MAX, MPI_CHAR, c->mc);
    if (rc != MPI_SUCCESS) {
        free(hosts);
        return mpi_fail(c, "MPI_Allgather(host names)", rc);
    }
    int nodes = 0, my_node = -1;
    for (int r = 0; r < c->size; r++) {
        int first = 1;
        for (int q = 0; q < r && first; q++)
            if (!strcmp(hosts + (size_t)q * QL_HOST_MAX, hosts + (size_t)r * QL_HOST_MAX))
                first = 0;
        if (first) nodes++;
        if (!strcmp(hosts + (size_t)r * QL_HOST_MAX, mine) && my_node < 0) my_node = nodes - 1;
    }
    free(hosts);
    c->w.node = my_node;
    c->w.n_nodes = nodes;
    return QL_OK;
}

ql_status ql_mpi_open(ql_comm *c) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_fail(c, "MPI_Init_thread", rc);
        c->mpi_initialized = 1;
    }
    c->mc = MPI_COMM_NULL;
    MPI_TRY(c, MPI_Comm_dup(MPI_COMM_WORLD, &c->mc));
    MPI_TRY(c, MPI_Comm_set_errhandler(c->mc, MPI_ERRORS_RETURN));
    MPI_TRY(c, MPI_Comm_rank(c->mc, &c->rank));
    MPI_TRY(c, MPI_Comm_size(c->mc, &c->size));
    const ql_world *w = &c->w;
    if (w->size > 0 && (w->size != c->size || w->rank != c->rank)) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
        int len = 0;
        MPI_Get_library_version(lib, &len);
        lib[strcspn(lib, ",\n")] = '\0';
        return ql_error(QL_EINVAL,
                        "the launcher (%s) says rank %d of %d, but MPI says rank %d of %d: qlora "
                        "was started by the launcher of another MPI than the one it was built "
                        "with (%s)",
                        ql_launcher_name(w->launcher), w->rank, w->size, c->rank, c->size, lib);
    }
    c->w.rank = c->rank;
    c->w.size = c->size;
    if (c->w.local_rank < 0 || c->w.local_size <= 0) {
        MPI_Comm local;
        MPI_TRY(c,
                MPI_Comm_split_type(c->mc, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
        MPI_Comm_rank(local, &c->w.local_rank);
        MPI_Comm_size(local, &c->w.local_size);
        MPI_Comm_free(&local);
    }
    if (c->w.node < 0 || c->w.n_nodes <= 0) QL_TRY(fill_nodes(c));
    return QL_OK;
}

void ql_mpi_close(ql_comm *c) {
    if (c->mc != MPI_COMM_NULL && c->mc != 0) MPI_Comm_free(&c->mc);
    c->mc = MPI_COMM_NULL;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (c->mpi_initialized && !finalized) MPI_Finalize();
    c->mpi_initialized = 0;
}

void ql_mpi_abort(ql_comm *c, int exit_code) {
    MPI_Abort(c->mc != MPI_COMM_NULL ? c->mc : MPI_COMM_WORLD, exit_code);
    _Exit(exit_code);
}

/* The failing record that the lowest failing rank broadcasts. */
typedef struct agree_rec {
    int32_t status;
    int32_t origin; /* the rank whose failure it is */
    char host[QL_HOST_MAX];
    char msg[QL_ERROR_MAX];
} agree_rec;

/* Agreeing again on a failure that was agreed before (every rank then
 * fails, rank 0 lowest) names the rank it came from, not rank 0. */
static void fill_rec(ql_comm *c, ql_status local, agree_rec *rec) {
    const char *m = ql_error_message();
    rec->status = (int32_t)local;
    int again = c->failed_rank >= 0 &&
                (!strcmp(m, c->agreed) || (c->failed_rank == c->rank && !strcmp(m, c->agreed_raw)));
    if (again) {
        rec->origin = c->failed_rank;
        snprintf(rec->host, sizeof rec->host, "%s", c->agreed_host);
        snprintf(rec->msg, sizeof rec->msg, "%s", c->agreed_raw);
    } else {
        rec->origin = c->rank;
        snprintf(rec->host, sizeof rec->host, "%s", c->w.host);
        snprintf(rec->msg, sizeof rec->msg, "%s", *m ? m : ql_status_name(local));
    }
}

ql_status ql_mpi_agree(ql_comm *c, ql_status local) {
    /* Fast path, one integer: the lowest failing rank (size: none). */
    int mine = local != QL_OK ? c->rank : c->size, lowest = c->size;
    MPI_TRY(c, MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, c->mc));
    if (lowest == c->size) {
        c->failed_rank = -1;
        c->agreed[0] = c->agreed_raw[0] = c->agreed_host[0] = '\0';
        return QL_OK;
    }
    agree_rec *rec = ql_calloc(1, sizeof *rec, "the agreed error");
    if (!rec) return QL_ENOMEM; /* every rank is here: this one alone cannot go on */
    if (c->rank == lowest) fill_rec(c, local, rec);
    int rc = MPI_Bcast(rec, (int)sizeof *rec, MPI_BYTE, lowest, c->mc);
    if (rc != MPI_SUCCESS) {
        free(rec);
        return mpi_fail(c, "MPI_Bcast(agreed error)", rc);
    }
    ql_status st = (ql_status)rec->status;
    c->failed_rank = rec->origin;
    snprintf(c->agreed_raw, sizeof c->agreed_raw, "%s", rec->msg);
    snprintf(c->agreed_host, sizeof c->agreed_host, "%s", rec->host);
    snprintf(c->agreed, sizeof c->agreed, "rank %d (%s): %s", rec->origin, rec->host, rec->msg);
    if (local == QL_OK) ql_error(st, "%s", c->agreed);
    free(rec);
    return st;
}

ql_status ql_mpi_barrier(ql_comm *c) {
    MPI_TRY(c, MPI_Barrier(c->mc));
    return QL_OK;
}

ql_status ql_mpi_bcast(ql_comm *c, void *buf, int64_t bytes, int root) {
    char *p = buf;
    for (int64_t done = 0; done < bytes;) {
        int chunk = bytes - done > (1 << 30) ? 1 << 30 : (int)(bytes - done);
        MPI_TRY(c, MPI_Bcast(p + done, chunk, MPI_BYTE, root, c->mc));
        done += chunk;
    }
    return QL_OK;
}

/* acc[i] += add[i] for `count` elements of dt. */
static void add_into(void *acc, const void *add, int64_t count, ql_dtype dt) {
    switch (dt) {
    case QL_DT_F32: {
        float *a = acc;
        const float *b = add;
        for (int64_t i = 0; i < count; i++) a[i] += b[i];
        break;
    }
    case QL_DT_F64: {
        double *a = acc;
        const double *b = add;
        for (int64_t i = 0; i < count; i++) a[i] += b[i];
        break;
    }
    case QL_DT_I64: {
        int64_t *a = acc;
        const int64_t *b = add;
        for (int64_t i = 0; i < count; i++) a[i] += b[i];
        break;
    }
    default: QL_ASSERT(!"summable dtype");
    }
}

/* Round k sends piece k of every rank's slice (at most P elements) to that
 * slice's owner, which adds the `size` pieces it receives in rank order.
 * Writing the sum over the input is safe (out may be in + off): the input's
 * own-slice region goes to this rank alone, and each piece is received
 * before its sum is written. */
ql_status ql_mpi_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt) {
    QL_TRY(check_count(n, "reduce-scatter"));
    const int size = c->size;
    const size_t es = ql_dtype_size(dt);
    MPI_Datatype T = mpi_type(dt);
    int64_t off, len, max_len, dummy;
    ql_dist_slice(n, size, c->rank, &off, &len);
    ql_dist_slice(n, size, 0, &dummy, &max_len);
    int64_t P = c->bucket_elems / size;
    if (P < 1) P = 1;
    if (P > max_len) P = max_len > 0 ? max_len : 1;
    int64_t rounds = (max_len + P - 1) / P;
    char *recv = ql_malloc((size_t)(P * size) * es, "the reduce-scatter bucket");
    int *cnt = ql_malloc(4 * (size_t)size * sizeof *cnt, "the reduce-scatter counts");
    if (!recv || !cnt) {
        free(recv);
        free(cnt);
        return QL_ENOMEM;
    }
    int *scount = cnt, *sdispl = cnt + size, *rcount = cnt + 2 * size, *rdispl = cnt + 3 * size;
    ql_status st = QL_OK;
    for (int64_t k = 0; k < rounds && st == QL_OK; k++) {
        int64_t lo = k * P;
        for (int r = 0; r < size; r++) {
            int64_t o, l;
            ql_dist_slice(n, size, r, &o, &l);
            int64_t m = l - lo < 0 ? 0 : l - lo > P ? P : l - lo;
            scount[r] = (int)m;
            sdispl[r] = m ? (int)(o + lo) : 0;
        }
        int64_t mine = len - lo < 0 ? 0 : len - lo > P ? P : len - lo;
        for (int q = 0; q < size; q++) {
            rcount[q] = (int)mine;
            rdispl[q] = (int)(q * P);
        }
        int rc = MPI_Alltoallv(in, scount, sdispl, T, recv, rcount, rdispl, T, c->mc);
        if (rc != MPI_SUCCESS) {
            st = mpi_fail(c, "MPI_Alltoallv(reduce-scatter)", rc);
            break;
        }
        char *dst = (char *)out + (size_t)lo * es;
        memcpy(dst, recv, (size_t)mine * es);
        for (int q = 1; q < size; q++) add_into(dst, recv + (size_t)(q * P) * es, mine, dt);
    }
    free(recv);
    free(cnt);
    return st;
}

ql_status ql_mpi_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt) {
    QL_TRY(check_count(n, "all-gather"));
    const int size = c->size;
    const size_t es = ql_dtype_size(dt);
    MPI_Datatype T = mpi_type(dt);
    QL_ASSERT(T != MPI_DATATYPE_NULL);
    int *cnt = ql_malloc(2 * (size_t)size * sizeof *cnt, "the all-gather counts");
    if (!cnt) return QL_ENOMEM;
    for (int r = 0; r < size; r++) {
        int64_t o, l;
        ql_dist_slice(n, size, r, &o, &l);
        cnt[r] = (int)l;
        cnt[size + r] = (int)o;
    }
    int64_t off = cnt[size + c->rank];
    int rc;
    if (in == (const char *)out + (size_t)off * es)
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, T, out, cnt, cnt + size, T, c->mc);
    else
        rc = MPI_Allgatherv(in, cnt[c->rank], T, out, cnt, cnt + size, T, c->mc);
    free(cnt);
    if (rc != MPI_SUCCESS) return mpi_fail(c, "MPI_Allgatherv", rc);
    return QL_OK;
}

ql_status ql_mpi_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes) {
    QL_TRY(check_count(bytes, "all-gather"));
    MPI_TRY(c, MPI_Allgather(in, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, c->mc));
    return QL_OK;
}
