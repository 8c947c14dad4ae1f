/* Every backward op against central finite differences of a double-precision
 * forward written here, independently of the backends. The loss is
 * L = Σ r ⊙ f(inputs) with random r (so dy = r); each input element is
 * perturbed by ±h in double, where the truncation and rounding error of the
 * difference (~1e-10) is far below float32. The double forward is also
 * checked against each backend's fp32 forward, so the gradient is of the
 * function the backend computes. Runs on cpu-ref and cpu. */
#include "test_ops_util.h"

#define FD_H 1e-5

typedef double (*loss_fn)(void *ctx);

/* dL/dp[i] for every i of a double array inside ctx. */
static void fd_grad(loss_fn f, void *ctx, double *p, int64_t n, float *grad) {
    for (int64_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + FD_H;
        double up = f(ctx);
        p[i] = keep - FD_H;
        double down = f(ctx);
        p[i] = keep;
        grad[i] = (float)((up - down) / (2.0 * FD_H));
    }
}

static double *to_double(const float *a, int64_t n) {
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

static const ql_backend *backends[2];
#define GRAD_TOL 2e-5 /* relative to the gradient's largest magnitude */

/* --- 4-bit LoRA linear --------------------------------------------------------- */
typedef struct {
    int64_t T, in, out;
    int r;
    double s, *W, *x, *A, *B, *rr;
} lora_ctx;

static double lora_loss(void *vc) {
    lora_ctx *c = vc;
    double L = 0.0;
    for (int64_t t = 0; t < c->T; t++)
        for (int64_t o = 0; o < c->out; o++) {
            double y = 0.0;
            for (int64_t i = 0; i < c->in; i++) y += c->x[t * c->in + i] * c->W[o * c->in + i];
            for (int k = 0; k < c->r; k++) {
                double xa = 0.0;
                for (int64_t i = 0; i < c->in; i++) xa += c->x[t * c->in + i] * c->A[k * c->in + i];
                y += c->s * xa * c->B[o * c->r + k];
            }
            L += c->rr[t * c->out + o] * y;
        }
    return L;
}

static void test_lora(ql_qtype type, int dq) {
    int64_t T = 3, in = 10, out = 6;
    int r = 2;
    ql_q4 w = tops_q4(out, in, type, 32, dq);
    float *Wf = tops_alloc(out * in);
    ql_q4_dequantize(&w, Wf);
    float *x = tops_rand(T * in, -1, 1), *A = tops_rand(r * in, -0.5f, 0.5f);
    float *B = tops_rand(out * r, -0.5f, 0.5f), *dy = tops_rand(T * out, -1, 1);
    lora_ctx c = {T,
                  in,
                  out,
                  r,
                  1.5,
                  to_double(Wf, out * in),
                  to_double(x, T * in),
                  to_double(A, r * in),
                  to_double(B, out * r),
                  to_double(dy, T * out)};
    float *gx = tops_alloc(T * in), *gA = tops_alloc(r * in), *gB = tops_alloc(out * r);
    fd_grad(lora_loss, &c, c.x, T * in, gx);
    fd_grad(lora_loss, &c, c.A, r * in, gA);
    fd_grad(lora_loss, &c, c.B, out * r, gB);
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = 1.5f};
    for (int k = 0; k < 2; k++) {
        float *y = tops_alloc(T * out), *xa = tops_alloc(T * r), *dx = tops_alloc(T * in);
        float *dA = tops_alloc(r * in), *dB = tops_alloc(out * r);
        CHECK(backends[k]->q4_lora_fwd(&w, &lora, x, T, y, xa) == QL_OK);
        double L = 0.0;
        for (int64_t i = 0; i < T * out; i++) L += (double)dy[i] * y[i];
        CHECKF(fabs(L - lora_loss(&c)) < 1e-5 * (1 + fabs(L)), "lora fwd %s", backends[k]->name);
        CHECK(backends[k]->q4_lora_bwd(&w, &lora, x, xa, dy, T, dx, dA, dB) == QL_OK);
        TOPS_CLOSE(dx, gx, T * in, GRAD_TOL, "q4_lora_bwd dx vs finite differences");
        TOPS_CLOSE(dA, gA, r * in, GRAD_TOL, "q4_lora_bwd dA vs finite differences");
        TOPS_CLOSE(dB, gB, out * r, GRAD_TOL, "q4_lora_bwd dB vs finite differences");
        free(y), free(xa), free(dx), free(dA), free(dB);
    }
    free(c.W), free(c.x), free(c.A), free(c.B), free(c.rr);
    free(Wf), free(x), free(A), free(B), free(dy), free(gx), free(gA), free(gB);
    ql_q4_free(&w);
}

