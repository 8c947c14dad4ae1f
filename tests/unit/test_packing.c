/* Packing: a hand-made set whose rows, ids, targets, positions and document
 * ids are worked out by hand (first-fit decreasing, the last token of every
 * document without a target even where the data had one); random sets
 * against a plain O(n * rows) first-fit decreasing written here; every
 * record exactly once; over-long records refused; the batcher's packed
 * micro-batches (padding as a document of its own) and its unpacked ones. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "data/packing.h"
#include "train/batcher.h"

/* Token data built in memory: record i has lens[i] tokens, ids 10*i + t,
 * targets the next id except -100 at every third position; the last target
 * is whatever `last` says (the loader writes -1 there; the packer must not
 * trust it). */
static ql_token_data make(const int64_t *lens, int64_t n, int32_t last) {
    ql_token_data d;
    memset(&d, 0, sizeof d);
    d.n = n;
    d.off = calloc((size_t)n + 1, sizeof *d.off);
    d.line = calloc((size_t)n + 1, sizeof *d.line);
    for (int64_t i = 0; i < n; i++) d.off[i + 1] = d.off[i] + lens[i], d.line[i] = i + 1;
    d.ids = calloc((size_t)d.off[n] + 1, sizeof *d.ids);
    d.targets = calloc((size_t)d.off[n] + 1, sizeof *d.targets);
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < lens[i]; t++) {
            int64_t k = d.off[i] + t;
            d.ids[k] = (int32_t)(10 * i + t);
            d.targets[k] = t % 3 == 2 ? -100 : (int32_t)(10 * i + t + 1);
            if (t == lens[i] - 1) d.targets[k] = last;
            if (lens[i] > d.max_len) d.max_len = lens[i];
        }
    d.path = strdup("hand.jsonl");
    return d;
}

static void drop(ql_token_data *d) {
    free(d->off), free(d->line), free(d->ids), free(d->targets), free(d->path);
}

static void test_hand(void) {
    /* Longest first: 7 (rec 2) opens row 0, 6 (rec 5) row 1, 5 (rec 0) row 2,
     * 4 (rec 4) fills row 1, 3 (rec 1) fills row 0, 2 (rec 3) goes to row 2. */
    static const int64_t lens[6] = {5, 3, 7, 2, 4, 6};
    ql_token_data d = make(lens, 6, 77);
    ql_packing p;
    CHECK(ql_packing_build(&d, 10, 1, &p) == QL_OK);
    CHECK(p.n_rows == 3 && p.tokens == 27 && p.max_row == 10);
    static const int64_t row_off[4] = {0, 2, 4, 6}, rec[6] = {2, 1, 5, 4, 0, 3};
    static const int64_t row_len[3] = {10, 10, 7};
    CHECK(!memcmp(p.row_off, row_off, sizeof row_off) && !memcmp(p.rec, rec, sizeof rec));
    CHECK(!memcmp(p.row_len, row_len, sizeof row_len));
    CHECK(ql_packing_efficiency(&p) == 27.0 / 30.0);

    int32_t ids[10], tg[10], pos[10], doc[10];
    ql_packing_row(&d, &p, 0, ids, tg, pos, doc);
    static const int32_t ids0[10] = {20, 21, 22, 23, 24, 25, 26, 10, 11, 12};
    /* record 2: targets 21 22 -100 24 25 -100, then its last token: none
     * (the data said 77); record 1: 11 12, last none */
    static const int32_t tg0[10] = {21, 22, -100, 24, 25, -100, -100, 11, 12, -100};
    static const int32_t pos0[10] = {0, 1, 2, 3, 4, 5, 6, 0, 1, 2};
    static const int32_t doc0[10] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    CHECK(!memcmp(ids, ids0, sizeof ids0) && !memcmp(tg, tg0, sizeof tg0));
    CHECK(!memcmp(pos, pos0, sizeof pos0) && !memcmp(doc, doc0, sizeof doc0));
    ql_packing_row(&d, &p, 2, ids, tg, pos, doc);
    static const int32_t ids2[7] = {0, 1, 2, 3, 4, 30, 31};
    static const int32_t tg2[7] = {1, 2, -100, 4, -100, 31, -100};
    static const int32_t pos2[7] = {0, 1, 2, 3, 4, 0, 1}, doc2[7] = {0, 0, 0, 0, 0, 1, 1};
    CHECK(!memcmp(ids, ids2, sizeof ids2) && !memcmp(tg, tg2, sizeof tg2));
    CHECK(!memcmp(pos, pos2, sizeof pos2) && !memcmp(doc, doc2, sizeof doc2));
    /* no target of a document's last token names the next document's first */
    int crosses = 0;
    for (int64_t r = 0; r < p.n_rows; r++) {
        ql_packing_row(&d, &p, r, ids, tg, pos, doc);
        for (int64_t t = 0; t + 1 < p.row_len[r]; t++)
            crosses += doc[t] != doc[t + 1] && tg[t] >= 0;
    }
    CHECK(crosses == 0);
    CHECK(ql_packing_record_targets(&d, 2) == 4 && ql_packing_record_targets(&d, 3) == 1);

    /* the batcher over these rows, file order, padded to the longest row */
    ql_batcher b;
    CHECK(ql_batcher_init_rows(&b, &d, &p, 1, 0, 0, 3) == QL_OK);
    ql_batch mb;
    int64_t tok;
    CHECK(ql_batcher_fill(&b, 1, 2, &mb, &tok) == QL_OK); /* rows 1 and 2 */
    CHECK(mb.batch == 2 && mb.seq == 10 && tok == 17 && mb.pos && mb.doc);
    static const int32_t pos_b[20] = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 0, 1, 2};
    static const int32_t doc_b[20] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2};
    CHECK(!memcmp(mb.pos, pos_b, sizeof pos_b) && !memcmp(mb.doc, doc_b, sizeof doc_b));
    CHECK(mb.ids[17] == 0 && mb.targets[17] == -100 && mb.targets[19] == -100);
    int64_t in_batch = 0;
    for (int t = 0; t < 20; t++) in_batch += mb.targets[t] >= 0;
    CHECK(ql_batcher_count_targets(&b, 1, 2) == in_batch);
    ql_batcher_free(&b);
    ql_packing_free(&p);

    /* packing off: one record per row, no positions or document ids */
    CHECK(ql_packing_build(&d, 10, 0, &p) == QL_OK);
    CHECK(p.n_rows == 6 && p.rec[4] == 4 && p.row_len[2] == 7);
    CHECK(ql_packing_efficiency(&p) == 27.0 / 60.0);
    CHECK(ql_batcher_init_rows(&b, &d, &p, 1, 0, 0, 3) == QL_OK);
    CHECK(ql_batcher_fill(&b, 0, 3, &mb, &tok) == QL_OK);
    CHECK(mb.seq == 7 && tok == 15 && !mb.pos && !mb.doc && mb.targets[4] == -100);
    ql_batcher_free(&b);
    ql_packing_free(&p);

    /* a record longer than a row is refused, naming it */
    CHECK(ql_packing_build(&d, 6, 1, &p) == QL_EINVAL);
    CHECKF(strstr(ql_error_message(), "hand.jsonl:3: a record of 7 tokens does not fit a row of 6"),
           "%s", ql_error_message());
    drop(&d);
}

