/* The fast backend is deterministic: every op, run twice and with 1, 2, 3 and
 * 4 OpenMP threads (and OpenBLAS left at 1 or 2 threads by the caller), gives
 * the same bytes. Shapes are large enough for many tiles per op. */
#include <cblas.h>
#include <omp.h>

#include "test_ops_util.h"

enum { T = 77, IN = 1000, OUT = 600, R = 8, V = 3001 };
static const ql_attn_shape ashape = {2, 45, 6, 2, 64};

typedef struct {
    float *buf;
    int64_t used, cap;
} sink;

static float *take(sink *s, int64_t n) {
    QL_ASSERT(s->used + n <= s->cap);
    float *p = s->buf + s->used;
    s->used += n;
    return p;
}

static ql_q4 w;
static float *x, *A, *B, *dy, *Wd, *qa, *ka, *va, *douta, *logits, *gate, *up, *grad, *table;
static int32_t *doc, *tg, *pos, *ids;
static float inv[32];

static void run_all(const ql_backend *be, sink *s) {
    s->used = 0;
    ql_lora lora = {.A = A, .B = B, .r = R, .scale = 0.5f};
    float *y = take(s, T * OUT), *xa = take(s, T * R), *dx = take(s, T * IN);
    float *dA = take(s, R * IN), *dB = take(s, OUT * R);
    memset(dA, 0, R * IN * 4), memset(dB, 0, OUT * R * 4);
    CHECK(be->q4_dequantize(&w, take(s, (int64_t)OUT * IN)) == QL_OK);
    CHECK(be->q4_lora_fwd(&w, &lora, x, T, y, xa) == QL_OK);
    CHECK(be->q4_lora_bwd(&w, &lora, x, xa, dy, T, dx, dA, dB) == QL_OK);
    CHECK(be->q4_lora_fwd(&w, &lora, x, 9, take(s, 9 * OUT), take(s, 9 * R)) == QL_OK); /* fused */
    CHECK(be->matmul_fwd(Wd, x, T, IN, OUT, take(s, T * OUT)) == QL_OK);
    CHECK(be->matmul_bwd(Wd, dy, T, IN, OUT, take(s, T * IN)) == QL_OK);
    float *rstd = take(s, T), *yn = take(s, T * IN);
    CHECK(be->rmsnorm_fwd(x, A, 1e-5f, T, IN, yn, rstd) == QL_OK);
    CHECK(be->rmsnorm_bwd(dx, x, A, rstd, T, IN, take(s, T * IN)) == QL_OK);
    float *rot = take(s, T * IN);
    memcpy(rot, x, T * IN * 4);
    CHECK(be->rope_fwd(rot, pos, inv, T, 25, 40) == QL_OK);
    CHECK(be->rope_bwd(rot, pos, inv, T, 25, 40) == QL_OK);
    CHECK(be->swiglu_fwd(gate, up, T * IN, take(s, T * IN)) == QL_OK);
    CHECK(be->swiglu_bwd(dx, gate, up, T * IN, take(s, T * IN), take(s, T * IN)) == QL_OK);
    int64_t nq = ashape.batch * ashape.seq * ashape.n_heads * ashape.head_dim;
    int64_t nk = ashape.batch * ashape.seq * ashape.n_kv_heads * ashape.head_dim;
    float *o = take(s, nq), *lse = take(s, ashape.batch * ashape.n_heads * ashape.seq);
    CHECK(be->attn_fwd(qa, ka, va, doc, &ashape, o, lse) == QL_OK);
    CHECK(be->attn_bwd(douta, qa, ka, va, o, lse, doc, &ashape, take(s, nq), take(s, nk),
                       take(s, nk)) == QL_OK);
    CHECK(be->embed_fwd(table, ids, T, 64, take(s, T * 64)) == QL_OK);
    CHECK(be->xent_fwd_bwd(logits, tg, T, V, 0.01f, take(s, T), take(s, T * V)) == QL_OK);
    float *p = take(s, OUT * IN), *m = take(s, OUT * IN), *v = take(s, OUT * IN);
    memcpy(p, Wd, OUT * IN * 4), memset(m, 0, OUT * IN * 4), memset(v, 0, OUT * IN * 4);
    ql_adamw h = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    for (int step = 1; step <= 2; step++)
        CHECK(be->adamw(p, grad, m, v, OUT * IN, &h, step) == QL_OK);
}

int main(void) {
    tops_seed(3);
    const ql_backend *be = ql_backend_cpu();
    w = tops_q4(OUT, IN, QL_QTYPE_NF4, 64, 1);
    x = tops_rand(T * IN, -1, 1), dy = tops_rand(T * OUT, -1, 1);
    A = tops_rand(R * IN, -0.1f, 0.1f), B = tops_rand(OUT * R, -0.1f, 0.1f);
    Wd = tops_rand(OUT * IN, -0.1f, 0.1f), grad = tops_rand(OUT * IN, -1, 1);
    gate = tops_rand(T * IN, -4, 4), up = tops_rand(T * IN, -1, 1);
    int64_t nq = ashape.batch * ashape.seq * ashape.n_heads * ashape.head_dim;
    int64_t nk = ashape.batch * ashape.seq * ashape.n_kv_heads * ashape.head_dim;
    qa = tops_rand(nq, -1, 1), douta = tops_rand(nq, -1, 1);
    ka = tops_rand(nk, -1, 1), va = tops_rand(nk, -1, 1);
    doc = tops_docs(ashape.batch, ashape.seq, 4);
    logits = tops_rand(T * V, -10, 10), table = tops_rand(100 * 64, -1, 1);
    tg = malloc(T * sizeof(int32_t)), pos = malloc(T * sizeof(int32_t));
    ids = malloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) {
        tg[t] = t % 5 == 0 ? -100 : (int32_t)(tops_u32() % V);
        pos[t] = (int32_t)(tops_u32() % 5000);
        ids[t] = (int32_t)(tops_u32() % 100);
    }
    for (int i = 0; i < 20; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / 40.0f);

    sink first = {tops_alloc(8000000), 0, 8000000}, again = {tops_alloc(8000000), 0, 8000000};
    omp_set_num_threads(1);
    run_all(be, &first);
    int64_t used = first.used;
    const int threads[] = {1, 2, 3, 4, 2};
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        omp_set_num_threads(threads[i]);
        openblas_set_num_threads(i % 2 ? 2 : 1);
        int blas_before = openblas_get_num_threads();
        run_all(be, &again);
        CHECK(openblas_get_num_threads() == blas_before); /* the caller's setting is kept */
        CHECK(again.used == used);
        CHECKF(memcmp(first.buf, again.buf, (size_t)used * 4) == 0,
               "outputs with %d OpenMP threads differ from 1 thread", threads[i]);
    }
    printf("determinism: %lld output floats bit-identical across 1-4 threads\n", (long long)used);
    ql_q4_free(&w);
    free(first.buf), free(again.buf), free(x), free(dy), free(A), free(B), free(Wd), free(grad);
    free(gate), free(up), free(qa), free(douta), free(ka), free(va), free(doc), free(logits);
    free(table), free(tg), free(pos), free(ids);
    return CHECK_DONE();
}
