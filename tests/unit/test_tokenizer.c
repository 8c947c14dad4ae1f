/* Tokenizer API and bad input: unsupported model types and pipeline steps
 * are refused with one message naming the file and the type; malformed
 * files name the field; hand-worked BPE cases (merge order, ignore_merges,
 * byte fallback, unknown fusing; each also run through tokenizers 0.23.3,
 * which agrees); BOS/EOS and config values; clones. The ids
 * against Hugging Face on real text are test_tokenizer_reference.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "data/tokenizer.h"

static char dir[64];

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loading `json` fails with `code` and a message holding every needle. */
static void expect_refused(const char *json, ql_status code, const char *n1, const char *n2) {
    const char *path = write_file("bad.json", json);
    ql_tokenizer *t = NULL;
    ql_status st = ql_tokenizer_load(path, &t);
    const char *msg = ql_error_message();
    CHECKF(st == code, "got %s, want %s: %s", ql_status_name(st), ql_status_name(code), msg);
    CHECKF(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    CHECKF(!n1 || strstr(msg, n1), "message lacks '%s': %s", n1, msg);
    CHECKF(!n2 || strstr(msg, n2), "message lacks '%s': %s", n2, msg);
    CHECK(t == NULL);
    ql_tokenizer_free(t);
}

static int ids_are(ql_tokenizer *t, const char *text, unsigned flags, const int32_t *want,
                   size_t n) {
    ql_ids ids = {0};
    ql_status st = ql_tokenizer_encode(t, text, strlen(text), flags, &ids);
    int ok = st == QL_OK && ids.n == n && (n == 0 || !memcmp(ids.v, want, n * sizeof *want));
    if (!ok) {
        fprintf(stderr, "  '%s': got", text);
        for (size_t i = 0; i < ids.n; i++) fprintf(stderr, " %d", (int)ids.v[i]);
        fprintf(stderr, " (%s)\n", st == QL_OK ? "ok" : ql_error_message());
    }
    ql_ids_free(&ids);
    return ok;
}

static ql_tokenizer *load_json(const char *json) {
    const char *path = write_file("tokenizer.json", json);
    ql_tokenizer *t = NULL;
    ql_status st = ql_tokenizer_load(path, &t);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    return t;
}

static void test_refusals(void) {
    expect_refused("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}, "
                   "\"unk_token\": \"[UNK]\"}}",
                   QL_EUNSUPPORTED, "WordPiece", "model");
    expect_refused("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", -1.0]]}}",
                   QL_EUNSUPPORTED, "Unigram", NULL);
    expect_refused("{\"model\": {\"type\": \"WordLevel\", \"vocab\": {}}}", QL_EUNSUPPORTED,
                   "WordLevel", NULL);
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"normalizer\": {\"type\": \"NFKC\"}}",
                   QL_EUNSUPPORTED, "NFKC", "normalizer");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                   "[{\"type\": \"BertPreTokenizer\"}]}}",
                   QL_EUNSUPPORTED, "BertPreTokenizer", "pre_tokenizer.pretokenizers[0]");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"decoder\": {\"type\": \"WordPiece\"}}",
                   QL_EUNSUPPORTED, "WordPiece", "decoder");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], "
                   "\"dropout\": 0.1}}",
                   QL_EUNSUPPORTED, "dropout", NULL);
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                   "\"merges\": [\"a b\"]}}",
                   QL_EFORMAT, "model.merges[0]", "\"ab\"");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                   "\"merges\": [\"a x\"]}}",
                   QL_EFORMAT, "model.merges[0]", "\"x\"");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                   "\"merges\": [\"a a a\"]}}",
                   QL_EFORMAT, "model.merges[0]", NULL);
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [] ",
                   QL_EFORMAT, "bad.json:", NULL);
    expect_refused("[1, 2]", QL_EFORMAT, "not a tokenizer.json", NULL);
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], "
                   "\"unk_token\": \"<unk>\"}}",
                   QL_EFORMAT, "unk_token", NULL);

    ql_tokenizer *t = NULL;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    CHECK(ql_tokenizer_load(missing, &t) == QL_ENOTFOUND && strstr(ql_error_message(), missing));
    CHECK(ql_tokenizer_load(dir, &t) == QL_ENOTFOUND); /* a directory without tokenizer.json */
}