/* First-fit decreasing the slow, obvious way. */
static void naive_ffd(const int64_t *lens, int64_t n, int64_t cap, int64_t *row_of,
                      int64_t *n_rows) {
    int64_t *order = malloc((size_t)n * sizeof *order), *free_ = malloc((size_t)n * sizeof *free_);
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = 1; i < n; i++) /* insertion sort: longest first, stable */
        for (int64_t j = i; j > 0 && lens[order[j]] > lens[order[j - 1]]; j--) {
            int64_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    *n_rows = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = order[k], r = 0;
        while (r < *n_rows && free_[r] < lens[i]) r++;
        if (r == *n_rows) free_[(*n_rows)++] = cap;
        free_[r] -= lens[i];
        row_of[i] = r;
    }
    free(order);
    free(free_);
}

static void test_random(void) {
    ql_rng r;
    ql_rng_seed(&r, 11);
    for (int trial = 0; trial < 40; trial++) {
        int64_t n = 1 + (int64_t)ql_rng_below(&r, 300), cap = 8 + (int64_t)ql_rng_below(&r, 120);
        int64_t *lens = malloc((size_t)n * sizeof *lens);
        for (int64_t i = 0; i < n; i++)
            lens[i] = trial % 4 == 0 ? 1 + (int64_t)ql_rng_below(&r, (uint64_t)cap)
                                     : 1 + (int64_t)ql_rng_below(&r, (uint64_t)cap / 3 + 1);
        ql_token_data d = make(lens, n, -1);
        ql_packing p;
        CHECK(ql_packing_build(&d, cap, 1, &p) == QL_OK);
        int64_t *want = malloc((size_t)n * sizeof *want), want_rows;
        naive_ffd(lens, n, cap, want, &want_rows);
        int ok = p.n_rows == want_rows;
        char *seen = calloc((size_t)n, 1);
        int64_t total = 0;
        for (int64_t row = 0; ok && row < p.n_rows; row++) {
            ok &= p.row_len[row] <= cap && p.row_off[row + 1] > p.row_off[row];
            for (int64_t k = p.row_off[row]; k < p.row_off[row + 1]; k++) {
                ok &= want[p.rec[k]] == row;
                seen[p.rec[k]]++;
            }
            total += p.row_len[row];
        }
        for (int64_t i = 0; ok && i < n; i++) ok &= seen[i] == 1;
        ok &= total == d.off[n] && p.tokens == total;
        /* first fit leaves no two rows that could have been one */
        int64_t lower = (total + cap - 1) / cap;
        ok &= p.n_rows <= 2 * lower;
        CHECKF(ok, "trial %d: n %lld cap %lld: rows %lld, naive %lld", trial, (long long)n,
               (long long)cap, (long long)p.n_rows, (long long)want_rows);
        free(seen);
        free(want);
        free(lens);
        ql_packing_free(&p);
        drop(&d);
    }
}

int main(void) {
    test_hand();
    test_random();
    return CHECK_DONE();
}
