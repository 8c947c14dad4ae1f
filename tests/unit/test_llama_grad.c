/* LoRA gradients of the whole model against central finite differences of
 * its own loss (tiny random models: untied and tied Llama, Qwen2 with q/k/v
 * biases, and with LoRA dropout), on both CPU backends; activation
 * checkpointing gives the same bits; the same seed gives the same bits. */
#include <omp.h>

#include "test_llama_util.h"

#define FD_STEP 1e-3

typedef struct ctx {
    ql_llama *m;
    const ql_backend *be;
    ql_adapters *a;
    ql_batch *b;
    int dropout;
    ql_rng rng0; /* dropout stream before the gradient call */
} ctx;

/* Σ token losses; under dropout with the same masks as the gradient call. */
static double loss_at(ctx *c) {
    double L = 0.0;
    int64_t n = 0;
    if (c->dropout) *ql_llama_rng(c->m) = c->rng0;
    ql_status st = ql_llama_forward_backward(c->m, c->b, c->dropout, 1.0f, &L, &n);
    if (st != QL_OK) fprintf(stderr, "forward: %s\n", ql_error_message());
    return L;
}

static double set_elem(ctx *c, int64_t i, float v) {
    float old;
    c->be->download(&old, c->a->params + i, sizeof old);
    c->be->upload(c->a->params + i, &v, sizeof v);
    return old;
}

static int64_t logit_rows; /* 0: the default chunking */

static ql_llama *load(const char *dir, const ql_backend *be, float dropout, int ckpt) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.lora.r = 4;
    o.lora.alpha = 8.0f;
    o.lora.dropout = dropout;
    o.seed = 99;
    o.max_batch = 2;
    o.max_seq = 12;
    o.quiet = 1;
    o.checkpoint_activations = ckpt;
    o.logit_rows = logit_rows;
    ql_llama *m = NULL;
    ql_status st = ql_llama_load(dir, &o, &m);
    CHECKF(st == QL_OK, "load %s: %s", dir, ql_error_message());
    return m;
}

/* B = 0 after init would make dA zero; give B values so every path counts. */
static void randomize_b(ql_llama *m, const ql_backend *be, uint64_t seed) {
    ql_adapters *a = ql_llama_adapters(m);
    float *p = tl_download(be, a->params, a->n);
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int i = 0; i < a->n_tensors; i++)
        if (a->tensors[i].is_b)
            tl_fill(&r, p + a->tensors[i].offset, a->tensors[i].rows * a->tensors[i].cols, 0.0f,
                    0.4f);
    tl_upload(be, a->params, p, a->n);
    free(p);
}

static void test_fd(const char *tag, tl_spec spec, const ql_backend *be, float dropout) {
    const char *dir = tl_tmpdir(tag);
    CHECK(tl_write_model(dir, &spec) == 0);
    ql_llama *m = load(dir, be, dropout, 0);
    if (!m) return;
    ql_adapters *a = ql_llama_adapters(m);
    randomize_b(m, be, 5);
    tl_batch tb = tl_random_batch(2, 12, spec.vocab, 17);
    ctx c = {m, be, a, &tb.b, dropout > 0, *ql_llama_rng(m)};
    tl_zero_grads(be, a);
    double L0;
    int64_t nt;
    CHECK(ql_llama_forward_backward(m, &tb.b, 1, 1.0f, &L0, &nt) == QL_OK);
    CHECK(nt == 24 - 5 && isfinite(L0) && L0 > 0);
    float *g = tl_download(be, a->grads, a->n);

    /* Two elements of every tensor, against the tensor's largest gradient (the
     * difference quotient of a float32 loss has noise ~1e-3 of that). */
    ql_rng r;
    ql_rng_seed(&r, 3);
    double worst = 0.0;
    const char *worst_name = "";
    int bad = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        int64_t n = t->rows * t->cols;
        double gmax = 0.0;
        for (int64_t e = 0; e < n; e++) gmax = fmax(gmax, fabs(g[t->offset + e]));
        CHECKF(gmax > 0.0, "%s %s: gradient of %s is zero", tag, be->name, t->name);
        for (int k = 0; k < 2; k++) {
            int64_t e = t->offset + (int64_t)ql_rng_below(&r, (uint64_t)n);
            float v = (float)set_elem(&c, e, 0.0f);
            set_elem(&c, e, (float)(v + FD_STEP));
            double up = loss_at(&c);
            set_elem(&c, e, (float)(v - FD_STEP));
            double down = loss_at(&c);
            set_elem(&c, e, v);
            double fd = (up - down) / (2 * FD_STEP);
            double err = fabs(fd - g[e]) / (gmax + 1e-3);
            if (err > worst) worst = err, worst_name = t->name;
            if (err > 2e-2) {
                bad++;
                fprintf(stderr, "  %s %s %s[%lld]: analytic %.6g, finite difference %.6g\n", tag,
                        be->name, t->name, (long long)(e - t->offset), (double)g[e], fd);
            }
        }
    }
    CHECKF(bad == 0, "%s %s: %d gradient elements off", tag, be->name, bad);

    /* The directional derivative along a random direction over all of them. */
    float *p0 = tl_download(be, a->params, a->n), *p = malloc((size_t)a->n * sizeof(float));
    float *dir_v = malloc((size_t)a->n * sizeof(float));
    tl_fill(&r, dir_v, a->n, 0.0f, 1.0f);
    double gd = 0.0;
    for (int64_t e = 0; e < a->n; e++) gd += (double)g[e] * dir_v[e];
    double h = FD_STEP / 4, side[2];
    for (int s = 0; s < 2; s++) {
        for (int64_t e = 0; e < a->n; e++) p[e] = p0[e] + (float)((s ? -h : h) * dir_v[e]);
        tl_upload(be, a->params, p, a->n);
        side[s] = loss_at(&c);
    }
    tl_upload(be, a->params, p0, a->n);
    double fdd = (side[0] - side[1]) / (2 * h);
    CHECKF(fabs(fdd - gd) <= 1e-2 * fabs(gd), "%s %s: directional derivative %.8g vs %.8g", tag,
           be->name, gd, fdd);
    printf("%-10s %-8s dropout %.2f: loss %.6f, worst element error %.2e of max|g| (%s), "
           "directional %.3e relative\n",
           tag, be->name, (double)dropout, L0, worst, worst_name, fabs(fdd - gd) / fabs(gd));
    free(p0), free(p), free(dir_v), free(g);
    tl_batch_free(&tb);
    ql_llama_free(m);
    ql_fs_remove_tree(dir);
}

