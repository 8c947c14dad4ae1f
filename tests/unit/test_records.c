/* Records: loss positions of each format checked through decoding, the
 * over-length policies and their counters, every bad-input case with its
 * file:line message under on_bad_record: error and its count under skip,
 * template recognition errors, percentiles and the printed report. Uses the
 * Llama-3-style tokenizer of tests/fixtures/records/llama3 (BOS added by its
 * post-processor, eos_token <|eot_id|>). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/records.h"
#include "tests/check.h"

static char tmp[256];
static ql_tokenizer *tok;
static const ql_tokenizer_info *info;

/* Each call gets its own path buffer: tests keep several paths at once. */
static const char *write_file(const char *name, const char *text, size_t len) {
    static char paths[64][512];
    static int used;
    char *path = paths[used++ % 64];
    snprintf(path, 512, "%s/%s", tmp, name);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    return path;
}

#define WRITE(name, s) write_file(name, s, sizeof s - 1)

static ql_records_options opts(int64_t max) {
    ql_records_options o = {.max_seq_len = max};
    return o;
}

/* The text of the ids that have loss in record i, as one string. */
static char *loss_text(const ql_token_data *d, int64_t i) {
    int32_t buf[4096];
    size_t n = 0;
    for (int64_t t = d->off[i]; t < d->off[i + 1]; t++)
        if (d->targets[t] >= 0) buf[n++] = d->targets[t];
    char *s = NULL;
    size_t len;
    if (ql_tokenizer_decode(tok, buf, n, 0, &s, &len) != QL_OK) return NULL;
    return s;
}

static int64_t n_ids(const char *text) {
    ql_ids ids = {0};
    ql_tokenizer_encode(tok, text, strlen(text), QL_TOK_PARSE_SPECIAL, &ids);
    int64_t n = (int64_t)ids.n;
    ql_ids_free(&ids);
    return n;
}

static void test_formats(void) {
    const char *p =
        WRITE("formats.jsonl", "{\"text\": \"one two three\"}\n"
                               "{\"prompt\": \"Q: 2+2?\\nA:\", \"completion\": \" 4\"}\n"
                               "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                               "{\"role\": \"assistant\", \"content\": \"Hello there\"}, "
                               "{\"role\": \"user\", \"content\": \"Bye\"}, "
                               "{\"role\": \"assistant\", \"content\": \"  See you  \"}]}\n"
                               "{\"input_ids\": [5, 6, 7, 8], \"labels\": [-100, -100, 7, 8]}\n"
                               "{\"input_ids\": [5, 6, 7]}\n"
                               "{\"text\": \"ends with eos<|eot_id|>\"}\n");
    ql_records_options o = opts(1024);
    ql_token_data d;
    ql_records_report rep;
    ql_status st = ql_records_load(p, tok, &o, &d, &rep);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st != QL_OK) return;
    CHECK(d.n == 6 && rep.kept == 6 && rep.read == 6);
    CHECK(rep.kept_by[QL_REC_TEXT] == 2 && rep.kept_by[QL_REC_PROMPT] == 1 &&
          rep.kept_by[QL_REC_MESSAGES] == 1 && rep.kept_by[QL_REC_TOKENS] == 2);
    CHECK(!strcmp(rep.chat_template, "llama3"));

    /* text: BOS, the text, EOS; every position but the last predicts the next id */
    int64_t n0 = d.off[1] - d.off[0];
    CHECK(n0 == 2 + n_ids("one two three"));
    CHECK(d.ids[0] == info->bos_id && d.ids[n0 - 1] == info->eos_id);
    for (int64_t t = 0; t + 1 < n0; t++) CHECK(d.targets[t] == d.ids[t + 1]);
    CHECK(d.targets[n0 - 1] == -100);

    /* prompt/completion: loss exactly on the completion and the EOS */
    char *s = loss_text(&d, 1);
    CHECKF(s && !strcmp(s, " 4<|eot_id|>"), "prompt/completion loss on '%s'", s);
    free(s);
    int64_t a = d.off[1], n1 = d.off[2] - a, k = 1 + n_ids("Q: 2+2?\nA:");
    for (int64_t t = 0; t < n1; t++)
        CHECKF((d.targets[a + t] >= 0) == (t + 1 >= k && t + 1 < n1),
               "prompt/completion target %lld", (long long)t);

    /* messages: loss on the (trimmed) assistant contents and their <|eot_id|> */
    s = loss_text(&d, 2);
    CHECKF(s && !strcmp(s, "Hello there<|eot_id|>See you<|eot_id|>"), "chat loss on '%s'", s);
    free(s);
    CHECK(d.ids[d.off[2]] == info->bos_id);

    /* pre-tokenized: shifted labels; without labels every next id */
    const int32_t want3[] = {-100, 7, 8, -100}, want4[] = {6, 7, -100};
    CHECK(!memcmp(d.targets + d.off[3], want3, sizeof want3));
    CHECK(!memcmp(d.targets + d.off[4], want4, sizeof want4));
    /* a text that already ends with EOS does not get a second one */
    int64_t n5 = d.off[6] - d.off[5];
    CHECK(d.ids[d.off[6] - 1] == info->eos_id && d.ids[d.off[6] - 2] != info->eos_id);
    CHECK(n5 == 1 + n_ids("ends with eos<|eot_id|>"));
    int64_t tg = 0;
    for (int64_t t = 0; t < d.off[d.n]; t++) tg += d.targets[t] >= 0;
    CHECK(tg == d.n_targets && tg == rep.loss_tokens && d.off[d.n] == rep.tokens);
    for (int64_t i = 0; i < 6; i++) CHECK(d.line[i] == i + 1);
    ql_jsonl_tokens_free(&d);
}

