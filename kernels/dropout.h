/* LoRA dropout masks from a counter-based generator, shared by the C and CUDA
 * builds: element e of a mask depends only on (seed, e), so any backend, any
 * thread layout and any chunk of the mask give the same bytes, and the mask
 * is made where it is used (on the GPU, without a host round trip).
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

#endif
