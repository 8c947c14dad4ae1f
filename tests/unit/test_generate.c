/* Generation with the KV cache (model/llama_generate.h) against the
 * full-sequence forward (ql_llama_logits), and token sampling (train/sample.h):
 *   - tiny Llama (GQA 4/2 heads) and Qwen2-style (q/k/v biases) models with
 *     random non-zero adapters: greedy decoding through the cache, and at
 *     every step the cached logits equal the last row of ql_llama_logits over
 *     the whole sequence (1e-5 relative) and its argmax is the token chosen;
 *   - a prompt fed in chunks of 4, a batched step of three sequences at
 *     different lengths, and the adapters switched off (== a model loaded
 *     with r 0) give the same logits;
 *   - two greedy runs are identical;
 *   - sampling: greedy is the argmax (lowest id on ties), top-k 1 and a tiny
 *     top-p are greedy, top-k / top-p keep exactly the tokens they should,
 *     frequencies follow softmax(logits / T) (chi-square), a seed repeats;
 *   - SmolLM2-135M-Instruct when fetched (scripts/fetch_smollm2.sh): greedy
 *     ql_generate on a code prompt equals argmax recomputation over the full
 *     sequence at every step, and is the same alone and batched with another
 *     prompt;
 *   - SmolLM2 streaming multi-byte text (Japanese, emoji): every streamed piece
 *     is valid UTF-8 and the pieces concatenate to the final text;
 *   - chat generation prompts: the assistant header of ChatML and Llama 3,
 *     none for Llama 2 and Mistral (their templates end the user turn with
 *     " [/INST]"), on the tokenizer fixtures. */
#include <time.h>

#include "data/tokenizer.h"
#include "model/llama_generate.h"
#include "test_llama_util.h"
#include "train/generate.h"
#include "train/sample.h"

static int argmax(const float *x, int64_t n) {
    int b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int)i;
    return b;
}

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* Last row of the full forward over ids[0..n). */
static void full_last(ql_llama *m, const int32_t *ids, int64_t n, int64_t V, float *all,
                      float *out) {
    ql_batch b = {.batch = 1, .seq = n, .ids = ids};
    CHECK(ql_llama_logits(m, &b, all) == QL_OK);
    memcpy(out, all + (n - 1) * V, (size_t)V * sizeof(float));
}

static void randomize_adapters(ql_llama *m, uint64_t seed) {
    ql_adapters *a = ql_llama_adapters(m);
    float *h = malloc((size_t)a->n * sizeof(float));
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int64_t i = 0; i < a->n; i++) h[i] = ql_rng_uniform_range(&r, -0.3f, 0.3f);
    tl_upload(ql_backend_cpu(), a->params, h, a->n);
    free(h);
}

static ql_llama *load(const char *dir, int r, int64_t max_seq) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.quiet = 1;
    o.max_batch = 1;
    o.max_seq = max_seq;
    o.lora.r = r;
    o.lora.alpha = 8;
    ql_llama *m = NULL;
    ql_status st = ql_llama_load(dir, &o, &m);
    CHECKF(st == QL_OK, "load %s: %s", dir, ql_error_message());
    return m;
}

