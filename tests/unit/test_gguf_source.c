/* A GGUF file as a model source (model/source.h).
 *
 * Each fixture model in tests/fixtures/gguf/ was made from an HF config and
 * random HF-layout weights by tests/fixtures/make_gguf_fixtures.py (PyPI gguf
 * and numpy): <model>.config.json is that config and <model>.ref.safetensors
 * holds the dequantized tensors with the Q/K permutation undone by numpy.
 * The source must reproduce the config and every tensor bit for bit. Bad
 * models are the Llama fixture with one field patched. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "model/gguf.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/safetensors.h"
#include "model/source.h"
#include "test_gguf_util.h"

static void check_config(const char *stem, const ql_hf_config *got) {
    char name[128];
    snprintf(name, sizeof name, "%s.config.json", stem);
    bytes text = load(fixture(name));
    ql_hf_config w;
    ql_status st = ql_hf_config_parse((const char *)text.p, text.n, name, &w);
    free(text.p);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st != QL_OK) return;
    CHECKF(!strcmp(got->model_type, w.model_type), "%s: model_type %s", stem, got->model_type);
    CHECKF(!strcmp(got->architecture, w.architecture), "%s: %s", stem, got->architecture);
#define SAME(field)                                                                                \
    CHECKF(got->field == w.field, "%s: " #field " %g, want %g", stem, (double)got->field,          \
           (double)w.field)
    SAME(hidden_size);
    SAME(intermediate_size);
    SAME(num_hidden_layers);
    SAME(num_attention_heads);
    SAME(num_key_value_heads);
    SAME(head_dim);
    SAME(vocab_size);
    SAME(max_position_embeddings);
    SAME(rms_norm_eps);
    SAME(rope_theta);
    SAME(rope_type);
    SAME(rope_factor);
    SAME(rope_low_freq_factor);
    SAME(rope_high_freq_factor);
    SAME(rope_original_max_position_embeddings);
    SAME(tie_word_embeddings);
    SAME(attention_bias);
    SAME(qkv_bias);
    SAME(mlp_bias);
    SAME(torch_dtype);
#undef SAME
    static const char *ids[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++)
        CHECKF(json_equal(json_object_get(got->json, ids[i]), json_object_get(w.json, ids[i])),
               "%s: %s", stem, ids[i]);
    ql_hf_config_free(&w);
}

/* Every reference tensor, bit for bit; and nothing else in the source. */
static void check_tensors(const char *stem, const ql_model_source *s) {
    char name[128];
    snprintf(name, sizeof name, "%s.ref.safetensors", stem);
    ql_st_file ref;
    ql_status st = ql_st_open(fixture(name), &ref);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st != QL_OK) return;
    size_t n_linear_checked = 0;
    for (size_t i = 0; i < ref.n_tensors; i++) {
        const ql_st_tensor *t = &ref.tensors[i];
        CHECKF(s->has(s, t->name), "%s: has(%s)", stem, t->name);
        float *want = malloc((size_t)t->numel * 4), *got = malloc((size_t)t->numel * 4);
        CHECK(ql_st_to_f32(&ref, t, want) == QL_OK);
        st = s->get_f32(s, t->name, got);
        CHECKF(st == QL_OK, "%s: get_f32(%s): %s", stem, t->name, ql_error_message());
        long bad = 0, first = -1;
        for (int64_t k = 0; st == QL_OK && k < t->numel; k++)
            if (memcmp(got + k, want + k, 4)) {
                if (first < 0) first = (long)k;
                bad++;
            }
        CHECKF(bad == 0, "%s: %s: %ld of %lld values differ (first at %ld: %.9g vs %.9g)", stem,
               t->name, bad, (long long)t->numel, first, first >= 0 ? got[first] : 0.0,
               first >= 0 ? want[first] : 0.0);
        CHECK(s->is_q4(s, t->name) == 0);
        n_linear_checked += strstr(t->name, "_proj.weight") != NULL;
        free(want);
        free(got);
    }
    CHECK(n_linear_checked == 7 * (size_t)s->cfg.num_hidden_layers);
    CHECK(s->has(s, "lm_head.weight") == !s->cfg.tie_word_embeddings);
    CHECK((ql_st_find(&ref, "lm_head.weight") != NULL) == !s->cfg.tie_word_embeddings);
    CHECK(!s->has(s, "model.layers.99.mlp.up_proj.weight") && !s->has(s, "rope_freqs.weight"));
    float x;
    CHECK(s->get_f32(s, "model.layers.99.mlp.up_proj.weight", &x) == QL_ENOTFOUND &&
          msg_has("model.layers.99.mlp.up_proj.weight"));
    ql_q4 q;
    CHECK(s->get_q4(s, "model.layers.0.mlp.up_proj.weight", &q) == QL_EUNSUPPORTED);
    ql_st_close(&ref);
}

