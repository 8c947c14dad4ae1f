/* Learning-rate schedules, gradient clipping and the optimizer step's
 * non-finite policy, on synthetic gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/backend.h"
#include "train/clip.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/schedule.h"

#define NEAR(a, b) (fabs((a) - (b)) <= 1e-15)

/* Expected values are closed forms derived by hand from transformers'
 * optimization.py lambdas (not from this code):
 *   warmup:  i / max(1, W)                                   for i < W
 *   cosine:  max(0, 0.5 * (1 + cos(pi * (i - W) / max(1, N - W))))
 *   linear:  max(0, (N - i) / max(1, N - W))
 *   constant: 1
 * with N = 100 steps and W = 10 warmup steps unless said otherwise. */
static void test_schedule(void) {
    const ql_schedule C = QL_SCHED_COSINE, L = QL_SCHED_LINEAR, K = QL_SCHED_CONSTANT;
    /* warmup: 0 at the first step (the Trainer's first update has lr 0), linear after */
    CHECK(ql_schedule_factor(C, 0, 10, 100) == 0.0);
    CHECK(ql_schedule_factor(C, 5, 10, 100) == 0.5);
    CHECK(ql_schedule_factor(L, 9, 10, 100) == 0.9);
    CHECK(ql_schedule_factor(K, 3, 10, 100) == 0.3);
    /* end of warmup: exactly the peak */
    CHECK(ql_schedule_factor(C, 10, 10, 100) == 1.0);
    CHECK(ql_schedule_factor(L, 10, 10, 100) == 1.0);
    CHECK(ql_schedule_factor(K, 10, 10, 100) == 1.0);
    /* cosine midpoint (progress 1/2): 0.5; a third of the way: (1 + cos(pi/3)) / 2 = 0.75 */
    CHECK(NEAR(ql_schedule_factor(C, 55, 10, 100), 0.5));
    CHECK(NEAR(ql_schedule_factor(C, 40, 10, 100), 0.75));
    /* last step (progress 89/90): (1 - cos(pi/90)) / 2 = sin^2(pi/180) */
    CHECK(NEAR(ql_schedule_factor(C, 99, 10, 100), sin(M_PI / 180) * sin(M_PI / 180)));
    /* the end: 0 */
    CHECK(NEAR(ql_schedule_factor(C, 100, 10, 100), 0.0));
    CHECK(ql_schedule_factor(L, 100, 10, 100) == 0.0);
    CHECK(ql_schedule_factor(L, 120, 10, 100) == 0.0); /* clamped, never negative */
    /* linear midpoint and last step */
    CHECK(ql_schedule_factor(L, 55, 10, 100) == 0.5);
    CHECK(ql_schedule_factor(L, 99, 10, 100) == 1.0 / 90.0);
    CHECK(ql_schedule_factor(K, 99, 10, 100) == 1.0);
    /* no warmup: the first step has the peak */
    CHECK(ql_schedule_factor(C, 0, 0, 100) == 1.0);
    CHECK(ql_schedule_factor(L, 0, 0, 100) == 1.0);
    CHECK(NEAR(ql_schedule_factor(C, 50, 0, 100), 0.5));
    /* warmup as long as the run: max(1, N - W) keeps the division finite */
    CHECK(ql_schedule_factor(C, 9, 10, 10) == 0.9);
    CHECK(ql_schedule_factor(L, 10, 10, 10) == 0.0);
    /* lr = peak * factor */
    CHECK(ql_schedule_lr(C, 2.0e-4, 5, 10, 100) == 1.0e-4);
}

static void test_clip(void) {
    /* [3, 4]: norm 5 */
    float g[2] = {3, 4};
    CHECK(ql_grad_norm(g, 2) == 5.0);
    float coef = ql_clip_coef(5.0, 1.0);
    CHECK(coef == (float)(1.0 / (5.0 + 1e-6)));
    ql_grad_scale(g, 2, coef);
    CHECK(g[0] == 3.0f * coef && g[1] == 4.0f * coef);
    /* below the limit: untouched; at the limit torch still scales by 1/(1+1e-6) */
    CHECK(ql_clip_coef(0.5, 1.0) == 1.0f);
    CHECK(ql_clip_coef(1.0, 1.0) == (float)(1.0 / (1.0 + 1e-6)));
    CHECK(ql_clip_coef(1.0, 1.0) < 1.0f);
    /* max_norm 0 turns clipping off */
    CHECK(ql_clip_coef(1e6, 0.0) == 1.0f);
    /* the norm is summed in double: a million 0.1f give 1000 * 0.1f to ~1e-12, where a
     * float sum would be off by ~1e-3 relative */
    int64_t n = 1000000;
    float *big = malloc((size_t)n * sizeof *big);
    for (int64_t i = 0; i < n; i++) big[i] = 0.1f;
    double nb = ql_grad_norm(big, n);
    CHECKF(fabs(nb - 1000.0 * (double)0.1f) < 1e-9, "norm %.17g", nb);
    float fsum = 0;
    for (int64_t i = 0; i < n; i++) fsum += big[i] * big[i];
    CHECK(fabs(sqrt((double)fsum) - 1000.0 * (double)0.1f) > 1e-6); /* the test can tell */
    free(big);
    /* non-finite */
    float bad[3] = {1, NAN, 2};
    CHECK(isnan(ql_grad_norm(bad, 3)));
    bad[1] = INFINITY;
    CHECK(isinf(ql_grad_norm(bad, 3)));
}

