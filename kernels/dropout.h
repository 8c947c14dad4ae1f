/* LoRA dropout masks from a counter-based generator, shared by the C and CUDA
 * builds: element e of a mask depends only on (seed, e), so any backend, any
 * thread layout and any chunk of the mask give the same bits. A mask is never
 * stored: each kernel that needs element e computes it where it reads x[e]
 * (on a GPU that saves a launch and a [T, in] byte array per use).
 *
 * The draws are the splitmix64 sequence (Steele, Lea, Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014; the generator core/rng.c
 * seeds xoshiro with) started at `seed`: output j is the mix of
 * seed + (j + 1)·γ, which is what stepping the generator j + 1 times gives.
 * Draw j decides elements 2j (low 32 bits) and 2j + 1 (high 32 bits); an
 * element is dropped iff its 32 bits fall below thresh = p·2³². */
#ifndef QL_DROPOUT_H
#define QL_DROPOUT_H

#include <stdint.h>

#include "core/splitmix.h"

/* Output j (from 0) of the splitmix64 sequence seeded at seed. */
QL_HD uint64_t ql_dropout_draw(uint64_t seed, uint64_t j) {
    return ql_splitmix64_mix(seed + (j + 1) * QL_SPLITMIX_GAMMA);
}

/* The keep bytes of elements 2j and 2j + 1: one draw decides both. */
QL_HD uint8_t ql_dropout_keep_half(uint64_t u, int high, uint64_t thresh) {
    return (uint8_t)((high ? u >> 32 : u & 0xffffffffu) >= thresh);
}

/* 1 if element e is kept, 0 if dropped. */
QL_HD uint8_t ql_dropout_keep(uint64_t seed, uint64_t thresh, int64_t e) {
    return ql_dropout_keep_half(ql_dropout_draw(seed, (uint64_t)e >> 1), (int)(e & 1), thresh);
}

/* The keep bits of elements e and e + 1 as bits 0 and 1: one draw when e is
 * even (the pair shares it), two when not. */
QL_HD unsigned ql_dropout_keep2(uint64_t seed, uint64_t thresh, int64_t e) {
    if (e & 1)
        return ql_dropout_keep(seed, thresh, e) | (unsigned)ql_dropout_keep(seed, thresh, e + 1)
                                                      << 1;
    const uint64_t u = ql_dropout_draw(seed, (uint64_t)e >> 1);
    return ql_dropout_keep_half(u, 0, thresh) | (unsigned)ql_dropout_keep_half(u, 1, thresh) << 1;
}

/* A LoRA dropout mask by its generator's parameters, as the ops take it. */
typedef struct ql_dropout {
    int on;          /* 0: nothing dropped, x' = x */
    uint64_t seed;   /* the mask of one (call, layer, projection) */
    uint64_t thresh; /* p·2³²: dropped iff an element's 32 bits are below it */
    float scale;     /* 1 / (1 - p), multiplied into kept elements as a float */
} ql_dropout;

/* Element e of the LoRA branch's input from x[e]: x, or x · scale where the
 * mask keeps it and 0 where it drops it (one float multiply, as torch's
 * dropout does). */
QL_HD float ql_dropout_apply(const ql_dropout *d, float x, int64_t e) {
    if (!d->on) return x;
    return ql_dropout_keep(d->seed, d->thresh, e) ? x * d->scale : 0.0f;
}

#endif
