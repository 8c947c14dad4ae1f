/* The optimizer's device path (train/optim.c) without a GPU: a backend that
 * computes on the CPU but calls itself something other than "cpu", so the
 * optimizer treats its memory as a device's. With the vector ops (zero,
 * sq_sum, scale_f32) a step must move nothing through upload/download and
 * give the CPU path's parameters and moments bit for bit (the CPU's sq_sum
 * adds in index order, as ql_grad_sq_sum does); without them (the staged
 * path) it copies the gradient to the host and gives the same bits again.
 * Also: the vector ops of both CPU tables against plain loops, and the
 * counted memory (mem_stats) of allocations and 4-bit uploads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "train/clip.h"
#include "train/optim.h"

static size_t up_bytes, down_bytes;
static const ql_backend *cpu;

static ql_status count_upload(void *dst, const void *src, size_t bytes) {
    up_bytes += bytes;
    return cpu->upload(dst, src, bytes);
}
static ql_status count_download(void *dst, const void *src, size_t bytes) {
    down_bytes += bytes;
    return cpu->download(dst, src, bytes);
}

/* The cpu table under another name, its copies counted; vec = 0 drops the
 * vector ops. */
static ql_backend fake_device(int vec) {
    ql_backend b = *cpu;
    b.name = vec ? "fakedev" : "fakedev-novec";
    b.upload = count_upload;
    b.download = count_download;
    if (!vec) b.zero_f32 = NULL, b.sq_sum_f32 = NULL, b.scale_f32 = NULL;
    return b;
}

#define N 1003
#define STEPS 6

/* STEPS steps on `be`; gradients from a fixed stream, large on odd steps so
 * that clipping (max_grad_norm 1) alternates with plain steps. Final params,
 * m, v (host copies) and the norms. */
static void run(const ql_backend *be, float *p_out, float *m_out, float *v_out, double *norms,
                size_t *step_up, size_t *step_down) {
    float *p, *g, host[N];
    CHECK(be->alloc(N * sizeof(float), (void **)&p) == QL_OK);
    CHECK(be->alloc(N * sizeof(float), (void **)&g) == QL_OK);
    ql_rng r;
    ql_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) host[i] = ql_rng_uniform_range(&r, -1, 1);
    CHECK(be->upload(p, host, sizeof host) == QL_OK);
    ql_optim o;
    CHECK(ql_optim_init(&o, be, N) == QL_OK);
    ql_optim_config c = {.weight_decay = 0.01,
                         .beta1 = 0.9,
                         .beta2 = 0.999,
                         .eps = 1e-8,
                         .max_grad_norm = 1.0,
                         .on_nonfinite = QL_NONFINITE_SKIP,
                         .max_nonfinite_in_a_row = 5};
    *step_up = *step_down = 0;
    for (int s = 1; s <= STEPS; s++) {
        CHECK(ql_optim_zero_grads(&o, g) == QL_OK);
        float scale = s % 2 ? 0.5f : 0.001f;
        for (int i = 0; i < N; i++) host[i] = scale * ql_rng_normal(&r);
        CHECK(be->upload(g, host, sizeof host) == QL_OK); /* "the backward pass" */
        size_t u0 = up_bytes, d0 = down_bytes;
        ql_step_result sr;
        CHECK(ql_optim_step(&o, &c, s, 1.0, 1e-2, p, g, &sr) == QL_OK);
        *step_up += up_bytes - u0;
        *step_down += down_bytes - d0;
        norms[s - 1] = sr.grad_norm;
        CHECK(!sr.skipped);
        CHECKF((s % 2 == 1) == (sr.clip_coef < 1.0f), "step %d clip %g", s, (double)sr.clip_coef);
    }
    CHECK(be->download(p_out, p, N * sizeof(float)) == QL_OK);
    CHECK(be->download(m_out, o.m, N * sizeof(float)) == QL_OK);
    CHECK(be->download(v_out, o.v, N * sizeof(float)) == QL_OK);
    ql_optim_free(&o);
    be->free(p);
    be->free(g);
}

