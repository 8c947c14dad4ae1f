/* The ops the model added to the table: bias_add, add, and LoRA-input
 * dropout in q4_lora_fwd/bwd. Fast vs reference (bit-identical for the
 * elementwise sums; sum-sized tolerances for the linear layer) and, for the
 * dropout backward, central finite differences of a double-precision forward
 * written here: y = x·Wᵀ + s·((x ⊙ m·k)·Aᵀ)·Bᵀ, L = Σ dy ⊙ y. */
#include "test_ops_util.h"

static const ql_backend *be2[2];

static void test_add(void) {
    int64_t sizes[] = {1, 7, 16384, 16385, 50001};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int64_t n = sizes[k];
        float *x = tops_rand(n, -3, 3), *y = tops_rand(n, -3, 3);
        float *out[2], *alias[2];
        for (int b = 0; b < 2; b++) {
            out[b] = tops_alloc(n);
            CHECK(be2[b]->add(x, y, n, out[b]) == QL_OK);
            alias[b] = tops_copy(x, n); /* out aliases x */
            CHECK(be2[b]->add(alias[b], y, n, alias[b]) == QL_OK);
        }
        int ok = 1;
        for (int64_t i = 0; i < n; i++) ok &= out[0][i] == x[i] + y[i];
        CHECKF(ok, "add n=%lld: reference is not x + y", (long long)n);
        CHECKF(tops_same_bytes(out[0], out[1], (size_t)n * 4), "add n=%lld cpu vs ref",
               (long long)n);
        CHECK(tops_same_bytes(alias[0], out[0], (size_t)n * 4));
        CHECK(tops_same_bytes(alias[1], out[0], (size_t)n * 4));
        for (int b = 0; b < 2; b++) free(out[b]), free(alias[b]);
        free(x), free(y);
    }
}

static void test_bias_add(void) {
    int64_t T = 37, n = 45;
    float *y0 = tops_rand(T * n, -1, 1), *bias = tops_rand(n, -1, 1);
    float *y[2];
    for (int b = 0; b < 2; b++) {
        y[b] = tops_copy(y0, T * n);
        CHECK(be2[b]->bias_add(y[b], bias, T, n) == QL_OK);
    }
    int ok = 1;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n; i++) ok &= y[0][t * n + i] == y0[t * n + i] + bias[i];
    CHECKF(ok, "bias_add reference is not y + b per row");
    CHECK(tops_same_bytes(y[0], y[1], (size_t)(T * n) * 4));
    free(y0), free(bias), free(y[0]), free(y[1]);
}

/* ------------------------------------------------------------ LoRA dropout */

typedef struct {
    int64_t T, in, out;
    int r;
    double s, keep;
    const uint8_t *mask;
    double *W, *x, *A, *B, *dy;
} drop_ctx;

static double drop_loss(const drop_ctx *c) {
    double L = 0.0;
    double *xl = malloc((size_t)c->in * sizeof(double));
    for (int64_t t = 0; t < c->T; t++) {
        for (int64_t i = 0; i < c->in; i++)
            xl[i] = c->mask[t * c->in + i] ? c->x[t * c->in + i] * c->keep : 0.0;
        for (int64_t o = 0; o < c->out; o++) {
            double y = 0.0;
            for (int64_t i = 0; i < c->in; i++) y += c->x[t * c->in + i] * c->W[o * c->in + i];
            for (int k = 0; k < c->r; k++) {
                double xa = 0.0;
                for (int64_t i = 0; i < c->in; i++) xa += xl[i] * c->A[k * c->in + i];
                y += c->s * xa * c->B[o * c->r + k];
            }
            L += c->dy[t * c->out + o] * y;
        }
    }
    free(xl);
    return L;
}

static void fd(drop_ctx *c, double *p, int64_t n, float *g) {
    const double h = 1e-5;
    for (int64_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + h;
        double up = drop_loss(c);
        p[i] = keep - h;
        double down = drop_loss(c);
        p[i] = keep;
        g[i] = (float)((up - down) / (2 * h));
    }
}