/* Checkpointed and not: the same losses and gradients, bit for bit, over a
 * few calls (with dropout, so the recomputed masks are checked too). With
 * chunk_rows, the second model splits the lm_head and loss into chunks of
 * that many rows instead. */
static void test_checkpointing(const ql_backend *be, int64_t chunk_rows) {
    tl_spec spec = tl_default();
    const char *dir = tl_tmpdir("ckpt");
    CHECK(tl_write_model(dir, &spec) == 0);
    ql_llama *m[2];
    m[0] = load(dir, be, 0.2f, 0);
    logit_rows = chunk_rows;
    m[1] = load(dir, be, 0.2f, !chunk_rows);
    logit_rows = 0;
    if (!m[0] || !m[1]) return;
    float *g[2];
    double L[2][3];
    for (int k = 0; k < 2; k++) {
        randomize_b(m[k], be, 8);
        for (int step = 0; step < 3; step++) {
            tl_batch tb = tl_random_batch(2, 12, spec.vocab, 100 + (uint64_t)step);
            int64_t n;
            CHECK(ql_llama_forward_backward(m[k], &tb.b, 1, 0.05f, &L[k][step], &n) == QL_OK);
            tl_batch_free(&tb);
        }
        ql_adapters *a = ql_llama_adapters(m[k]);
        g[k] = tl_download(be, a->grads, a->n);
    }
    int64_t n = ql_llama_adapters(m[0])->n;
    if (chunk_rows && strcmp(be->name, "cpu-ref")) {
        /* The fast matmul tiles by the number of rows, so chunks round
         * differently; the reference sums each element alone. */
        for (int s = 0; s < 3; s++)
            CHECKF(fabs(L[0][s] - L[1][s]) < 1e-5 * fabs(L[0][s]), "%s: chunked loss %.9g vs %.9g",
                   be->name, L[1][s], L[0][s]);
        double gmax = 0.0;
        for (int64_t e = 0; e < n; e++) gmax = fmax(gmax, fabs(g[0][e]));
        CHECK_CLOSE(g[1], g[0], n, 1e-5 * gmax, 0.0, "chunked gradients");
    } else {
        const char *what = chunk_rows ? "chunked" : "checkpointed";
        CHECKF(!memcmp(L[0], L[1], sizeof L[0]), "%s: %s losses differ", be->name, what);
        CHECKF(!memcmp(g[0], g[1], (size_t)n * 4), "%s: %s gradients differ", be->name, what);
    }
    free(g[0]), free(g[1]);
    ql_llama_free(m[0]);
    ql_llama_free(m[1]);
    ql_fs_remove_tree(dir);
}

int main(void) {
    /* Thousands of calls on tiny shapes: one thread keeps OpenMP's barriers from
     * dominating on a loaded machine. Thread-count independence of the ops is
     * test_ops_determinism's job. */
    omp_set_num_threads(1);
    const ql_backend *bes[2] = {ql_backend_cpu_ref(), ql_backend_cpu()};
    tl_spec untied = tl_default(), tied = tl_default(), qwen = tl_default();
    tied.tied = 1;
    tied.seed = 8;
    qwen.arch = "Qwen2ForCausalLM";
    qwen.model_type = "qwen2";
    qwen.qkv_bias = 1;
    qwen.tied = 1;
    qwen.rope_theta = 1e6;
    qwen.seed = 9;
    for (int k = 0; k < 2; k++) {
        test_fd("untied", untied, bes[k], 0.0f);
        test_fd("tied", tied, bes[k], 0.0f);
        test_fd("qwen2", qwen, bes[k], 0.0f);
        test_fd("dropout", untied, bes[k], 0.25f);
        test_checkpointing(bes[k], 0);
        test_checkpointing(bes[k], 5);
    }
    return CHECK_DONE();
}
