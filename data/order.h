/* The global sample order, its split over data-parallel ranks, and the
 * cursor that says where a run is in it (docs/data.md, "Packing and order").
 *
 * The units (packed rows, or records when packing is off) are numbered
 * 0 .. n-1. Global samples are numbered from 0 across epochs: sample g is
 * unit perm_e[g mod n] of epoch e = g div n, where perm_e is a Fisher-Yates
 * shuffle drawn from (seed, e) alone, or the identity without shuffling. So
 * every unit is used exactly once per epoch, and nothing here depends on the
 * number of ranks or the micro-batch size: a global batch of G samples is the
 * same G samples whoever computes it, and rank r of R takes a fixed slice. */
#ifndef QL_ORDER_H
#define QL_ORDER_H

#include <stdint.h>

#include "core/status.h"

/* Where the stream is: the next global sample is `index` of epoch `epoch`
 * (0 <= index < n). Two integers, exact, for a checkpoint to store. */
typedef struct ql_data_cursor {
    int64_t epoch, index;
} ql_data_cursor;

typedef struct ql_order {
    int64_t n;
    uint64_t seed;
    int shuffle;
    int64_t epoch; /* whose permutation is in perm (-1: none yet) */
    int64_t *perm; /* [n] */
} ql_order;

/* n >= 1 units. */
ql_status ql_order_init(ql_order *o, int64_t n, uint64_t seed, int shuffle);
void ql_order_free(ql_order *o);

/* The unit that global sample g >= 0 is. */
int64_t ql_order_unit(ql_order *o, int64_t g);

ql_data_cursor ql_order_cursor(const ql_order *o, int64_t g);
/* The global sample a cursor names; a cursor outside the data (index not in
 * [0, n), a negative epoch) is QL_EINVAL. */
ql_status ql_order_position(const ql_order *o, ql_data_cursor c, int64_t *g);

/* Rank `rank` of `world` data-parallel ranks takes samples offset ..
 * offset+count-1 of each global batch of `global_batch` (consecutive slices
 * in rank order, so the ranks' slices concatenated are the global batch).
 * A world that does not divide the global batch is QL_EINVAL. */
ql_status ql_order_shard(int64_t global_batch, int64_t world, int64_t rank, int64_t *offset,
                         int64_t *count);

/* Marks k of n units (held_out[i] = 1) chosen from the seed alone, for a
 * validation set held out of the training file. */
ql_status ql_order_hold_out(int64_t n, int64_t k, uint64_t seed, unsigned char *held_out);

#endif
