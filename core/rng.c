#include "core/rng.h"

#include <math.h>

#include "core/splitmix.h"

static uint64_t splitmix64(uint64_t *x) { return ql_splitmix64_mix(*x += QL_SPLITMIX_GAMMA); }

void ql_rng_seed(ql_rng *r, uint64_t seed) { ql_rng_seed_stream(r, seed, 0); }

void ql_rng_seed_stream(ql_rng *r, uint64_t seed, uint64_t stream) {
    /* Mixing the stream id through splitmix first keeps streams of nearby
     * ids (rank 0, 1, 2...) far apart. */
    uint64_t x = seed ^ splitmix64(&(uint64_t){stream * 0xd1342543de82ef95ull + 1});
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ql_rng_u64(ql_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ql_rng_uniform(ql_rng *r) { return (float)(ql_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float ql_rng_uniform_range(ql_rng *r, float lo, float hi) {
    return lo + (hi - lo) * ql_rng_uniform(r);
}

uint64_t ql_rng_below(ql_rng *r, uint64_t n) {
    if (n <= 1) return 0;
    /* Reject the top partial range so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = ql_rng_u64(r);
    while (x >= limit);
    return x % n;
}

float ql_rng_normal(ql_rng *r) {
    /* 1 - u keeps the logarithm's argument in (0, 1]. */
    double u1 = 1.0 - (double)(ql_rng_u64(r) >> 11) * 0x1.0p-53;
    double u2 = (double)(ql_rng_u64(r) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