static double *dbl(const float *a, int64_t n) {
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

/* A random mask with drop probability p: its generator's parameters for the
 * ops, and its bytes (1 = kept) for the double reference. */
static ql_dropout rand_dropout(double p, int64_t n, uint8_t **bytes) {
    ql_dropout d = {1, ((uint64_t)tops_u32() << 32) | tops_u32(), (uint64_t)ldexp(p, 32),
                    1.0f / (1.0f - (float)p)};
    *bytes = malloc((size_t)n);
    for (int64_t e = 0; e < n; e++) (*bytes)[e] = ql_dropout_keep(d.seed, d.thresh, e);
    return d;
}

/* Against finite differences, both backends. */
static void test_dropout_fd(void) {
    int64_t T = 5, in = 32, out = 12;
    int r = 3;
    float p = 0.3f;
    ql_q4 w = tops_q4(out, in, QL_QTYPE_NF4, 64, 1);
    float *Wf = tops_alloc(out * in);
    ql_q4_dequantize(&w, Wf);
    float *x = tops_rand(T * in, -1, 1), *A = tops_rand(r * in, -0.5f, 0.5f);
    float *B = tops_rand(out * r, -0.5f, 0.5f), *dy = tops_rand(T * out, -1, 1);
    uint8_t *mask;
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = 1.25f, .drop = rand_dropout(p, T * in, &mask)};
    drop_ctx c = {T,
                  in,
                  out,
                  r,
                  1.25,
                  lora.drop.scale,
                  mask,
                  dbl(Wf, out * in),
                  dbl(x, T * in),
                  dbl(A, r * in),
                  dbl(B, out * r),
                  dbl(dy, T * out)};
    float *gx = tops_alloc(T * in), *gA = tops_alloc(r * in), *gB = tops_alloc(out * r);
    fd(&c, c.x, T * in, gx);
    fd(&c, c.A, r * in, gA);
    fd(&c, c.B, out * r, gB);
    for (int k = 0; k < 2; k++) {
        float *y = tops_alloc(T * out), *xa = tops_alloc(T * r), *dx = tops_alloc(T * in);
        float *dA = tops_alloc(r * in), *dB = tops_alloc(out * r);
        CHECK(be2[k]->q4_lora_fwd(&w, &lora, x, T, y, xa) == QL_OK);
        double L = 0.0;
        for (int64_t i = 0; i < T * out; i++) L += (double)dy[i] * y[i];
        CHECKF(fabs(L - drop_loss(&c)) < 1e-5 * (1 + fabs(L)), "dropout fwd %s", be2[k]->name);
        CHECK(be2[k]->q4_lora_bwd(&w, &lora, x, xa, dy, T, dx, dA, dB) == QL_OK);
        TOPS_CLOSE(dx, gx, T * in, 2e-5, "dropout dx vs finite differences");
        TOPS_CLOSE(dA, gA, r * in, 2e-5, "dropout dA vs finite differences");
        TOPS_CLOSE(dB, gB, out * r, 2e-5, "dropout dB vs finite differences");
        free(y), free(xa), free(dx), free(dA), free(dB);
    }
    free(c.W), free(c.x), free(c.A), free(c.B), free(c.dy);
    free(Wf), free(x), free(A), free(B), free(dy), free(gx), free(gA), free(gB), free(mask);
    ql_q4_free(&w);
}

/* cpu vs cpu-ref at sizes that take the fused (T <= 16) and tiled paths;
 * an all-kept mask with scale 1 is the same as no dropout. */
