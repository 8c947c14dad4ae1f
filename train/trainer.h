/* The training loop: train.steps optimizer steps, each of global_batch
 * sequences in micro-batches of micro_batch rows whose gradients accumulate,
 * scaled by 1 / (target tokens in the global batch) so that the sum is the
 * gradient of the step's mean loss; then the non-finite policy, clipping and
 * AdamW (train/optim.h) at the scheduled learning rate (train/schedule.h).
 *
 * The model is reached through ql_train_model, so the loop runs the same over
 * the Llama model (launcher/cmd_train.c) and over small synthetic models in
 * the tests. */
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
} ql_train_model;

typedef struct ql_train_opts {
    const ql_config *cfg;         /* train.*, data.shuffle/pad_to/max_seq_len, seed */
    const char *metrics_path;     /* NULL: no metrics file */
    FILE *progress;               /* NULL: no progress lines */
    int progress_tty;             /* -1: isatty(progress) */
    volatile sig_atomic_t *stop;  /* when set, the loop ends at the next step boundary */
    const ql_packing *rows;       /* rows of the training data; NULL: built as data.packing says */
    const ql_token_data *valid;   /* evaluated at the end and every train.eval_every steps */
    const ql_data_cursor *resume; /* where the data stream starts; NULL: the beginning */
} ql_train_opts;

typedef struct ql_train_result {
    int64_t steps;   /* optimizer steps run (applied or skipped) */
    int64_t skipped; /* of which skipped (non-finite, or no targets) */
    int64_t tokens, targets;
    double first_loss, last_loss; /* of the first and last finite steps */
    double elapsed_s;
    int interrupted;       /* *stop ended the loop early */
    ql_data_cursor cursor; /* where the next step's data would start */
    int64_t evals;         /* evaluations run; the last one's: */
    double eval_loss;
    int64_t eval_targets;
} ql_train_result;

/* Runs the loop. On an error the result still says how far it got. */
ql_status ql_train_run(const ql_train_model *m, const ql_token_data *d, const ql_train_opts *o,
                       ql_train_result *r);

/* Seconds on a monotonic clock. */
double ql_now(void);

#endif
