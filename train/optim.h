/* One optimizer step over the flat adapter vector: the non-finite policy,
 * global-norm clipping, and AdamW through the backend's adamw op with fp32
 * moments in backend memory.
 *
 * Data parallel (ZeRO-1, docs/distributed.md): with a communicator of R > 1
 * ranks, rank r owns the contiguous slice [off, off + len) of the flat vector
 * that ql_dist_slice(n, R, r) gives. A step reduce-scatters the ranks'
 * gradients so that each holds the rank-ordered sum of its slice, takes the
 * global norm as the rank-ordered sum of the slices' squared norms (double),
 * clips and updates its slice only, and all-gathers the parameters. AdamW's m
 * and v exist for the slice alone. With one rank, off = 0 and len = n and the
 * step is the single-process one, bit for bit.
 *
 * A step whose loss or gradient norm is NaN/Inf changes nothing (parameters,
 * moments and AdamW's step count stay as they were) and is counted; with
 * on_nonfinite = skip the run stops with an error only after
 * max_nonfinite_in_a_row such steps in a row, with stop at the first. */
#ifndef QL_OPTIM_H
#define QL_OPTIM_H

#include <stdint.h>

#include "core/config.h"
#include "core/status.h"
#include "dist/comm.h"
#include "kernels/backend.h"

typedef struct ql_optim_config {
    double weight_decay, beta1, beta2, eps;
    double max_grad_norm; /* <= 0: no clipping */
    ql_nonfinite on_nonfinite;
    int64_t max_nonfinite_in_a_row;
} ql_optim_config;

/* The optimizer settings of a resolved configuration. */
ql_optim_config ql_optim_config_from(const ql_config *c);

typedef struct ql_optim {
    const ql_backend *be;
    int64_t n; /* elements of the whole flat adapter vector */
    /* This rank's slice of the flat vector: elements [off, off + len).
     * m[i] and v[i] are AdamW's moments of element off + i; a checkpoint
     * shard stores exactly these len values of each (and params[off..]). */
    int64_t off, len;
    float *m, *v; /* backend memory [len] */
    /* Host copy of the gradient, [n] when staged, else [len] of scratch. */
    float *host;
    int host_memory; /* the backend's pointers are host pointers */
    /* A device backend whose gradient goes through host memory each step:
     * it lacks the vector ops (zero/sq_sum/scale_f32), or several ranks
     * reduce over MPI without a device communicator. Otherwise a device
     * backend's step stays on the device: reduce-scatter over NCCL, the
     * norm by sq_sum_f32 (8 bytes to the host), clipping by scale_f32,
     * AdamW, all-gather over NCCL. */
    int staged;
    int64_t t; /* AdamW steps applied (bias correction counts these) */
    int64_t nonfinite_in_a_row, nonfinite_total;
    ql_comm *comm;  /* NULL or one rank: a single process */
    ql_comm *dcomm; /* a device communicator (NCCL) for backend memory, or NULL */
    /* Overlap (ql_optim_grads_ready): the gradient's elements [ready_lo, n)
     * are final, [sent_lo, n) are being reduced; both n when nothing is. */
    int overlap;
    int64_t ready_lo, sent_lo;
    int64_t bucket_bytes; /* QL_OPTIM_BUCKET_BYTES, or QL_OVERLAP_BUCKET_BYTES */
    /* The parameters' all-gather in flight (ql_optim_params_needed): part k
     * covers [gather_lo[k], gather_lo[k + 1]) and is the communicator's
     * part gather_id[k]; parts below `joined` are joined. */
    int gathering, n_gather, joined;
    int64_t *gather_lo; /* [QL_OPTIM_MAX_GATHER_PARTS + 1] */
    int *gather_id;     /* [QL_OPTIM_MAX_GATHER_PARTS] */
} ql_optim;

typedef struct ql_step_result {
    double grad_norm; /* before clipping; NaN/Inf when not finite */
    float clip_coef;  /* what the gradient was multiplied by (1: not clipped) */
    int skipped;      /* 1 if the update was not applied */
    double comm_s;    /* seconds in collectives (reduce-scatter, norm, all-gather) */
} ql_step_result;