/* --- dense matmul ------------------------------------------------------------------ */
static void test_matmul(void) {
    int64_t T = 3, in = 7, out = 5;
    float *W = tops_rand(out * in, -1, 1), *x = tops_rand(T * in, -1, 1);
    float *dy = tops_rand(T * out, -1, 1);
    lora_ctx c = {T,
                  in,
                  out,
                  0,
                  0.0,
                  to_double(W, out * in),
                  to_double(x, T * in),
                  NULL,
                  NULL,
                  to_double(dy, T * out)};
    float *gx = tops_alloc(T * in);
    fd_grad(lora_loss, &c, c.x, T * in, gx);
    for (int k = 0; k < 2; k++) {
        float *dx = tops_alloc(T * in);
        CHECK(backends[k]->matmul_bwd(W, dy, T, in, out, dx) == QL_OK);
        TOPS_CLOSE(dx, gx, T * in, GRAD_TOL, "matmul_bwd dx vs finite differences");
        free(dx);
    }
    free(c.W), free(c.x), free(c.rr), free(W), free(x), free(dy), free(gx);
}

/* --- RMSNorm ------------------------------------------------------------------------- */
typedef struct {
    int64_t T, d;
    double eps, *x, *w, *rr;
} norm_ctx;

static double norm_loss(void *vc) {
    norm_ctx *c = vc;
    double L = 0.0;
    for (int64_t t = 0; t < c->T; t++) {
        double ss = 0.0;
        for (int64_t i = 0; i < c->d; i++) ss += c->x[t * c->d + i] * c->x[t * c->d + i];
        double r = 1.0 / sqrt(ss / (double)c->d + c->eps);
        for (int64_t i = 0; i < c->d; i++)
            L += c->rr[t * c->d + i] * c->w[i] * c->x[t * c->d + i] * r;
    }
    return L;
}

static void test_rmsnorm(void) {
    int64_t T = 3, d = 7;
    float *x = tops_rand(T * d, -2, 2), *w = tops_rand(d, 0.5f, 1.5f),
          *dy = tops_rand(T * d, -1, 1);
    norm_ctx c = {T, d, 1e-5, to_double(x, T * d), to_double(w, d), to_double(dy, T * d)};
    float *gx = tops_alloc(T * d);
    fd_grad(norm_loss, &c, c.x, T * d, gx);
    for (int k = 0; k < 2; k++) {
        float *y = tops_alloc(T * d), *rstd = tops_alloc(T), *dx = tops_alloc(T * d);
        CHECK(backends[k]->rmsnorm_fwd(x, w, 1e-5f, T, d, y, rstd) == QL_OK);
        CHECK(backends[k]->rmsnorm_bwd(dy, x, w, rstd, T, d, dx) == QL_OK);
        TOPS_CLOSE(dx, gx, T * d, GRAD_TOL, "rmsnorm_bwd dx vs finite differences");
        free(y), free(rstd), free(dx);
    }
    free(c.x), free(c.w), free(c.rr), free(x), free(w), free(dy), free(gx);
}

/* --- RoPE ------------------------------------------------------------------------------- */
typedef struct {
    int64_t T;
    int H, D;
    const int32_t *pos;
    const float *inv;
    double *x, *rr;
} rope_ctx;

static double rope_loss(void *vc) {
    rope_ctx *c = vc;
    int half = c->D / 2;
    double L = 0.0;
    for (int64_t t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < half; i++) {
                double ang = (double)((float)c->pos[t] * c->inv[i]);
                int64_t base = (t * c->H + h) * c->D;
                double a = c->x[base + i], b = c->x[base + i + half];
                L += c->rr[base + i] * (a * cos(ang) - b * sin(ang));
                L += c->rr[base + i + half] * (b * cos(ang) + a * sin(ang));
            }
    return L;
}

