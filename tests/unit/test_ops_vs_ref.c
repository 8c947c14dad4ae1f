/* Every op of the fast "cpu" backend against the "cpu-ref" reference on random
 * inputs: odd sizes, T not a multiple of any tile, head_dim 64 and 8, GQA
 * ratios 1 and 3, several documents per packed row, ignored targets.
 * Tolerances are relative to each tensor's largest magnitude (float32 sums
 * of up to ~1000 terms against double); ops that do the same float32
 * arithmetic in both backends must match bit for bit. */
#include "test_ops_util.h"

static const ql_backend *ref, *fast;

/* Memory ops: aligned allocation, copies both ways, deep-copied 4-bit weights. */
static void test_memory(void) {
    CHECK(strcmp(fast->name, "cpu") == 0 && strcmp(ref->name, "cpu-ref") == 0);
    CHECK(fast->act_dtype == QL_DT_F32 && ref->act_dtype == QL_DT_F32);
    void *p = NULL;
    CHECK(fast->alloc(100, &p) == QL_OK && ((uintptr_t)p % 64) == 0);
    float src[25], dst[25];
    for (int i = 0; i < 25; i++) src[i] = (float)i;
    CHECK(fast->upload(p, src, sizeof src) == QL_OK);
    CHECK(fast->download(dst, p, sizeof dst) == QL_OK);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    void *p2 = NULL;
    CHECK(fast->alloc(100, &p2) == QL_OK);
    CHECK(fast->copy(p2, (char *)p + 8, 60) == QL_OK);
    CHECK(memcmp(p2, src + 2, 60) == 0);
    CHECK(fast->sync() == QL_OK);
    fast->free(p);
    fast->free(p2);
}

/* The mask of n elements as bytes, 1 = kept, by ql_dropout_keep. */
static void mask_bytes(uint64_t seed, uint64_t thresh, int64_t n, uint8_t *got) {
    for (int64_t e = 0; e < n; e++) got[e] = ql_dropout_keep(seed, thresh, e);
}

/* LoRA dropout masks (kernels/dropout.h, which every backend's kernels call
 * where they read x) against the splitmix64 generator stepped one draw at a
 * time, the pair form against the single one at even and odd starts,
 * ql_dropout_apply's arithmetic, the dropped share against p, and the edge
 * thresholds. */
static void test_dropout_mask(void) {
    enum { N = 1001, BIG = 1 << 20 };
    const uint64_t seed = 0x243f6a8885a308d3ull, thresh = 1ull << 30; /* p = 1/4 */
    uint8_t want[N + 1], *got = malloc(BIG);
    CHECK(got != NULL);
    uint64_t x = seed;
    for (int e = 0; e < N + 1; e += 2) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        want[e] = (z & 0xffffffffu) >= thresh;
        want[e + 1] = (z >> 32) >= thresh;
    }
    mask_bytes(seed, thresh, N, got);
    CHECKF(memcmp(got, want, N) == 0, "dropout mask vs sequential splitmix64");
    int pair_ok = 1, apply_ok = 1;
    const ql_dropout d = {1, seed, thresh, 1.0f / 0.75f};
    for (int e = 0; e < N; e++) {
        unsigned k = ql_dropout_keep2(seed, thresh, e);
        pair_ok &= (k & 1) == want[e] && (k >> 1) == want[e + 1];
        const float xv = 0.1f * (float)(e - 500);
        apply_ok &= ql_dropout_apply(&d, xv, e) == (want[e] ? xv * d.scale : 0.0f);
    }
    CHECKF(pair_ok, "ql_dropout_keep2 vs sequential splitmix64");
    CHECKF(apply_ok, "ql_dropout_apply: x · scale where kept, 0 where dropped");
    const ql_dropout off = {0, seed, thresh, 2.0f};
    CHECK(ql_dropout_apply(&off, 3.0f, 1) == 3.0f && ql_dropout_apply(&off, 3.0f, 2) == 3.0f);
    /* p = 0.1 over 2^20 elements: the dropped share within 5 standard deviations. */
    const uint64_t t10 = (uint64_t)(0.1 * 4294967296.0);
    mask_bytes(seed, t10, BIG, got);
    int64_t dropped = 0;
    for (int64_t e = 0; e < BIG; e++) dropped += got[e] == 0;
    double share = (double)dropped / BIG, sd = sqrt(0.1 * 0.9 / BIG);
    CHECKF(fabs(share - 0.1) < 5 * sd, "dropped share %.5f, want 0.1 +- %.5f", share, 5 * sd);
    /* Another seed gives another mask; threshold 0 keeps all, 2^32 drops all. */
    mask_bytes(seed + 1, thresh, N, got);
    CHECK(memcmp(got, want, N) != 0);
    mask_bytes(seed, 0, N, got);
    int kept = 0;
    for (int e = 0; e < N; e++) kept += got[e];
    CHECK(kept == N);
    mask_bytes(seed, 1ull << 32, N, got);
    kept = 0;
    for (int e = 0; e < N; e++) kept += got[e];
    CHECK(kept == 0);
    free(got);
}

