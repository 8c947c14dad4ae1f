/* A small deterministic random number generator whose whole state is four
 * 64-bit words, so a checkpoint can store it and a resumed run continues the
 * same stream (xoshiro256**, seeded through splitmix64 as its authors advise).
 * Not for cryptography. */
#ifndef QL_RNG_H
#define QL_RNG_H

#include <stdint.h>

typedef struct ql_rng {
    uint64_t s[4];
} ql_rng;

void ql_rng_seed(ql_rng *r, uint64_t seed);
/* An independent stream for (seed, stream id): e.g. one per rank or per tensor. */
void ql_rng_seed_stream(ql_rng *r, uint64_t seed, uint64_t stream);
uint64_t ql_rng_u64(ql_rng *r);
/* Uniform in [0, 1) with 24 random bits (every value exactly representable). */
float ql_rng_uniform(ql_rng *r);
/* Uniform in [lo, hi). */
float ql_rng_uniform_range(ql_rng *r, float lo, float hi);
/* Uniform integer in [0, n), without modulo bias. */
uint64_t ql_rng_below(ql_rng *r, uint64_t n);
/* Standard normal (Box-Muller on two uniforms). */
float ql_rng_normal(ql_rng *r);

#endif
