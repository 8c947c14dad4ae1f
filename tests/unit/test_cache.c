/* The tokenized-data cache: keys follow content (a copy of the data file
 * elsewhere has the same key, one changed byte another; the tokenizer's
 * config files and the options count; a GGUF's tensor bytes do not, its
 * metadata does); a written file reads back exactly with its extra block; a
 * missing file is a quiet miss; a corrupt, truncated, foreign or mismatched
 * file is a miss with the reason; a rewrite replaces a corrupt file. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "data/cache.h"
#include "model/gguf.h"

static char dir[] = "/tmp/ql_test_cache_XXXXXX";

static const char *in_dir(const char *name) {
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_text(const char *path, const char *text) {
    CHECK(ql_fs_write_atomic(path, text, strlen(text)) == QL_OK);
}

static void key_of(const char *data, const char *tok, const char *opts, uint8_t key[32]) {
    ql_sha256 s;
    CHECKF(ql_cache_key_begin(&s, data) == QL_OK, "%s", ql_error_message());
    if (tok) CHECKF(ql_cache_add_tokenizer(&s, tok) == QL_OK, "%s", ql_error_message());
    ql_cache_add_text(&s, "options", opts);
    ql_sha256_final(&s, key);
}

static void test_keys(void) {
    uint8_t a[32], b[32], c[32], e[32], f[32], g[32], h[32];
    write_text(in_dir("d1.jsonl"), "{\"text\": \"hello\"}\n");
    write_text(in_dir("d2.jsonl"), "{\"text\": \"hello\"}\n");
    write_text(in_dir("d3.jsonl"), "{\"text\": \"hellp\"}\n");
    mkdir(in_dir("tok"), 0755);
    write_text(in_dir("tok/tokenizer.json"), "{\"model\": {}}");
    key_of(in_dir("d1.jsonl"), in_dir("tok"), "max_seq_len=512", a);
    key_of(in_dir("d2.jsonl"), in_dir("tok/tokenizer.json"), "max_seq_len=512", b);
    key_of(in_dir("d3.jsonl"), in_dir("tok"), "max_seq_len=512", c);
    key_of(in_dir("d1.jsonl"), in_dir("tok"), "max_seq_len=511", e);
    key_of(in_dir("d1.jsonl"), NULL, "max_seq_len=512", f);
    CHECK(!memcmp(a, b, 32)); /* same bytes elsewhere; dir or its tokenizer.json */
    CHECK(memcmp(a, c, 32) && memcmp(a, e, 32) && memcmp(a, f, 32));
    write_text(in_dir("tok/tokenizer_config.json"), "{\"add_bos_token\": true}");
    key_of(in_dir("d1.jsonl"), in_dir("tok"), "max_seq_len=512", g);
    write_text(in_dir("tok/tokenizer_config.json"), "{\"add_bos_token\": false}");
    key_of(in_dir("d1.jsonl"), in_dir("tok"), "max_seq_len=512", h);
    CHECK(memcmp(a, g, 32) && memcmp(g, h, 32));
    write_text(in_dir("tok/chat_template.jinja"), "{{ x }}");
    key_of(in_dir("d1.jsonl"), in_dir("tok"), "max_seq_len=512", g);
    CHECK(memcmp(g, h, 32));
    /* the pieces are length-prefixed */
    ql_sha256 s1, s2;
    ql_sha256_init(&s1), ql_sha256_init(&s2);
    ql_cache_add_text(&s1, "ab", "c");
    ql_cache_add_text(&s2, "a", "bc");
    ql_sha256_final(&s1, a), ql_sha256_final(&s2, b);
    CHECK(memcmp(a, b, 32));
    /* errors name the file */
    ql_sha256 s;
    CHECK(ql_cache_key_begin(&s, in_dir("none.jsonl")) == QL_EIO);
    CHECK(strstr(ql_error_message(), "none.jsonl") != NULL);
    CHECK(ql_cache_add_tokenizer(&s, in_dir("d1.jsonl.nope")) == QL_EIO);

    /* GGUF: the metadata counts, the tensor data does not */
    const char *src = getenv("QL_SOURCE_DIR");
    char fx[1024];
    snprintf(fx, sizeof fx, "%s/tests/fixtures/gguf/tiny_llama.gguf", src ? src : ".");
    char *bytes;
    size_t n;
    if (ql_fs_read_file(fx, &bytes, &n) != QL_OK) {
        printf("skip the GGUF key checks: %s\n", ql_error_message());
        return;
    }
    ql_gguf_file gf;
    CHECK(ql_gguf_open(fx, &gf) == QL_OK);
    size_t data_off = gf.data_offset;
    ql_gguf_close(&gf);
    const char *copy = in_dir("m.gguf");
    CHECK(ql_fs_write_atomic(copy, bytes, n) == QL_OK);
    key_of(in_dir("d1.jsonl"), copy, "", a);
    bytes[n - 1] ^= 0x40; /* a weight */
    CHECK(ql_fs_write_atomic(copy, bytes, n) == QL_OK);
    key_of(in_dir("d1.jsonl"), copy, "", b);
    CHECK(data_off < n && !memcmp(a, b, 32));
    char *kv = memmem(bytes, data_off, "general.architecture", 20);
    CHECK(kv != NULL);
    if (kv) kv[28] ^= 0x01; /* a byte of the value "llama" */
    CHECK(ql_fs_write_atomic(copy, bytes, n) == QL_OK);
    ql_sha256 sg;
    CHECK(ql_cache_key_begin(&sg, in_dir("d1.jsonl")) == QL_OK);
    if (ql_cache_add_tokenizer(&sg, copy) == QL_OK) { /* may be refused as invalid: also fine */
        ql_cache_add_text(&sg, "options", "");
        ql_sha256_final(&sg, c);
        CHECK(memcmp(a, c, 32));
    }
    free(bytes);
}