static void tiny_case(const tl_spec *spec, const char *tag) {
    const char *dir = tl_tmpdir(tag);
    CHECK(tl_write_model(dir, spec) == 0);
    enum { MAXSEQ = 48, PROMPT = 11, NEW = 24 };
    ql_llama *m = load(dir, 4, MAXSEQ), *base = load(dir, 0, MAXSEQ);
    if (!m || !base) return;
    randomize_adapters(m, 99);
    const int64_t V = spec->vocab;
    float *all = malloc((size_t)(MAXSEQ * V) * sizeof(float));
    float *want = malloc((size_t)V * sizeof(float)), *got = malloc(3 * (size_t)V * sizeof(float));
    int32_t ids[MAXSEQ];
    ql_rng r;
    ql_rng_seed(&r, 5);
    for (int i = 0; i < PROMPT; i++) ids[i] = (int32_t)ql_rng_below(&r, (uint64_t)V);

    /* Greedy decode through the cache against the full forward each step. */
    for (int run = 0; run < 2; run++) {
        ql_llama_kv *kv = NULL;
        CHECK(ql_llama_kv_create(m, 1, run ? 4 : 0, &kv) == QL_OK); /* run 1: chunks of 4 */
        CHECK(ql_llama_kv_reset(kv, 0, PROMPT + NEW) == QL_OK);
        CHECK(ql_llama_kv_prefill(kv, 0, ids, PROMPT, got) == QL_OK);
        int64_t n = PROMPT, bad_logits = 0, bad_tok = 0;
        double worst = 0;
        for (int step = 0; step < NEW; step++) {
            full_last(m, ids, n, V, all, want);
            double scale = max_abs(want, V), err = 0;
            for (int64_t v = 0; v < V; v++)
                if (fabs(got[v] - want[v]) > err) err = fabs(got[v] - want[v]);
            if (err / scale > worst) worst = err / scale;
            bad_logits += err > 1e-5 * scale;
            int tok = argmax(got, V);
            bad_tok += tok != argmax(want, V);
            ids[n++] = tok;
            if (step + 1 < NEW)
                CHECK(ql_llama_kv_step(kv, 1, (int[]){0}, &ids[n - 1], got) == QL_OK);
        }
        CHECKF(bad_logits == 0, "%s run %d: %lld steps with logits off (worst %.3g relative)", tag,
               run, (long long)bad_logits, worst);
        CHECKF(bad_tok == 0, "%s run %d: %lld greedy tokens differ from the full forward", tag, run,
               (long long)bad_tok);
        CHECKF(ql_llama_kv_length(kv, 0) == PROMPT + NEW - 1, "%s: cache length %lld", tag,
               (long long)ql_llama_kv_length(kv, 0));
        /* A full slot refuses another token. */
        CHECK(ql_llama_kv_step(kv, 1, (int[]){0}, &ids[0], got) == QL_OK);
        CHECK(ql_llama_kv_step(kv, 1, (int[]){0}, &ids[0], got) == QL_EINVAL);
        ql_llama_kv_free(kv);
    }
    /* Greedy is deterministic: the same prompt gives the same continuation. */
    {
        int32_t again[MAXSEQ];
        memcpy(again, ids, PROMPT * sizeof(int32_t));
        ql_llama_kv *kv = NULL;
        CHECK(ql_llama_kv_create(m, 1, 0, &kv) == QL_OK);
        CHECK(ql_llama_kv_reset(kv, 0, PROMPT + NEW) == QL_OK);
        CHECK(ql_llama_kv_prefill(kv, 0, again, PROMPT, got) == QL_OK);
        for (int n = PROMPT; n < PROMPT + NEW; n++) {
            again[n] = argmax(got, V);
            if (n + 1 < PROMPT + NEW)
                CHECK(ql_llama_kv_step(kv, 1, (int[]){0}, &again[n], got) == QL_OK);
        }
        CHECKF(!memcmp(again, ids, sizeof(int32_t) * (PROMPT + NEW)), "%s: two greedy runs differ",
               tag);
        ql_llama_kv_free(kv);
    }
    /* Three sequences of different lengths in one step. */
    {
        ql_llama_kv *kv = NULL;
        CHECK(ql_llama_kv_create(m, 3, 0, &kv) == QL_OK);
        int lens[3] = {5, 9, 14};
        for (int s = 0; s < 3; s++) {
            CHECK(ql_llama_kv_reset(kv, s, 16) == QL_OK);
            CHECK(ql_llama_kv_prefill(kv, s, ids + s, lens[s], NULL) == QL_OK);
        }
        int slots[3] = {2, 0, 1};
        int32_t next[3] = {ids[2 + lens[2]], ids[0 + lens[0]], ids[1 + lens[1]]};
        CHECK(ql_llama_kv_step(kv, 3, slots, next, got) == QL_OK);
        for (int j = 0; j < 3; j++) {
            int s = slots[j];
            full_last(m, ids + s, lens[s] + 1, V, all, want);
            CHECK_CLOSE(got + j * V, want, V, 1e-5 * max_abs(want, V), 0, "batched step logits");
        }
        CHECK(ql_llama_kv_step(kv, 2, (int[]){1, 1}, next, got) == QL_EINVAL);
        ql_llama_kv_free(kv);
    }
    /* Adapters off == the base model. */
    {
        ql_llama_kv *kv = NULL;
        CHECK(ql_llama_kv_create(m, 1, 0, &kv) == QL_OK);
        ql_llama_kv_use_adapters(kv, 0);
        CHECK(ql_llama_kv_reset(kv, 0, 20) == QL_OK);
        CHECK(ql_llama_kv_prefill(kv, 0, ids, 12, NULL) == QL_OK);
        CHECK(ql_llama_kv_step(kv, 1, (int[]){0}, &ids[12], got) == QL_OK);
        full_last(base, ids, 13, V, all, want);
        CHECK_CLOSE(got, want, V, 1e-5 * max_abs(want, V), 0, "adapters off vs r 0");
        full_last(m, ids, 13, V, all, want);
        double diff = 0;
        for (int64_t v = 0; v < V; v++) diff += fabs(got[v] - want[v]);
        CHECKF(diff > 1e-3, "%s: the adapters change nothing (%g)", tag, diff);
        ql_llama_kv_free(kv);
    }
    free(all);
    free(want);
    free(got);
    ql_llama_free(m);
    ql_llama_free(base);
}

