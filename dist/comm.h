/* Communicators: how ranks of one job talk.
 *
 * One interface over MPI (host memory, always built) and, on the CUDA
 * backend, NCCL (device memory). A singleton run (no mpirun/srun around it)
 * gets a communicator of size 1 that never touches MPI.
 *
 * Reductions are deterministic at a fixed world size: contributions are summed
 * in rank order 0, 1, ..., size-1, whatever the transport does, so two runs
 * with the same inputs give bit-identical results.
 *
 * The flat adapter vector is partitioned into contiguous slices, one per rank
 * (ql_dist_slice); reduce-scatter and all-gather use that partition. ZeRO-1
 * optimizer state and checkpoint shards follow it too. */
#ifndef QL_DIST_COMM_H
#define QL_DIST_COMM_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "dist/world.h"

typedef struct ql_comm ql_comm;

/* Rank r's slice of n elements over `size` ranks: the first n % size ranks
 * get one element more; slices are contiguous and in rank order. */
void ql_dist_slice(int64_t n, int size, int rank, int64_t *off, int64_t *len);

/* Opens the job's communicator for the world `w` (dist/world.h). Under
 * mpirun/srun this initialises MPI (thread level FUNNELED); a singleton does
 * not. */
ql_status ql_comm_open(const ql_world *w, ql_comm **out);
/* Finalizes MPI if ql_comm_open initialised it. */
ql_status ql_comm_close(ql_comm *c);

int ql_comm_rank(const ql_comm *c);
int ql_comm_size(const ql_comm *c);
const ql_world *ql_comm_world(const ql_comm *c);

/* Every rank passes its local status and gets back the worst one (the
 * failing status of the lowest failing rank; QL_OK when none failed). On a
 * rank that did not fail, the error message becomes the failing rank's,
 * prefixed "rank R (HOST): ". Call it before any collective that follows work
 * that can fail. */
ql_status ql_comm_agree(ql_comm *c, ql_status local);

ql_status ql_comm_barrier(ql_comm *c);
/* `bytes` bytes of root's buffer to every rank. */
ql_status ql_comm_bcast(ql_comm *c, void *buf, int64_t bytes, int root);

/* Element-wise sum over ranks, in place, in rank order (F32, F64, I64). */
ql_status ql_comm_allreduce_sum(ql_comm *c, void *buf, int64_t count, ql_dtype dt);
/* in: [n] on every rank; out: [len] = the rank-ordered sum of this rank's
 * slice (ql_dist_slice(n, size, rank)). F32 or F64. */
ql_status ql_comm_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n,
                                     ql_dtype dt);
/* in: this rank's slice of n elements; out: [n], every slice in place. */
ql_status ql_comm_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
/* Fixed-size records: in [bytes] from every rank -> out [size * bytes]. */
ql_status ql_comm_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes);

/* Ends every rank of the job at once (MPI_Abort; exit for a singleton). For
 * the launcher and the watchdog only. */
void ql_comm_abort(ql_comm *c, int exit_code) __attribute__((noreturn));

#endif