static void test_rope(void) {
    int64_t T = 3;
    int H = 2, D = 8;
    int32_t pos[3] = {0, 5, 1234};
    float inv[4];
    for (int i = 0; i < D / 2; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)D);
    float *x = tops_rand(T * H * D, -1, 1), *dy = tops_rand(T * H * D, -1, 1);
    rope_ctx c = {T, H, D, pos, inv, to_double(x, T * H * D), to_double(dy, T * H * D)};
    float *gx = tops_alloc(T * H * D);
    fd_grad(rope_loss, &c, c.x, T * H * D, gx);
    for (int k = 0; k < 2; k++) {
        float *g = tops_copy(dy, T * H * D);
        CHECK(backends[k]->rope_bwd(g, pos, inv, T, H, D) == QL_OK);
        TOPS_CLOSE(g, gx, T * H * D, GRAD_TOL, "rope_bwd vs finite differences");
        float *y = tops_copy(x, T * H * D);
        CHECK(backends[k]->rope_fwd(y, pos, inv, T, H, D) == QL_OK);
        double L = 0.0;
        for (int64_t i = 0; i < T * H * D; i++) L += (double)dy[i] * y[i];
        CHECKF(fabs(L - rope_loss(&c)) < 1e-5, "rope fwd %s", backends[k]->name);
        free(g), free(y);
    }
    free(c.x), free(c.rr), free(x), free(dy), free(gx);
}

/* --- attention ------------------------------------------------------------------------------ */
typedef struct {
    ql_attn_shape s;
    const int32_t *doc;
    double *q, *k, *v, *rr;
} attn_ctx;

static double attn_loss(void *vc) {
    attn_ctx *c = vc;
    const int64_t S = c->s.seq, D = c->s.head_dim, H = c->s.n_heads, KV = c->s.n_kv_heads;
    double L = 0.0, score[64];
    for (int64_t b = 0; b < c->s.batch; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t g = h / (H / KV);
            for (int64_t i = 0; i < S; i++) {
                const double *qi = c->q + ((b * S + i) * H + h) * D;
                double mx = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j <= i; j++) {
                    score[j] = -INFINITY;
                    if (c->doc && c->doc[b * S + j] != c->doc[b * S + i]) continue;
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++)
                        dot += qi[d] * c->k[((b * S + j) * KV + g) * D + d];
                    score[j] = dot / sqrt((double)D);
                    mx = fmax(mx, score[j]);
                }
                for (int64_t j = 0; j <= i; j++) sum += exp(score[j] - mx);
                for (int64_t j = 0; j <= i; j++) {
                    double p = exp(score[j] - mx) / sum;
                    for (int64_t d = 0; d < D; d++)
                        L += c->rr[((b * S + i) * H + h) * D + d] * p *
                             c->v[((b * S + j) * KV + g) * D + d];
                }
            }
        }
    return L;
}

static void test_attn(int64_t batch, int64_t seq, int H, int KV, int D, const int32_t *doc) {
    ql_attn_shape s = {batch, seq, H, KV, D};
    int64_t nq = batch * seq * H * D, nk = batch * seq * KV * D;
    float *q = tops_rand(nq, -1.5f, 1.5f), *k = tops_rand(nk, -1.5f, 1.5f);
    float *v = tops_rand(nk, -1, 1), *dout = tops_rand(nq, -1, 1);
    attn_ctx c = {
        s, doc, to_double(q, nq), to_double(k, nk), to_double(v, nk), to_double(dout, nq)};
    float *gq = tops_alloc(nq), *gk = tops_alloc(nk), *gv = tops_alloc(nk);
    fd_grad(attn_loss, &c, c.q, nq, gq);
    fd_grad(attn_loss, &c, c.k, nk, gk);
    fd_grad(attn_loss, &c, c.v, nk, gv);
    for (int j = 0; j < 2; j++) {
        float *o = tops_alloc(nq), *lse = tops_alloc(batch * H * seq);
        float *dq = tops_alloc(nq), *dk = tops_alloc(nk), *dv = tops_alloc(nk);
        CHECK(backends[j]->attn_fwd(q, k, v, doc, &s, o, lse) == QL_OK);
        double L = 0.0;
        for (int64_t i = 0; i < nq; i++) L += (double)dout[i] * o[i];
        CHECKF(fabs(L - attn_loss(&c)) < 1e-5 * (1 + fabs(L)), "attn fwd %s", backends[j]->name);
        CHECK(backends[j]->attn_bwd(dout, q, k, v, o, lse, doc, &s, dq, dk, dv) == QL_OK);
        char what[80];
        snprintf(what, sizeof what, "attn_bwd H%d KV%d doc%d dq vs finite differences", H, KV,
                 doc != NULL);
        TOPS_CLOSE(dq, gq, nq, GRAD_TOL, what);
        TOPS_CLOSE(dk, gk, nk, GRAD_TOL, "attn_bwd dk vs finite differences");
        TOPS_CLOSE(dv, gv, nk, GRAD_TOL, "attn_bwd dv vs finite differences");
        free(o), free(lse), free(dq), free(dk), free(dv);
    }
    free(c.q), free(c.k), free(c.v), free(c.rr), free(q), free(k), free(v), free(dout);
    free(gq), free(gk), free(gv);
}

