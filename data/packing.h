/* Packing records into rows of at most max_seq tokens, keeping document
 * boundaries (docs/data.md, "Packing and order").
 *
 * The rows are built once for a data set by first-fit decreasing: records
 * are taken longest first (ties in file order) and each goes into the first
 * row that still has room for all of it; a record is never split (the loader
 * has already truncated or dropped those longer than max_seq). Rows are then
 * what the data order shuffles and the batcher batches, so a row's contents
 * do not depend on the seed, the epoch or the number of ranks.
 *
 * In a row, positions restart at 0 for every document and each document has
 * its own id (0, 1, ... in the row; padding gets the next id), so the
 * attention op's document mask keeps every token inside its document. The
 * last token of each document never has a target: no loss crosses a
 * boundary, whatever the loader put there.
 *
 * With packing off there is one record per row, as before. */
#ifndef QL_PACKING_H
#define QL_PACKING_H

#include <stdint.h>

#include "core/status.h"
#include "data/jsonl_tokens.h"

typedef struct ql_packing {
    int packed;      /* 0: one record per row */
    int64_t max_seq; /* row capacity */
    int64_t n_rows;
    int64_t *row_off; /* [n_rows + 1]: row r holds records rec[row_off[r] .. row_off[r+1]-1] */
    int64_t *rec;     /* [records] in row order */
    int64_t *row_len; /* [n_rows] tokens in each row */
    int64_t max_row;  /* longest row */
    int64_t tokens;   /* all rows' tokens */
} ql_packing;

/* Rows for every record of `d`. A record longer than max_seq is QL_EINVAL
 * naming its file and line (the loader should have cut it). */
ql_status ql_packing_build(const ql_token_data *d, int64_t max_seq, int pack, ql_packing *p);
void ql_packing_free(ql_packing *p);

/* Fraction of the cells of n_rows x max_seq that hold tokens (the rest would
 * be padding if every row were padded to max_seq). */
double ql_packing_efficiency(const ql_packing *p);

/* Target positions of record i, not counting its last token (which never has
 * a target in a row). */
int64_t ql_packing_record_targets(const ql_token_data *d, int64_t i);

/* Row r into ids, targets, pos and doc [row_len[r]] (pos and doc may be NULL). */
void ql_packing_row(const ql_token_data *d, const ql_packing *p, int64_t r, int32_t *ids,
                    int32_t *targets, int32_t *pos, int32_t *doc);

#endif
