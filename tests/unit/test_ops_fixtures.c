/* Both CPU backends against reference values from an independent
 * implementation: PyTorch (tests/fixtures/make_ops_reference.py, versions in
 * tests/fixtures/ops/versions.json). Tolerances are float32-sized; where the
 * float32 arithmetic is meant to match torch's operation for operation
 * (AdamW) the test bounds the difference in ulps. RoPE inv_freq against the
 * same fixtures is checked in test_ops_registry.c. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_ops_util.h"

static json_t *index_json;
static char dir[1024];

/* The tensor `name` of `case_` (file + shape from index.json); n = elements. */
static void *load(const char *case_, const char *name, int64_t *n_out) {
    json_t *t =
        json_object_get(json_object_get(json_object_get(index_json, case_), "tensors"), name);
    if (!t) {
        fprintf(stderr, "fixture %s.%s missing from index.json\n", case_, name);
        abort();
    }
    const char *file = json_string_value(json_object_get(t, "file"));
    int64_t n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "shape"), i, d) n *= json_integer_value(d);
    size_t esz = strstr(file, ".u8") ? 1 : 4;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        abort();
    }
    void *buf = calloc((size_t)n + 1, esz);
    size_t got = fread(buf, esz, (size_t)n, f);
    fclose(f);
    if ((int64_t)got != n) {
        fprintf(stderr, "fixture %s: %zu of %lld elements\n", path, got, (long long)n);
        abort();
    }
    if (n_out) *n_out = n;
    return buf;
}

static double param(const char *case_, const char *key) {
    json_t *v = json_object_get(json_object_get(json_object_get(index_json, case_), "params"), key);
    if (!v) {
        fprintf(stderr, "fixture %s: no param %s\n", case_, key);
        abort();
    }
    return json_is_true(v) ? 1.0 : json_is_false(v) ? 0.0 : json_number_value(v);
}

static int64_t ulps(float a, float b) {
    int32_t ia = (int32_t)ql_bits_from_f32(a), ib = (int32_t)ql_bits_from_f32(b);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

static int64_t max_ulps(const float *a, const float *b, int64_t n) {
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++)
        if (ulps(a[i], b[i]) > worst) worst = ulps(a[i], b[i]);
    return worst;
}

static void test_rmsnorm(const ql_backend *be) {
    int64_t T = (int64_t)param("rmsnorm", "T"), d = (int64_t)param("rmsnorm", "d");
    float *x = load("rmsnorm", "x", NULL), *w = load("rmsnorm", "w", NULL);
    float *dy = load("rmsnorm", "dy", NULL), *y_want = load("rmsnorm", "y", NULL);
    float *rstd_want = load("rmsnorm", "rstd", NULL), *dx_want = load("rmsnorm", "dx", NULL);
    float *y = tops_alloc(T * d), *rstd = tops_alloc(T), *dx = tops_alloc(T * d);
    CHECK(be->rmsnorm_fwd(x, w, (float)param("rmsnorm", "eps"), T, d, y, rstd) == QL_OK);
    CHECK(be->rmsnorm_bwd(dy, x, w, rstd, T, d, dx) == QL_OK);
    CHECK_CLOSE(rstd, rstd_want, T, 0, 1e-6, "rmsnorm rstd vs torch");
    CHECK_CLOSE(y, y_want, T * d, 1e-6, 1e-6, "rmsnorm y vs torch");
    TOPS_CLOSE(dx, dx_want, T * d, 1e-6, "rmsnorm dx vs torch");
    free(x), free(w), free(dy), free(y_want), free(rstd_want), free(dx_want);
    free(y), free(rstd), free(dx);
}

static void test_rope(const ql_backend *be, const char *case_) {
    int D = (int)param(case_, "dim"), H = (int)param(case_, "H");
    int64_t T = (int64_t)param(case_, "T");
    float *inv_want = load(case_, "inv_freq", NULL);
    int32_t *pos = load(case_, "pos", NULL);
    float *q = load(case_, "q", NULL), *dy = load(case_, "dy", NULL);
    float *rot_want = load(case_, "q_rot", NULL), *dq_want = load(case_, "dq", NULL);
    /* The torch inv_freq, so this checks the rotation alone. */
    CHECK(be->rope_fwd(q, pos, inv_want, T, H, D) == QL_OK);
    CHECK(be->rope_bwd(dy, pos, inv_want, T, H, D) == QL_OK);
    CHECK_CLOSE(q, rot_want, T * H * D, 2e-6, 1e-5, "rope q_rot vs torch");
    CHECK_CLOSE(dy, dq_want, T * H * D, 2e-6, 1e-5, "rope dq vs torch");
    free(inv_want), free(pos), free(q), free(dy), free(rot_want), free(dq_want);
}

