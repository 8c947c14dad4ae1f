#include "train/batcher.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* The data order's rng stream ids: "data" in the high bits, the epoch below. */
#define DATA_STREAM 0x6461746100000000ull

ql_status ql_batcher_init(ql_batcher *b, const ql_token_data *d, uint64_t seed, int shuffle,
                          int pad_to_max, int64_t max_seq, int64_t max_rows) {
    memset(b, 0, sizeof *b);
    b->d = d;
    b->seed = seed;
    b->shuffle = shuffle;
    b->pad_to_max = pad_to_max;
    b->max_seq = max_seq;
    b->max_rows = max_rows;
    b->epoch = -1;
    b->perm = ql_malloc((size_t)d->n * sizeof *b->perm, "the data order");
    b->n_tg = b->perm ? ql_malloc((size_t)d->n * sizeof *b->n_tg, "the data order") : NULL;
    size_t cells = (size_t)(max_rows * max_seq);
    b->ids = b->n_tg ? ql_malloc(cells * sizeof *b->ids, "a micro-batch") : NULL;
    b->targets = b->ids ? ql_malloc(cells * sizeof *b->targets, "a micro-batch") : NULL;
    if (!b->targets) {
        ql_batcher_free(b);
        return QL_ENOMEM;
    }
    for (int64_t i = 0; i < d->n; i++) {
        int64_t k = 0;
        for (int64_t t = d->off[i]; t < d->off[i + 1]; t++) k += d->targets[t] >= 0;
        b->n_tg[i] = k;
    }
    return QL_OK;
}

void ql_batcher_free(ql_batcher *b) {
    free(b->perm);
    free(b->n_tg);
    free(b->ids);
    free(b->targets);
    memset(b, 0, sizeof *b);
}

static void make_perm(ql_batcher *b, int64_t epoch) {
    int64_t n = b->d->n;
    for (int64_t i = 0; i < n; i++) b->perm[i] = i;
    if (b->shuffle) {
        ql_rng r;
        ql_rng_seed_stream(&r, b->seed, DATA_STREAM + (uint64_t)epoch);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)ql_rng_below(&r, (uint64_t)i + 1);
            int64_t t = b->perm[i];
            b->perm[i] = b->perm[j];
            b->perm[j] = t;
        }
    }
    b->epoch = epoch;
}

int64_t ql_batcher_record(ql_batcher *b, int64_t g) {
    int64_t n = b->d->n, e = g / n;
    if (e != b->epoch) make_perm(b, e);
    return b->perm[g % n];
}

int64_t ql_batcher_count_targets(ql_batcher *b, int64_t first, int64_t count) {
    int64_t k = 0;
    for (int64_t g = first; g < first + count; g++) k += b->n_tg[ql_batcher_record(b, g)];
    return k;
}

ql_status ql_batcher_fill(ql_batcher *b, int64_t first, int64_t rows, ql_batch *out,
                          int64_t *tokens) {
    if (rows < 1 || rows > b->max_rows)
        return ql_error(QL_EINTERNAL, "micro-batch of %lld rows (at most %lld)", (long long)rows,
                        (long long)b->max_rows);
    const ql_token_data *d = b->d;
    int64_t seq = b->pad_to_max ? b->max_seq : 1;
    for (int64_t r = 0; r < rows && !b->pad_to_max; r++) {
        int64_t i = ql_batcher_record(b, first + r), len = d->off[i + 1] - d->off[i];
        if (len > seq) seq = len;
    }
    *tokens = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = ql_batcher_record(b, first + r), len = d->off[i + 1] - d->off[i];
        int32_t *ids = b->ids + r * seq, *tg = b->targets + r * seq;
        memcpy(ids, d->ids + d->off[i], (size_t)len * sizeof *ids);
        memcpy(tg, d->targets + d->off[i], (size_t)len * sizeof *tg);
        for (int64_t t = len; t < seq; t++) {
            ids[t] = 0;
            tg[t] = -100;
        }
        *tokens += len;
    }
    *out = (ql_batch){.batch = rows, .seq = seq, .ids = b->ids, .targets = b->targets};
    return QL_OK;
}
