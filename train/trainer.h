/* The training loop: train.steps optimizer steps, each of global_batch
 * sequences in micro-batches of micro_batch rows whose gradients accumulate,
 * scaled by 1 / (target tokens in the global batch) so that the sum is the
 * gradient of the step's mean loss; then the non-finite policy, clipping and
 * AdamW (train/optim.h) at the scheduled learning rate (train/schedule.h).
 *
 * The model is reached through ql_train_model, so the loop runs the same over
 * the Llama model (launcher/cmd_train.c) and over small synthetic models in
 * the tests.
 *
 * Data parallel (docs/distributed.md): with a communicator of R ranks, every
 * rank runs this loop; rank r takes its slice of each global batch
 * (ql_order_shard), in micro-batches of at most train.micro_batch rows; after
 * the local backward the ranks agree (one rank's failure ends every rank with
 * its message), sum the loss and token counts, and ql_optim_step
 * reduce-scatters the gradients, updates each rank's slice (ZeRO-1) and
 * all-gathers the parameters. Evaluation splits the validation rows over
 * the ranks. A stop request on any rank stops every rank at the same step. */
#ifndef QL_TRAINER_H
#define QL_TRAINER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "data/order.h"
#include "data/packing.h"
#include "dist/comm.h"
#include "kernels/backend.h"
#include "model/llama.h"

typedef struct ql_train_model {
    void *ctx;
    const ql_backend *be;
    float *params, *grads; /* backend memory [n] */
    int64_t n;
    /* As ql_llama_forward_backward. */
    ql_status (*fwd_bwd)(void *ctx, const ql_batch *b, int backward, float grad_scale,
                         double *loss_sum, int64_t *n_targets);
    /* Optional (NULL: the model cannot say): as ql_llama_set_layer_done,
     * ql_llama_set_layer_start and ql_llama_layer_grad_range. The loop uses
     * them to overlap the gradient reduction with a step's last backward
     * pass (ql_optim_grads_ready) and the parameters' all-gather with the
     * next step's forward pass (ql_optim_params_needed). */
    void (*set_layer_done)(void *ctx, ql_status (*fn)(void *fctx, int layer), void *fctx);
    void (*set_layer_start)(void *ctx, ql_status (*fn)(void *fctx, int layer), void *fctx);
    void (*layer_grad_range)(void *ctx, int layer, int64_t *lo, int64_t *hi);
} ql_train_model;

struct ql_optim;

/* Where the loop stands at a step boundary: what a checkpoint stores and a
 * resume restores (train/train_ckpt.h). */
typedef struct ql_train_state {
    int64_t step;          /* optimizer steps completed */
    ql_data_cursor cursor; /* where the next step's data starts */
    int64_t samples_seen;  /* global samples consumed */
    int64_t tokens_seen, targets_seen, skipped;
    double elapsed_s;       /* training time, including the runs before a resume */
    struct ql_optim *optim; /* AdamW's m and v (this rank's slice), t, counters */
} ql_train_state;

/* Checkpoint plumbing, called by the loop on every rank. */
typedef struct ql_train_hooks {
    void *ctx;
    /* Before the first step, with the optimizer allocated: restores a
     * checkpoint's optimizer state and fills step, cursor and counters (the
     * loop continues at step + 1). NULL or step 0: a fresh start. */
    ql_status (*restore)(void *ctx, ql_train_state *s);
    /* At every step boundary (also before the first step): may write a
     * checkpoint (collective); *halt = 1 ends the loop (a preemption that
     * has been checkpointed). */
    ql_status (*boundary)(void *ctx, const ql_train_state *s, int *halt);
} ql_train_hooks;

typedef struct ql_train_opts {
    const ql_config *cfg;         /* train.*, data.shuffle/pad_to/max_seq_len, seed */
    const char *metrics_path;     /* NULL: no metrics file */
    FILE *progress;               /* NULL: no progress lines */
    int progress_tty;             /* -1: isatty(progress) */
    volatile sig_atomic_t *stop;  /* when set, the loop ends at the next step boundary */
    const ql_packing *rows;       /* rows of the training data; NULL: built as data.packing says */
    const ql_token_data *valid;   /* evaluated at the end and every train.eval_every steps */
    const ql_data_cursor *resume; /* where the data stream starts; NULL: the beginning */
    ql_comm *comm;                /* the job's ranks; NULL: one process */
    ql_comm *dcomm;               /* a device communicator (NCCL) for the gradients, or NULL */
    const ql_train_hooks *hooks;  /* checkpoints and resume; NULL: none */
} ql_train_opts;

typedef struct ql_train_result {
    int64_t steps;   /* optimizer steps run (applied or skipped) */
    int64_t skipped; /* of which skipped (non-finite, or no targets) */
    int64_t tokens, targets;
    double first_loss, last_loss; /* of the first and last finite steps */
    double elapsed_s;
    int interrupted;       /* *stop or a hook ended the loop early */
    int halted;            /* a hook did (a checkpointed preemption) */
    int64_t start_step;    /* steps done before this run (a resume) */
    ql_data_cursor cursor; /* where the next step's data would start */
    int64_t evals;         /* evaluations run; the last one's: */
    double eval_loss;
    int64_t eval_targets;
    double comm_s; /* seconds this rank spent in the steps' collectives */
} ql_train_result;

/* Runs the loop. On an error the result still says how far it got. */
ql_status ql_train_run(const ql_train_model *m, const ql_token_data *d, const ql_train_opts *o,
                       ql_train_result *r);

/* Whether a global batch of `global_batch` rows can be split over `world`
 * ranks: each takes global_batch / world rows (in micro-batches of at most
 * micro_batch). QL_EINVAL saying what would work when it cannot. */
ql_status ql_train_check_batch(int64_t global_batch, int64_t micro_batch, int world);

/* The rows a rank runs through the model at a time, in training and in
 * evaluation: micro_batch, or the rank's share of the global batch when
 * that is smaller. The model's buffers (llama options max_batch), the memory
 * estimate and the reserving pass are all sized by it. */
int64_t ql_train_rank_rows(int64_t global_batch, int64_t micro_batch, int world);

/* Seconds on a monotonic clock. */
double ql_now(void);

#endif