static void test_dequantize(int64_t rows, int64_t cols, ql_qtype type, int bs, int dq) {
    ql_q4 host = tops_q4(rows, cols, type, bs, dq), dev;
    CHECK(fast->q4_upload(&host, &dev) == QL_OK);
    CHECK(dev.packed != host.packed);
    float *want = tops_alloc(host.n), *a = tops_alloc(host.n), *b = tops_alloc(host.n);
    ql_q4_dequantize(&host, want);
    CHECK(ref->q4_dequantize(&dev, a) == QL_OK);
    CHECK(fast->q4_dequantize(&dev, b) == QL_OK);
    CHECKF(tops_same_bytes(a, want, (size_t)host.n * 4), "ref dequant %lldx%lld", (long long)rows,
           (long long)cols);
    CHECKF(tops_same_bytes(b, want, (size_t)host.n * 4),
           "cpu dequant %lldx%lld type %d bs %d dq %d", (long long)rows, (long long)cols, type, bs,
           dq);
    fast->q4_free(&dev);
    ql_q4_free(&host);
    free(want);
    free(a);
    free(b);
}

static void test_lora(int64_t out, int64_t in, ql_qtype type, int bs, int dq, int64_t T, int r,
                      int with_dx) {
    ql_q4 w = tops_q4(out, in, type, bs, dq);
    float *x = tops_rand(T * in, -1, 1), *dy = tops_rand(T * out, -1, 1);
    float *A = tops_rand((int64_t)r * in, -0.1f, 0.1f), *B = tops_rand(out * r, -0.1f, 0.1f);
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = 2.0f};
    const ql_lora *lp = r ? &lora : NULL;
    float *y[2], *xa[2], *dx[2], *dA[2], *dB[2];
    float *dA0 = tops_rand((int64_t)r * in, -1, 1), *dB0 = tops_rand(out * r, -1, 1);
    const ql_backend *be[2] = {ref, fast};
    for (int k = 0; k < 2; k++) {
        y[k] = tops_alloc(T * out);
        xa[k] = tops_alloc(T * r);
        dx[k] = tops_alloc(T * in);
        dA[k] = tops_copy(dA0, (int64_t)r * in);
        dB[k] = tops_copy(dB0, out * r);
        CHECK(be[k]->q4_lora_fwd(&w, lp, x, T, y[k], xa[k]) == QL_OK);
        CHECK(be[k]->q4_lora_bwd(&w, lp, x, xa[k], dy, T, with_dx ? dx[k] : NULL, dA[k], dB[k]) ==
              QL_OK);
    }
    char what[128];
    snprintf(what, sizeof what, "lora %lldx%lld T=%lld r=%d y", (long long)out, (long long)in,
             (long long)T, r);
    TOPS_CLOSE(y[1], y[0], T * out, 2e-6 * sqrt((double)in), what);
    if (r) TOPS_CLOSE(xa[1], xa[0], T * r, 2e-6 * sqrt((double)in), "xa");
    if (with_dx) TOPS_CLOSE(dx[1], dx[0], T * in, 2e-6 * sqrt((double)out), "dx");
    if (r) {
        TOPS_CLOSE(dA[1], dA[0], (int64_t)r * in, 2e-6 * sqrt((double)T + out), "dA (accumulated)");
        TOPS_CLOSE(dB[1], dB[0], out * r, 2e-6 * sqrt((double)T), "dB (accumulated)");
        /* += semantics: the accumulated value moved away from the start. */
        CHECK(memcmp(dA[0], dA0, (size_t)r * (size_t)in * 4) != 0);
    }
    for (int k = 0; k < 2; k++) {
        free(y[k]), free(xa[k]), free(dx[k]), free(dA[k]), free(dB[k]);
    }
    free(x), free(dy), free(A), free(B), free(dA0), free(dB0);
    ql_q4_free(&w);
}