static void test_overlength(void) {
    const char *p = WRITE("long.jsonl", "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n"
                                        "{\"input_ids\": [1, 2, 3]}\n"
                                        "{\"input_ids\": [1, 2, 3, 4, 5, 6]}\n"
                                        "{\"input_ids\": [1, 2, 3, 4, 5], \"labels\": "
                                        "[-100, -100, -100, -100, 5]}\n");
    ql_records_options o = opts(4);
    ql_token_data d;
    ql_records_report rep;
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    /* truncate: the first 4 tokens; the last kept one predicts nothing */
    CHECK(rep.read == 4 && rep.kept == 3 && rep.truncated == 2 && rep.tokens_lost == 6 + 2);
    CHECK(rep.no_loss == 1); /* record 4: its only loss token was cut */
    CHECK(d.n == 3 && d.n_truncated == 2 && d.max_len == 4);
    const int32_t ids0[] = {1, 2, 3, 4}, tg0[] = {2, 3, 4, -100};
    CHECK(!memcmp(d.ids, ids0, sizeof ids0) && !memcmp(d.targets, tg0, sizeof tg0));
    CHECK(d.line[0] == 1 && d.line[1] == 2 && d.line[2] == 3);
    CHECK(rep.len_max == 10);
    ql_jsonl_tokens_free(&d);

    o.on_overlength = QL_OVERLENGTH_DROP;
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    CHECK(rep.kept == 1 && rep.dropped == 3 && rep.tokens_dropped == 21 && rep.truncated == 0 &&
          rep.tokens_lost == 0 && d.n == 1 && d.line[0] == 2);
    ql_jsonl_tokens_free(&d);

    o.on_overlength = QL_OVERLENGTH_ERROR;
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_EFORMAT);
    char want[600];
    snprintf(want, sizeof want, "%s:1: the record has 10 tokens, more than max_seq_len = 4", p);
    CHECKF(strstr(ql_error_message(), want) != NULL, "%s", ql_error_message());
    CHECK(d.n == 0 && d.ids == NULL);

    /* a chat record cut inside the prompt has no loss left */
    p = WRITE("chatlong.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a long "
                                "question with many words in it\"}, {\"role\": \"assistant\", "
                                "\"content\": \"ok\"}]}\n"
                                "{\"text\": \"short\"}\n");
    o = opts(6);
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    CHECK(rep.kept == 1 && rep.truncated == 0 && rep.no_loss == 1 && d.line[0] == 2);
    ql_jsonl_tokens_free(&d);
}

