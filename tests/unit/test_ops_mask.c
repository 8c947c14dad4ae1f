/* The per-document mask really isolates packed documents: changing the keys,
 * values (or output gradients) of every token outside a document leaves that
 * document's outputs, lse and gradients unchanged bit for bit, and so does
 * changing later tokens of the same document (causality). Without the mask
 * the same change is visible, so the test can tell. Both CPU backends. */
#include "test_ops_util.h"

enum { B = 2, S = 24, H = 6, KV = 2, D = 16 };
static const ql_attn_shape shape = {B, S, H, KV, D};
#define NQ ((int64_t)B * S * H * D)
#define NK ((int64_t)B * S * KV * D)
#define NL ((int64_t)B * H * S)

typedef struct {
    float out[NQ], lse[NL], dq[NQ], dk[NK], dv[NK];
} result;

static void run(const ql_backend *be, const float *q, const float *k, const float *v,
                const float *dout, const int32_t *doc, result *r) {
    CHECK(be->attn_fwd(q, k, v, doc, &shape, r->out, r->lse) == QL_OK);
    CHECK(be->attn_bwd(dout, q, k, v, r->out, r->lse, doc, &shape, r->dq, r->dk, r->dv) == QL_OK);
}

/* Whether token (b, t) rows of a result agree bit for bit between x and y. */
static int token_same(const result *x, const result *y, int64_t b, int64_t t) {
    int64_t qrow = (b * S + t) * H * D, krow = (b * S + t) * KV * D;
    int same = memcmp(x->out + qrow, y->out + qrow, H * D * 4) == 0 &&
               memcmp(x->dq + qrow, y->dq + qrow, H * D * 4) == 0 &&
               memcmp(x->dk + krow, y->dk + krow, KV * D * 4) == 0 &&
               memcmp(x->dv + krow, y->dv + krow, KV * D * 4) == 0;
    for (int h = 0; h < H; h++) same &= x->lse[(b * H + h) * S + t] == y->lse[(b * H + h) * S + t];
    return same;
}

static result base, pert;

static void test_backend(const ql_backend *be) {
    static float q[NQ], k[NK], v[NK], dout[NQ], k2[NK], v2[NK], dout2[NQ];
    for (int64_t i = 0; i < NQ; i++) q[i] = tops_uniform(-1, 1), dout[i] = tops_uniform(-1, 1);
    for (int64_t i = 0; i < NK; i++) k[i] = tops_uniform(-1, 1), v[i] = tops_uniform(-1, 1);
    int32_t doc[B * S];
    for (int t = 0; t < S; t++) {
        doc[t] = t < 5 ? 0 : t < 13 ? 1 : t < 14 ? 2 : 3; /* incl. a one-token document */
        doc[S + t] = t < 11 ? 0 : 1;
    }
    run(be, q, k, v, dout, doc, &base);

    for (int64_t b = 0; b < B; b++)
        for (int d = 0; d <= 3; d++) {
            int present = 0;
            memcpy(k2, k, sizeof k), memcpy(v2, v, sizeof v), memcpy(dout2, dout, sizeof dout);
            for (int64_t bb = 0; bb < B; bb++)
                for (int64_t t = 0; t < S; t++) {
                    if (bb == b && doc[bb * S + t] == d) {
                        present = 1;
                        continue;
                    }
                    for (int64_t c = 0; c < KV * D; c++) {
                        k2[(bb * S + t) * KV * D + c] += 3.0f;
                        v2[(bb * S + t) * KV * D + c] -= 2.0f;
                    }
                    for (int64_t c = 0; c < H * D; c++) dout2[(bb * S + t) * H * D + c] *= -1.5f;
                }
            if (!present) continue;
            run(be, q, k2, v2, dout2, doc, &pert);
            int ok = 1;
            for (int64_t t = 0; t < S; t++)
                if (doc[b * S + t] == d) ok &= token_same(&base, &pert, b, t);
            CHECKF(ok, "%s: document %d of row %lld sees other documents", be->name, d,
                   (long long)b);
        }

    /* Causality inside a document: tokens after t0 change, tokens up to t0
     * keep their outputs (not their dk/dv, which later queries feed). */
    int64_t t0 = 8;
    memcpy(k2, k, sizeof k), memcpy(v2, v, sizeof v);
    for (int64_t t = t0 + 1; t < S; t++)
        for (int64_t c = 0; c < KV * D; c++) k2[t * KV * D + c] += 1.0f, v2[t * KV * D + c] += 1.0f;
    run(be, q, k2, v2, dout, doc, &pert);
    CHECK(memcmp(base.out, pert.out, (size_t)(t0 + 1) * H * D * 4) == 0);

    /* Without the mask, document 1 of row 0 does see document 0's keys. */
    result *plain = malloc(sizeof *plain), *plain2 = malloc(sizeof *plain2);
    run(be, q, k, v, dout, NULL, plain);
    memcpy(k2, k, sizeof k);
    for (int64_t c = 0; c < KV * D; c++) k2[c] += 3.0f; /* token 0, document 0 */
    run(be, q, k2, v, dout, NULL, plain2);
    CHECK(memcmp(plain->out + 6 * H * D, plain2->out + 6 * H * D, H * D * 4) != 0);
    run(be, q, k2, v, dout, doc, &pert);
    CHECK(memcmp(base.out + 6 * H * D, pert.out + 6 * H * D, H * D * 4) == 0);
    free(plain), free(plain2);
}

int main(void) {
    tops_seed(11);
    test_backend(ql_backend_cpu_ref());
    test_backend(ql_backend_cpu());
    return CHECK_DONE();
}