/* The raw GGUF rows of layer 0's q_proj differ from the HF ones exactly when
 * the file is permuted, so the reference pins the un-permutation down. */
static void check_permuted(const ql_model_source *s, int permuted) {
    const ql_gguf_file *f = ql_gguf_source_file(s);
    CHECK(f != NULL);
    if (!f) return;
    const ql_gguf_tensor *t = ql_gguf_find_tensor(f, "blk.0.attn_q.weight");
    float *raw = malloc((size_t)t->numel * 4), *hf = malloc((size_t)t->numel * 4);
    CHECK(ql_gguf_tensor_f32(f, t, raw) == QL_OK);
    CHECK(s->get_f32(s, "model.layers.0.self_attn.q_proj.weight", hf) == QL_OK);
    CHECK((memcmp(raw, hf, (size_t)t->numel * 4) != 0) == permuted);
    free(raw);
    free(hf);
}

static void check_tokenizer(const ql_model_source *s, int64_t eos) {
    CHECK(!strcmp(s->tokenizer, "gpt2"));
    const ql_gguf_file *f = ql_gguf_source_file(s);
    if (!f) return;
    ql_gguf_str *toks = NULL, *merges = NULL;
    int64_t *types = NULL;
    uint64_t nt = 0, nm = 0, ny = 0;
    CHECK(ql_gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &nt) == QL_OK && nt == 40);
    CHECK(toks && toks[3].len == 12 && !memcmp(toks[3].p, "<|im_start|>", 12));
    CHECK(toks && toks[39].len == 3 && !memcmp(toks[39].p, "\xc4\xa0j", 3));
    CHECK(ql_gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &nm) == QL_OK && nm == 6);
    CHECK(merges && merges[3].len == 6 && !memcmp(merges[3].p, "\xc4\xa0th e", 6));
    CHECK(ql_gguf_get_int_array(f, "tokenizer.ggml.token_type", &types, &ny) == QL_OK && ny == 40);
    CHECK(types && types[0] == 2 && types[1] == 3 && types[4] == 1);
    int64_t id;
    CHECK(ql_gguf_token_id(f, "bos", &id) == QL_OK && id == 1);
    CHECK(ql_gguf_token_id(f, "eos", &id) == QL_OK && id == eos);
    CHECK(ql_gguf_token_id(f, "unknown", &id) == QL_OK && id == -1);
    free(toks);
    free(merges);
    free(types);
}

static void test_model(const char *stem, int permuted, int64_t eos) {
    char name[128];
    snprintf(name, sizeof name, "%s.gguf", stem);
    ql_model_source s;
    ql_status st = ql_gguf_source_open(fixture(name), &s);
    CHECKF(st == QL_OK, "%s: %s", stem, ql_error_message());
    if (st != QL_OK) return;
    CHECK(s.kind == QL_SOURCE_GGUF && !strcmp(s.path, fixture(name)));
    check_config(stem, &s.cfg);
    check_tensors(stem, &s);
    check_permuted(&s, permuted);
    check_tokenizer(&s, eos);
    s.close(&s);
    CHECK(s.impl == NULL && s.cfg.json == NULL);
}

/* ---- bad models ------------------------------------------------------------------ */

static bytes llama_bytes;

