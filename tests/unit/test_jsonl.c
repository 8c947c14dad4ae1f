/* The pre-tokenized JSONL reader: shifting, labels optional, -100, truncation
 * counted, blank lines, CRLF, and every bad line named by file:line. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "data/jsonl_tokens.h"

static char dir[] = "/tmp/ql_test_jsonl_XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return path;
}

static int same_i32(const int32_t *a, const int32_t *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void test_good(void) {
    const char *p =
        write_file("good.jsonl", "{\"input_ids\": [5, 6, 7, 8]}\n"
                                 "\n"
                                 "   \n"
                                 "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 3]}\r\n"
                                 "{\"labels\": [-100, -100, 9, 10, 11], \"input_ids\": [1, 2, 9, "
                                 "10, 11], \"extra\": \"ignored\"}\n"
                                 "{\"input_ids\": [42], \"labels\": null}");
    ql_token_data d;
    CHECKF(ql_jsonl_tokens_load(p, 4, &d) == QL_OK, "%s", ql_error_message());
    CHECK(d.n == 4);
    if (d.n != 4) return;
    /* record 0: no labels -> every token after the first is a target */
    CHECK(d.off[1] - d.off[0] == 4);
    CHECK(same_i32(d.ids + d.off[0], (int32_t[]){5, 6, 7, 8}, 4));
    CHECK(same_i32(d.targets + d.off[0], (int32_t[]){6, 7, 8, -100}, 4));
    /* record 1 (line 4, CRLF): labels shifted by one */
    CHECK(d.line[1] == 4);
    CHECK(same_i32(d.targets + d.off[1], (int32_t[]){2, 3, -100}, 3));
    /* record 2: 5 tokens cut to 4, then shifted: the last kept token has no target */
    CHECK(d.line[2] == 5 && d.off[3] - d.off[2] == 4);
    CHECK(same_i32(d.ids + d.off[2], (int32_t[]){1, 2, 9, 10}, 4));
    CHECK(same_i32(d.targets + d.off[2], (int32_t[]){-100, 9, 10, -100}, 4));
    /* record 3: one token, nothing to predict */
    CHECK(d.line[3] == 6 && d.off[4] - d.off[3] == 1 && d.targets[d.off[3]] == -100);
    CHECK(d.n_truncated == 1);
    CHECK(d.n_targets == 3 + 2 + 2 + 0);
    CHECK(d.max_len == 4);
    CHECK(d.max_id == 42);
    CHECK(ql_jsonl_tokens_check_vocab(&d, 43) == QL_OK);
    /* 11 was truncated away, so a vocabulary of 11 is still fine for record 2 ... */
    ql_status st = ql_jsonl_tokens_check_vocab(&d, 42);
    CHECK(st == QL_EINVAL);
    char want[600];
    snprintf(want, sizeof want,
             "%s:6: input_ids[0] = 42 is outside the model's vocabulary (42 tokens)", p);
    CHECKF(!strcmp(ql_error_message(), want), "%s", ql_error_message());
    snprintf(want, sizeof want, "%s:4: labels[2] = 3 is outside the model's vocabulary (3 tokens)",
             p);
    st = ql_jsonl_tokens_check_vocab(&d, 3);
    /* record 0's ids (5..8) come first */
    CHECK(st == QL_EINVAL && strstr(ql_error_message(), ":1: input_ids[0] = 5"));
    ql_jsonl_tokens_free(&d);

    /* labels out of vocabulary, ids inside */
    p = write_file("lab.jsonl", "{\"input_ids\": [1, 2, 0], \"labels\": [1, 2, 7]}\n");
    CHECK(ql_jsonl_tokens_load(p, 8, &d) == QL_OK);
    st = ql_jsonl_tokens_check_vocab(&d, 5);
    snprintf(want, sizeof want, "%s:1: labels[2] = 7 is outside the model's vocabulary (5 tokens)",
             p);
    CHECKF(st == QL_EINVAL && !strcmp(ql_error_message(), want), "%s", ql_error_message());
    ql_jsonl_tokens_free(&d);

    /* a UTF-8 byte order mark and no final newline */
    p = write_file("bom.jsonl", "\xEF\xBB\xBF{\"input_ids\": [3, 4]}");
    CHECK(ql_jsonl_tokens_load(p, 8, &d) == QL_OK && d.n == 1 && d.targets[0] == 4);
    ql_jsonl_tokens_free(&d);
}