/* vocab a b c ab bc abc; merges decide the path */
#define ABC_VOCAB "{\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \"<unk>\": 6}"

static void test_bpe_cases(void) {
    /* (b,c) has the lower rank, so "abc" = a + bc, then the a+bc merge */
    ql_tokenizer *t = load_json("{\"model\": {\"type\": \"BPE\", \"vocab\": " ABC_VOCAB
                                ", \"merges\": [\"b c\", \"a b\", \"a bc\"]}}");
    if (t) {
        CHECK(ids_are(t, "abc", 0, (int32_t[]){5}, 1));
        CHECK(ids_are(t, "abab", 0, (int32_t[]){3, 3}, 2));
        CHECK(ids_are(t, "cab", 0, (int32_t[]){2, 3}, 2));
        /* no unk token: unknown chars are dropped, as tokenizers does */
        CHECK(ids_are(t, "axb", 0, (int32_t[]){3}, 1)); /* then a+b merge */
        CHECK(ql_tokenizer_info_of(t)->vocab_size == 7);
        CHECK(!strcmp(ql_tokenizer_info_of(t)->kind, "BPE"));
        ql_tokenizer_free(t);
    }
    /* a+b ranked first: "abc" = ab + c, and no merge joins ab with c */
    t = load_json("{\"model\": {\"type\": \"BPE\", \"vocab\": " ABC_VOCAB
                  ", \"merges\": [\"a b\", \"b c\"]}}");
    if (t) {
        CHECK(ids_are(t, "abc", 0, (int32_t[]){3, 2}, 2));
        ql_tokenizer_free(t);
    }
    /* ignore_merges: a whole-word vocabulary entry wins over the merges */
    t = load_json("{\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": " ABC_VOCAB
                  ", \"merges\": [\"b c\"]}}");
    if (t) {
        CHECK(ids_are(t, "abc", 0, (int32_t[]){5}, 1));
        CHECK(ids_are(t, "abcb", 0, (int32_t[]){0, 4, 1}, 3));
        ql_tokenizer_free(t);
    }
    /* unknown chars: fused into one <unk> with fuse_unk, one each without */
    t = load_json("{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
                  "\"vocab\": " ABC_VOCAB ", \"merges\": []}}");
    if (t) {
        CHECK(ids_are(t, "axyb", 0, (int32_t[]){0, 6, 1}, 3));
        ql_tokenizer_free(t);
    }
    t = load_json("{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": " ABC_VOCAB
                  ", \"merges\": []}}");
    if (t) {
        CHECK(ids_are(t, "axyb", 0, (int32_t[]){0, 6, 6, 1}, 4));
        ql_tokenizer_free(t);
    }
    /* byte fallback: é (C3 A9) becomes <0xC3> <0xA9>; decode puts it back */
    t = load_json("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0, "
                  "\"<0xC3>\": 1, \"<0xA9>\": 2}, \"merges\": []}, \"decoder\": {\"type\": "
                  "\"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": "
                  "\"Fuse\"}]}}");
    if (t) {
        CHECK(ids_are(t, "a\xC3\xA9", 0, (int32_t[]){0, 1, 2}, 3));
        char *text;
        size_t len;
        CHECK(ql_tokenizer_decode(t, (int32_t[]){1, 2, 0}, 3, 0, &text, &len) == QL_OK &&
              !strcmp(text, "\xC3\xA9"
                            "a"));
        free(text);
        /* a lone continuation byte decodes to U+FFFD */
        CHECK(ql_tokenizer_decode(t, (int32_t[]){2, 0}, 2, 0, &text, &len) == QL_OK &&
              !strcmp(text, "\xEF\xBF\xBD"
                            "a"));
        free(text);
        /* bad input to encode and decode */
        ql_ids ids = {0};
        CHECK(ql_tokenizer_encode(t, "a\xC3", 2, 0, &ids) == QL_EINVAL &&
              strstr(ql_error_message(), "byte 1"));
        CHECK(ql_tokenizer_decode(t, (int32_t[]){0, 7}, 2, 0, &text, &len) == QL_EINVAL &&
              strstr(ql_error_message(), "id 7"));
        ql_ids_free(&ids);
        ql_tokenizer_free(t);
    }
}