static void test_dropout_vs_ref(int64_t out, int64_t in, int64_t T, int r, float p) {
    ql_q4 w = tops_q4(out, in, QL_QTYPE_NF4, 64, 1);
    float *x = tops_rand(T * in, -1, 1), *dy = tops_rand(T * out, -1, 1);
    float *A = tops_rand((int64_t)r * in, -0.1f, 0.1f), *B = tops_rand(out * r, -0.1f, 0.1f);
    uint8_t *mask;
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = 2.0f, .drop = rand_dropout(p, T * in, &mask)};
    float *y[2], *xa[2], *dx[2], *dA[2], *dB[2];
    for (int k = 0; k < 2; k++) {
        y[k] = tops_alloc(T * out), xa[k] = tops_alloc(T * r), dx[k] = tops_alloc(T * in);
        dA[k] = tops_alloc(r * in), dB[k] = tops_alloc(out * r);
        CHECK(be2[k]->q4_lora_fwd(&w, &lora, x, T, y[k], xa[k]) == QL_OK);
        CHECK(be2[k]->q4_lora_bwd(&w, &lora, x, xa[k], dy, T, dx[k], dA[k], dB[k]) == QL_OK);
    }
    char what[96];
    snprintf(what, sizeof what, "dropout %lldx%lld T=%lld y", (long long)out, (long long)in,
             (long long)T);
    TOPS_CLOSE(y[1], y[0], T * out, 2e-6 * sqrt((double)in), what);
    TOPS_CLOSE(xa[1], xa[0], T * r, 2e-6 * sqrt((double)in), "dropout xa");
    TOPS_CLOSE(dx[1], dx[0], T * in, 2e-6 * sqrt((double)out), "dropout dx");
    TOPS_CLOSE(dA[1], dA[0], r * in, 2e-6 * sqrt((double)T + out), "dropout dA");
    TOPS_CLOSE(dB[1], dB[0], out * r, 2e-6 * sqrt((double)T), "dropout dB");

    /* Keep everything at scale 1: bit-identical to the plain op on each backend. */
    lora.drop.thresh = 0;
    lora.drop.scale = 1.0f;
    ql_lora plain = {.A = A, .B = B, .r = r, .scale = 2.0f};
    for (int k = 0; k < 2; k++) {
        float *y2 = tops_alloc(T * out), *xa2 = tops_alloc(T * r), *dx2 = tops_alloc(T * in);
        float *dA2 = tops_alloc(r * in), *dB2 = tops_alloc(out * r);
        float *y3 = tops_alloc(T * out), *xa3 = tops_alloc(T * r), *dx3 = tops_alloc(T * in);
        float *dA3 = tops_alloc(r * in), *dB3 = tops_alloc(out * r);
        CHECK(be2[k]->q4_lora_fwd(&w, &lora, x, T, y2, xa2) == QL_OK);
        CHECK(be2[k]->q4_lora_bwd(&w, &lora, x, xa2, dy, T, dx2, dA2, dB2) == QL_OK);
        CHECK(be2[k]->q4_lora_fwd(&w, &plain, x, T, y3, xa3) == QL_OK);
        CHECK(be2[k]->q4_lora_bwd(&w, &plain, x, xa3, dy, T, dx3, dA3, dB3) == QL_OK);
        CHECKF(tops_same_bytes(y2, y3, (size_t)(T * out) * 4), "%s keep-all y", be2[k]->name);
        CHECKF(tops_same_bytes(dA2, dA3, (size_t)(r * in) * 4), "%s keep-all dA", be2[k]->name);
        CHECKF(tops_same_bytes(dB2, dB3, (size_t)(out * r) * 4), "%s keep-all dB", be2[k]->name);
        /* dx takes another summation path under a mask: close, not identical. */
        TOPS_CLOSE(dx2, dx3, T * in, 2e-6 * sqrt((double)out), "keep-all dx");
        free(y2), free(xa2), free(dx2), free(dA2), free(dB2);
        free(y3), free(xa3), free(dx3), free(dA3), free(dB3);
    }
    for (int k = 0; k < 2; k++) free(y[k]), free(xa[k]), free(dx[k]), free(dA[k]), free(dB[k]);
    free(x), free(dy), free(A), free(B), free(mask);
    ql_q4_free(&w);
}

int main(void) {
    be2[0] = ql_backend_cpu_ref();
    be2[1] = ql_backend_cpu();
    tops_seed(11);
    test_add();
    test_bias_add();
    test_dropout_fd();
    test_dropout_vs_ref(24, 64, 5, 4, 0.1f);    /* fused path */
    test_dropout_vs_ref(300, 576, 40, 8, 0.5f); /* tiled path */
    test_dropout_vs_ref(130, 200, 70, 3, 0.2f); /* in % 16 != 0 */
    return CHECK_DONE();
}