typedef struct extra {
    int64_t a, b;
    char s[24];
} extra;

static ql_token_data sample(void) {
    ql_token_data d;
    memset(&d, 0, sizeof d);
    d.n = 3;
    d.off = malloc(4 * sizeof *d.off);
    d.line = malloc(3 * sizeof *d.line);
    d.ids = malloc(9 * sizeof *d.ids);
    d.targets = malloc(9 * sizeof *d.targets);
    int64_t off[4] = {0, 2, 7, 9}, line[3] = {1, 3, 4};
    memcpy(d.off, off, sizeof off);
    memcpy(d.line, line, sizeof line);
    for (int t = 0; t < 9; t++) d.ids[t] = 100 + t, d.targets[t] = t % 3 ? 101 + t : -100;
    d.n_truncated = 1, d.n_targets = 6, d.max_len = 5, d.max_id = 108;
    d.path = strdup("orig.jsonl");
    return d;
}

static int same_data(const ql_token_data *x, const ql_token_data *y) {
    return x->n == y->n && !memcmp(x->off, y->off, 4 * 8) && !memcmp(x->line, y->line, 3 * 8) &&
           !memcmp(x->ids, y->ids, 9 * 4) && !memcmp(x->targets, y->targets, 9 * 4) &&
           x->n_truncated == y->n_truncated && x->n_targets == y->n_targets &&
           x->max_len == y->max_len && x->max_id == y->max_id;
}

static void test_files(void) {
    uint8_t key[32], other[32];
    ql_sha256_buf("k", 1, key);
    ql_sha256_buf("o", 1, other);
    const char *cdir = in_dir("cache/sub");
    char *file = ql_cache_file(cdir, key);
    CHECK(file && strstr(file, "/cache/sub/tokens-") &&
          strlen(strrchr(file, '/')) == 1 + 7 + 64 + 4);
    ql_token_data d = sample(), r;
    extra x = {7, -9, "report"}, y;
    char why[256];
    /* miss: no file, no reason */
    CHECK(ql_cache_read(file, key, "new.jsonl", &r, &y, sizeof y, why, sizeof why) == 0);
    CHECK(why[0] == '\0' && r.off == NULL);
    CHECKF(ql_cache_write(file, key, &d, &x, sizeof x) == QL_OK, "%s", ql_error_message());
    memset(&y, 0, sizeof y);
    CHECK(ql_cache_read(file, key, "new.jsonl", &r, &y, sizeof y, why, sizeof why) == 1);
    CHECK(same_data(&d, &r) && !strcmp(r.path, "new.jsonl") && !memcmp(&x, &y, sizeof x));
    ql_jsonl_tokens_free(&r);
    /* the same file under another key, or another extra size */
    CHECK(ql_cache_read(file, other, "new.jsonl", &r, &y, sizeof y, why, sizeof why) == 0);
    CHECKF(strstr(why, "another key"), "%s", why);
    CHECK(ql_cache_read(file, key, "new.jsonl", &r, &y, sizeof y - 8, why, sizeof why) == 0);
    CHECKF(strstr(why, "inconsistent header"), "%s", why);

    char *bytes;
    size_t n;
    CHECK(ql_fs_read_file(file, &bytes, &n) == QL_OK);
    /* every single flipped byte is caught */
    int all_caught = 1;
    for (size_t i = 0; i < n; i++) {
        bytes[i] ^= 0x10;
        CHECK(ql_fs_write_atomic(file, bytes, n) == QL_OK);
        all_caught &= ql_cache_read(file, key, "x", &r, &y, sizeof y, why, sizeof why) == 0 &&
                      why[0] != '\0' && r.off == NULL;
        bytes[i] ^= 0x10;
    }
    CHECK(all_caught);
    bytes[n / 2] ^= 1;
    CHECK(ql_fs_write_atomic(file, bytes, n) == QL_OK);
    CHECK(ql_cache_read(file, key, "x", &r, &y, sizeof y, why, sizeof why) == 0);
    CHECKF(strstr(why, "checksum mismatch"), "%s", why);
    /* truncated at every length */
    int trunc_caught = 1;
    bytes[n / 2] ^= 1;
    for (size_t k = 0; k < n; k += 7) {
        CHECK(ql_fs_write_atomic(file, bytes, k) == QL_OK);
        trunc_caught &= ql_cache_read(file, key, "x", &r, &y, sizeof y, why, sizeof why) == 0;
    }
    CHECK(trunc_caught);
    write_text(file, "not a cache file at all, but long enough to have a header of some sort");
    CHECK(ql_cache_read(file, key, "x", &r, &y, sizeof y, why, sizeof why) == 0);
    CHECKF(strstr(why, "not a qlora data cache file"), "%s", why);
    /* rebuilt: written again over the bad file */
    CHECK(ql_cache_write(file, key, &d, &x, sizeof x) == QL_OK);
    CHECK(ql_cache_read(file, key, "x", &r, &y, sizeof y, why, sizeof why) == 1 &&
          same_data(&d, &r));
    ql_jsonl_tokens_free(&r);
    /* a file where the directory should be */
    write_text(in_dir("plain"), "x");
    char *bad = ql_cache_file(in_dir("plain/sub"), key);
    CHECK(ql_cache_write(bad, key, &d, NULL, 0) == QL_EIO);
    free(bad);
    free(bytes);
    free(file);
    ql_jsonl_tokens_free(&d);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_keys();
    test_files();
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