static void test_fixture_configs(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    char path[4200];
    ql_tokenizer *t = NULL, *c = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/sp_legacy", src ? src : ".");
    ql_status st = ql_tokenizer_load(path, &t);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st == QL_OK) {
        const ql_tokenizer_info *info = ql_tokenizer_info_of(t);
        CHECK(info->bos_id == 1 && info->eos_id == 2 && info->unk_id == 0);
        CHECK(info->add_bos == 1 && info->add_eos == 0);
        CHECK(info->chat_template == NULL);
        ql_ids ids = {0};
        CHECK(ql_tokenizer_encode(t, "hello", 5, QL_TOK_ADD_BOS_EOS, &ids) == QL_OK && ids.n >= 2 &&
              ids.v[0] == 1);
        /* special tokens parsed or not */
        ids.n = 0;
        CHECK(ql_tokenizer_encode(t, "</s>", 4, QL_TOK_PARSE_SPECIAL, &ids) == QL_OK &&
              ids.n == 1 && ids.v[0] == 2 && ql_tokenizer_is_special(t, 2));
        ids.n = 0;
        CHECK(ql_tokenizer_encode(t, "</s>", 4, 0, &ids) == QL_OK && ids.n > 1);
        /* a clone shares the tables and outlives the original */
        CHECK(ql_tokenizer_clone(t, &c) == QL_OK);
        ql_tokenizer_free(t);
        ql_ids again = {0};
        CHECK(c && ql_tokenizer_encode(c, "</s>", 4, 0, &again) == QL_OK && again.n == ids.n &&
              !memcmp(again.v, ids.v, ids.n * sizeof *ids.v));
        size_t n;
        const char *p = ql_tokenizer_piece(c, 3, &n);
        CHECK(p && n == 6 && !memcmp(p, "<0x00>", 6));
        CHECK(ql_tokenizer_piece_id(c, "<0x00>", 6) == 3);
        CHECK(ql_tokenizer_piece(c, 1 << 30, &n) == NULL);
        ql_ids_free(&again);
        ql_ids_free(&ids);
        ql_tokenizer_free(c);
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/llama3_style/tokenizer.json",
             src ? src : ".");
    st = ql_tokenizer_load(path, &t);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st == QL_OK) {
        const ql_tokenizer_info *info = ql_tokenizer_info_of(t);
        int32_t bot = ql_tokenizer_piece_id(t, "<|begin_of_text|>", 17);
        int32_t eot = ql_tokenizer_piece_id(t, "<|eot_id|>", 10);
        CHECK(bot >= 0 && info->bos_id == bot && info->eos_id == eot);
        CHECK(info->add_bos == 1 && info->add_eos == 0); /* from the template */
        CHECK(info->chat_template && strstr(info->chat_template, "<|start_header_id|>"));
        CHECK(!strcmp(info->kind, "byte-level BPE"));
        ql_tokenizer_free(t);
    }
    /* SmolLM2's config, when the model is cached */
    const char *cache = getenv("QL_CACHE"), *home = getenv("HOME");
    if (cache)
        snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct-hf", cache);
    else
        snprintf(path, sizeof path, "%s/.cache/qlora/SmolLM2-135M-Instruct-hf", home ? home : "");
    if (access(path, F_OK) == 0 && ql_tokenizer_load(path, &t) == QL_OK) {
        const ql_tokenizer_info *info = ql_tokenizer_info_of(t);
        CHECK(info->bos_id == 1 && info->eos_id == 2 && info->pad_id == 2 && info->unk_id == 0);
        CHECK(info->add_bos == 0 && info->add_eos == 0 && info->vocab_size == 49152);
        CHECK(info->chat_template && !strncmp(info->chat_template, "{% for message", 14));
        ql_tokenizer_free(t);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ql-tok-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_refusals();
    test_bpe_cases();
    test_fixture_configs();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
