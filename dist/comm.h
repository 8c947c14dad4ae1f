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
ql_status ql_comm_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
/* in: this rank's slice of n elements; out: [n], every slice in place. */
ql_status ql_comm_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt);
/* Fixed-size records: in [bytes] from every rank -> out [size * bytes]. */
ql_status ql_comm_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes);

/* Ends every rank of the job at once (MPI_Abort; exit for a singleton). For
 * the launcher and the watchdog only. */
void ql_comm_abort(ql_comm *c, int exit_code) __attribute__((noreturn));

/* --- Added after the first contract (nothing above changed) ------------------ */

/* The limit on one collective's wait for the other ranks, in seconds: past
 * it, the watchdog prints what it waited for and aborts the job (0: no
 * limit). ql_comm_open starts with QL_DIST_TIMEOUT_S from the environment, or
 * 600; the launcher sets dist.timeout_s unless that variable is set. */
void ql_comm_set_timeout(ql_comm *c, double seconds);
double ql_comm_timeout(const ql_comm *c);
/* What the job is doing ("step 12", "loading the model"), named in the
 * watchdog's message. */
void ql_comm_set_phase(ql_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reduce-scatter moves the vector in buckets of at most this many elements
 * (dist.bucket_mb; at least one element per rank). The sums do not depend
 * on it. */
void ql_comm_set_bucket(ql_comm *c, int64_t elements);

/* After ql_comm_agree: the rank whose status it returned (-1 when none
 * failed) and that rank's message, prefixed "rank R (HOST): ", on every rank
 * (the failing ones too). Agreeing again on a failure that was agreed
 * (every rank now passes it) gives the same rank and message again. */
int ql_comm_failed_rank(const ql_comm *c);
const char *ql_comm_agreed_message(const ql_comm *c);
/* A collective failed in the transport (MPI/NCCL error): the ranks may no
 * longer agree, so the launcher ends the job with ql_comm_abort rather than
 * closing. */
int ql_comm_broken(const ql_comm *c);

/* A device communicator beside `host` (NCCL, on CUDA builds with NCCL): its
 * all-reduce, reduce-scatter and all-gather take device memory of the
 * current CUDA device (bound before the call: ql_comm_bind_device); agree,
 * barrier and bcast go through `host` (host memory). Created from a unique id
 * that rank 0 broadcasts over `host`; non-blocking, so a peer that dies or
 * hangs ends in ncclCommAbort and an error after the timeout, not a hang.
 * QL_EUNSUPPORTED in builds without NCCL. Closed by ql_comm_close. */
ql_status ql_comm_open_device(ql_comm *host, ql_comm **out);
/* 1 when the collectives of `c` take device memory. */
int ql_comm_device_memory(const ql_comm *c);

/* Binds this rank's GPU: device (local rank mod visible devices), after
 * CUDA_VISIBLE_DEVICES. *device = -1 and QL_OK when the build has no CUDA or
 * no device is visible. */
ql_status ql_comm_bind_device(const ql_comm *c, int *device);

/* Overlap (device communicators that support it: ql_comm_can_overlap):
 * starts the part [lo, hi) of ql_comm_reduce_scatter_sum(c, in, out, n, dt)
 * once the work already queued on the compute stream has finished, and
 * returns without waiting. The elements are those the whole call produces,
 * bit for bit. ql_comm_wait returns when every started part is done; until
 * then the caller must not touch in[lo, hi) or out. Parts of one
 * reduce-scatter must not overlap, and every rank starts the same parts in
 * the same order. */
int ql_comm_can_overlap(const ql_comm *c);
ql_status ql_comm_reduce_scatter_sum_start(ql_comm *c, const void *in, void *out, int64_t n,
                                           int64_t lo, int64_t hi, ql_dtype dt);
/* The same for ql_comm_allgather(c, in, out, n, dt) restricted to the
 * elements [lo, hi) of out (in is this rank's slice, as there). *part
 * names the part for ql_comm_join. Until joined or waited for, out[lo, hi)
 * must not be read or written, nor this rank's slice of `in` written. */
ql_status ql_comm_allgather_start(ql_comm *c, const void *in, void *out, int64_t n, int64_t lo,
                                  int64_t hi, ql_dtype dt, int *part);
/* The compute stream (not the host) waits for all-gather part `part` and
 * every part started before it: work queued on it afterwards sees their
 * elements. Cheap; the host does not block. */
ql_status ql_comm_join(ql_comm *c, int part);
/* The host waits for every started part of either kind (a time limit
 * applies: dist.timeout_s). */
ql_status ql_comm_wait(ql_comm *c);

#endif
