/* Packing through the model: rows built by data/packing.c and filled by the
 * batcher keep every document to itself. Changing one document's tokens
 * leaves every other document's logits bit-identical; each document's logits
 * in a packed row equal its logits alone in a padded row; and the packed
 * batch gives the same loss sum, target count and adapter gradients as the
 * same documents one per row. Tiny random model, both CPU backends. */
#include "data/packing.h"
#include "test_llama_util.h"
#include "train/batcher.h"

#define V 50
#define SEQ 24
#define N_DOC 9

static const int64_t lens[N_DOC] = {9, 5, 13, 7, 11, 3, 8, 6, 10};

/* Documents with random ids; the loader's convention for targets: the next
 * id, -100 on every fourth position, -1 on the last. */
static ql_token_data make_docs(uint64_t seed) {
    ql_token_data d;
    memset(&d, 0, sizeof d);
    d.n = N_DOC;
    d.off = calloc(N_DOC + 1, sizeof *d.off);
    d.line = calloc(N_DOC, sizeof *d.line);
    for (int i = 0; i < N_DOC; i++) d.off[i + 1] = d.off[i] + lens[i], d.line[i] = i + 1;
    d.ids = malloc((size_t)d.off[N_DOC] * sizeof *d.ids);
    d.targets = malloc((size_t)d.off[N_DOC] * sizeof *d.targets);
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int64_t t = 0; t < d.off[N_DOC]; t++) d.ids[t] = (int32_t)ql_rng_below(&r, V);
    for (int i = 0; i < N_DOC; i++)
        for (int64_t t = d.off[i]; t < d.off[i + 1]; t++)
            d.targets[t] = t == d.off[i + 1] - 1     ? -1
                           : (t - d.off[i]) % 4 == 3 ? -100
                                                     : d.ids[t + 1];
    d.max_len = 13;
    d.path = strdup("docs");
    return d;
}

static void drop(ql_token_data *d) {
    free(d->off), free(d->line), free(d->ids), free(d->targets), free(d->path);
}

/* Where each document lands: row and first column. */
static void locate(const ql_packing *p, const ql_token_data *d, int64_t *row, int64_t *col) {
    for (int64_t r = 0; r < p->n_rows; r++) {
        int64_t c = 0;
        for (int64_t k = p->row_off[r]; k < p->row_off[r + 1]; k++) {
            row[p->rec[k]] = r;
            col[p->rec[k]] = c;
            c += d->off[p->rec[k] + 1] - d->off[p->rec[k]];
        }
    }
}

static ql_status logits_of(ql_llama *m, ql_batcher *b, int64_t rows, float *out, int64_t *seq) {
    ql_batch mb;
    int64_t tok;
    QL_TRY(ql_batcher_fill(b, 0, rows, &mb, &tok));
    *seq = mb.seq;
    return ql_llama_logits(m, &mb, out);
}