typedef struct bad_case {
    const char *name, *text;
    size_t len;
    ql_bad_reason why;
    int line;
    const char *phrase;
} bad_case;

#define BAD(name, s, why, line, phrase)                                                            \
    { name, s, sizeof s - 1, why, line, phrase }

static const char good[] = "{\"text\": \"fine\"}\n";

static void test_bad(void) {
    static const bad_case cases[] = {
        BAD("json", "{\"text\": \"fine\"}\n{\"text\": \"x\",}\n", QL_BAD_JSON, 2, "invalid JSON"),
        BAD("trailing", "{\"text\": \"x\"} {\"text\": \"y\"}\n", QL_BAD_JSON, 1, "invalid JSON"),
        /* jansson's "end of file" is the line's end here */
        BAD("cut short", "{\"text\": \"a\"}\n{\"text\": \n", QL_BAD_JSON, 2,
            "near end of the line"),
        BAD("utf8", "\n\n{\"text\": \"caf\xC3\"}\n", QL_BAD_UTF8, 3, "invalid UTF-8"),
        BAD("utf8 key", "{\"te\xFFxt\": \"a\"}\n", QL_BAD_UTF8, 1, "invalid UTF-8"),
        BAD("not object", "[1, 2]\n", QL_BAD_FIELDS, 1, "expected a JSON object"),
        BAD("no fields", "{\"txt\": \"a\"}\n", QL_BAD_FIELDS, 1, "none of the fields"),
        BAD("mixed", "{\"text\": \"a\", \"messages\": []}\n", QL_BAD_FIELDS, 1, "mixes formats"),
        BAD("no completion", "{\"prompt\": \"a\"}\n", QL_BAD_FIELDS, 1, "no \"completion\""),
        BAD("no prompt", "{\"completion\": \"a\"}\n", QL_BAD_FIELDS, 1, "no \"prompt\""),
        BAD("text type", "{\"text\": 5}\n", QL_BAD_TYPE, 1, "\"text\" must be a string"),
        BAD("text null", "{\"text\": null}\n", QL_BAD_TYPE, 1, "got null"),
        BAD("completion type", "{\"prompt\": \"a\", \"completion\": [\"b\"]}\n", QL_BAD_TYPE, 1,
            "\"completion\" must be a string, got a list"),
        BAD("messages type", "{\"messages\": \"hi\"}\n", QL_BAD_TYPE, 1, "\"messages\" must be"),
        BAD("messages empty", "{\"messages\": []}\n", QL_BAD_FIELDS, 1, "\"messages\" is empty"),
        BAD("message type", "{\"messages\": [\"hi\"]}\n", QL_BAD_TYPE, 1, "messages[0] must be"),
        BAD("no role", "{\"messages\": [{\"content\": \"x\"}]}\n", QL_BAD_FIELDS, 1,
            "messages[0] has no \"role\""),
        BAD("role type",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": 3, "
            "\"content\": \"y\"}]}\n",
            QL_BAD_TYPE, 1, "messages[1].role must be a string"),
        BAD("no content", "{\"messages\": [{\"role\": \"user\"}]}\n", QL_BAD_FIELDS, 1,
            "messages[0] has no \"content\""),
        BAD("content null", "{\"messages\": [{\"role\": \"user\", \"content\": null}]}\n",
            QL_BAD_TYPE, 1, "messages[0].content must be a string, got null"),
        BAD("role",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"tool\", "
            "\"content\": \"y\"}]}\n",
            QL_BAD_ROLE, 1, "messages[1].role is \"tool\""),
        BAD("ids type", "{\"input_ids\": \"1 2\"}\n", QL_BAD_TYPE, 1, "\"input_ids\" must be"),
        BAD("ids float", "{\"input_ids\": [1, 2.5]}\n", QL_BAD_TYPE, 1, "input_ids[1]"),
        BAD("ids range", "{\"input_ids\": [1, 999999]}\n", QL_BAD_TOKENS, 1,
            "input_ids[1] = 999999 is not a token id"),
        BAD("ids negative", "{\"input_ids\": [-1, 2]}\n", QL_BAD_TOKENS, 1, "input_ids[0] = -1"),
        BAD("ids empty", "{\"input_ids\": []}\n", QL_BAD_TOKENS, 1, "\"input_ids\" is empty"),
        BAD("labels length", "{\"input_ids\": [1, 2], \"labels\": [2]}\n", QL_BAD_TOKENS, 1,
            "\"labels\" has 1 entries"),
        BAD("labels value", "{\"input_ids\": [1, 2], \"labels\": [-5, 2]}\n", QL_BAD_TOKENS, 1,
            "labels[0] = -5"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        /* the bad line, then a good one, so skip mode keeps something */
        char text[1024];
        memcpy(text, c->text, c->len);
        memcpy(text + c->len, good, sizeof good - 1);
        const char *p = write_file("bad.jsonl", text, c->len + sizeof good - 1);
        ql_records_options o = opts(64);
        ql_token_data d;
        ql_records_report rep;
        ql_status st = ql_records_load(p, tok, &o, &d, &rep);
        char where[600];
        snprintf(where, sizeof where, "%s:%d: ", p, c->line);
        const char *msg = ql_error_message();
        CHECKF(st == QL_EFORMAT && strstr(msg, where) && strstr(msg, c->phrase),
               "%s: status %s, message '%s' should have '%s' and '%s'", c->name, ql_status_name(st),
               msg, where, c->phrase);
        if (st == QL_OK) ql_jsonl_tokens_free(&d);

        o.on_bad_record = QL_ON_BAD_SKIP;
        st = ql_records_load(p, tok, &o, &d, &rep);
        CHECKF(st == QL_OK, "%s (skip): %s", c->name, ql_error_message());
        if (st != QL_OK) continue;
        CHECKF(rep.skipped == 1 && rep.skipped_by[c->why] == 1 && rep.kept == rep.read - 1,
               "%s (skip): skipped %lld (reason %s: %lld), kept %lld of %lld", c->name,
               (long long)rep.skipped, ql_bad_reason_name(c->why),
               (long long)rep.skipped_by[c->why], (long long)rep.kept, (long long)rep.read);
        CHECKF(strstr(rep.first_skip, where) && strstr(rep.first_skip, c->phrase),
               "%s: first_skip '%s'", c->name, rep.first_skip);
        CHECK(ql_error_message()[0] == 0);
        ql_jsonl_tokens_free(&d);
    }

    /* empty and blank files are errors whatever the policy */
    ql_records_options o = opts(64);
    o.on_bad_record = QL_ON_BAD_SKIP;
    ql_token_data d;
    ql_records_report rep;
    const char *p = WRITE("empty.jsonl", "");
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), p) && strstr(ql_error_message(), "no records"), "%s",
           ql_error_message());
    p = WRITE("blank.jsonl", "\n  \n\t\r\n");
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_EFORMAT);
    CHECK(strstr(ql_error_message(), "no records") != NULL);
    /* all skipped: an error that says why */
    p = WRITE("allbad.jsonl", "{\"text\": 1}\nnot json\n");
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "none of the 2 records is usable: 2 skipped") &&
               strstr(ql_error_message(), ":1: \"text\" must be a string"),
           "%s", ql_error_message());
    p = "/nonexistent/dir/x.jsonl";
    CHECK(ql_records_load(p, tok, &o, &d, &rep) != QL_OK);
    CHECK(strstr(ql_error_message(), p) != NULL);

    /* skip mode counts every reason, in one file */
    p = WRITE("mixed.jsonl", "{\"text\": \"a\"}\n"
                             "{\"text\": 1}\n"
                             "oops\n"
                             "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n"
                             "{\"text\": 2}\n"
                             "\n"
                             "{\"prompt\": \"p\", \"completion\": \"c\"}\n");
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    CHECK(rep.read == 6 && rep.kept == 2 && rep.skipped == 4);
    CHECK(rep.skipped_by[QL_BAD_TYPE] == 2 && rep.skipped_by[QL_BAD_JSON] == 1 &&
          rep.skipped_by[QL_BAD_ROLE] == 1);
    CHECK(d.line[0] == 1 && d.line[1] == 7);
    ql_jsonl_tokens_free(&d);
}

