/* Which records go into which step, and the padded micro-batches.
 *
 * Samples are numbered globally from 0: step s (1-based) takes samples
 * (s-1)*global_batch ... s*global_batch-1, and sample g is record
 * perm_e[g mod n] of epoch e = g div n. perm_e is a Fisher-Yates shuffle
 * drawn from the seed and the epoch alone (or the file order when shuffling
 * is off), so the order never depends on the micro-batch size or, later, on
 * the number of ranks. */
#ifndef QL_BATCHER_H
#define QL_BATCHER_H

#include <stdint.h>

#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "model/llama.h"

typedef struct ql_batcher {
    const ql_token_data *d;
    uint64_t seed;
    int shuffle;
    int pad_to_max;  /* pad every micro-batch to max_seq rather than its longest row */
    int64_t max_seq; /* no record is longer (the reader truncated them) */
    int64_t max_rows;
    int64_t epoch;          /* whose permutation is in perm (-1: none yet) */
    int64_t *perm;          /* [n] */
    int64_t *n_tg;          /* [n] target positions per record */
    int32_t *ids, *targets; /* [max_rows * max_seq] host buffers of the last micro-batch */
} ql_batcher;

ql_status ql_batcher_init(ql_batcher *b, const ql_token_data *d, uint64_t seed, int shuffle,
                          int pad_to_max, int64_t max_seq, int64_t max_rows);
void ql_batcher_free(ql_batcher *b);

/* The record that global sample g is. */
int64_t ql_batcher_record(ql_batcher *b, int64_t g);

/* Target positions in samples first .. first+count-1 (the denominator of a
 * step's mean loss). */
int64_t ql_batcher_count_targets(ql_batcher *b, int64_t first, int64_t count);

/* Rows = samples first .. first+rows-1, padded (id 0, no target) to the
 * longest row or to max_seq. `out` points into the batcher's buffers, valid
 * until the next call. *tokens = non-padding tokens. */
ql_status ql_batcher_fill(ql_batcher *b, int64_t first, int64_t rows, ql_batch *out,
                          int64_t *tokens);

#endif
