#include "data/order.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* The rng stream ids: "data" in the high bits and the epoch below (the
 * trainer's order before packing used the same, so file orders carry over);
 * "vali" for the held-out set. */
#define ORDER_STREAM 0x6461746100000000ull
#define HOLD_OUT_STREAM 0x76616c6900000000ull

ql_status ql_order_init(ql_order *o, int64_t n, uint64_t seed, int shuffle) {
    memset(o, 0, sizeof *o);
    if (n < 1) return ql_error(QL_EINVAL, "no samples to order");
    o->n = n;
    o->seed = seed;
    o->shuffle = shuffle;
    o->epoch = -1;
    o->perm = ql_malloc((size_t)n * sizeof *o->perm, "the data order");
    return o->perm ? QL_OK : QL_ENOMEM;
}

void ql_order_free(ql_order *o) {
    free(o->perm);
    memset(o, 0, sizeof *o);
}

static void shuffle(int64_t *v, int64_t n, ql_rng *r) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ql_rng_below(r, (uint64_t)i + 1);
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

int64_t ql_order_unit(ql_order *o, int64_t g) {
    int64_t e = g / o->n;
    if (e != o->epoch) {
        for (int64_t i = 0; i < o->n; i++) o->perm[i] = i;
        if (o->shuffle) {
            ql_rng r;
            ql_rng_seed_stream(&r, o->seed, ORDER_STREAM + (uint64_t)e);
            shuffle(o->perm, o->n, &r);
        }
        o->epoch = e;
    }
    return o->perm[g % o->n];
}

ql_data_cursor ql_order_cursor(const ql_order *o, int64_t g) {
    return (ql_data_cursor){g / o->n, g % o->n};
}

ql_status ql_order_position(const ql_order *o, ql_data_cursor c, int64_t *g) {
    if (c.epoch < 0 || c.index < 0 || c.index >= o->n || c.epoch > (INT64_MAX - c.index) / o->n)
        return ql_error(QL_EINVAL,
                        "data cursor (epoch %lld, sample %lld) is outside a data set of %lld "
                        "samples per epoch",
                        (long long)c.epoch, (long long)c.index, (long long)o->n);
    *g = c.epoch * o->n + c.index;
    return QL_OK;
}

ql_status ql_order_shard(int64_t global_batch, int64_t world, int64_t rank, int64_t *offset,
                         int64_t *count) {
    if (world < 1 || rank < 0 || rank >= world)
        return ql_error(QL_EINTERNAL, "rank %lld of %lld data-parallel ranks", (long long)rank,
                        (long long)world);
    if (global_batch % world != 0)
        return ql_error(QL_EINVAL,
                        "train.global_batch (%lld) must be a multiple of the number of "
                        "data-parallel ranks (%lld): each rank takes an equal slice of every "
                        "global batch",
                        (long long)global_batch, (long long)world);
    *count = global_batch / world;
    *offset = rank * *count;
    return QL_OK;
}

ql_status ql_order_hold_out(int64_t n, int64_t k, uint64_t seed, unsigned char *held_out) {
    if (k < 0 || k > n)
        return ql_error(QL_EINTERNAL, "holding out %lld of %lld", (long long)k, (long long)n);
    int64_t *v = ql_malloc((size_t)(n ? n : 1) * sizeof *v, "the validation split");
    if (!v) return QL_ENOMEM;
    for (int64_t i = 0; i < n; i++) v[i] = i;
    ql_rng r;
    ql_rng_seed_stream(&r, seed, HOLD_OUT_STREAM);
    shuffle(v, n, &r);
    memset(held_out, 0, (size_t)n);
    for (int64_t i = 0; i < k; i++) held_out[v[i]] = 1;
    free(v);
    return QL_OK;
}
