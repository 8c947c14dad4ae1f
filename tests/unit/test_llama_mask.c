/* Packed rows with a document mask: changing one document's tokens leaves
 * every other document's logits bit-identical (and without the mask they do
 * change); a document packed mid-row with positions restarting at 0 gives the
 * logits it has alone at the start of a row; the lm_head split into chunks
 * gives the same logits. Both CPU backends. */
#include "test_llama_util.h"

#define B 2
#define S 24
#define V 50

static const int doc_len[B][3] = {{8, 7, 9}, {10, 14, 0}};

static void run(ql_llama *m, const int32_t *ids, const int32_t *doc, const int32_t *pos,
                float *logits) {
    ql_batch b = {.batch = B, .seq = S, .ids = ids, .pos = pos, .doc = doc};
    ql_status st = ql_llama_logits(m, &b, logits);
    CHECKF(st == QL_OK, "logits: %s", ql_error_message());
}

static int same_rows(const float *a, const float *b, int64_t t0, int64_t t1) {
    return !memcmp(a + t0 * V, b + t0 * V, (size_t)((t1 - t0) * V) * sizeof(float));
}

static void test_backend(const char *dir, const ql_backend *be) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.max_batch = B;
    o.max_seq = S;
    o.quiet = 1;
    ql_llama *m;
    if (ql_llama_load(dir, &o, &m) != QL_OK) {
        CHECKF(0, "load: %s", ql_error_message());
        return;
    }
    /* Nonzero B so the adapters take part. */
    ql_adapters *a = ql_llama_adapters(m);
    float *p = tl_download(be, a->params, a->n);
    for (int64_t e = 0; e < a->n; e++)
        if (p[e] == 0.0f) p[e] = 0.01f * (float)((e % 7) - 3);
    tl_upload(be, a->params, p, a->n);
    free(p);

    int32_t ids[B * S], ids2[B * S], doc[B * S], pos[B * S];
    ql_rng r;
    ql_rng_seed(&r, 5);
    for (int b = 0; b < B; b++) {
        int t = 0;
        for (int d = 0; d < 3; d++)
            for (int i = 0; i < doc_len[b][d]; i++, t++) {
                doc[b * S + t] = d;
                pos[b * S + t] = i;
            }
    }
    for (int t = 0; t < B * S; t++) ids[t] = (int32_t)ql_rng_below(&r, V);
    memcpy(ids2, ids, sizeof ids);
    for (int t = 8; t < 15; t++) ids2[t] = (ids[t] + 1 + t) % V; /* row 0, document 1 */

    float *l1 = malloc(B * S * V * sizeof(float)), *l2 = malloc(B * S * V * sizeof(float));
    run(m, ids, doc, pos, l1);
    run(m, ids2, doc, pos, l2);
    CHECKF(same_rows(l1, l2, 0, 8), "%s: document 0 changed", be->name);
    CHECKF(same_rows(l1, l2, 15, 24), "%s: document 2 changed", be->name);
    CHECKF(same_rows(l1, l2, S, 2 * S), "%s: row 1 changed", be->name);
    CHECKF(!same_rows(l1, l2, 8, 15), "%s: the perturbed document did not change", be->name);

    /* Control: without the mask, document 2 sees document 1. */
    run(m, ids, NULL, pos, l1);
    run(m, ids2, NULL, pos, l2);
    CHECKF(same_rows(l1, l2, 0, 8), "%s: no mask: tokens before the change moved", be->name);
    CHECKF(!same_rows(l1, l2, 15, 24), "%s: no mask: document 2 did not change", be->name);

    /* Document 2 of row 0 alone at the start of a row, same positions. */
    run(m, ids, doc, pos, l1);
    int32_t ids3[B * S], doc3[B * S], pos3[B * S];
    for (int t = 0; t < B * S; t++) ids3[t] = ids[t], doc3[t] = 1, pos3[t] = t % S;
    for (int i = 0; i < 9; i++) ids3[i] = ids[15 + i], doc3[i] = 0;
    run(m, ids3, doc3, pos3, l2);
    CHECK_CLOSE(l2, l1 + 15 * V, 9 * V, 1e-5, 1e-5, "document alone vs packed");

    /* The lm_head in chunks of 7 rows: the same logits (exactly on the
     * reference, whose sums do not depend on the number of rows). */
    ql_llama *mc;
    o.logit_rows = 7;
    if (ql_llama_load(dir, &o, &mc) == QL_OK) {
        ql_adapters *ac = ql_llama_adapters(mc);
        float *pm = tl_download(be, a->params, a->n);
        tl_upload(be, ac->params, pm, ac->n);
        free(pm);
        run(mc, ids, doc, pos, l2);
        if (!strcmp(be->name, "cpu-ref"))
            CHECKF(same_rows(l1, l2, 0, B * S), "chunked logits differ");
        else
            CHECK_CLOSE(l2, l1, B * S * V, 1e-5, 1e-5, "chunked logits");
        ql_llama_free(mc);
    }
    free(l1), free(l2);
    ql_llama_free(m);
}

int main(void) {
    tl_spec spec = tl_default();
    spec.vocab = V;
    const char *dir = tl_tmpdir("mask");
    CHECK(tl_write_model(dir, &spec) == 0);
    test_backend(dir, ql_backend_cpu_ref());
    test_backend(dir, ql_backend_cpu());
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