static void expect_bad(const char *name, bytes b, ql_status want, const char *must1,
                       const char *must2) {
    const char *path = save(name, b.p, b.n);
    ql_model_source s;
    ql_error_clear();
    ql_status st = ql_gguf_source_open(path, &s);
    CHECKF(st == want, "%s: status %s, want %s (%s)", name, ql_status_name(st),
           ql_status_name(want), ql_error_message());
    CHECKF(msg_has(path), "%s: message does not name the file", name);
    CHECKF(msg_has(must1), "%s", name);
    CHECKF(msg_has(must2), "%s", name);
    CHECK(s.impl == NULL && s.cfg.json == NULL);
    free(b.p);
}

static void test_bad_models(void) {
    bytes b;

    b = copy_of(llama_bytes);
    rename_str(b, "llama", "bloom");
    expect_bad("arch.gguf", b, QL_EUNSUPPORTED, "general.architecture 'bloom'", NULL);

    b = copy_of(llama_bytes);
    rename_str(b, "blk.1.attn_k.weight", "blk.1.attn_x.weight");
    expect_bad("missing.gguf", b, QL_EFORMAT, "missing tensor 'blk.1.attn_k.weight'",
               "'model.layers.1.self_attn.k_proj.weight'");

    b = copy_of(llama_bytes);
    put_u64(b, tinfo_ne(b, "blk.0.attn_norm.weight", 0), 16);
    expect_bad("shape.gguf", b, QL_EFORMAT, "tensor 'blk.0.attn_norm.weight'",
               "'model.layers.0.input_layernorm.weight') has ne [16], expected [32]");

    b = copy_of(llama_bytes);
    put_u64(b, tinfo_ne(b, "blk.1.ffn_down.weight", 1), 16);
    expect_bad("shape2.gguf", b, QL_EFORMAT, "'blk.1.ffn_down.weight'", "has ne [32, 16]");

    /* Q4_0 -> IQ4_NL keeps the block size (18 bytes per 32): the file stays
     * valid, the type is one qlora cannot dequantize. */
    b = copy_of(llama_bytes);
    CHECK(get_u32(b, tinfo_type(b, "blk.0.attn_k.weight")) == QL_GGML_Q4_0);
    put_u32(b, tinfo_type(b, "blk.0.attn_k.weight"), 20);
    expect_bad("iq4nl.gguf", b, QL_EUNSUPPORTED, "'blk.0.attn_k.weight'", "IQ4_NL (20)");

    b = copy_of(llama_bytes);
    put_u32(b, tinfo_type(b, "blk.0.attn_k.weight"), 123);
    expect_bad("type123.gguf", b, QL_EFORMAT, "'blk.0.attn_k.weight'", "unknown ggml type 123");

    b = copy_of(llama_bytes);
    rename_str(b, "output.weight", "outpux.weight");
    expect_bad("extra.gguf", b, QL_EFORMAT, "unexpected tensor 'outpux.weight'", NULL);

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.block_count"), 3);
    expect_bad("layers.gguf", b, QL_EFORMAT, "missing tensor 'blk.2.attn_norm.weight'",
               "model.layers.2.input_layernorm.weight");

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.vocab_size"), 41);
    expect_bad("vocab.gguf", b, QL_EFORMAT, "'lm_head.weight'", "[32, 40], expected [32, 41]");

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.vocab_size"), 39);
    expect_bad("vocab2.gguf", b, QL_EFORMAT, "tokenizer.ggml.tokens has 40 tokens",
               "llama.vocab_size");

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.attention.head_count_kv"), 3);
    expect_bad("kvheads.gguf", b, QL_EFORMAT, "num_key_value_heads (3)", "metadata as config.json");

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.embedding_length"), 0);
    expect_bad("hidden0.gguf", b, QL_EFORMAT, "'llama.embedding_length' is 0", NULL);

    b = copy_of(llama_bytes);
    rename_str(b, "llama.block_count", "llama.block_counx");
    expect_bad("nolayers.gguf", b, QL_ENOTFOUND, "'llama.block_count' is missing", NULL);

    b = copy_of(llama_bytes);
    put_u32(b, after_str(b, "llama.feed_forward_length"), QL_GGUF_F32);
    expect_bad("fftype.gguf", b, QL_EFORMAT, "'llama.feed_forward_length' is FLOAT32", NULL);

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "llama.rope.dimension_count"), 4);
    expect_bad("rotary.gguf", b, QL_EUNSUPPORTED, "partial rotary", "llama.rope.dimension_count");

    b = copy_of(llama_bytes);
    put_u32(b, kv_value(b, "tokenizer.ggml.bos_token_id"), 40);
    expect_bad("bos.gguf", b, QL_EFORMAT, "tokenizer.ggml.bos_token_id", "outside");

    /* A rope_freqs table that is not llama3's. */
    bytes l3 = load(fixture("tiny_llama3.gguf"));
    ql_gguf_file f;
    CHECK(ql_gguf_open(fixture("tiny_llama3.gguf"), &f) == QL_OK);
    const ql_gguf_tensor *t = ql_gguf_find_tensor(&f, "rope_freqs.weight");
    CHECK(t && t->numel == 4);
    if (t) {
        b = copy_of(l3);
        float v = 5.0f;
        memcpy(b.p + f.data_offset + t->offset + 2 * 4, &v, 4);
        expect_bad("ropefreqs.gguf", b, QL_EUNSUPPORTED, "'rope_freqs.weight' element 2 is 5",
                   "llama3");
    }
    ql_gguf_close(&f);
    free(l3.p);

    ql_model_source s;
    CHECK(ql_gguf_source_open(tmp_path("nope.gguf"), &s) == QL_ENOTFOUND && msg_has("nope.gguf"));
}