/* One process: the whole vector is this rank's (off 0, len n). */
ql_status ql_optim_init(ql_optim *o, const ql_backend *be, int64_t n);
/* Rank ql_comm_rank(comm) of ql_comm_size(comm) (comm may be NULL: one
 * process). dcomm: a device communicator (ql_comm_open_device) for a
 * backend whose memory is not the host's, or NULL to stage through host
 * memory and `comm`. */
ql_status ql_optim_init_dist(ql_optim *o, const ql_backend *be, int64_t n, ql_comm *comm,
                             ql_comm *dcomm);
void ql_optim_free(ql_optim *o);

/* Overlapping the gradient reduction with the backward pass. During a
 * step's last micro-batch the caller reports each range of the gradient
 * that has become final (ql_llama_set_layer_done: layers from the last
 * down, so ranges arrive from the end of the vector towards its start).
 * With a device communicator that can overlap (NCCL), finished ranges are
 * reduce-scattered in buckets of at least QL_OPTIM_BUCKET_BYTES on the
 * communicator's own stream while the lower layers' backward pass runs;
 * ql_optim_step then starts what is left and waits. Each element is summed
 * exactly as the whole reduce-scatter would, so the result is the same bits.
 * Without such a communicator (or with QL_OVERLAP=0) ql_optim_can_overlap is
 * 0 and ql_optim_grads_ready does nothing. QL_OVERLAP_BUCKET_BYTES overrides
 * the bucket size (tests use 1: a bucket per layer). A range that does not continue
 * the previous one downwards is left to ql_optim_step. */
#define QL_OPTIM_BUCKET_BYTES ((int64_t)25 << 20)
int ql_optim_can_overlap(const ql_optim *o);
ql_status ql_optim_grads_ready(ql_optim *o, float *grads, int64_t lo, int64_t hi);

/* Overlapping the parameters' all-gather with the next step's start. When
 * ql_optim_can_overlap, ql_optim_step returns with the all-gather started
 * in parts of about the bucket size (at most QL_OPTIM_MAX_GATHER_PARTS),
 * from the start of the vector (layer 0) up, each queued behind AdamW. The
 * caller then says which elements it is about to use:
 * ql_optim_params_needed(lo, hi) before a layer's forward pass makes the
 * compute stream wait for the parts up to hi (a device-side wait; layer 0
 * waits for the first part only). Once every part is joined the host
 * also waits for the all-gather to finish (the time limit applies), so that
 * a failed peer is an error, not a compute stream stuck behind it.
 * ql_optim_params_sync joins and waits for everything: before anything else
 * reads other ranks' elements (evaluation, the end of training); the next
 * ql_optim_step calls it too. This rank's own slice [off, off + len) is
 * final on the compute stream as soon as ql_optim_step returns (a
 * checkpoint may read it at once). Without overlap both do nothing: the
 * all-gather finished inside ql_optim_step. */
#define QL_OPTIM_MAX_GATHER_PARTS 64
ql_status ql_optim_params_needed(ql_optim *o, int64_t lo, int64_t hi);
ql_status ql_optim_params_sync(ql_optim *o);
/* The end of training, also after a failure: the host waits (with the time
 * limit, which aborts the communicator) for every overlapped part still in
 * flight, reduce-scatter or all-gather, so that no collective outlives the
 * buffers it reads and writes. */
ql_status ql_optim_drain(ql_optim *o);

/* grads = 0, before a step's micro-batches accumulate into them. */
ql_status ql_optim_zero_grads(ql_optim *o, float *grads);

/* Applies step `step` (1-based, for messages) with learning rate `lr` to
 * `params` from the accumulated `grads` (both backend memory [n]; grads are
 * clipped in place). `loss` is the step's mean loss, checked for finiteness
 * with the gradient. Returns an error when the non-finite policy says stop.
 * With several ranks it is collective: `grads` holds this rank's local sum
 * on entry and, on return, the global (clipped) sum in its own slice only
 * (the rest is scratch); `params` is the same on every rank on return; loss
 * must be the global one, so that every rank takes the same decisions. */
ql_status ql_optim_step(ql_optim *o, const ql_optim_config *c, int64_t step, double loss, double lr,
                        float *params, float *grads, ql_step_result *r);

#endif