/* ------------------------------------------------------------------ sampling */

static void sampling_tests(void) {
    enum { V = 6 };
    float logits[V] = {0.5f, 2.0f, 2.0f, -1.0f, 1.0f, -INFINITY};
    ql_sampler s;
    CHECK(ql_sampler_init(&s, V) == QL_OK);
    ql_rng r;
    ql_rng_seed(&r, 1);
    int32_t t;
    ql_sampling greedy = {.temperature = 0, .top_p = 1};
    CHECK(ql_sample(&s, logits, &greedy, &r, &t) == QL_OK && t == 1);
    ql_sampling k1 = {.temperature = 1.0, .top_k = 1, .top_p = 1};
    for (int i = 0; i < 50; i++) CHECK(ql_sample(&s, logits, &k1, &r, &t) == QL_OK && t == 1);
    ql_sampling p0 = {.temperature = 1.0, .top_p = 1e-6};
    for (int i = 0; i < 50; i++) CHECK(ql_sample(&s, logits, &p0, &r, &t) == QL_OK && t == 1);

    /* Frequencies: softmax(logits / T) over the survivors, chi-square. */
    struct {
        ql_sampling c;
        double p[V];
    } cases[3];
    double T = 0.8;
    double w[V], tot = 0;
    for (int v = 0; v < V; v++) tot += (w[v] = v < 5 ? exp(logits[v] / T) : 0);
    cases[0].c = (ql_sampling){.temperature = T, .top_p = 1};
    for (int v = 0; v < V; v++) cases[0].p[v] = w[v] / tot;
    /* top-k 3: ids 1, 2 and 4 */
    cases[1].c = (ql_sampling){.temperature = T, .top_k = 3, .top_p = 1};
    double t3 = w[1] + w[2] + w[4];
    for (int v = 0; v < V; v++) cases[1].p[v] = (v == 1 || v == 2 || v == 4) ? w[v] / t3 : 0;
    /* top-p 0.7: ids 1 and 2 hold p12 = 2 w1/tot; id 4 joins only if p12 < 0.7 */
    cases[2].c = (ql_sampling){.temperature = T, .top_p = 0.7};
    double p12 = (w[1] + w[2]) / tot, keep = p12 < 0.7 ? w[1] + w[2] + w[4] : w[1] + w[2];
    for (int v = 0; v < V; v++)
        cases[2].p[v] = (v == 1 || v == 2 || (v == 4 && p12 < 0.7)) ? w[v] / keep : 0;
    for (int c = 0; c < 3; c++) {
        enum { N = 20000 };
        int cnt[V] = {0};
        ql_rng_seed(&r, 100 + c);
        for (int i = 0; i < N; i++) {
            CHECK(ql_sample(&s, logits, &cases[c].c, &r, &t) == QL_OK);
            if (t >= 0 && t < V) cnt[t]++;
        }
        double chi = 0;
        int df = -1;
        for (int v = 0; v < V; v++) {
            if (cases[c].p[v] == 0) {
                CHECKF(cnt[v] == 0, "case %d: token %d drawn %d times, allowed never", c, v,
                       cnt[v]);
                continue;
            }
            double e = N * cases[c].p[v];
            chi += (cnt[v] - e) * (cnt[v] - e) / e;
            df++;
        }
        /* 99.9th percentile of chi-square with <= 4 degrees of freedom is 18.5. */
        CHECKF(chi < 18.5, "case %d: chi-square %.2f with %d degrees of freedom", c, chi, df);
    }
    /* The same seed gives the same draws. */
    int32_t a[32], b[32];
    ql_sampling any = {.temperature = 1.3, .top_k = 4, .top_p = 0.95};
    ql_rng_seed(&r, 77);
    for (int i = 0; i < 32; i++) CHECK(ql_sample(&s, logits, &any, &r, &a[i]) == QL_OK);
    ql_rng_seed(&r, 77);
    for (int i = 0; i < 32; i++) CHECK(ql_sample(&s, logits, &any, &r, &b[i]) == QL_OK);
    CHECK(!memcmp(a, b, sizeof a));
    /* top-k on a large random vocabulary keeps exactly the k largest. */
    {
        enum { BV = 5000, K = 40 };
        ql_sampler big;
        CHECK(ql_sampler_init(&big, BV) == QL_OK);
        float *lg = malloc(BV * sizeof(float));
        ql_rng_seed(&r, 3);
        for (int v = 0; v < BV; v++) lg[v] = (float)ql_rng_below(&r, 700) / 100.0f; /* ties */
        float *sorted = malloc(BV * sizeof(float));
        memcpy(sorted, lg, BV * sizeof(float));
        for (int i = 0; i < K; i++) /* partial selection sort: K-th largest */
            for (int j = i + 1; j < BV; j++)
                if (sorted[j] > sorted[i]) {
                    float x = sorted[i];
                    sorted[i] = sorted[j];
                    sorted[j] = x;
                }
        float kth = sorted[K - 1];
        ql_sampling ck = {.temperature = 5.0, .top_k = K, .top_p = 1};
        int below = 0;
        for (int i = 0; i < 3000; i++) {
            CHECK(ql_sample(&big, lg, &ck, &r, &t) == QL_OK);
            below += lg[t] < kth;
        }
        CHECKF(below == 0, "top-k drew %d tokens below the k-th largest logit", below);
        free(lg);
        free(sorted);
        ql_sampler_free(&big);
    }
    float none[V] = {-INFINITY, NAN, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(ql_sample(&s, none, &greedy, &r, &t) == QL_EINVAL);
    ql_error_clear();
    ql_sampler_free(&s);
}

/* ------------------------------------------------------- generation prompts */

/* The assistant header each format's Hugging Face template writes with
 * add_generation_prompt=True (Meta's Llama 3 template, ChatML; Llama 2 and
 * Mistral write none: the prompt ends at " [/INST]"). */
static void chat_prompt_tests(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    static const struct {
        const char *dir;
        ql_chat_format fmt;
        const char *want;
    } cases[] = {
        {"llama3_style", QL_CHAT_AUTO,
         "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {"qwen2_style", QL_CHAT_AUTO,
         "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"},
        {"sp_legacy", QL_CHAT_LLAMA2, "<s>[INST] Hi there [/INST]"},
        {"sp_legacy", QL_CHAT_MISTRAL, "<s> [INST] Hi there [/INST]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/%s", src ? src : ".",
                 cases[i].dir);
        ql_tokenizer *tok = NULL;
        if (ql_tokenizer_load(path, &tok) != QL_OK) {
            CHECKF(0, "tokenizer %s: %s", path, ql_error_message());
            continue;
        }
        ql_chat_message msg = {.role = QL_ROLE_USER, .content = "Hi there", .len = 8};
        char *text = NULL;
        size_t len = 0;
        ql_status st = ql_gen_render_chat(tok, &msg, 1, cases[i].fmt, &text, &len);
        CHECKF(st == QL_OK && text && !strcmp(text, cases[i].want) && len == strlen(text),
               "%s (%s): got '%s' (%s)", cases[i].dir, ql_chat_format_name(cases[i].fmt),
               text ? text : "", ql_error_message());
        free(text);
        /* The ids are the rendering's, special tokens parsed. */
        ql_ids a = {0}, b = {0};
        CHECK(ql_gen_prompt_text(tok, "Hi there", 8, 1, cases[i].fmt, &a) == QL_OK);
        CHECK(ql_tokenizer_encode(tok, cases[i].want, strlen(cases[i].want), QL_TOK_PARSE_SPECIAL,
                                  &b) == QL_OK);
        CHECK(a.n == b.n && a.n > 0 && !memcmp(a.v, b.v, a.n * sizeof *a.v));
        ql_ids_free(&a);
        ql_ids_free(&b);
        ql_chat_message two[2] = {msg, {.role = QL_ROLE_ASSISTANT, .content = "Hello", .len = 5}};
        CHECK(ql_gen_render_chat(tok, two, 2, cases[i].fmt, &text, &len) == QL_EINVAL);
        ql_error_clear();
        ql_tokenizer_free(tok);
    }
}

/* ------------------------------------------------------------------- SmolLM2 */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Streamed pieces: each valid UTF-8 on its own, together the final text. */
typedef struct pieces {
    char buf[8192];
    size_t len;
    int bad_utf8, calls;
} pieces;

static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static void on_piece(void *ctx, int64_t prompt, const char *text, size_t len) {
    pieces *p = ctx;
    (void)prompt;
    p->calls++;
    p->bad_utf8 |= !valid_utf8((const unsigned char *)text, len);
    if (p->len + len < sizeof p->buf) memcpy(p->buf + p->len, text, len);
    p->len += len;
}

static void smollm2_case(void) {
    char dir[1024];
    const char *cache = getenv("QL_CACHE");
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/SmolLM2-135M-Instruct-hf", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/qlora/SmolLM2-135M-Instruct-hf",
                 getenv("HOME") ? getenv("HOME") : "");
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (!ql_fs_exists(cfg)) {
        printf("SmolLM2 part skipped: no HF directory at %s (scripts/fetch_smollm2.sh)\n", dir);
        return;
    }
    enum { NEW = 20 };
    ql_tokenizer *tok = NULL;
    CHECKF(ql_tokenizer_load(dir, &tok) == QL_OK, "tokenizer: %s", ql_error_message());
    if (!tok) return;
    static const char *const texts[2] = {
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "# A function that reverses a string\ndef reverse(s):\n"};
    ql_ids p[2] = {{0}};
    for (int i = 0; i < 2; i++)
        CHECK(ql_gen_prompt_text(tok, texts[i], strlen(texts[i]), 0, QL_CHAT_AUTO, &p[i]) == QL_OK);
    ql_llama *m = load(dir, 0, (int64_t)p[0].n + NEW + 1);
    if (!m) {
        ql_tokenizer_free(tok);
        return;
    }
    /* The argmax of the full forward, step by step (tokens until an end id). */
    int32_t end_ids[8];
    int n_end = ql_gen_end_ids(tok, end_ids, 8);
    const int64_t V = ql_llama_config(m)->vocab_size;
    int64_t n = (int64_t)p[0].n;
    int32_t *seq = malloc((size_t)(n + NEW) * sizeof(int32_t));
    memcpy(seq, p[0].v, (size_t)n * sizeof(int32_t));
    float *all = malloc((size_t)((n + NEW) * V) * sizeof(float)), *last = malloc(V * sizeof(float));
    ql_ids ref = {0};
    for (int s = 0; s < NEW; s++) {
        full_last(m, seq, n, V, all, last);
        int32_t t = argmax(last, V);
        int end = 0;
        for (int e = 0; e < n_end; e++) end |= t == end_ids[e];
        if (end) break;
        ql_ids_push(&ref, t);
        seq[n++] = t;
    }
    char *ref_text = NULL;
    size_t ref_len = 0;
    CHECK(ql_tokenizer_decode(tok, ref.v, ref.n, QL_TOK_SKIP_SPECIAL, &ref_text, &ref_len) ==
          QL_OK);

    ql_gen_config gc;
    ql_gen_config_default(&gc);
    gc.max_new_tokens = NEW;
    ql_gen_output one[1], two[2];
    double t0 = now();
    CHECKF(ql_generate(m, tok, p, 1, &gc, NULL, NULL, one) == QL_OK, "%s", ql_error_message());
    double t1 = now();
    gc.batch = 2;
    CHECKF(ql_generate(m, tok, p, 2, &gc, NULL, NULL, two) == QL_OK, "%s", ql_error_message());
    double t2 = now();
    if (one[0].text && two[0].text && ref_text) {
        CHECKF(one[0].new_tokens == (int64_t)ref.n && !strcmp(one[0].text, ref_text),
               "cached greedy %lld tokens '%s' vs full-forward argmax %zu tokens '%s'",
               (long long)one[0].new_tokens, one[0].text, ref.n, ref_text);
        CHECKF(!strcmp(one[0].text, two[0].text), "alone '%s' vs batched '%s'", one[0].text,
               two[0].text);
        printf("SmolLM2 greedy: %s|%s\n", texts[0], one[0].text);
        printf("SmolLM2: %lld tokens alone in %.2f s; %lld + %lld batched in %.2f s\n",
               (long long)one[0].new_tokens, t1 - t0, (long long)two[0].new_tokens,
               (long long)two[1].new_tokens, t2 - t1);
    }
    /* Multi-byte text streamed token by token (the model writes Japanese and
     * emoji, whose bytes span tokens). */
    {
        static const char q[] = "Write the word hello in Japanese, Chinese and Russian, and add "
                                "two emojis.";
        ql_ids cp = {0};
        CHECK(ql_gen_prompt_text(tok, q, strlen(q), 1, QL_CHAT_AUTO, &cp) == QL_OK);
        ql_gen_config sc;
        ql_gen_config_default(&sc);
        sc.max_new_tokens = 40;
        pieces pc = {.len = 0};
        ql_gen_output o[1];
        ql_llama *mm = load(dir, 0, 2);
        if (mm) {
            CHECKF(ql_generate(mm, tok, &cp, 1, &sc, on_piece, &pc, o) == QL_OK, "%s",
                   ql_error_message());
            int multibyte = 0;
            for (size_t i = 0; o[0].text && i < o[0].len; i++)
                multibyte |= (unsigned char)o[0].text[i] >= 0x80;
            CHECKF(multibyte, "no multi-byte text to test the streaming with: '%s'", o[0].text);
            CHECKF(!pc.bad_utf8, "a streamed piece is not valid UTF-8");
            CHECKF(pc.len == o[0].len && o[0].text && !memcmp(pc.buf, o[0].text, pc.len),
                   "the %d streamed pieces (%zu bytes) are not the final text (%zu bytes)",
                   pc.calls, pc.len, o[0].len);
            ql_gen_outputs_free(o, 1);
            ql_llama_free(mm);
        }
        ql_ids_free(&cp);
    }
    ql_gen_outputs_free(one, 1);
    ql_gen_outputs_free(two, 2);
    free(ref_text);
    ql_ids_free(&ref);
    free(seq);
    free(all);
    free(last);
    for (int i = 0; i < 2; i++) ql_ids_free(&p[i]);
    ql_llama_free(m);
    ql_tokenizer_free(tok);
}

int main(void) {
    sampling_tests();
    chat_prompt_tests();
    tl_spec llama = tl_default();
    tiny_case(&llama, "gen_llama");
    tl_spec qwen = tl_default();
    qwen.arch = "Qwen2ForCausalLM";
    qwen.model_type = "qwen2";
    qwen.qkv_bias = 1;
    qwen.tied = 1;
    tiny_case(&qwen, "gen_qwen2");
    smollm2_case();
    return CHECK_DONE();
}