static void test_attn(const ql_backend *be, const char *case_) {
    ql_attn_shape s = {(int64_t)param(case_, "batch"), (int64_t)param(case_, "seq"),
                       (int)param(case_, "n_heads"), (int)param(case_, "n_kv_heads"),
                       (int)param(case_, "head_dim")};
    int64_t nq, nk;
    float *q = load(case_, "q", &nq), *k = load(case_, "k", &nk), *v = load(case_, "v", NULL);
    float *dout = load(case_, "dout", NULL), *out_want = load(case_, "out", NULL);
    float *lse_want = load(case_, "lse", NULL), *dq_want = load(case_, "dq", NULL);
    float *dk_want = load(case_, "dk", NULL), *dv_want = load(case_, "dv", NULL);
    int32_t *doc = param(case_, "has_doc") != 0.0 ? load(case_, "doc", NULL) : NULL;
    int64_t nl = s.batch * s.n_heads * s.seq;
    float *out = tops_alloc(nq), *lse = tops_alloc(nl), *dq = tops_alloc(nq);
    float *dk = tops_alloc(nk), *dv = tops_alloc(nk);
    CHECK(be->attn_fwd(q, k, v, doc, &s, out, lse) == QL_OK);
    CHECK(be->attn_bwd(dout, q, k, v, out, lse, doc, &s, dq, dk, dv) == QL_OK);
    TOPS_CLOSE(out, out_want, nq, 2e-6, "attn out vs torch");
    CHECK_CLOSE(lse, lse_want, nl, 1e-6, 1e-6, "attn lse vs torch");
    TOPS_CLOSE(dq, dq_want, nq, 1e-5, "attn dq vs torch");
    TOPS_CLOSE(dk, dk_want, nk, 1e-5, "attn dk vs torch");
    TOPS_CLOSE(dv, dv_want, nk, 1e-5, "attn dv vs torch");
    free(q), free(k), free(v), free(dout), free(out_want), free(lse_want), free(dq_want);
    free(dk_want), free(dv_want), free(doc), free(out), free(lse), free(dq), free(dk), free(dv);
}

static void test_swiglu(const ql_backend *be) {
    int64_t n;
    float *g = load("swiglu", "gate", &n), *u = load("swiglu", "up", NULL);
    float *dout = load("swiglu", "dout", NULL), *out_want = load("swiglu", "out", NULL);
    float *dg_want = load("swiglu", "dgate", NULL), *du_want = load("swiglu", "dup", NULL);
    float *out = tops_alloc(n), *dg = tops_alloc(n), *du = tops_alloc(n);
    CHECK(be->swiglu_fwd(g, u, n, out) == QL_OK);
    CHECK(be->swiglu_bwd(dout, g, u, n, dg, du) == QL_OK);
    CHECK_CLOSE(out, out_want, n, 1e-7, 2e-6, "swiglu out vs torch");
    CHECK_CLOSE(dg, dg_want, n, 1e-7, 2e-6, "swiglu dgate vs torch");
    CHECK_CLOSE(du, du_want, n, 1e-7, 2e-6, "swiglu dup vs torch");
    free(g), free(u), free(dout), free(out_want), free(dg_want), free(du_want);
    free(out), free(dg), free(du);
}

static void test_xent(const ql_backend *be) {
    int64_t T = (int64_t)param("xent", "T"), V = (int64_t)param("xent", "V");
    float *logits = load("xent", "logits", NULL), *l_want = load("xent", "losses", NULL);
    float *d_want = load("xent", "dlogits", NULL);
    int32_t *tg = load("xent", "targets", NULL);
    float *l = tops_alloc(T), *d = tops_alloc(T * V);
    float gs = 1.0f / (float)param("xent", "n_valid");
    CHECK(be->xent_fwd_bwd(logits, tg, T, V, gs, l, d) == QL_OK);
    CHECK_CLOSE(l, l_want, T, 1e-6, 1e-6, "xent per-token loss vs torch");
    CHECK_CLOSE(d, d_want, T * V, 1e-8, 1e-5, "xent dlogits vs torch (mean over valid)");
    double mean = 0.0;
    for (int64_t t = 0; t < T; t++) mean += l[t];
    mean *= gs;
    CHECKF(fabs(mean - param("xent", "mean_loss")) < 1e-5, "mean loss %.9g vs torch %.9g", mean,
           param("xent", "mean_loss"));
    free(logits), free(l_want), free(d_want), free(tg), free(l), free(d);
}

