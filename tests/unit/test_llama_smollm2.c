/* The real model: SmolLM2-135M-Instruct as an HF directory (made by
 * scripts/fetch_smollm2.sh into ${QL_CACHE:-~/.cache/qlora}; skipped with exit
 * 77 when it is not there). Loads it in NF4, checks the loss of English text
 * (tests/fixtures/smollm2/eval.jsonl, tokenized by HF tokenizers) is finite
 * and far below ln(vocab), that ql_llama_logits agrees with the loss, and
 * times a forward+backward pass over 512 tokens. */
#include <jansson.h>
#include <time.h>

#include "test_llama_util.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* All input_ids of the file, concatenated (at most cap). */
static int64_t read_tokens(const char *path, int32_t *out, int64_t cap, int64_t *first_len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1 << 16];
    int64_t n = 0;
    *first_len = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        json_t *ids = json_object_get(o, "input_ids");
        for (size_t i = 0; i < json_array_size(ids) && n < cap; i++)
            out[n++] = (int32_t)json_integer_value(json_array_get(ids, i));
        if (!*first_len) *first_len = n;
        json_decref(o);
    }
    fclose(f);
    return n;
}

int main(void) {
    char dir[1024], fixture[1024];
    const char *cache = getenv("QL_CACHE");
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/SmolLM2-135M-Instruct-hf", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/qlora/SmolLM2-135M-Instruct-hf",
                 getenv("HOME") ? getenv("HOME") : "");
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (!ql_fs_exists(cfg)) {
        printf("skipped: no SmolLM2 HF directory at %s (run scripts/fetch_smollm2.sh)\n", dir);
        return 77;
    }
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/smollm2/eval.jsonl", src ? src : ".");

    enum { SEQ = 512 };
    static int32_t ids[SEQ + 1];
    int64_t first = 0, n = read_tokens(fixture, ids, SEQ + 1, &first);
    CHECKF(n > 64, "could not read tokens from %s", fixture);
    if (n <= 64) return CHECK_DONE();

    ql_llama_options o;
    ql_llama_options_default(&o);
    o.max_batch = 1;
    o.max_seq = SEQ;
    double t0 = now();
    ql_llama *m;
    ql_status st = ql_llama_load(dir, &o, &m);
    CHECKF(st == QL_OK, "load: %s", ql_error_message());
    if (st != QL_OK) return CHECK_DONE();
    double t_load = now() - t0;
    const ql_hf_config *c = ql_llama_config(m);
    CHECK(c->vocab_size == 49152 && c->num_hidden_layers == 30 && c->tie_word_embeddings);

    /* The first paragraph: loss and logits. */
    int64_t L1 = first - 1;
    int32_t *tg = malloc((size_t)SEQ * sizeof(int32_t));
    for (int64_t t = 0; t < L1; t++) tg[t] = ids[t + 1];
    ql_batch b = {.batch = 1, .seq = L1, .ids = ids, .targets = tg};
    double loss;
    int64_t nt;
    CHECK(ql_llama_forward_backward(m, &b, 0, 1.0f, &loss, &nt) == QL_OK);
    double mean = loss / (double)nt, lnv = log((double)c->vocab_size);
    printf("SmolLM2 first paragraph: %lld tokens, mean loss %.4f (ln vocab %.2f)\n", (long long)nt,
           mean, lnv);
    CHECK(nt == L1 && isfinite(mean) && mean > 0.1 && mean < 0.5 * lnv);

    float *logits = malloc((size_t)(L1 * c->vocab_size) * sizeof(float));
    CHECK(ql_llama_logits(m, &b, logits) == QL_OK);
    double ce = 0.0;
    for (int64_t t = 0; t < L1; t++) {
        const float *l = logits + t * c->vocab_size;
        double mx = -INFINITY, s = 0.0;
        for (int64_t v = 0; v < c->vocab_size; v++) mx = fmax(mx, l[v]);
        for (int64_t v = 0; v < c->vocab_size; v++) s += exp(l[v] - mx);
        ce += mx + log(s) - l[tg[t]];
    }
    CHECKF(fabs(ce - loss) < 1e-4 * loss, "cross-entropy of the logits %.6f vs loss %.6f", ce,
           loss);
    free(logits);

    /* 512 tokens, forward and backward (adapters on all seven projections). */
    for (int64_t t = 0; t < SEQ; t++) tg[t] = t + 1 < n ? ids[t + 1] : -100;
    b.seq = SEQ;
    double loss512 = 0;
    t0 = now();
    CHECK(ql_llama_forward_backward(m, &b, 1, 1.0f / SEQ, &loss512, &nt) == QL_OK);
    double best = now() - t0;
    t0 = now();
    CHECK(ql_llama_forward_backward(m, &b, 0, 1.0f, &loss512, &nt) == QL_OK);
    double t_fwd = now() - t0;
    printf("SmolLM2 512 tokens: mean loss %.4f; load %.2f s, forward %.2f s, forward+backward "
           "%.2f s (%.0f tokens/s)\n",
           loss512 / nt, t_load, t_fwd, best, SEQ / best);
    CHECK(isfinite(loss512) && loss512 / nt < 0.5 * lnv);
    /* The gradients are finite and not all zero (B = 0, so only dB moves). */
    ql_adapters *a = ql_llama_adapters(m);
    float *g = tl_download(o.be, a->grads, a->n);
    double gn = 0.0;
    for (int64_t e = 0; e < a->n; e++) gn += (double)g[e] * g[e];
    CHECKF(isfinite(gn) && gn > 0.0, "gradient norm² %g", gn);
    free(g);
    ql_llama_free(m);

    /* The same model from the GGUF file it was converted from (Q4_1, then NF4
     * on load): nearly the same loss on the first paragraph. */
    char gguf[1100];
    snprintf(gguf, sizeof gguf, "%.*s/SmolLM2-135M-Instruct.Q4_1.gguf",
             (int)(strrchr(dir, '/') - dir), dir);
    if (ql_fs_exists(gguf)) {
        o.quiet = 1;
        st = ql_llama_load(gguf, &o, &m);
        CHECKF(st == QL_OK, "load %s: %s", gguf, ql_error_message());
        if (st == QL_OK) {
            for (int64_t t = 0; t < L1; t++) tg[t] = ids[t + 1];
            b.seq = L1;
            double lg;
            CHECK(ql_llama_forward_backward(m, &b, 0, 1.0f, &lg, &nt) == QL_OK);
            printf("SmolLM2 from GGUF: first paragraph mean loss %.4f (HF directory %.4f)\n",
                   lg / nt, mean);
            CHECK(nt == L1 && fabs(lg / nt - mean) < 0.05 * mean);
            ql_llama_free(m);
        }
    } else {
        printf("no %s: GGUF part skipped\n", gguf);
    }
    free(tg);
    return CHECK_DONE();
}