static void test_device_path(void) {
    static float p0[N], m0[N], v0[N], p1[N], m1[N], v1[N], p2[N], m2[N], v2[N];
    double n0[STEPS], n1[STEPS], n2[STEPS];
    size_t up, down;
    run(cpu, p0, m0, v0, n0, &up, &down);
    ql_backend dev = fake_device(1), staged = fake_device(0);
    run(&dev, p1, m1, v1, n1, &up, &down);
    /* The device path: nothing crosses within a step. */
    CHECKF(up == 0 && down == 0, "device path moved %zu bytes up, %zu down", up, down);
    run(&staged, p2, m2, v2, n2, &up, &down);
    /* Staged: the gradient comes down every step, and goes back up when
     * clipped (odd steps). */
    CHECKF(down == (size_t)STEPS * N * sizeof(float), "staged: %zu bytes down", down);
    CHECKF(up == (size_t)(STEPS + 1) / 2 * N * sizeof(float), "staged: %zu bytes up", up);
    CHECK(!memcmp(p0, p1, sizeof p0) && !memcmp(m0, m1, sizeof m0) && !memcmp(v0, v1, sizeof v0));
    CHECK(!memcmp(p0, p2, sizeof p0) && !memcmp(m0, m2, sizeof m0) && !memcmp(v0, v2, sizeof v0));
    CHECK(!memcmp(n0, n1, sizeof n0) && !memcmp(n0, n2, sizeof n0));
}

static void test_vec_ops(const ql_backend *be) {
    enum { M = 777 };
    float *x;
    CHECK(be->alloc(M * sizeof(float), (void **)&x) == QL_OK);
    ql_rng r;
    ql_rng_seed(&r, 3);
    float want[M];
    for (int i = 0; i < M; i++) x[i] = want[i] = ql_rng_normal(&r);
    double s = -1, ref = 0;
    for (int i = 0; i < M; i++) ref += (double)want[i] * (double)want[i];
    CHECK(be->sq_sum_f32(x, M, &s) == QL_OK && s == ref && s == ql_grad_sq_sum(want, M));
    CHECK(be->scale_f32(x, M, 0.375f) == QL_OK);
    int same = 1;
    for (int i = 0; i < M; i++) same &= x[i] == want[i] * 0.375f;
    CHECK(same);
    CHECK(be->sq_sum_f32(x, 0, &s) == QL_OK && s == 0.0);
    CHECK(be->zero_f32(x, M) == QL_OK);
    same = 1;
    for (int i = 0; i < M; i++) same &= x[i] == 0.0f && !signbit(x[i]);
    CHECK(same);
    be->free(x);
}

static void test_mem_counts(void) {
    ql_mem_stats a, b, c;
    cpu->mem_stats(&a);
    void *p;
    CHECK(cpu->alloc(1000, &p) == QL_OK);
    cpu->mem_stats(&b);
    /* malloc's usable size: at least the 64-byte rounded request. */
    CHECKF(b.in_use - a.in_use >= 1024 && b.in_use - a.in_use < 1024 + 256, "counted %zu",
           b.in_use - a.in_use);
    CHECK(b.peak >= b.in_use);
    cpu->free(p);
    cpu->mem_stats(&c);
    CHECK(c.in_use == a.in_use);
    CHECK(c.peak >= b.in_use);
    cpu->mem_reset_peak();
    cpu->mem_stats(&c);
    CHECK(c.peak == c.in_use);
    CHECK(c.device_used == 0 && c.device_total == 0);
    /* A 4-bit weight: packed + 8-bit absmax + nested absmax, counted and uncounted. */
    float w[64 * 128];
    for (int i = 0; i < 64 * 128; i++) w[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    ql_q4 hq, dq;
    CHECK(ql_q4_quantize(w, 64, 128, QL_QTYPE_NF4, 64, 1, &hq) == QL_OK);
    cpu->mem_stats(&a);
    CHECK(cpu->q4_upload(&hq, &dq) == QL_OK);
    cpu->mem_stats(&b);
    CHECKF(b.in_use - a.in_use == 64 * 128 / 2 + 128 + 4, "q4: counted %zu", b.in_use - a.in_use);
    cpu->q4_free(&dq);
    cpu->mem_stats(&c);
    CHECK(c.in_use == a.in_use);
    ql_q4_free(&hq);
}

int main(void) {
    cpu = ql_backend_cpu();
    test_device_path();
    test_vec_ops(ql_backend_cpu());
    test_vec_ops(ql_backend_cpu_ref());
    test_mem_counts();
    /* auto resolves to cpu where no GPU is visible (this test's machines). */
    const char *a = ql_backend_resolve_name("auto");
    CHECK(!strcmp(a, "cpu") || !strcmp(a, "cuda"));
    CHECK(!strcmp(ql_backend_resolve_name("cpu-ref"), "cpu-ref"));
    CHECK(ql_backend_by_name("auto") != NULL);
    return CHECK_DONE();
}
