/* The global order and its split over ranks: for 1, 2 and 4 ranks (each
 * with its own order object, as separate processes would have) the ranks'
 * slices of every step concatenated are the world-1 global batch; every
 * unit is used exactly once per epoch, across batches that straddle epochs;
 * a world that does not divide the global batch is refused; the cursor
 * stored mid-epoch and set on a fresh batcher continues the identical stream
 * of micro-batches; a held-out set is fixed by the seed. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/order.h"
#include "train/batcher.h"

static void test_ranks(int64_t n, int64_t G, uint64_t seed) {
    int64_t steps = 3 * n / G + 2; /* a few epochs, ending mid-epoch */
    ql_order one;
    CHECK(ql_order_init(&one, n, seed, 1) == QL_OK);
    int64_t *want = malloc((size_t)(steps * G) * sizeof *want);
    for (int64_t g = 0; g < steps * G; g++) want[g] = ql_order_unit(&one, g);
    /* each epoch is a permutation */
    int perm_ok = 1;
    char *seen = calloc((size_t)n, 1);
    for (int64_t e = 0; e < steps * G / n; e++) {
        memset(seen, 0, (size_t)n);
        for (int64_t k = 0; k < n; k++) seen[want[e * n + k]]++;
        for (int64_t k = 0; k < n; k++) perm_ok &= seen[k] == 1;
    }
    CHECKF(perm_ok, "n %lld: an epoch is not a permutation", (long long)n);
    free(seen);
    for (int64_t R = 1; R <= 4; R *= 2) {
        ql_order o[4];
        for (int64_t r = 0; r < R; r++) CHECK(ql_order_init(&o[r], n, seed, 1) == QL_OK);
        int same = 1;
        for (int64_t s = 0; s < steps; s++) {
            int64_t next = s * G; /* concatenation of the slices */
            for (int64_t r = 0; r < R; r++) {
                int64_t off, cnt;
                CHECK(ql_order_shard(G, R, r, &off, &cnt) == QL_OK);
                same &= off == next - s * G && cnt == G / R;
                for (int64_t k = 0; k < cnt; k++)
                    same &= ql_order_unit(&o[r], s * G + off + k) == want[next++];
            }
            same &= next == (s + 1) * G;
        }
        CHECKF(same, "n %lld, G %lld: %lld ranks differ from one", (long long)n, (long long)G,
               (long long)R);
        for (int64_t r = 0; r < R; r++) ql_order_free(&o[r]);
    }
    free(want);
    ql_order_free(&one);
}

static void test_misc(void) {
    int64_t off, cnt;
    CHECK(ql_order_shard(6, 4, 1, &off, &cnt) == QL_EINVAL);
    CHECKF(strstr(ql_error_message(), "train.global_batch (6) must be a multiple of the number of "
                                      "data-parallel ranks (4)"),
           "%s", ql_error_message());
    CHECK(ql_order_shard(8, 4, 3, &off, &cnt) == QL_OK && off == 6 && cnt == 2);
    CHECK(ql_order_shard(8, 2, 2, &off, &cnt) == QL_EINTERNAL);

    ql_order a, b, c;
    CHECK(ql_order_init(&a, 10, 5, 1) == QL_OK && ql_order_init(&b, 10, 5, 1) == QL_OK);
    CHECK(ql_order_init(&c, 10, 6, 1) == QL_OK);
    int other_seed = 0, other_epoch = 0, backwards = 1;
    for (int64_t g = 0; g < 10; g++) {
        other_seed |= ql_order_unit(&c, g) != ql_order_unit(&a, g);
        other_epoch |= ql_order_unit(&a, g + 10) != ql_order_unit(&b, g);
    }
    /* random access in any order gives what sequential access gave */
    for (int64_t g = 39; g >= 0; g--) backwards &= ql_order_unit(&a, g) == ql_order_unit(&b, g);
    CHECK(other_seed && other_epoch && backwards);
    ql_data_cursor cur = ql_order_cursor(&a, 37);
    int64_t g;
    CHECK(cur.epoch == 3 && cur.index == 7);
    CHECK(ql_order_position(&a, cur, &g) == QL_OK && g == 37);
    CHECK(ql_order_position(&a, (ql_data_cursor){1, 10}, &g) == QL_EINVAL);
    CHECK(ql_order_position(&a, (ql_data_cursor){-1, 0}, &g) == QL_EINVAL);
    CHECK(ql_order_position(&a, (ql_data_cursor){INT64_MAX / 4, 0}, &g) == QL_EINVAL);
    CHECK(strstr(ql_error_message(), "outside a data set of 10 samples per epoch") != NULL);
    ql_order_free(&a), ql_order_free(&b), ql_order_free(&c);
    CHECK(ql_order_init(&a, 0, 5, 1) == QL_EINVAL);
    /* no shuffling: file order every epoch */
    CHECK(ql_order_init(&a, 7, 5, 0) == QL_OK);
    int file_order = 1;
    for (int64_t k = 0; k < 21; k++) file_order &= ql_order_unit(&a, k) == k % 7;
    CHECK(file_order);
    ql_order_free(&a);

    unsigned char h1[100], h2[100], h3[100];
    CHECK(ql_order_hold_out(100, 13, 9, h1) == QL_OK && ql_order_hold_out(100, 13, 9, h2) == QL_OK);
    CHECK(ql_order_hold_out(100, 13, 10, h3) == QL_OK);
    int k1 = 0;
    for (int i = 0; i < 100; i++) k1 += h1[i];
    CHECK(k1 == 13 && !memcmp(h1, h2, 100) && memcmp(h1, h3, 100) != 0);
}

