/* Which rows go into which step, and the padded micro-batches.
 *
 * A row is a packed row of documents (data/packing.h) or, with packing off,
 * one record. The rows' global order is data/order.h's: sample g is row
 * perm_e[g mod n] of epoch e = g div n, drawn from the seed and the epoch
 * alone, so it never depends on the micro-batch size or the number of ranks.
 * The batcher's position in that stream is a cursor (epoch, index) that a
 * checkpoint can store and set again to continue the identical stream. */
#ifndef QL_BATCHER_H
#define QL_BATCHER_H

#include <stdint.h>

#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "data/order.h"
#include "data/packing.h"
#include "model/llama.h"

typedef struct ql_batcher {
    const ql_token_data *d;
    const ql_packing *p; /* the rows */
    ql_packing own;      /* one record per row, when ql_batcher_init built it */
    ql_order order;
    int pad_to_max;  /* pad every micro-batch to max_seq rather than its longest row */
    int64_t max_seq; /* no row is longer */
    int64_t max_rows;
    int64_t next;                       /* the next global sample (the cursor) */
    int64_t *n_tg;                      /* [rows] target positions per row */
    int32_t *ids, *targets, *pos, *doc; /* [max_rows * max_seq] the last micro-batch */
} ql_batcher;

/* One record per row (no packing); records are at most max_seq long. */
ql_status ql_batcher_init(ql_batcher *b, const ql_token_data *d, uint64_t seed, int shuffle,
                          int pad_to_max, int64_t max_seq, int64_t max_rows);
/* Over the rows of `p` (built from `d`; both outlive the batcher). Packed
 * rows come with positions and document ids. */
ql_status ql_batcher_init_rows(ql_batcher *b, const ql_token_data *d, const ql_packing *p,
                               uint64_t seed, int shuffle, int pad_to_max, int64_t max_rows);
void ql_batcher_free(ql_batcher *b);

/* The row that global sample g is. */
int64_t ql_batcher_row(ql_batcher *b, int64_t g);

/* Target positions in samples first .. first+count-1 (the denominator of a
 * step's mean loss). */
int64_t ql_batcher_count_targets(ql_batcher *b, int64_t first, int64_t count);

/* Rows = samples first .. first+rows-1, padded (id 0, no target; in packed
 * rows a document id of its own) to the longest row or to max_seq. `out`
 * points into the batcher's buffers, valid until the next call.
 * *tokens = non-padding tokens. */
ql_status ql_batcher_fill(ql_batcher *b, int64_t first, int64_t rows, ql_batch *out,
                          int64_t *tokens);

/* The cursor: where the next global batch starts. */
ql_data_cursor ql_batcher_cursor(const ql_batcher *b);
/* Continues from a stored cursor (QL_EINVAL if it is outside the data). */
ql_status ql_batcher_set_cursor(ql_batcher *b, ql_data_cursor c);

#endif
