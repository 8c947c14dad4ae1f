#include "train/batcher.h"

#include <stdlib.h>
#include <string.h>

ql_status ql_batcher_init_rows(ql_batcher *b, const ql_token_data *d, const ql_packing *p,
                               uint64_t seed, int shuffle, int pad_to_max, int64_t max_rows) {
    memset(b, 0, sizeof *b);
    b->d = d;
    b->p = p;
    b->pad_to_max = pad_to_max;
    b->max_seq = p->max_seq;
    b->max_rows = max_rows;
    QL_TRY(ql_order_init(&b->order, p->n_rows, seed, shuffle));
    size_t cells = (size_t)(max_rows * b->max_seq);
    b->n_tg = ql_malloc((size_t)p->n_rows * sizeof *b->n_tg, "the data order");
    b->ids = b->n_tg ? ql_malloc(cells * sizeof *b->ids, "a micro-batch") : NULL;
    b->targets = b->ids ? ql_malloc(cells * sizeof *b->targets, "a micro-batch") : NULL;
    b->pos = b->targets ? ql_malloc(cells * sizeof *b->pos, "a micro-batch") : NULL;
    b->doc = b->pos ? ql_malloc(cells * sizeof *b->doc, "a micro-batch") : NULL;
    if (!b->doc) {
        ql_batcher_free(b);
        return QL_ENOMEM;
    }
    for (int64_t r = 0; r < p->n_rows; r++) {
        int64_t k = 0;
        for (int64_t j = p->row_off[r]; j < p->row_off[r + 1]; j++)
            k += ql_packing_record_targets(d, p->rec[j]);
        b->n_tg[r] = k;
    }
    return QL_OK;
}

ql_status ql_batcher_init(ql_batcher *b, const ql_token_data *d, uint64_t seed, int shuffle,
                          int pad_to_max, int64_t max_seq, int64_t max_rows) {
    ql_packing own;
    QL_TRY(ql_packing_build(d, max_seq, 0, &own));
    ql_status st = ql_batcher_init_rows(b, d, &own, seed, shuffle, pad_to_max, max_rows);
    if (st != QL_OK) {
        ql_packing_free(&own);
        return st;
    }
    b->own = own;
    b->p = &b->own;
    return QL_OK;
}

void ql_batcher_free(ql_batcher *b) {
    ql_order_free(&b->order);
    ql_packing_free(&b->own);
    free(b->n_tg);
    free(b->ids);
    free(b->targets);
    free(b->pos);
    free(b->doc);
    memset(b, 0, sizeof *b);
}

int64_t ql_batcher_row(ql_batcher *b, int64_t g) { return ql_order_unit(&b->order, g); }

int64_t ql_batcher_count_targets(ql_batcher *b, int64_t first, int64_t count) {
    int64_t k = 0;
    for (int64_t g = first; g < first + count; g++) k += b->n_tg[ql_batcher_row(b, g)];
    return k;
}

ql_status ql_batcher_fill(ql_batcher *b, int64_t first, int64_t rows, ql_batch *out,
                          int64_t *tokens) {
    if (rows < 1 || rows > b->max_rows)
        return ql_error(QL_EINTERNAL, "micro-batch of %lld rows (at most %lld)", (long long)rows,
                        (long long)b->max_rows);
    const ql_packing *p = b->p;
    int64_t seq = b->pad_to_max ? b->max_seq : 1;
    for (int64_t r = 0; r < rows && !b->pad_to_max; r++) {
        int64_t len = p->row_len[ql_batcher_row(b, first + r)];
        if (len > seq) seq = len;
    }
    *tokens = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = ql_batcher_row(b, first + r), len = p->row_len[i];
        int32_t *ids = b->ids + r * seq, *tg = b->targets + r * seq;
        int32_t *pos = b->pos + r * seq, *doc = b->doc + r * seq;
        ql_packing_row(b->d, p, i, ids, tg, pos, doc);
        /* Padding is a document of its own, so it is visible to nobody. */
        int32_t pad_doc = (int32_t)(p->row_off[i + 1] - p->row_off[i]);
        for (int64_t t = len; t < seq; t++) {
            ids[t] = 0;
            tg[t] = -100;
            pos[t] = (int32_t)(t - len);
            doc[t] = pad_doc;
        }
        *tokens += len;
    }
    *out = (ql_batch){.batch = rows,
                      .seq = seq,
                      .ids = b->ids,
                      .targets = b->targets,
                      .pos = p->packed ? b->pos : NULL,
                      .doc = p->packed ? b->doc : NULL};
    return QL_OK;
}

ql_data_cursor ql_batcher_cursor(const ql_batcher *b) {
    return ql_order_cursor(&b->order, b->next);
}

ql_status ql_batcher_set_cursor(ql_batcher *b, ql_data_cursor c) {
    return ql_order_position(&b->order, c, &b->next);
}
