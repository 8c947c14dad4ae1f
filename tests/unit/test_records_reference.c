/* Token ids and loss positions of every record format against Hugging Face
 * transformers (fixtures made by tests/fixtures/make_records_reference.py;
 * versions in tests/fixtures/records/versions.json): text, prompt/completion,
 * pre-tokenized and chat records through SmolLM2's tokenizer and template,
 * a Qwen2.5-style ChatML template, Llama-3, Llama-2 and both Mistral [INST]
 * templates. Targets (the shifted labels, -100 = no loss) must be equal
 * position by position, so a mask that is one token off fails. The SmolLM2
 * part, once through the HF directory and once through the GGUF file's
 * tokenizer metadata, is skipped without the cached files
 * (scripts/fetch_smollm2.sh). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/records.h"
#include "tests/check.h"

static void print_ids(const char *what, const int32_t *v, int64_t n) {
    fprintf(stderr, "  %s:", what);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, "\n");
}

static int equal_json(const json_t *a, const int32_t *v, int64_t n) {
    if (!json_is_array(a) || (int64_t)json_array_size(a) != n) return 0;
    for (int64_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(a, (size_t)i)) != v[i]) return 0;
    return 1;
}

static void check_setup(const char *fixtures, const char *name, const char *tok_dir,
                        const char *format, int64_t want_no_loss) {
    char jsonl[4096], ref[4096]; /* fixtures is < 2048 bytes */
    snprintf(jsonl, sizeof jsonl, "%s/%s.jsonl", fixtures, name);
    snprintf(ref, sizeof ref, "%s/%s.ref.jsonl", fixtures, name);
    ql_tokenizer *tok = NULL;
    ql_status st = ql_tokenizer_load(tok_dir, &tok);
    CHECKF(st == QL_OK, "%s: tokenizer: %s", name, ql_error_message());
    if (st != QL_OK) return;
    ql_records_options o = {.max_seq_len = 8192};
    ql_token_data d;
    ql_records_report rep;
    st = ql_records_load(jsonl, tok, &o, &d, &rep);
    CHECKF(st == QL_OK, "%s: %s", name, ql_error_message());
    if (st == QL_OK) {
        FILE *f = fopen(ref, "r");
        CHECKF(f != NULL, "cannot open %s", ref);
        char line[1 << 16];
        int64_t i = 0, bad = 0;
        while (f && fgets(line, sizeof line, f)) {
            json_error_t err;
            json_t *r = json_loads(line, 0, &err);
            CHECKF(r != NULL, "%s: bad fixture line: %s", ref, err.text);
            if (!r) break;
            if (i >= d.n) {
                CHECKF(0, "%s: the reference has more records than the %lld kept", name,
                       (long long)d.n);
                json_decref(r);
                break;
            }
            int64_t want_line = json_integer_value(json_object_get(r, "line"));
            const int32_t *ids = d.ids + d.off[i], *tg = d.targets + d.off[i];
            int64_t n = d.off[i + 1] - d.off[i];
            int ok_line = d.line[i] == want_line;
            int ok_ids = equal_json(json_object_get(r, "ids"), ids, n);
            int ok_tg = equal_json(json_object_get(r, "targets"), tg, n);
            if (!(ok_line && ok_ids && ok_tg)) {
                bad++;
                fprintf(stderr, "%s: record %lld (line %lld, want line %lld): %s differ\n", name,
                        (long long)i, (long long)d.line[i], (long long)want_line,
                        !ok_line  ? "lines"
                        : !ok_ids ? "ids"
                                  : "targets");
                print_ids("ids    ", ids, n);
                print_ids("targets", tg, n);
                fprintf(stderr, "  want: %s", line);
            }
            json_decref(r);
            i++;
        }
        if (f) fclose(f);
        CHECKF(i == d.n, "%s: %lld reference records, %lld kept", name, (long long)i,
               (long long)d.n);
        CHECKF(bad == 0, "%s: %lld records differ from transformers", name, (long long)bad);
        CHECKF(rep.no_loss == want_no_loss, "%s: %lld records without loss, want %lld", name,
               (long long)rep.no_loss, (long long)want_no_loss);
        CHECKF(rep.skipped == 0 && rep.dropped == 0 && rep.truncated == 0,
               "%s: nothing should be skipped, dropped or truncated", name);
        if (format)
            CHECKF(!strcmp(rep.chat_template, format), "%s: chat template %s, want %s", name,
                   rep.chat_template, format);
        printf("%s (%s): %lld records, %lld tokens, %lld with loss, template %s: equal\n", name,
               tok_dir, (long long)d.n, (long long)rep.tokens, (long long)rep.loss_tokens,
               rep.chat_template);
        ql_jsonl_tokens_free(&d);
    }
    ql_tokenizer_free(tok);
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    char fixtures[2048], dir[4096];
    snprintf(fixtures, sizeof fixtures, "%s/tests/fixtures/records", src ? src : ".");
    static const struct {
        const char *name, *format;
        int64_t no_loss;
    } setups[] = {
        {"qwen_chatml", "chatml", 1},
        {"llama3", "llama3", 1},
        {"llama2", "llama2", 1},
        {"mistral", "mistral", 1},
        {"mistral_legacy", "mistral-legacy", 1},
    };
    for (size_t i = 0; i < sizeof setups / sizeof setups[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", fixtures, setups[i].name);
        check_setup(fixtures, setups[i].name, dir, setups[i].format, setups[i].no_loss);
    }
    const char *cache = getenv("QL_CACHE");
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/SmolLM2-135M-Instruct-hf", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/qlora/SmolLM2-135M-Instruct-hf",
                 getenv("HOME") ? getenv("HOME") : "");
    if (access(dir, R_OK) == 0)
        check_setup(fixtures, "smollm2", dir, "chatml", 1);
    else
        printf("smollm2: skipped, no SmolLM2 HF directory at %s (run scripts/fetch_smollm2.sh)\n",
               dir);
    /* the same tokenizer and template from the GGUF file's metadata */
    char *slash = strrchr(dir, '/');
    if (slash)
        snprintf(slash, sizeof dir - (size_t)(slash - dir), "/SmolLM2-135M-Instruct.Q4_1.gguf");
    if (slash && access(dir, R_OK) == 0)
        check_setup(fixtures, "smollm2", dir, "chatml", 1);
    else
        printf("smollm2 (GGUF): skipped, no %s\n", dir);
    return CHECK_DONE();
}
