/* Training the tiny model with the backend's AdamW: it overfits one batch to
 * near-zero loss, and two runs with the same seed (dropout on) give the same
 * losses and adapters bit for bit, while another seed does not. */
#include <omp.h>

#include "test_llama_util.h"

typedef struct run {
    double loss[400];
    float *params;
    int64_t n;
} run;

/* `steps` AdamW steps on one fixed batch; mean loss per step into r->loss. */
static int train(const char *dir, const ql_backend *be, uint64_t seed, float dropout, int steps,
                 float lr, run *r) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.lora.r = 8;
    o.lora.alpha = 16.0f;
    o.lora.dropout = dropout;
    o.seed = seed;
    o.max_batch = 2;
    o.max_seq = 16;
    o.quiet = 1;
    ql_llama *m;
    if (ql_llama_load(dir, &o, &m) != QL_OK) {
        fprintf(stderr, "load: %s\n", ql_error_message());
        return -1;
    }
    ql_adapters *a = ql_llama_adapters(m);
    float *mom, *var;
    be->alloc((size_t)a->n * 4, (void **)&mom);
    be->alloc((size_t)a->n * 4, (void **)&var);
    float *z = calloc((size_t)a->n, 4);
    tl_upload(be, mom, z, a->n);
    tl_upload(be, var, z, a->n);
    free(z);
    tl_batch tb = tl_random_batch(2, 16, 50, 1234);
    ql_adamw h = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f};
    int rc = 0;
    for (int s = 0; s < steps && !rc; s++) {
        tl_zero_grads(be, a);
        double L;
        int64_t n;
        if (ql_llama_forward_backward(m, &tb.b, 1, 1.0f / 26.0f, &L, &n) != QL_OK || n != 26 ||
            be->adamw(a->params, a->grads, mom, var, a->n, &h, s + 1) != QL_OK)
            rc = -1;
        r->loss[s] = L / (double)n;
    }
    r->n = a->n;
    r->params = tl_download(be, a->params, a->n);
    be->free(mom);
    be->free(var);
    tl_batch_free(&tb);
    ql_llama_free(m);
    return rc;
}

int main(void) {
    /* Thousands of calls on tiny shapes: one thread keeps OpenMP's barriers from
     * dominating on a loaded machine. Thread-count independence of the ops is
     * test_ops_determinism's job. */
    omp_set_num_threads(1);
    tl_spec spec = tl_default();
    const char *dir = tl_tmpdir("train");
    CHECK(tl_write_model(dir, &spec) == 0);
    const ql_backend *be = ql_backend_cpu();

    run over = {0};
    int steps = 300;
    CHECK(train(dir, be, 1, 0.0f, steps, 1e-2f, &over) == 0);
    printf("overfit: loss %.4f at step 1, %.4f at 50, %.4f at 150, %.6f at %d\n", over.loss[0],
           over.loss[49], over.loss[149], over.loss[steps - 1], steps);
    CHECKF(over.loss[0] > 2.0, "initial loss %g should be near ln(50) or above", over.loss[0]);
    CHECKF(over.loss[steps - 1] < 0.02, "final loss %g is not near zero", over.loss[steps - 1]);
    free(over.params);

    run a = {0}, b = {0}, c = {0};
    CHECK(train(dir, be, 42, 0.1f, 6, 1e-3f, &a) == 0);
    CHECK(train(dir, be, 42, 0.1f, 6, 1e-3f, &b) == 0);
    CHECK(train(dir, be, 43, 0.1f, 6, 1e-3f, &c) == 0);
    CHECK(a.n == b.n && a.n == c.n && a.n > 0);
    CHECKF(!memcmp(a.loss, b.loss, 6 * sizeof(double)), "same seed, different losses");
    CHECKF(!memcmp(a.params, b.params, (size_t)a.n * 4), "same seed, different adapters");
    CHECKF(memcmp(a.loss, c.loss, 6 * sizeof(double)) != 0, "another seed, same losses");
    CHECKF(memcmp(a.params, c.params, (size_t)a.n * 4) != 0, "another seed, same adapters");
    free(a.params), free(b.params), free(c.params);
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