static void test_optim(const ql_backend *be) {
    enum { N = 4 };
    ql_optim o;
    CHECK(ql_optim_init(&o, be, N) == QL_OK);
    ql_optim_config c = {.weight_decay = 0.1,
                         .beta1 = 0.9,
                         .beta2 = 0.999,
                         .eps = 1e-8,
                         .max_grad_norm = 1.0,
                         .on_nonfinite = QL_NONFINITE_SKIP,
                         .max_nonfinite_in_a_row = 3};
    float p[N] = {1, -2, 0.5f, 3}, g[N], p0[N];
    memcpy(p0, p, sizeof p);
    ql_step_result r;

    /* a NaN in the gradient: skipped, nothing changes */
    memcpy(g, (float[]){0.1f, NAN, 0.2f, 0.3f}, sizeof g);
    CHECK(ql_optim_step(&o, &c, 1, 2.5, 1e-3, p, g, &r) == QL_OK);
    CHECK(r.skipped == 1 && isnan(r.grad_norm));
    CHECK(!memcmp(p, p0, sizeof p) && o.t == 0 && o.nonfinite_in_a_row == 1);
    /* an infinite loss with a fine gradient: skipped too */
    memcpy(g, (float[]){0.1f, 0.1f, 0.2f, 0.3f}, sizeof g);
    CHECK(ql_optim_step(&o, &c, 2, INFINITY, 1e-3, p, g, &r) == QL_OK);
    CHECK(r.skipped == 1 && !memcmp(p, p0, sizeof p) && o.nonfinite_in_a_row == 2);
    /* a good step resets the run of bad ones and applies AdamW: the first step moves every
     * parameter by lr * g / (|g| + eps) after decay p * (1 - lr * wd) */
    memcpy(g, (float[]){0.3f, -0.4f, 0.0f, 1.2f}, sizeof g); /* norm 1.3: clipped */
    CHECK(ql_optim_step(&o, &c, 3, 2.0, 1e-3, p, g, &r) == QL_OK);
    CHECK(r.skipped == 0 && o.t == 1 && o.nonfinite_in_a_row == 0 && o.nonfinite_total == 2);
    CHECK(fabs(r.grad_norm - 1.3) < 1e-7);
    CHECK(r.clip_coef == (float)(1.0 / (r.grad_norm + 1e-6)));
    CHECK(g[0] == 0.3f * r.clip_coef && g[3] == 1.2f * r.clip_coef); /* clipped in place */
    for (int i = 0; i < N; i++) {
        double gi = (double)g[i];
        double want = (double)p0[i] * (1 - 1e-3 * 0.1) - 1e-3 * gi / (fabs(gi) + 1e-8);
        CHECKF(fabs(p[i] - want) < 1e-6, "p[%d] = %.9g, want %.9g", i, p[i], want);
    }
    /* three non-finite steps in a row stop the run, with the limit in the message */
    memcpy(g, (float[]){INFINITY, 0, 0, 0}, sizeof g);
    CHECK(ql_optim_step(&o, &c, 4, 1.0, 1e-3, p, g, &r) == QL_OK);
    CHECK(ql_optim_step(&o, &c, 5, NAN, 1e-3, p, g, &r) == QL_OK);
    ql_status st = ql_optim_step(&o, &c, 6, 1.0, 1e-3, p, g, &r);
    CHECK(st == QL_EINVAL && r.skipped);
    CHECKF(!strcmp(ql_error_message(),
                   "step 6: the loss or the gradient was NaN/Inf in 3 steps in a row "
                   "(train.max_nonfinite_in_a_row = 3; last: gradient norm infinite); lower "
                   "train.lr or check the data"),
           "%s", ql_error_message());
    ql_optim_free(&o);

    /* on_nonfinite: stop ends at the first */
    CHECK(ql_optim_init(&o, be, N) == QL_OK);
    c.on_nonfinite = QL_NONFINITE_STOP;
    memcpy(g, (float[]){0.1f, 0.1f, 0.2f, 0.3f}, sizeof g);
    st = ql_optim_step(&o, &c, 7, NAN, 1e-3, p, g, &r);
    CHECK(st == QL_EINVAL);
    CHECKF(!strcmp(ql_error_message(), "step 7: the loss is NaN and train.on_nonfinite is stop; "
                                       "lower train.lr or check the data"),
           "%s", ql_error_message());
    /* zeroing the gradient */
    CHECK(ql_optim_zero_grads(&o, g) == QL_OK);
    CHECK(g[0] == 0 && g[1] == 0 && g[2] == 0 && g[3] == 0);
    ql_optim_free(&o);

    /* no clipping with max_grad_norm 0 */
    CHECK(ql_optim_init(&o, be, N) == QL_OK);
    c.max_grad_norm = 0;
    memcpy(g, (float[]){30, 40, 0, 0}, sizeof g);
    CHECK(ql_optim_step(&o, &c, 1, 1.0, 1e-3, p, g, &r) == QL_OK);
    CHECK(r.clip_coef == 1.0f && g[0] == 30 && r.grad_norm == 50.0);
    ql_optim_free(&o);
}

static void test_duration(void) {
    char b[32];
    ql_format_duration(5.4, b, sizeof b);
    CHECK(!strcmp(b, "0:05"));
    ql_format_duration(62, b, sizeof b);
    CHECK(!strcmp(b, "1:02"));
    ql_format_duration(3723, b, sizeof b);
    CHECK(!strcmp(b, "1:02:03"));
    ql_format_duration(NAN, b, sizeof b);
    CHECK(!strcmp(b, "0:00"));
}

int main(void) {
    test_duration();
    test_schedule();
    test_clip();
    test_optim(ql_backend_cpu_ref());
    test_optim(ql_backend_cpu());
    return CHECK_DONE();
}