/* A tokenizer directory: the fixture's tokenizer.json and this config. */
static const char *tokenizer_with(const char *name, const char *config) {
    static char dir[512];
    char path[700], target[2100];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    if (mkdir(dir, 0700) != 0) return NULL;
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(target, sizeof target, "%s/tests/fixtures/records/llama3/tokenizer.json",
             src ? src : ".");
    char *abs = realpath(target, NULL); /* the link must not depend on the cwd */
    if (!abs) return NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int linked = symlink(abs, path) == 0;
    free(abs);
    if (!linked) return NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(config, f);
    fclose(f);
    return dir;
}

static void test_templates(void) {
    const char *dir = tokenizer_with(
        "odd", "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|eot_id|>\", "
               "\"chat_template\": \"{{ '<start_of_turn>' + message['role'] }}\"}");
    ql_tokenizer *odd = NULL;
    CHECKF(dir && ql_tokenizer_load(dir, &odd) == QL_OK, "%s", ql_error_message());
    if (!odd) return;
    const char *chat = WRITE("chat.jsonl", "{\"text\": \"plain text is fine\"}\n"
                                           "{\"messages\": [{\"role\": \"user\", \"content\": "
                                           "\"Hi\"}, {\"role\": \"assistant\", \"content\": "
                                           "\"Yo\"}]}\n");
    ql_records_options o = opts(64);
    o.on_bad_record = QL_ON_BAD_SKIP; /* not a bad record: the setup is wrong */
    ql_token_data d;
    ql_records_report rep;
    CHECK(ql_records_load(chat, odd, &o, &d, &rep) == QL_EUNSUPPORTED);
    char where[600];
    snprintf(where, sizeof where, "%s:2: ", chat);
    CHECKF(strstr(ql_error_message(), where) &&
               strstr(ql_error_message(), "not one qlora recognises") &&
               strstr(ql_error_message(), "data.chat_template"),
           "%s", ql_error_message());
    /* forcing a format works, and text-only data never needs the template */
    o.chat_template = QL_CHAT_CHATML;
    CHECK(ql_records_load(chat, odd, &o, &d, &rep) == QL_OK);
    CHECK(rep.kept == 2 && !strcmp(rep.chat_template, "chatml"));
    char *s = loss_text(&d, 1);
    /* this tokenizer has no <|im_end|> token: it is text, and still has loss */
    CHECKF(s && !strcmp(s, "Yo<|im_end|>"), "'%s'", s);
    free(s);
    ql_jsonl_tokens_free(&d);
    o.chat_template = QL_CHAT_AUTO;
    const char *text = WRITE("textonly.jsonl", "{\"text\": \"plain\"}\n");
    CHECK(ql_records_load(text, odd, &o, &d, &rep) == QL_OK);
    CHECK(rep.chat_template[0] == 0);
    ql_jsonl_tokens_free(&d);
    ql_tokenizer_free(odd);

    dir = tokenizer_with("none", "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": "
                                 "\"<|eot_id|>\"}");
    CHECK(dir && ql_tokenizer_load(dir, &odd) == QL_OK);
    if (!odd) return;
    ql_status st = ql_records_load(chat, odd, &o, &d, &rep);
    CHECKF(st == QL_EUNSUPPORTED, "%s %s kept %lld", ql_status_name(st), ql_error_message(),
           (long long)rep.kept);
    CHECKF(strstr(ql_error_message(), "has no chat template") &&
               strstr(ql_error_message(), "data.chat_template"),
           "%s", ql_error_message());
    ql_tokenizer_free(odd);

    /* no tokenizer: pre-tokenized data only */
    const char *ids = WRITE("ids.jsonl", "{\"input_ids\": [3, 70000, 9]}\n");
    CHECK(ql_records_load(ids, NULL, &o, &d, &rep) == QL_OK);
    CHECK(d.n == 1 && d.max_id == 70000);
    ql_jsonl_tokens_free(&d);
    st = ql_records_load(text, NULL, &o, &d, &rep);
    CHECKF(st == QL_EINVAL, "%s %s", ql_status_name(st), ql_error_message());
    CHECK(strstr(ql_error_message(), "needs the model's tokenizer") != NULL);
}