/* fwd then bwd of one weight on one backend: y, xa, dx, dA, dB side by side
 * in one buffer of T·out + T·r + T·in + r·in + out·r floats. */
static float *lora_pass(const ql_backend *be, const ql_q4 *w, const float *x, const float *dy,
                        const ql_lora *lp, int64_t T) {
    const int64_t out = w->rows, in = w->cols, r = lp->r;
    float *v = tops_alloc(T * out + T * r + T * in + r * in + out * r);
    float *y = v, *xa = y + T * out, *dx = xa + T * r, *dA = dx + T * in, *dB = dA + r * in;
    CHECK(be->q4_lora_fwd(w, lp, x, T, y, xa) == QL_OK);
    CHECK(be->q4_lora_bwd(w, lp, x, xa, dy, T, dx, dA, dB) == QL_OK);
    return v;
}

/* A weight held in float32 (dense_upload: --base-weights original). The
 * cpu-ref backend must read from it the W it reads from the 4-bit weight
 * whose dequantization it holds (bit for bit, dequantize included), and the
 * two backends must agree on a W that no 4-bit weight holds. */
static void test_lora_dense(int64_t out, int64_t in, int64_t T, int r) {
    ql_q4 w = tops_q4(out, in, QL_QTYPE_NF4, 64, 1);
    float *W = tops_alloc(out * in), *Wd = tops_alloc(out * in);
    ql_q4_dequantize(&w, W);
    float *x = tops_rand(T * in, -1, 1), *dy = tops_rand(T * out, -1, 1);
    float *A = tops_rand((int64_t)r * in, -0.1f, 0.1f), *B = tops_rand(out * r, -0.1f, 0.1f);
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = 2.0f};
    const int64_t n = T * out + T * r + T * in + (int64_t)r * in + out * r;
    char what[128];
    snprintf(what, sizeof what, "dense lora %lldx%lld T=%lld r=%d", (long long)out, (long long)in,
             (long long)T, r);

    ql_q4 dw;
    CHECK(fast->dense_upload(W, out, in, r, &dw) == QL_OK);
    CHECKF(!dw.packed && dw.dense && dw.dense != (void *)W && dw.rows == out && dw.cols == in,
           "%s: dense_upload's weight", what);
    for (int k = 0; k < 2; k++) {
        CHECK((k ? fast : ref)->q4_dequantize(&dw, Wd) == QL_OK);
        CHECKF(tops_same_bytes(Wd, W, (size_t)(out * in) * 4), "%s: %s dequantize", what,
               k ? "cpu" : "cpu-ref");
    }
    float *from_q4 = lora_pass(ref, &w, x, dy, &lora, T),
          *from_f32 = lora_pass(ref, &dw, x, dy, &lora, T);
    CHECKF(tops_same_bytes(from_f32, from_q4, (size_t)n * 4), "%s: cpu-ref, float32 vs 4-bit W",
           what);
    ref->q4_free(&dw);
    CHECK(!dw.dense);

    /* W moved off the 4-bit grid: no 4-bit weight holds it. */
    for (int64_t e = 0; e < out * in; e++) W[e] += tops_uniform(-1e-2f, 1e-2f);
    CHECK(fast->dense_upload(W, out, in, r, &dw) == QL_OK);
    float *a = lora_pass(ref, &dw, x, dy, &lora, T), *b = lora_pass(fast, &dw, x, dy, &lora, T);
    CHECKF(!tops_same_bytes(a, from_q4, (size_t)(T * out) * 4), "%s: the moved W is not read",
           what);
    TOPS_CLOSE(b, a, T * out, 2e-6 * sqrt((double)in), what);
    TOPS_CLOSE(b + T * out, a + T * out, T * r, 2e-6 * sqrt((double)in), "dense xa");
    TOPS_CLOSE(b + T * (out + r), a + T * (out + r), T * in, 2e-6 * sqrt((double)out), "dense dx");
    TOPS_CLOSE(b + T * (out + r + in), a + T * (out + r + in), (int64_t)r * (in + out),
               2e-6 * sqrt((double)T + out), "dense dA, dB");
    fast->q4_free(&dw);
    free(from_q4), free(from_f32), free(a), free(b);
    free(W), free(Wd), free(x), free(dy), free(A), free(B);
    ql_q4_free(&w);
}

