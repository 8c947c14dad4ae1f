/* kernels/cpu/cpu_v8.h: ql_v8_exp against libm's double-precision exp (an
 * independent implementation), in ulps of the float result, over the whole
 * range and at the edges, plus the special values and the array form's tail. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/cpu/cpu_v8.h"

/* |got - exp(x)| in units of the spacing of floats at exp(x); below FLT_MIN
 * the spacing is the smallest subnormal's. */
static double ulp_error(float got, float x) {
    double want = exp((double)x);
    double spacing = want < FLT_MIN ? ldexp(1.0, -149) : ldexp(1.0, ilogb(want) - 23);
    return fabs((double)got - want) / spacing;
}

static float exp_one(float x) {
    ql_v8f v = ql_v8_exp(ql_v8_splat(x));
    return v[3];
}

int main(void) {
    /* Every lane: eight different inputs at once. */
    float xs[8] = {-3.5f, -1.0f, 0.0f, 0.5f, 1.0f, 2.25f, 10.0f, -50.0f}, ys[8];
    ql_v8_store(ys, ql_v8_exp(ql_v8_load(xs)));
    for (int l = 0; l < 8; l++) CHECKF(ulp_error(ys[l], xs[l]) <= 2.0, "lane %d x %g", l, xs[l]);
    CHECKF(exp_one(0.0f) == 1.0f, "exp(0) = %.9g", exp_one(0.0f));

    /* A grid over the normal range and random points in it. */
    double worst = 0.0;
    float worst_x = 0.0f;
    const float lo = -87.33f, hi = 88.72f;
    const int n = 1 << 21;
    ql_rng rng;
    ql_rng_seed(&rng, 99);
    for (int i = 0; i < 2 * n; i++) {
        float x =
            i < n ? lo + (hi - lo) * (float)i / (float)n : lo + (hi - lo) * ql_rng_uniform(&rng);
        double e = ulp_error(exp_one(x), x);
        if (!(e <= worst)) worst = e, worst_x = x;
    }
    CHECKF(worst <= 2.0, "worst %.3f ulp at x = %.9g", worst, worst_x);
    /* Small arguments, where exp(x) ~ 1 + x must keep x's bits. */
    worst = 0.0;
    for (int i = -2000; i <= 2000; i++) {
        float x = ldexpf((float)i, -30);
        double e = ulp_error(exp_one(x), x);
        if (!(e <= worst)) worst = e, worst_x = x;
    }
    CHECKF(worst <= 1.0, "near 0: worst %.3f ulp at x = %.9g", worst, worst_x);

    /* Subnormal results, and the edges of the range. */
    worst = 0.0;
    for (float x = -103.9f; x < -87.34f; x += 0.0137f) {
        double e = ulp_error(exp_one(x), x);
        if (!(e <= worst)) worst = e, worst_x = x;
    }
    CHECKF(worst <= 1.0, "subnormal: worst %.3f steps at x = %.9g", worst, worst_x);
    float top = 88.7228f;
    CHECKF(isfinite(exp_one(top)) && ulp_error(exp_one(top), top) <= 2.0, "exp(%.9g) = %.9g", top,
           exp_one(top));
    CHECK(exp_one(88.723f) == INFINITY);
    CHECK(exp_one(1000.0f) == INFINITY);
    CHECK(exp_one(-104.5f) == 0.0f);
    CHECK(exp_one(-INFINITY) == 0.0f);
    CHECK(exp_one(INFINITY) == INFINITY);
    CHECK(isnan(exp_one(NAN)));

    /* The array form: lengths that end inside a vector, in place. */
    float buf[21], in[21];
    for (int i = 0; i < 21; i++) in[i] = buf[i] = -0.37f * (float)i + 1.0f;
    ql_exp_f32(buf, buf, 21);
    int tail_ok = 1;
    for (int i = 0; i < 21; i++) tail_ok &= ulp_error(buf[i], in[i]) <= 2.0;
    CHECK(tail_ok);
    float one[1] = {2.0f};
    ql_exp_f32(one, one, 1);
    CHECKF(ulp_error(one[0], 2.0f) <= 2.0, "n = 1: %.9g", one[0]);
    return CHECK_DONE();
}