static void test_adamw(const ql_backend *be) {
    int64_t n;
    float *p = load("adamw", "p0", &n);
    float *m = tops_alloc(n), *v = tops_alloc(n);
    ql_adamw h = {(float)param("adamw", "lr"), (float)param("adamw", "beta1"),
                  (float)param("adamw", "beta2"), (float)param("adamw", "eps"),
                  (float)param("adamw", "weight_decay")};
    for (int step = 1; step <= 3; step++) {
        char name[8];
        snprintf(name, sizeof name, "g%d", step);
        float *g = load("adamw", name, NULL);
        CHECK(be->adamw(p, g, m, v, n, &h, step) == QL_OK);
        snprintf(name, sizeof name, "p%d", step);
        float *pw = load("adamw", name, NULL);
        snprintf(name, sizeof name, "m%d", step);
        float *mw = load("adamw", name, NULL);
        snprintf(name, sizeof name, "v%d", step);
        float *vw = load("adamw", name, NULL);
        CHECKF(max_ulps(p, pw, n) <= 1, "adamw step %d param: %lld ulps from torch", step,
               (long long)max_ulps(p, pw, n));
        CHECKF(max_ulps(m, mw, n) <= 1, "adamw step %d m: %lld ulps", step,
               (long long)max_ulps(m, mw, n));
        CHECKF(max_ulps(v, vw, n) <= 1, "adamw step %d v: %lld ulps", step,
               (long long)max_ulps(v, vw, n));
        free(g), free(pw), free(mw), free(vw);
    }
    free(p), free(m), free(v);
}

static void test_lora(const ql_backend *be) {
    int64_t out = (int64_t)param("lora", "out"), in = (int64_t)param("lora", "in");
    int64_t T = (int64_t)param("lora", "T");
    int r = (int)param("lora", "r");
    ql_q4 w = {0};
    w.type = QL_QTYPE_NF4;
    w.rows = out;
    w.cols = in;
    w.blocksize = (int)param("lora", "blocksize");
    w.double_quant = 0;
    CHECK(ql_q4_alloc(&w) == QL_OK);
    uint8_t *packed = load("lora", "packed", NULL);
    float *absmax = load("lora", "absmax", NULL);
    memcpy(w.packed, packed, (size_t)ql_q4_packed_bytes(&w));
    memcpy(w.absmax, absmax, (size_t)w.n_blocks * sizeof(float));
    float *W = load("lora", "W", NULL), *Wq = tops_alloc(out * in);
    CHECK(be->q4_dequantize(&w, Wq) == QL_OK);
    CHECK(tops_same_bytes(Wq, W, (size_t)(out * in) * 4)); /* bnb's dequant, bit for bit */

    float *x = load("lora", "x", NULL), *A = load("lora", "A", NULL), *B = load("lora", "B", NULL);
    float *dy = load("lora", "dy", NULL);
    ql_lora lora = {.A = A, .B = B, .r = r, .scale = (float)param("lora", "scale")};
    float *y = tops_alloc(T * out), *xa = tops_alloc(T * r), *dx = tops_alloc(T * in);
    float *dA = tops_alloc((int64_t)r * in), *dB = tops_alloc(out * r);
    CHECK(be->q4_lora_fwd(&w, &lora, x, T, y, xa) == QL_OK);
    CHECK(be->q4_lora_bwd(&w, &lora, x, xa, dy, T, dx, dA, dB) == QL_OK);
    struct {
        const char *name;
        float *got;
        int64_t n;
    } cmp[] = {{"y", y, T * out},
               {"xa", xa, T * r},
               {"dx", dx, T * in},
               {"dA", dA, (int64_t)r * in},
               {"dB", dB, out * r}};
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        float *want = load("lora", cmp[i].name, NULL);
        char what[64];
        snprintf(what, sizeof what, "lora %s vs torch", cmp[i].name);
        TOPS_CLOSE(cmp[i].got, want, cmp[i].n, 2e-6, what);
        free(want);
    }
    float *yb_want = load("lora", "y_base", NULL), *dxb_want = load("lora", "dx_base", NULL);
    CHECK(be->matmul_fwd(W, x, T, in, out, y) == QL_OK);
    CHECK(be->matmul_bwd(W, dy, T, in, out, dx) == QL_OK);
    TOPS_CLOSE(y, yb_want, T * out, 2e-6, "matmul y vs torch");
    TOPS_CLOSE(dx, dxb_want, T * in, 2e-6, "matmul dx vs torch");
    free(yb_want), free(dxb_want);
    free(packed), free(absmax), free(W), free(Wq), free(x), free(A), free(B), free(dy);
    free(y), free(xa), free(dx), free(dA), free(dB);
    ql_q4_free(&w);
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/ops", src ? src : ".");
    char path[1100];
    snprintf(path, sizeof path, "%s/index.json", dir);
    json_error_t err;
    index_json = json_load_file(path, 0, &err);
    if (!index_json) {
        fprintf(stderr, "%s: %s (set QL_SOURCE_DIR to the repository root)\n", path, err.text);
        return 1;
    }
    const ql_backend *backends[2] = {ql_backend_cpu_ref(), ql_backend_cpu()};
    for (int b = 0; b < 2; b++) {
        const ql_backend *be = backends[b];
        test_rmsnorm(be);
        test_rope(be, "rope_default");
        test_rope(be, "rope_linear");
        test_rope(be, "rope_llama3");
        test_rope(be, "rope_smollm2");
        test_attn(be, "attn_gqa_docs");
        test_attn(be, "attn_mha_d64");
        test_swiglu(be);
        test_xent(be);
        test_adamw(be);
        test_lora(be);
    }
    json_decref(index_json);
    return CHECK_DONE();
}