static void test_matmul(int64_t T, int64_t in, int64_t out) {
    float *W = tops_rand(out * in, -0.2f, 0.2f), *x = tops_rand(T * in, -1, 1);
    float *dy = tops_rand(T * out, -1, 1);
    float *y0 = tops_alloc(T * out), *y1 = tops_alloc(T * out);
    float *d0 = tops_alloc(T * in), *d1 = tops_alloc(T * in);
    CHECK(ref->matmul_fwd(W, x, T, in, out, y0) == QL_OK);
    CHECK(fast->matmul_fwd(W, x, T, in, out, y1) == QL_OK);
    CHECK(ref->matmul_bwd(W, dy, T, in, out, d0) == QL_OK);
    CHECK(fast->matmul_bwd(W, dy, T, in, out, d1) == QL_OK);
    TOPS_CLOSE(y1, y0, T * out, 2e-6 * sqrt((double)in), "matmul y");
    TOPS_CLOSE(d1, d0, T * in, 2e-6 * sqrt((double)out), "matmul dx");
    free(W), free(x), free(dy), free(y0), free(y1), free(d0), free(d1);
}

static void test_rmsnorm(int64_t T, int64_t d) {
    float *x = tops_rand(T * d, -2, 2), *w = tops_rand(d, 0.5f, 1.5f),
          *dy = tops_rand(T * d, -1, 1);
    float *y[2], *rs[2], *dx[2];
    const ql_backend *be[2] = {ref, fast};
    for (int k = 0; k < 2; k++) {
        y[k] = tops_alloc(T * d), rs[k] = tops_alloc(T), dx[k] = tops_alloc(T * d);
        CHECK(be[k]->rmsnorm_fwd(x, w, 1e-5f, T, d, y[k], rs[k]) == QL_OK);
        CHECK(be[k]->rmsnorm_bwd(dy, x, w, rs[k], T, d, dx[k]) == QL_OK);
    }
    CHECK_CLOSE(rs[1], rs[0], T, 0, 2e-6, "rmsnorm rstd");
    CHECK_CLOSE(y[1], y[0], T * d, 1e-6, 2e-6, "rmsnorm y");
    TOPS_CLOSE(dx[1], dx[0], T * d, 1e-5, "rmsnorm dx");
    for (int k = 0; k < 2; k++) free(y[k]), free(rs[k]), free(dx[k]);
    free(x), free(w), free(dy);
}

static void test_rope(int64_t T, int H, int D) {
    float inv[128];
    for (int i = 0; i < D / 2; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)D);
    int32_t *pos = malloc((size_t)T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(tops_u32() % 9000);
    float *x = tops_rand(T * H * D, -1, 1);
    float *a = tops_copy(x, T * H * D), *b = tops_copy(x, T * H * D);
    CHECK(ref->rope_fwd(a, pos, inv, T, H, D) == QL_OK);
    CHECK(fast->rope_fwd(b, pos, inv, T, H, D) == QL_OK);
    CHECKF(tops_same_bytes(a, b, (size_t)(T * H * D) * 4), "rope fwd D=%d", D);
    CHECK(ref->rope_bwd(a, pos, inv, T, H, D) == QL_OK);
    CHECK(fast->rope_bwd(b, pos, inv, T, H, D) == QL_OK);
    CHECKF(tops_same_bytes(a, b, (size_t)(T * H * D) * 4), "rope bwd D=%d", D);
    /* bwd is the inverse rotation: it undoes fwd up to rounding. */
    CHECK_CLOSE(b, x, T * H * D, 1e-6, 1e-6, "rope bwd(fwd(x)) = x");
    free(pos), free(x), free(a), free(b);
}

