/* OUTPUT_DIR/eval.json from a training run's own evaluation (the format of
 * train/eval_store.h), so that `qlora eval --baseline RUN` compares a later
 * evaluation with the one the run ended with (docs/evaluation.md). */
#ifndef QL_TRAIN_EVAL_STORE_H
#define QL_TRAIN_EVAL_STORE_H

#include <stddef.h>

#include "core/config.h"
#include "core/status.h"
#include "data/dataset.h"
#include "train/trainer.h"

/* Rank 0, after the adapter is saved in `adapter`: when the run went the
 * distance and evaluated its validation set at the last step, writes
 * OUTPUT_DIR/eval.json with that evaluation (the adapter's loss; no base
 * loss) and its path into `path`. data is data.valid (with its SHA-256), or
 * data.train when the validation set was held out of it (data.valid_fraction;
 * then data_sha256 is null: the held-out records are no file of their own).
 * Otherwise writes nothing and leaves `path` empty. */
ql_status ql_train_eval_store(const ql_config *c, const ql_dataset *ds, const ql_train_result *r,
                              const char *adapter, char *path, size_t cap);

#endif
