/* What the model writes, before and after training (qlora train, rank 0):
 * for a handful of held-out records (the validation set, records with unit
 * tests first) the base model's answer is generated when training starts and
 * the adapter's when it ends; the first review.samples of each go to
 * OUT/metrics.jsonl and the progress output, and all of them, side by side
 * with the unit-test verdicts where records have tests, to OUT/review.md
 * (docs/training.md, "Samples and the review sheet"). */
#ifndef QL_REVIEW_H
#define QL_REVIEW_H

#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "model/llama.h"

typedef struct ql_review_options {
    int64_t prompts;        /* review.prompts: records in OUT/review.md (0: no sheet) */
    int64_t samples;        /* review.samples: of those, logged to metrics.jsonl */
    int64_t max_new_tokens; /* review.max_new_tokens */
    int run_tests;          /* review.tests: run records' "test" in the sandbox */
    const char *python;     /* interpreter for the tests (NULL: python3) */
    const char *model;      /* the base model's path (the sheet names it) */
    const char *tokenizer;  /* where the tokenizer is: the model path */
} ql_review_options;

typedef struct ql_review ql_review;

/* Chooses the records among `valid` (read back from valid->path by line for
 * their "prompt", "completion" and "test" fields) and generates the base
 * model's answers with m's adapters switched off. Notes go to `log` (may be
 * NULL). *out is NULL when there is nothing to review. */
ql_status ql_review_begin(ql_llama *m, const ql_token_data *valid, const ql_review_options *o,
                          FILE *log, ql_review **out);

/* After `step` training steps: the adapter's answers, the tests, the sample
 * lines appended to metrics_path (may be NULL), and out_dir/review.md. */
ql_status ql_review_end(ql_review *r, ql_llama *m, int64_t step, const char *out_dir,
                        const char *metrics_path, FILE *log);

void ql_review_free(ql_review *r);

/* What qlora train calls (rank 0): begin with the review.* keys of c, model
 * c->model and the validation set; a failure is a warning on `log` (the run
 * goes on without a review) and gives NULL. */
ql_review *ql_review_start(const ql_config *c, ql_llama *m, const ql_token_data *valid, FILE *log);
/* End after `steps` steps into c->output_dir (a failure is a warning) and
 * free r. r may be NULL. */
void ql_review_finish(ql_review *r, ql_llama *m, const ql_config *c, int64_t steps, FILE *log);

#endif
