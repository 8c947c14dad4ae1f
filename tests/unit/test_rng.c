/* core/rng: the published xoshiro256** output for a known state, stream
 * independence, and the statistics the LoRA initialiser relies on. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"

int main(void) {
    /* xoshiro256** with state {1, 2, 3, 4}: first outputs of the published
     * algorithm (Blackman & Vigna), recomputed by an independent Python script. */
    ql_rng r = {{1, 2, 3, 4}};
    static const uint64_t want[4] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull};
    for (int i = 0; i < 4; i++) CHECKF(ql_rng_u64(&r) == want[i], "output %d", i);

    ql_rng a, b;
    ql_rng_seed(&a, 1234);
    ql_rng_seed(&b, 1234);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= ql_rng_u64(&a) == ql_rng_u64(&b);
    CHECK(same);
    ql_rng_seed_stream(&a, 1234, 0);
    ql_rng_seed_stream(&b, 1234, 1);
    CHECK(memcmp(a.s, b.s, sizeof a.s) != 0);

    /* uniform: in [0,1), mean 1/2, variance 1/12 */
    ql_rng_seed(&a, 7);
    double sum = 0, sq = 0;
    int in_range = 1;
    const int n = 1 << 20;
    for (int i = 0; i < n; i++) {
        float u = ql_rng_uniform(&a);
        in_range &= u >= 0.0f && u < 1.0f;
        sum += u;
        sq += (double)u * u;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    CHECK(in_range);
    CHECKF(fabs(mean - 0.5) < 2e-3, "mean %g", mean);
    CHECKF(fabs(var - 1.0 / 12) < 1e-3, "variance %g", var);

    /* normal: mean 0, variance 1 */
    sum = sq = 0;
    for (int i = 0; i < n; i++) {
        double z = ql_rng_normal(&a);
        sum += z;
        sq += z * z;
    }
    mean = sum / n;
    var = sq / n - mean * mean;
    CHECKF(fabs(mean) < 5e-3 && fabs(var - 1) < 1e-2, "normal mean %g var %g", mean, var);

    /* below: every residue, none outside */
    int counts[7] = {0}, ok = 1;
    for (int i = 0; i < 70000; i++) {
        uint64_t k = ql_rng_below(&a, 7);
        ok &= k < 7;
        if (k < 7) counts[k]++;
    }
    CHECK(ok);
    for (int k = 0; k < 7; k++) CHECKF(counts[k] > 9500 && counts[k] < 10500, "residue %d", k);
    return CHECK_DONE();
}