/* Random byte changes in the metadata and tensor tables of the Llama
 * fixture: the source either opens (and then every tensor it has can be
 * read at its expected size) or fails with a message naming the file. */
static void test_corrupted(void) {
    ql_rng r;
    ql_rng_seed(&r, 11);
    ql_gguf_file good;
    CHECK(ql_gguf_open(fixture("tiny_llama.gguf"), &good) == QL_OK);
    size_t tables = good.data_offset;
    ql_gguf_close(&good);
    int ok = 0, refused = 0, other = 0;
    for (int it = 0; it < 2000; it++) {
        bytes b = copy_of(llama_bytes);
        int flips = 1 + (int)ql_rng_below(&r, 2);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)ql_rng_below(&r, tables);
            b.p[at] = it % 2 ? (unsigned char)ql_rng_below(&r, 256) : b.p[at] ^ 0x01;
        }
        const char *path = save("fuzz.gguf", b.p, b.n);
        free(b.p);
        ql_model_source s;
        ql_status st = ql_gguf_source_open(path, &s);
        if (st == QL_OK) {
            ok++;
            ql_hf_expected *e;
            size_t n;
            CHECK(ql_hf_expected_tensors(&s.cfg, &e, &n) == QL_OK);
            for (size_t i = 0; i < n; i++) {
                if (!s.has(&s, e[i].name)) continue;
                int64_t numel = e[i].ndim == 2 ? e[i].shape[0] * e[i].shape[1] : e[i].shape[0];
                float *y = malloc((size_t)numel * 4);
                if (s.get_f32(&s, e[i].name, y) != QL_OK) other++;
                free(y);
            }
            free(e);
            s.close(&s);
        } else if ((st == QL_EFORMAT || st == QL_EUNSUPPORTED || st == QL_ENOTFOUND) &&
                   strstr(ql_error_message(), path)) {
            refused++;
        } else {
            if (!other)
                fprintf(stderr, "  fuzz %d: %s %s\n", it, ql_status_name(st), ql_error_message());
            other++;
        }
    }
    CHECKF(other == 0, "%d corrupted models gave another status or an unnamed file", other);
    CHECK(refused > 500 && ok > 10);
}

int main(void) {
    if (!mkdtemp(gguf_tmp)) return 1;
    test_model("tiny_llama", 1, 2);
    test_model("tiny_llama3", 1, 3);
    test_model("tiny_qwen2", 0, 2);
    llama_bytes = load(fixture("tiny_llama.gguf"));
    test_bad_models();
    test_corrupted();
    free(llama_bytes.p);
    ql_fs_remove_tree(gguf_tmp);
    return CHECK_DONE();
}
