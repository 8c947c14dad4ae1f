/* Checkpoints of a training run (docs/checkpoint-format.md): which
 * checkpoint a run resumes from (resume: auto | never | PATH), what it
 * restores (parameters, AdamW m, v and t, the non-finite counters, the
 * dropout streams, the data cursor, the step and so the schedule position,
 * the counters of tokens and time), and when it saves one (every
 * checkpoint.every_steps steps, every checkpoint.every_minutes minutes, and
 * when SIGUSR1/SIGTERM asked for one: then the loop halts and qlora train
 * exits 75). Every rank calls every function here; the ranks agree on every
 * decision. */
#ifndef QL_TRAIN_CKPT_H
#define QL_TRAIN_CKPT_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "data/packing.h"
#include "dist/comm.h"
#include "kernels/backend.h"
#include "model/llama.h"
#include "train/trainer.h"

/* Rank 0, before anything is written to output_dir: *resuming = 1 when
 * this run will continue from a checkpoint (resume: PATH, or auto with a
 * checkpoint in OUTPUT_DIR/checkpoints). The first checkpoint a resume
 * will try, when it verifies, is checked here, before anything is loaded:
 * a change of the keys a resume cannot change is refused, and *done_step
 * is its step when the run is over (-1 otherwise): resume: auto, the
 * checkpoint at or past train.steps, OUTPUT_DIR/adapter written after it. With resume: never,
 * existing checkpoints are removed under overwrite_output_dir: true and are an error otherwise. */
ql_status ql_train_ckpt_prepare(const ql_config *c, int *resuming, int64_t *done_step);

typedef struct ql_train_ckpt_opts {
    const ql_config *cfg;
    ql_comm *comm; /* the job's communicator (a singleton's too) */
    ql_llama *model;
    const ql_backend *be;
    const ql_token_data *data; /* the training data and its rows */
    const ql_packing *rows;
    volatile sig_atomic_t *preempt; /* set by SIGUSR1/SIGTERM */
    FILE *log;                      /* notes (rank 0; NULL elsewhere) */
} ql_train_ckpt_opts;

typedef struct ql_train_ckpt ql_train_ckpt;

/* Takes the checkpoints directory's lock, finds the checkpoint to resume
 * from, checks it against this run and loads the parameters (into the
 * model) and the dropout stream; the optimizer's part waits for the hook. */
ql_status ql_train_ckpt_open(const ql_train_ckpt_opts *o, ql_train_ckpt **out);
/* The trainer's hooks (restore, boundary). */
const ql_train_hooks *ql_train_ckpt_hooks(ql_train_ckpt *t);
/* The step of the last committed checkpoint (-1: none) and its directory. */
int64_t ql_train_ckpt_last(const ql_train_ckpt *t, const char **dir);
/* The step this run resumed from (0: a fresh start). */
int64_t ql_train_ckpt_resumed(const ql_train_ckpt *t);
void ql_train_ckpt_close(ql_train_ckpt *t);

#endif