static void test_report(void) {
    /* lengths 1..100: nearest-rank percentiles are exact */
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (int len = 100; len >= 1; len--) {
        n += (size_t)snprintf(text + n, cap - n, "{\"input_ids\": [5");
        for (int i = 1; i < len; i++) n += (size_t)snprintf(text + n, cap - n, ", 5");
        n += (size_t)snprintf(text + n, cap - n, "]}\r\n");
    }
    const char *p = write_file("lens.jsonl", text, n);
    free(text);
    ql_records_options o = opts(80);
    ql_token_data d;
    ql_records_report rep;
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    CHECK(rep.len_p50 == 50 && rep.len_p90 == 90 && rep.len_p99 == 99 && rep.len_max == 100);
    CHECK(rep.read == 100 && rep.no_loss == 1 && rep.truncated == 20 && rep.kept == 99);
    CHECK(rep.tokens_lost == 20 * 21 / 2 && d.line[0] == 1 && d.line[98] == 99);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ql_records_report_print(&rep, p, f);
    fclose(f);
    CHECKF(strstr(out, "100 read, 99 kept (input_ids 99)") &&
               strstr(out, "20 records (20.0%) cut to 80 tokens, 210 tokens lost") &&
               strstr(out, "p50 50, p90 90, p99 99, max 100") &&
               strstr(out, "1 with no token that has loss"),
           "%s", out);
    free(out);
    ql_jsonl_tokens_free(&d);

    /* a BOM, CRLF and blank lines keep line numbers right */
    p = WRITE("bom.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n\r\n{\"text\": 3}\r\n");
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_EFORMAT);
    char where[600];
    snprintf(where, sizeof where, "%s:3: ", p);
    CHECKF(strstr(ql_error_message(), where) != NULL, "%s", ql_error_message());
    o.on_bad_record = QL_ON_BAD_SKIP;
    CHECK(ql_records_load(p, tok, &o, &d, &rep) == QL_OK);
    f = open_memstream(&out, &len);
    ql_records_report_print(&rep, p, f);
    fclose(f);
    CHECKF(strstr(out, "skipped    1 (wrong type 1)") && strstr(out, "first bad") &&
               strstr(out, where),
           "%s", out);
    free(out);
    ql_jsonl_tokens_free(&d);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/ql_test_records_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    const char *src = getenv("QL_SOURCE_DIR");
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/records/llama3", src ? src : ".");
    if (ql_tokenizer_load(dir, &tok) != QL_OK) {
        fprintf(stderr, "%s (set QL_SOURCE_DIR)\n", ql_error_message());
        return 1;
    }
    info = ql_tokenizer_info_of(tok);
    test_formats();
    test_overlength();
    test_bad();
    test_templates();
    test_report();
    ql_tokenizer_free(tok);
    return CHECK_DONE();
}