static const struct {
    const char *text, *msg; /* msg after "<path>:" */
} bad[] = {
    /* JSON syntax errors in jansson's words */
    {"{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2\n",
     "2: invalid JSON at column 19: ']' expected near end of the line"},
    {"{\"input_ids\": [1, 2]}\nnot json\n",
     "2: invalid JSON at column 3: '[' or '{' expected near 'not'"},
    {"[1, 2, 3]\n", "1: expected a JSON object {\"input_ids\": [...]}, got a list"},
    {"{\"ids\": [1, 2]}\n", "1: the record has no \"input_ids\""},
    {"{\"input_ids\": \"1 2 3\"}\n", "1: \"input_ids\" must be a list of token ids, got a string"},
    {"{\"input_ids\": []}\n", "1: \"input_ids\" is empty"},
    {"\n\n{\"input_ids\": [1, 2.5]}\n",
     "3: input_ids[1]: expected a token id (an integer >= 0), got a number with a fraction or "
     "exponent"},
    {"{\"input_ids\": [1, -3]}\n",
     "1: input_ids[1]: expected a token id (an integer >= 0), got a negative or too large "
     "integer"},
    {"{\"input_ids\": [1, 2], \"labels\": [1]}\n",
     "1: \"labels\" has 1 entries but \"input_ids\" has 2"},
    {"{\"input_ids\": [1, 2], \"labels\": {\"a\": 1}}\n",
     "1: \"labels\" must be a list, got an object"},
    {"{\"input_ids\": [1, 2], \"labels\": [1, -5]}\n",
     "1: labels[1]: expected a token id or -100, got another negative or too large integer"},
    {"{\"input_ids\": [1, 2], \"labels\": [1, \"x\"]}\n",
     "1: labels[1]: expected a token id or -100, got a string"},
    {"{\"input_ids\": [1, 4294967296]}\n",
     "1: input_ids[1]: expected a token id (an integer >= 0), got a negative or too large "
     "integer"},
};

static void test_bad(void) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.jsonl", i);
        const char *p = write_file(name, bad[i].text);
        char want[700];
        snprintf(want, sizeof want, "%s:%s", p, bad[i].msg);
        ql_token_data d;
        ql_status st = ql_jsonl_tokens_load(p, 16, &d);
        CHECKF(st == QL_EFORMAT, "case %zu: status %d", i, st);
        CHECKF(!strcmp(ql_error_message(), want), "case %zu:\n  got:  %s\n  want: %s", i,
               ql_error_message(), want);
        CHECK(d.n == 0 && d.ids == NULL); /* nothing kept on failure */
    }
    ql_token_data d;
    const char *p = write_file("empty.jsonl", "");
    char want[700];
    snprintf(want, sizeof want, "%s: no records (the file is empty or only blank lines)", p);
    CHECK(ql_jsonl_tokens_load(p, 16, &d) == QL_EFORMAT && !strcmp(ql_error_message(), want));
    p = write_file("blank.jsonl", "\n  \n\r\n");
    snprintf(want, sizeof want, "%s: no records (the file is empty or only blank lines)", p);
    CHECK(ql_jsonl_tokens_load(p, 16, &d) == QL_EFORMAT && !strcmp(ql_error_message(), want));
    snprintf(want, sizeof want, "%s/missing.jsonl", dir);
    CHECK(ql_jsonl_tokens_load(want, 16, &d) == QL_ENOTFOUND &&
          strstr(ql_error_message(), "missing.jsonl: cannot open"));
}

/* Many records: the growing buffers keep every token in place. */
static void test_many(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/many.jsonl", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 3000; i++) {
        fprintf(f, "{\"input_ids\": [");
        for (int t = 0; t < 1 + i % 50; t++) fprintf(f, "%s%d", t ? ", " : "", (i * 7 + t) % 1000);
        fprintf(f, "]}\n");
    }
    fclose(f);
    ql_token_data d;
    CHECK(ql_jsonl_tokens_load(path, 40, &d) == QL_OK);
    CHECK(d.n == 3000);
    int ok = 1;
    int64_t trunc = 0;
    for (int i = 0; i < 3000 && ok; i++) {
        int len = 1 + i % 50, kept = len < 40 ? len : 40;
        trunc += len > 40;
        ok &= d.off[i + 1] - d.off[i] == kept && d.line[i] == i + 1;
        for (int t = 0; t < kept && ok; t++) {
            ok &= d.ids[d.off[i] + t] == (i * 7 + t) % 1000;
            ok &= d.targets[d.off[i] + t] == (t + 1 < kept ? (i * 7 + t + 1) % 1000 : -100);
        }
    }
    CHECK(ok);
    CHECK(d.n_truncated == trunc);
    ql_jsonl_tokens_free(&d);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_good();
    test_bad();
    test_many();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE();
}