/* n records; record i has 1 + i % 6 tokens, ids i*8 + t. */
static ql_token_data make(int64_t n) {
    ql_token_data d;
    memset(&d, 0, sizeof d);
    d.n = n;
    d.off = calloc((size_t)n + 1, sizeof *d.off);
    for (int64_t i = 0; i < n; i++) d.off[i + 1] = d.off[i] + 1 + i % 6;
    d.ids = malloc((size_t)d.off[n] * sizeof *d.ids);
    d.targets = malloc((size_t)d.off[n] * sizeof *d.targets);
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = d.off[i]; t < d.off[i + 1]; t++) {
            d.ids[t] = (int32_t)(i * 8 + t - d.off[i]);
            d.targets[t] = t + 1 < d.off[i + 1] ? d.ids[t] + 1 : -1;
        }
    return d;
}

/* A step's micro-batches as bytes, appended to buf. */
static size_t step_bytes(ql_batcher *b, int64_t G, int64_t M, char *buf) {
    size_t n = 0;
    ql_data_cursor c = ql_batcher_cursor(b);
    int64_t first;
    CHECK(ql_order_position(&b->order, c, &first) == QL_OK);
    for (int64_t j = 0; j < G; j += M) {
        ql_batch mb;
        int64_t tok;
        CHECK(ql_batcher_fill(b, first + j, G - j < M ? G - j : M, &mb, &tok) == QL_OK);
        size_t cells = (size_t)(mb.batch * mb.seq);
        memcpy(buf + n, mb.ids, cells * 4), n += cells * 4;
        memcpy(buf + n, mb.targets, cells * 4), n += cells * 4;
        memcpy(buf + n, mb.pos, cells * 4), n += cells * 4;
        memcpy(buf + n, mb.doc, cells * 4), n += cells * 4;
    }
    first += G;
    CHECK(ql_batcher_set_cursor(b, ql_order_cursor(&b->order, first)) == QL_OK);
    return n;
}

static void test_cursor(void) {
    ql_token_data d = make(41);
    ql_packing p;
    CHECK(ql_packing_build(&d, 12, 1, &p) == QL_OK);
    const int64_t G = 4, M = 3, steps = 20, cut = 7;
    ql_batcher a, b;
    CHECK(ql_batcher_init_rows(&a, &d, &p, 77, 1, 0, M) == QL_OK);
    char *s1 = malloc(1 << 16), *s2 = malloc(1 << 16);
    int same = 1;
    ql_data_cursor saved = {0, 0};
    for (int64_t s = 0; s < steps; s++) {
        if (s == cut) saved = ql_batcher_cursor(&a);
        size_t n1 = step_bytes(&a, G, M, s1);
        if (s < cut) continue;
        if (s == cut) {
            /* a fresh batcher (a restarted process) from the stored cursor */
            CHECK(ql_batcher_init_rows(&b, &d, &p, 77, 1, 0, M) == QL_OK);
            CHECK(ql_batcher_set_cursor(&b, saved) == QL_OK);
        }
        size_t n2 = step_bytes(&b, G, M, s2);
        same &= n1 == n2 && !memcmp(s1, s2, n1);
    }
    CHECKF(p.n_rows < G * steps / 2, "the run should cover several epochs (%lld rows)",
           (long long)p.n_rows);
    CHECK(saved.epoch * p.n_rows + saved.index == cut * G);
    CHECK(same);
    CHECK(ql_batcher_set_cursor(&b, (ql_data_cursor){0, p.n_rows}) == QL_EINVAL);
    ql_batcher_free(&a), ql_batcher_free(&b);
    ql_packing_free(&p);
    free(s1), free(s2);
    free(d.off), free(d.ids), free(d.targets);
}

int main(void) {
    for (int64_t n = 1; n <= 33; n += 4)
        for (int64_t G = 4; G <= 16; G *= 2) test_ranks(n, G, (uint64_t)(n * 31 + G));
    test_ranks(1000, 64, 1);
    test_misc();
    test_cursor();
    return CHECK_DONE();
}