static void test_swiglu(int64_t n) {
    float *g = tops_rand(n, -6, 6), *u = tops_rand(n, -2, 2), *dout = tops_rand(n, -1, 1);
    float *o[2], *dg[2], *du[2];
    const ql_backend *be[2] = {ref, fast};
    for (int k = 0; k < 2; k++) {
        o[k] = tops_alloc(n), dg[k] = tops_alloc(n), du[k] = tops_alloc(n);
        CHECK(be[k]->swiglu_fwd(g, u, n, o[k]) == QL_OK);
        CHECK(be[k]->swiglu_bwd(dout, g, u, n, dg[k], du[k]) == QL_OK);
    }
    CHECK_CLOSE(o[1], o[0], n, 1e-6, 1e-5, "swiglu out");
    CHECK_CLOSE(dg[1], dg[0], n, 1e-6, 1e-5, "swiglu dgate");
    CHECK_CLOSE(du[1], du[0], n, 1e-6, 1e-5, "swiglu dup");
    for (int k = 0; k < 2; k++) free(o[k]), free(dg[k]), free(du[k]);
    free(g), free(u), free(dout);
}

static void test_attn(int64_t batch, int64_t seq, int H, int KV, int D, int docs) {
    ql_attn_shape s = {batch, seq, H, KV, D};
    int64_t nq = batch * seq * H * D, nk = batch * seq * KV * D;
    float *q = tops_rand(nq, -1, 1), *k = tops_rand(nk, -1, 1), *v = tops_rand(nk, -1, 1);
    float *dout = tops_rand(nq, -1, 1);
    int32_t *doc = docs ? tops_docs(batch, seq, docs) : NULL;
    float *o[2], *lse[2], *dq[2], *dk[2], *dv[2];
    const ql_backend *be[2] = {ref, fast};
    for (int j = 0; j < 2; j++) {
        o[j] = tops_alloc(nq), lse[j] = tops_alloc(batch * H * seq);
        dq[j] = tops_alloc(nq), dk[j] = tops_rand(nk, 5, 6), dv[j] = tops_rand(nk, 5, 6);
        CHECK(be[j]->attn_fwd(q, k, v, doc, &s, o[j], lse[j]) == QL_OK);
        CHECK(be[j]->attn_bwd(dout, q, k, v, o[j], lse[j], doc, &s, dq[j], dk[j], dv[j]) == QL_OK);
    }
    char what[96];
    snprintf(what, sizeof what, "attn b%lld s%lld H%d KV%d D%d docs%d out", (long long)batch,
             (long long)seq, H, KV, D, docs);
    TOPS_CLOSE(o[1], o[0], nq, 1e-5, what);
    CHECK_CLOSE(lse[1], lse[0], batch * H * seq, 1e-5, 1e-5, "attn lse");
    TOPS_CLOSE(dq[1], dq[0], nq, 2e-5, "attn dq");
    TOPS_CLOSE(dk[1], dk[0], nk, 2e-5, "attn dk (overwritten)");
    TOPS_CLOSE(dv[1], dv[0], nk, 2e-5, "attn dv (overwritten)");
    for (int j = 0; j < 2; j++) free(o[j]), free(lse[j]), free(dq[j]), free(dk[j]), free(dv[j]);
    free(q), free(k), free(v), free(dout), free(doc);
}

/* Generation's attention over a cache: rows pos0..pos0+T-1 of a sequence of
 * S = pos0 + T tokens against the cache of all S keys must be attn_fwd's
 * rows there (causal, one sequence), on both backends; and on the fast
 * backend a row's bits must not depend on how the rows are split into calls
 * (one call of T rows, or T calls of one). */
static void test_attn_cached(int64_t pos0, int64_t T, int H, int KV, int D) {
    const int64_t S = pos0 + T, qdim = (int64_t)H * D;
    ql_attn_shape full = {1, S, H, KV, D};
    float *q = tops_rand(S * qdim, -1, 1), *k = tops_rand(S * KV * D, -1, 1);
    float *v = tops_rand(S * KV * D, -1, 1);
    float *want = tops_alloc(S * qdim), *lse = tops_alloc((int64_t)H * S);
    CHECK(ref->attn_fwd(q, k, v, NULL, &full, want, lse) == QL_OK);
    const ql_backend *be[2] = {ref, fast};
    float *got[2], *one = tops_rand(T * qdim, 5, 6);
    for (int j = 0; j < 2; j++) {
        got[j] = tops_rand(T * qdim, 5, 6);
        CHECK(be[j]->attn_cached_fwd(q + pos0 * qdim, k, v, T, pos0, &full, got[j]) == QL_OK);
    }
    char what[96];
    snprintf(what, sizeof what, "attn_cached pos0 %lld T %lld H%d KV%d D%d", (long long)pos0,
             (long long)T, H, KV, D);
    TOPS_CLOSE(got[0], want + pos0 * qdim, T * qdim, 1e-6, what);
    TOPS_CLOSE(got[1], want + pos0 * qdim, T * qdim, 1e-5, what);
    for (int64_t t = 0; t < T; t++)
        CHECK(fast->attn_cached_fwd(q + (pos0 + t) * qdim, k, v, 1, pos0 + t, &full,
                                    one + t * qdim) == QL_OK);
    CHECKF(memcmp(one, got[1], (size_t)(T * qdim) * sizeof(float)) == 0,
           "%s: a row's bits depend on the rows sharing its call", what);
    free(q), free(k), free(v), free(want), free(lse), free(one), free(got[0]), free(got[1]);
}