/* --- SwiGLU -------------------------------------------------------------------------------------
 */
typedef struct {
    int64_t n;
    double *g, *u, *rr;
} swiglu_ctx;

static double swiglu_loss(void *vc) {
    swiglu_ctx *c = vc;
    double L = 0.0;
    for (int64_t i = 0; i < c->n; i++) L += c->rr[i] * c->g[i] / (1.0 + exp(-c->g[i])) * c->u[i];
    return L;
}

static void test_swiglu(void) {
    int64_t n = 9;
    float *g = tops_rand(n, -5, 5), *u = tops_rand(n, -2, 2), *dout = tops_rand(n, -1, 1);
    swiglu_ctx c = {n, to_double(g, n), to_double(u, n), to_double(dout, n)};
    float *gg = tops_alloc(n), *gu = tops_alloc(n);
    fd_grad(swiglu_loss, &c, c.g, n, gg);
    fd_grad(swiglu_loss, &c, c.u, n, gu);
    for (int k = 0; k < 2; k++) {
        float *dg = tops_alloc(n), *du = tops_alloc(n);
        CHECK(backends[k]->swiglu_bwd(dout, g, u, n, dg, du) == QL_OK);
        TOPS_CLOSE(dg, gg, n, GRAD_TOL, "swiglu_bwd dgate vs finite differences");
        TOPS_CLOSE(du, gu, n, GRAD_TOL, "swiglu_bwd dup vs finite differences");
        free(dg), free(du);
    }
    free(c.g), free(c.u), free(c.rr), free(g), free(u), free(dout), free(gg), free(gu);
}

/* --- cross-entropy -------------------------------------------------------------------------------
 */
typedef struct {
    int64_t T, V;
    const int32_t *tg;
    double scale, *l;
} xent_ctx;

static double xent_loss(void *vc) {
    xent_ctx *c = vc;
    double L = 0.0;
    for (int64_t t = 0; t < c->T; t++) {
        if (c->tg[t] < 0) continue;
        double sum = 0.0;
        for (int64_t j = 0; j < c->V; j++) sum += exp(c->l[t * c->V + j]);
        L += log(sum) - c->l[t * c->V + c->tg[t]];
    }
    return c->scale * L;
}

static void test_xent(void) {
    int64_t T = 4, V = 6;
    int32_t tg[4] = {2, -100, 5, 0};
    float *logits = tops_rand(T * V, -3, 3);
    xent_ctx c = {T, V, tg, 1.0 / 3.0, to_double(logits, T * V)};
    float *gl = tops_alloc(T * V);
    fd_grad(xent_loss, &c, c.l, T * V, gl);
    for (int k = 0; k < 2; k++) {
        float *losses = tops_alloc(T), *d = tops_alloc(T * V);
        CHECK(backends[k]->xent_fwd_bwd(logits, tg, T, V, 1.0f / 3.0f, losses, d) == QL_OK);
        TOPS_CLOSE(d, gl, T * V, GRAD_TOL, "xent dlogits vs finite differences");
        double L = (losses[0] + losses[1] + losses[2] + losses[3]) / 3.0;
        CHECKF(fabs(L - xent_loss(&c)) < 1e-6, "xent loss %s", backends[k]->name);
        free(losses), free(d);
    }
    free(c.l), free(logits), free(gl);
}

int main(void) {
    tops_seed(7);
    backends[0] = ql_backend_cpu_ref();
    backends[1] = ql_backend_cpu();
    test_lora(QL_QTYPE_NF4, 1);
    test_lora(QL_QTYPE_FP4, 0);
    test_matmul();
    test_rmsnorm();
    test_rope();
    const int32_t docs[12] = {0, 0, 1, 1, 1, 2, 0, 1, 1, 1, 1, 1};
    test_attn(2, 6, 3, 1, 4, docs); /* GQA 3 with documents */
    test_attn(2, 6, 2, 2, 4, docs);
    test_attn(1, 5, 2, 1, 3, NULL); /* odd head_dim, plain causal */
    test_swiglu();
    test_xent();
    return CHECK_DONE();
}
