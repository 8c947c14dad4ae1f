/* Inside dist/: the communicator's state and the transports behind
 * dist/comm.h. Not for use outside dist/. */
#ifndef QL_DIST_COMM_IMPL_H
#define QL_DIST_COMM_IMPL_H

#include <mpi.h>

#include "dist/comm.h"
#include "dist/watchdog.h"

typedef enum ql_comm_kind {
    QL_COMM_SELF, /* one rank, no MPI */
    QL_COMM_MPI,  /* host memory over MPI */
    QL_COMM_NCCL  /* device memory over NCCL (dist/comm_nccl.c) */
} ql_comm_kind;

struct ql_comm {
    ql_comm_kind kind;
    ql_world w;
    int rank, size;
    int mpi_initialized; /* ql_comm_open called MPI_Init_thread */
    MPI_Comm mc;         /* a duplicate of MPI_COMM_WORLD */
    ql_watchdog *wd;
    int64_t bucket_elems; /* reduce-scatter bucket, elements of the whole vector */
    int failed_rank;      /* of the last ql_comm_agree; -1 when none failed */
    char agreed[QL_ERROR_MAX + QL_HOST_MAX + 32]; /* "rank R (HOST): message" */
    char agreed_raw[QL_ERROR_MAX];                /* the message alone */
    char agreed_host[QL_HOST_MAX];
    int broken;    /* a transport call failed (ql_comm_broken) */
    ql_comm *host; /* NCCL: the MPI communicator beside it */
    void *nccl;    /* NCCL: its state */
};

/* MPI transport (dist/comm_mpi.c). Every function assumes kind == MPI. */
ql_status ql_mpi_open(ql_comm *c);
void ql_mpi_close(ql_comm *c);
ql_status ql_mpi_agree(ql_comm *c, ql_status local);
ql_status ql_mpi_barrier(ql_comm *c);
ql_status ql_mpi_bcast(ql_comm *c, void *buf, int64_t bytes, int root);
ql_status ql_mpi_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
ql_status ql_mpi_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
ql_status ql_mpi_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes);
void ql_mpi_abort(ql_comm *c, int exit_code) __attribute__((noreturn));

#ifdef QL_HAVE_NCCL
/* NCCL transport (dist/comm_nccl.c): device pointers. */
void ql_nccl_close(ql_comm *c);
ql_status ql_nccl_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
ql_status ql_nccl_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
ql_status ql_nccl_allreduce_sum(ql_comm *c, void *buf, int64_t count, ql_dtype dt);
/* The overlap pair of dist/comm.h: a part queued behind the compute stream
 * (an event, not a device-wide wait), and the wait for every queued part. */
ql_status ql_nccl_reduce_scatter_sum_start(ql_comm *c, const void *in, void *out, int64_t n,
                                           int64_t lo, int64_t hi, ql_dtype dt);
ql_status ql_nccl_allgather_start(ql_comm *c, const void *in, void *out, int64_t n, int64_t lo,
                                  int64_t hi, ql_dtype dt, int *part);
ql_status ql_nccl_join(ql_comm *c, int part);
ql_status ql_nccl_wait(ql_comm *c);
#endif

#endif