static void test_embed(void) {
    int64_t V = 50, d = 33, T = 17;
    float *table = tops_rand(V * d, -1, 1), *a = tops_alloc(T * d), *b = tops_alloc(T * d);
    int32_t ids[17];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(tops_u32() % V);
    CHECK(ref->embed_fwd(table, ids, T, d, a) == QL_OK);
    CHECK(fast->embed_fwd(table, ids, T, d, b) == QL_OK);
    CHECK(tops_same_bytes(a, b, (size_t)(T * d) * 4));
    CHECK(memcmp(b + 5 * d, table + ids[5] * d, (size_t)d * 4) == 0);
    free(table), free(a), free(b);
}

static void test_xent(int64_t T, int64_t V) {
    float *logits = tops_rand(T * V, -8, 8);
    int32_t *tg = malloc((size_t)T * sizeof(int32_t));
    int valid = 0;
    for (int64_t t = 0; t < T; t++) {
        tg[t] = (t % 3 == 1) ? -100 : (int32_t)(tops_u32() % V);
        valid += tg[t] >= 0;
    }
    float gs = 1.0f / (float)valid;
    float *l[2], *d[2];
    const ql_backend *be[2] = {ref, fast};
    for (int k = 0; k < 2; k++) {
        l[k] = tops_alloc(T), d[k] = tops_alloc(T * V);
        CHECK(be[k]->xent_fwd_bwd(logits, tg, T, V, gs, l[k], d[k]) == QL_OK);
    }
    CHECK_CLOSE(l[1], l[0], T, 1e-5, 1e-5, "xent losses");
    CHECK_CLOSE(d[1], d[0], T * V, 1e-7, 1e-5, "xent dlogits");
    CHECK(l[0][1] == 0.0f && d[1][V + 3] == 0.0f); /* ignored position */
    /* In place: dlogits aliasing logits gives the same gradient. */
    for (int k = 0; k < 2; k++) {
        float *inplace = tops_copy(logits, T * V), *loss = tops_alloc(T);
        CHECK(be[k]->xent_fwd_bwd(inplace, tg, T, V, gs, loss, inplace) == QL_OK);
        CHECK(tops_same_bytes(inplace, d[k], (size_t)(T * V) * 4));
        CHECK(tops_same_bytes(loss, l[k], (size_t)T * 4));
        free(inplace), free(loss);
    }
    /* A target outside the vocabulary is bad input, not a crash. */
    tg[0] = (int32_t)V;
    CHECK(ref->xent_fwd_bwd(logits, tg, T, V, gs, l[0], NULL) == QL_EINVAL);
    CHECK(fast->xent_fwd_bwd(logits, tg, T, V, gs, l[1], NULL) == QL_EINVAL);
    for (int k = 0; k < 2; k++) free(l[k]), free(d[k]);
    free(logits), free(tg);
}

static void test_adamw(int64_t n) {
    ql_adamw h = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    float *p0 = tops_rand(n, -1, 1);
    float *p[2], *m[2], *v[2];
    const ql_backend *be[2] = {ref, fast};
    for (int k = 0; k < 2; k++) p[k] = tops_copy(p0, n), m[k] = tops_alloc(n), v[k] = tops_alloc(n);
    for (int step = 1; step <= 3; step++) {
        float *g = tops_rand(n, -1, 1);
        for (int k = 0; k < 2; k++) CHECK(be[k]->adamw(p[k], g, m[k], v[k], n, &h, step) == QL_OK);
        free(g);
    }
    CHECK(tops_same_bytes(p[0], p[1], (size_t)n * 4));
    CHECK(tops_same_bytes(m[0], m[1], (size_t)n * 4));
    CHECK(tops_same_bytes(v[0], v[1], (size_t)n * 4));
    CHECK(memcmp(p[0], p0, (size_t)n * 4) != 0);
    for (int k = 0; k < 2; k++) free(p[k]), free(m[k]), free(v[k]);
    free(p0);
}

