/* Bad input to ql_llama_load and the step functions: each case fails with a
 * status and one message naming the file, tensor or key, and nothing crashes
 * or leaks (run under the sanitizer build in CI). */
#include "test_llama_util.h"

static int has(const char *needle) {
    const char *m = ql_error_message();
    if (strstr(m, needle)) return 1;
    fprintf(stderr, "  message lacks '%s': %s\n", needle, m);
    return 0;
}

static ql_llama_options opts(void) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.max_batch = 1;
    o.max_seq = 16;
    o.quiet = 1;
    return o;
}

/* Writes `spec` into a fresh directory and loads it; returns the status. */
static ql_status load_spec(const tl_spec *spec, const ql_llama_options *o, char *dir_out) {
    const char *dir = tl_tmpdir("bad");
    snprintf(dir_out, 256, "%s", dir);
    if (tl_write_model(dir, spec) != 0) return QL_EIO;
    ql_llama *m = (ql_llama *)1;
    ql_status st = ql_llama_load(dir, o, &m);
    CHECK(st == QL_OK ? m != NULL : m == NULL);
    ql_llama_free(st == QL_OK ? m : NULL);
    return st;
}

#define EXPECT(spec, o, code, ...)                                                                 \
    do {                                                                                           \
        char dir_[256];                                                                            \
        ql_status st_ = load_spec(&(spec), &(o), dir_);                                            \
        CHECKF(st_ == (code), "got %s: %s", ql_status_name(st_), ql_error_message());              \
        const char *needles_[] = {__VA_ARGS__, NULL};                                              \
        for (size_t i_ = 0; needles_[i_]; i_++) CHECK(has(needles_[i_]));                          \
        ql_fs_remove_tree(dir_);                                                                   \
    } while (0)

int main(void) {
    ql_llama_options o = opts();
    tl_spec s;

    s = tl_default(); /* sanity: the good model loads */
    EXPECT(s, o, QL_OK, "");

    s = tl_default();
    s.cfg_hidden = 48;
    EXPECT(s, o, QL_EFORMAT, "model.safetensors", "tensor 'lm_head.weight'", "= [50, 48]",
           "hidden_size");

    s = tl_default();
    s.cfg_layers = 3;
    EXPECT(s, o, QL_EFORMAT, "model.layers.2.", "missing tensor");

    s = tl_default();
    s.skip_tensor = "model.layers.1.mlp.down_proj.weight";
    EXPECT(s, o, QL_EFORMAT, "model.layers.1.mlp.down_proj.weight");

    s = tl_default();
    s.cfg_vocab = 60;
    EXPECT(s, o, QL_EFORMAT, "tensor 'lm_head.weight'", "vocab_size", "= [60, 64]");

    s = tl_default();
    s.arch = "GPT2LMHeadModel";
    EXPECT(s, o, QL_EUNSUPPORTED, "config.json", "architectures", "GPT2LMHeadModel");

    s = tl_default();
    s.model_type = "gpt2";
    EXPECT(s, o, QL_EUNSUPPORTED, "config.json", "model_type", "gpt2");

    s = tl_default();
    s.extra_json = ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}";
    EXPECT(s, o, QL_EUNSUPPORTED, "config.json", "rope_scaling", "yarn");

    s = tl_default();
    s.act = "gelu";
    EXPECT(s, o, QL_EUNSUPPORTED, "config.json", "hidden_act", "gelu");

    s = tl_default();
    s.arch = "MistralForCausalLM";
    s.model_type = "mistral";
    s.extra_json = ", \"sliding_window\": 8";
    EXPECT(s, o, QL_EUNSUPPORTED, "config.json", "sliding_window");
    s.extra_json = ", \"sliding_window\": 4096";
    EXPECT(s, o, QL_OK, "");

    s = tl_default();
    ql_llama_options bad = o;
    bad.lora.targets = 0;
    EXPECT(s, bad, QL_EINVAL, "lora.targets", "matches no module");
    bad = o;
    bad.lora.targets = 1u << 9;
    EXPECT(s, bad, QL_EINVAL, "lora.targets");
    bad = o;
    bad.lora.r = -2;
    EXPECT(s, bad, QL_EINVAL, "lora.r");
    bad = o;
    bad.lora.dropout = 1.0f;
    EXPECT(s, bad, QL_EINVAL, "lora.dropout");
    bad = o;
    bad.lora.alpha = 0.0f;
    EXPECT(s, bad, QL_EINVAL, "lora.alpha");
    bad = o;
    bad.blocksize = 48;
    EXPECT(s, bad, QL_EINVAL, "block size 48");
    bad = o;
    bad.max_seq = 0;
    EXPECT(s, bad, QL_EINVAL, "capacity");

    /* Paths. */
    ql_llama *m = NULL;
    CHECK(ql_llama_load("/nonexistent/model-dir", &o, &m) == QL_ENOTFOUND && !m);
    CHECK(has("/nonexistent/model-dir"));
    CHECK(ql_llama_load("/nonexistent/model.gguf", &o, &m) == QL_ENOTFOUND && !m);
    CHECK(has("/nonexistent/model.gguf"));

    /* Batches the loaded model refuses. */
    const char *dir = tl_tmpdir("badbatch");
    s = tl_default();
    CHECK(tl_write_model(dir, &s) == 0);
    CHECK(ql_llama_load(dir, &o, &m) == QL_OK);
    if (m) {
        tl_batch tb = tl_random_batch(1, 16, s.vocab, 1);
        double L;
        int64_t n;
        tb.ids[5] = 50;
        CHECK(ql_llama_forward_backward(m, &tb.b, 1, 1.0f, &L, &n) == QL_EINVAL);
        CHECK(has("token id 50 at row 0, position 5"));
        tb.ids[5] = 1;
        tb.targets[7] = 77;
        CHECK(ql_llama_forward_backward(m, &tb.b, 0, 1.0f, &L, &n) == QL_EINVAL);
        CHECK(has("target 77 at row 0, position 7"));
        tl_batch_free(&tb);
        tb = tl_random_batch(2, 16, s.vocab, 1);
        CHECK(ql_llama_forward_backward(m, &tb.b, 0, 1.0f, &L, &n) == QL_EINVAL);
        CHECK(has("exceeds the capacity"));
        tl_batch_free(&tb);
        ql_llama_free(m);
    }
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