static void test_backend(const char *dir, const ql_backend *be) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.max_batch = N_DOC;
    o.max_seq = SEQ;
    o.quiet = 1;
    ql_llama *m;
    if (ql_llama_load(dir, &o, &m) != QL_OK) {
        CHECKF(0, "load: %s", ql_error_message());
        return;
    }
    ql_adapters *a = ql_llama_adapters(m);
    float *pa = tl_download(be, a->params, a->n);
    for (int64_t e = 0; e < a->n; e++)
        if (pa[e] == 0.0f) pa[e] = 0.01f * (float)((e % 7) - 3);
    tl_upload(be, a->params, pa, a->n);
    free(pa);

    ql_token_data d = make_docs(3), d2 = make_docs(3);
    ql_packing p;
    CHECK(ql_packing_build(&d, SEQ, 1, &p) == QL_OK);
    CHECKF(p.n_rows == 3, "%lld rows", (long long)p.n_rows);
    int64_t row[N_DOC], col[N_DOC];
    locate(&p, &d, row, &col[0]);
    /* perturb document 4, which shares its row with others */
    const int victim = 4;
    CHECK(p.row_off[row[victim] + 1] - p.row_off[row[victim]] >= 2);
    for (int64_t t = d2.off[victim]; t < d2.off[victim + 1]; t++) d2.ids[t] = (d2.ids[t] + 7) % V;

    float *l1 = malloc((size_t)N_DOC * SEQ * V * sizeof(float));
    float *l2 = malloc((size_t)N_DOC * SEQ * V * sizeof(float));
    float *l3 = malloc((size_t)N_DOC * SEQ * V * sizeof(float));
    ql_batcher b1, b2;
    CHECK(ql_batcher_init_rows(&b1, &d, &p, 1, 0, 1, N_DOC) == QL_OK);
    CHECK(ql_batcher_init_rows(&b2, &d2, &p, 1, 0, 1, N_DOC) == QL_OK);
    int64_t s1, s2;
    CHECKF(logits_of(m, &b1, p.n_rows, l1, &s1) == QL_OK, "%s", ql_error_message());
    CHECKF(logits_of(m, &b2, p.n_rows, l2, &s2) == QL_OK, "%s", ql_error_message());
    int others_same = 1, victim_moved = 0;
    for (int i = 0; i < N_DOC; i++) {
        const float *x = l1 + (row[i] * s1 + col[i]) * V, *y = l2 + (row[i] * s1 + col[i]) * V;
        int same = !memcmp(x, y, (size_t)(lens[i] * V) * sizeof(float));
        if (i == victim)
            victim_moved = !same;
        else
            others_same &= same;
    }
    CHECKF(others_same, "%s: a document other than the perturbed one changed", be->name);
    CHECKF(victim_moved, "%s: the perturbed document did not change", be->name);

    /* one document per row, padded: the same logits per document */
    ql_packing u;
    ql_batcher bu;
    CHECK(ql_packing_build(&d, SEQ, 0, &u) == QL_OK);
    CHECK(ql_batcher_init_rows(&bu, &d, &u, 1, 0, 0, N_DOC) == QL_OK);
    int64_t su;
    CHECKF(logits_of(m, &bu, N_DOC, l3, &su) == QL_OK, "%s", ql_error_message());
    CHECK(su == 13);
    for (int i = 0; i < N_DOC; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s: document %d packed vs alone", be->name, i);
        CHECK_CLOSE(l1 + (row[i] * s1 + col[i]) * V, l3 + i * su * V, lens[i] * V, 1e-5, 1e-5,
                    what);
    }

    /* loss and gradients: packed rows vs one document per row */
    double loss_p, loss_u;
    int64_t nt_p, nt_u, tok;
    ql_batch mb;
    tl_zero_grads(be, a);
    CHECK(ql_batcher_fill(&b1, 0, p.n_rows, &mb, &tok) == QL_OK);
    CHECK(ql_llama_forward_backward(m, &mb, 1, 0.01f, &loss_p, &nt_p) == QL_OK);
    float *g_p = tl_download(be, a->grads, a->n);
    tl_zero_grads(be, a);
    CHECK(ql_batcher_fill(&bu, 0, N_DOC, &mb, &tok) == QL_OK);
    CHECK(ql_llama_forward_backward(m, &mb, 1, 0.01f, &loss_u, &nt_u) == QL_OK);
    float *g_u = tl_download(be, a->grads, a->n);
    CHECKF(nt_p == nt_u && nt_p == ql_batcher_count_targets(&b1, 0, p.n_rows), "targets %lld %lld",
           (long long)nt_p, (long long)nt_u);
    CHECKF(fabs(loss_p - loss_u) <= 1e-5 * fabs(loss_u), "%s: loss %.9g packed, %.9g alone",
           be->name, loss_p, loss_u);
    float gmax = 0;
    for (int64_t e = 0; e < a->n; e++) gmax = fmaxf(gmax, fabsf(g_u[e]));
    CHECK(gmax > 0);
    CHECK_CLOSE(g_p, g_u, a->n, 1e-4 * gmax, 0, "gradients packed vs alone");
    free(g_p), free(g_u);

    ql_batcher_free(&b1), ql_batcher_free(&b2), ql_batcher_free(&bu);
    ql_packing_free(&p), ql_packing_free(&u);
    drop(&d), drop(&d2);
    free(l1), free(l2), free(l3);
    ql_llama_free(m);
}

int main(void) {
    tl_spec spec = tl_default();
    spec.vocab = V;
    const char *dir = tl_tmpdir("packing_model");
    CHECK(tl_write_model(dir, &spec) == 0);
    test_backend(dir, ql_backend_cpu_ref());
    test_backend(dir, ql_backend_cpu());
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