int main(void) {
    tops_seed(1);
    ref = ql_backend_cpu_ref();
    fast = ql_backend_cpu();
    test_memory();

    test_dequantize(37, 96, QL_QTYPE_NF4, 64, 0);
    test_dequantize(64, 130, QL_QTYPE_FP4, 32, 1);
    test_dequantize(33, 77, QL_QTYPE_NF4, 64, 1);   /* odd n: a half-used last byte */
    test_dequantize(300, 600, QL_QTYPE_NF4, 64, 1); /* several nested blocks */
    test_dequantize(5, 4099, QL_QTYPE_FP4, 4096, 0);

    test_lora(37, 96, QL_QTYPE_NF4, 64, 0, 1, 4, 1);
    test_lora(70, 33, QL_QTYPE_NF4, 64, 1, 7, 8, 1); /* odd in: tiles start mid-byte */
    test_lora(300, 200, QL_QTYPE_NF4, 64, 1, 37, 16, 1);
    test_lora(130, 257, QL_QTYPE_FP4, 128, 0, 130, 3, 1);
    test_lora(576, 300, QL_QTYPE_NF4, 64, 1, 71, 8, 0); /* dx NULL */
    test_lora(96, 2100, QL_QTYPE_NF4, 64, 1, 9, 0, 1);  /* no LoRA */
    test_lora(2100, 64, QL_QTYPE_NF4, 64, 1, 3, 2, 1);  /* several backward row chunks */
    /* T <= 16 with in % 16 == 0 takes the fused decode-and-multiply path. */
    test_lora(200, 1024, QL_QTYPE_NF4, 64, 1, 1, 8, 1);
    test_lora(75, 4096, QL_QTYPE_NF4, 64, 1, 9, 16, 1);
    test_lora(33, 320, QL_QTYPE_FP4, 32, 0, 16, 4, 1);
    test_lora(40, 4112, QL_QTYPE_NF4, 4096, 1, 5, 4, 1); /* rows start mid-block */

    /* Weights held in float32: backward row chunks and column tiles past
     * one (136 = 128 + 8), one token (generation: no fused path), many. */
    test_lora_dense(2100, 136, 3, 4);
    test_lora_dense(200, 1024, 1, 8);
    test_lora_dense(300, 200, 37, 16);

    test_matmul(5, 33, 70);
    test_matmul(11, 64, 130); /* the dot-product path: two token groups, rows past a task */
    test_matmul(16, 40, 65);
    test_matmul(130, 200, 301);

    test_rmsnorm(7, 576);
    test_rmsnorm(3, 5);
    test_rope(11, 3, 64);
    test_rope(5, 2, 8);
    test_swiglu(1001);
    test_dropout_mask();

    test_attn(2, 37, 6, 2, 64, 4); /* GQA 3, doc mask */
    test_attn(1, 19, 3, 3, 8, 0);  /* MHA, no mask */
    test_attn(3, 50, 9, 3, 16, 5);
    test_attn(1, 23, 4, 4, 64, 3);
    /* Past one tile of 64 keys and 16 query rows (kernels/cpu/cpu_attn.c):
     * a partial last tile of both, head_dim with a tail past 8 lanes. */
    test_attn(2, 150, 4, 2, 12, 3);
    test_attn(1, 130, 6, 2, 64, 0);

    test_attn_cached(0, 1, 3, 3, 8);     /* one token, nothing cached before it */
    test_attn_cached(37, 1, 6, 2, 64);   /* decode, GQA 3 */
    test_attn_cached(20, 9, 9, 3, 16);   /* a later prompt chunk */
    test_attn_cached(250, 12, 4, 2, 12); /* past 128 keys: the CUDA kernel's tiles */

    test_embed();
    test_xent(13, 1000);
    test_xent(5, 7);
    test_adamw(1003);
    return CHECK_DONE();
}
