/* Samples and the review sheet (train/review.h). */
#include "train/review.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytebuf.h"
#include "core/fsutil.h"
#include "data/tokenizer.h"
#include "train/code_eval.h"
#include "train/generate.h"
#include "train/sandbox.h"
#include "train/trainer.h"

enum { BASE, ADAPTER };

typedef struct item {
    int64_t rec, line;
    char *source; /* the record's "source", or FILE:LINE */
    char *prompt; /* the prompt as shown */
    char *tail;   /* what generation left off the prompt (trailing whitespace) */
    char *ref;    /* the reference answer, or NULL */
    char *test;   /* Python test, or NULL */
    char *raw;    /* the raw "prompt" of a prompt record (for the test program), or NULL */
    size_t plen;  /* bytes of raw that generation started from */
    ql_ids ids;   /* the prompt's tokens */
    ql_gen_output ans[2];
    ql_sandbox_result res[2];
    int tested[2];
} item;

struct ql_review {
    ql_review_options o;
    char python[256];
    ql_tokenizer *tok;
    item *it;
    int64_t n;
    double gen_s[2];
    int tests_unavailable; /* the interpreter could not be run */
    char tests_note[512];
};

/* ------------------------------------------------------------ a text buffer */

typedef ql_bytebuf sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) { ql_bytebuf_put(b, s, n); }

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* HTML text: & < > escaped (inside <pre>). */
static void sb_html(sbuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': sb_str(b, "&amp;"); break;
        case '<': sb_str(b, "&lt;"); break;
        case '>': sb_str(b, "&gt;"); break;
        default: sb_put(b, s + i, 1);
        }
    }
}

/* ------------------------------------------------------------ the records */

static void item_free(item *t) {
    free(t->source);
    free(t->prompt);
    free(t->tail);
    free(t->ref);
    free(t->test);
    free(t->raw);
    ql_ids_free(&t->ids);
    for (int k = 0; k < 2; k++) ql_gen_outputs_free(&t->ans[k], 1);
}

void ql_review_free(ql_review *r) {
    if (!r) return;
    for (int64_t i = 0; i < r->n; i++) item_free(&r->it[i]);
    free(r->it);
    ql_tokenizer_free(r->tok);
    free(r);
}

typedef struct line_ref {
    int64_t line, rec;
} line_ref;

static int by_line(const void *a, const void *b) {
    const line_ref *x = a, *y = b;
    return (x->line > y->line) - (x->line < y->line);
}

/* Calls fn(ctx, record, object) for each record of d whose line in d->path
 * holds a JSON object (pre-tokenized caches and odd lines are skipped). */
static ql_status each_raw(const ql_token_data *d, const line_ref *refs,
                          ql_status (*fn)(void *ctx, int64_t rec, json_t *o), void *ctx) {
    FILE *f = fopen(d->path, "r");
    if (!f) return ql_error(QL_EIO, "%s: cannot open: %s", d->path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int64_t no = 0, k = 0;
    ql_status st = QL_OK;
    while (st == QL_OK && k < d->n && (got = getline(&line, &cap, f)) >= 0) {
        no++;
        while (k < d->n && refs[k].line < no) k++;
        for (; st == QL_OK && k < d->n && refs[k].line == no; k++) {
            json_t *o = json_loadb(line, (size_t)got, 0, NULL);
            if (json_is_object(o)) st = fn(ctx, refs[k].rec, o);
            json_decref(o);
        }
    }
    free(line);
    fclose(f);
    return st;
}

static ql_status flag_tests(void *ctx, int64_t rec, json_t *o) {
    if (json_is_string(json_object_get(o, "test")) && json_is_string(json_object_get(o, "prompt")))
        ((unsigned char *)ctx)[rec] = 1;
    return QL_OK;
}

typedef struct fill_ctx {
    ql_review *r;
    const ql_token_data *d;
} fill_ctx;

static char *dup_str(const json_t *v) {
    return json_is_string(v) ? strndup(json_string_value(v), json_string_length(v)) : NULL;
}

/* A chosen record: its prompt tokens and the texts the sheet shows. */
static ql_status fill_item(void *ctx, int64_t rec, json_t *o) {
    fill_ctx *fc = ctx;
    ql_review *r = fc->r;
    item *t = NULL;
    for (int64_t i = 0; i < r->n; i++)
        if (r->it[i].rec == rec) t = &r->it[i];
    if (!t) return QL_OK;
    const json_t *p = json_object_get(o, "prompt");
    if (!json_is_string(p)) return QL_OK; /* from the tokens (set by the caller) */
    t->raw = dup_str(p);
    free(t->ref); /* the tokens' reference, replaced by the record's own text */
    t->ref = dup_str(json_object_get(o, "completion"));
    t->test = dup_str(json_object_get(o, "test"));
    char *src = dup_str(json_object_get(o, "source"));
    if (!t->raw) return ql_error(QL_ENOMEM, "out of memory");
    if (src) {
        free(t->source);
        t->source = src;
    }
    /* Generation starts from the prompt without its trailing whitespace
     * (ql_code_prompt_len says why); the answer shown leaves off what the
     * model writes again of it. */
    t->plen = ql_code_prompt_len(t->raw);
    t->tail = strdup(t->raw + t->plen);
    free(t->prompt);
    t->prompt = strdup(t->raw);
    if (!t->tail || !t->prompt) return ql_error(QL_ENOMEM, "out of memory");
    t->ids.n = 0;
    return ql_gen_prompt_text(r->tok, t->raw, t->plen, 0, QL_CHAT_AUTO, &t->ids);
}

/* Any record: the tokens before its first target are the prompt (the exact
 * context training gave the model), the first run of targets the reference. */
static ql_status item_from_tokens(ql_review *r, const ql_token_data *d, item *t) {
    int64_t a = d->off[t->rec], b = d->off[t->rec + 1], first = b;
    for (int64_t i = a; i < b; i++)
        if (d->targets[i] >= 0) {
            first = i;
            break;
        }
    if (first == b) first = b - 1;
    QL_TRY(ql_ids_reserve(&t->ids, (size_t)(first - a + 1)));
    for (int64_t i = a; i <= first; i++) QL_TRY(ql_ids_push(&t->ids, d->ids[i]));
    size_t len;
    QL_TRY(ql_tokenizer_decode(r->tok, t->ids.v, t->ids.n, 0, &t->prompt, &len));
    int64_t end = first + 1;
    while (end < b && d->targets[end - 1] >= 0) end++;
    /* targets[i] is the token at i + 1: the reference is ids[first+1 .. end) */
    if (end > first + 1)
        QL_TRY(ql_tokenizer_decode(r->tok, d->ids + first + 1, (size_t)(end - first - 1),
                                   QL_TOK_SKIP_SPECIAL, &t->ref, &len));
    return QL_OK;
}

static ql_status choose(ql_review *r, const ql_token_data *d, int64_t want) {
    line_ref *refs = ql_malloc((size_t)d->n * sizeof *refs, "record lines");
    unsigned char *has_test = ql_calloc((size_t)d->n, 1, "test flags");
    ql_status st = refs && has_test ? QL_OK : QL_ENOMEM;
    for (int64_t i = 0; st == QL_OK && i < d->n; i++) refs[i] = (line_ref){d->line[i], i};
    if (st == QL_OK) qsort(refs, (size_t)d->n, sizeof *refs, by_line);
    if (st == QL_OK && d->path) st = each_raw(d, refs, flag_tests, has_test);
    if (st == QL_OK) {
        r->it = ql_calloc((size_t)want, sizeof *r->it, "review records");
        if (!r->it) st = QL_ENOMEM;
    }
    /* Records with tests first, then the rest, each in file order. */
    for (int pass = 1; st == QL_OK && pass >= 0; pass--)
        for (int64_t i = 0; i < d->n && r->n < want; i++)
            if (has_test[i] == pass) {
                item *t = &r->it[r->n++];
                t->rec = i;
                t->line = d->line[i];
                size_t n = strlen(d->path ? d->path : "?") + 32;
                t->source = malloc(n);
                if (!t->source)
                    st = ql_error(QL_ENOMEM, "out of memory");
                else
                    snprintf(t->source, n, "%s:%lld", d->path ? d->path : "?", (long long)t->line);
            }
    for (int64_t i = 0; st == QL_OK && i < r->n; i++) st = item_from_tokens(r, d, &r->it[i]);
    fill_ctx fc = {.r = r, .d = d};
    if (st == QL_OK && d->path) st = each_raw(d, refs, fill_item, &fc);
    free(refs);
    free(has_test);
    return st;
}

/* ------------------------------------------------------------ generating */

/* The answer as shown: without the prompt's trailing whitespace that the
 * model wrote again at its start. */
static const char *shown(const item *t, int k, size_t *len) {
    const char *s = t->ans[k].text ? t->ans[k].text : "";
    size_t n = t->ans[k].text ? t->ans[k].len : 0, tl = t->tail ? strlen(t->tail) : 0;
    if (tl && n >= tl && !memcmp(s, t->tail, tl)) {
        s += tl;
        n -= tl;
    }
    *len = n;
    return s;
}

/* Tested records end at a dedent (code), the others at eos or the limit. */
static ql_status generate(ql_review *r, ql_llama *m, int k) {
    double t0 = ql_now();
    for (int code = 1; code >= 0; code--) {
        int64_t n = 0;
        for (int64_t i = 0; i < r->n; i++) n += (r->it[i].test != NULL) == code;
        if (n == 0) continue;
        ql_ids *p = ql_calloc((size_t)n, sizeof *p, "prompts");
        ql_gen_output *out = ql_calloc((size_t)n, sizeof *out, "answers");
        ql_status st = p && out ? QL_OK : QL_ENOMEM;
        int64_t j = 0;
        for (int64_t i = 0; i < r->n; i++)
            if ((r->it[i].test != NULL) == code) p[j++] = r->it[i].ids; /* shallow */
        ql_gen_config gc;
        ql_gen_config_default(&gc);
        gc.max_new_tokens = r->o.max_new_tokens;
        gc.batch = n < 8 ? (int)n : 8;
        gc.stop_at_dedent = code;
        gc.use_adapters = k == ADAPTER;
        if (st == QL_OK) st = ql_generate(m, r->tok, p, n, &gc, NULL, NULL, out);
        j = 0;
        for (int64_t i = 0; st == QL_OK && i < r->n; i++)
            if ((r->it[i].test != NULL) == code) r->it[i].ans[k] = out[j++];
        free(p);
        free(out);
        QL_TRY(st);
    }
    r->gen_s[k] = ql_now() - t0;
    return QL_OK;
}

static void run_tests(ql_review *r, int k) {
    if (!r->o.run_tests || r->tests_unavailable) return;
    ql_sandbox_limits lim;
    ql_sandbox_limits_default(&lim);
    for (int64_t i = 0; i < r->n; i++) {
        item *t = &r->it[i];
        if (!t->test || !t->raw) continue;
        ql_status st = ql_code_run_test(
            r->python, &(ql_code_record){.prompt = t->raw, .test = t->test, .source = t->source},
            t->ans[k].text, t->ans[k].len, &lim, &t->res[k]);
        if (st != QL_OK) {
            /* No interpreter: the sheet says so instead of failing the run. */
            r->tests_unavailable = 1;
            snprintf(r->tests_note, sizeof r->tests_note, "%s", ql_error_message());
            ql_error_clear();
            return;
        }
        t->tested[k] = 1;
    }
}

static void log_samples(const ql_review *r, int k, FILE *log) {
    if (!log) return;
    for (int64_t i = 0; i < r->n && i < r->o.samples; i++) {
        const item *t = &r->it[i];
        size_t n;
        const char *s = shown(t, k, &n);
        while (n > 0 && strchr(" \t\r\n", s[n - 1])) n--; /* trailing blank lines */
        fprintf(log, "--- sample %lld/%lld, %s, %s (%lld tokens, %s%s%s):\n", (long long)i + 1,
                (long long)(r->o.samples < r->n ? r->o.samples : r->n),
                k == BASE ? "base model" : "adapter", t->source, (long long)t->ans[k].new_tokens,
                ql_gen_stop_name(t->ans[k].stop), t->tested[k] ? ", test " : "",
                t->tested[k] ? ql_sandbox_verdict_name(t->res[k].verdict) : "");
        /* The prompt's last line for context, then the answer's first lines. */
        const char *pl = t->prompt ? t->prompt : "";
        size_t plen = strlen(pl);
        while (plen > 0 && strchr(" \t\r\n", pl[plen - 1])) plen--;
        size_t ps = plen;
        while (ps > 0 && pl[ps - 1] != '\n') ps--;
        fprintf(log, "%.*s\n", (int)(plen - ps), pl + ps);
        int lines = 0;
        size_t a = 0;
        while (a < n && lines < 12) {
            size_t e = a;
            while (e < n && s[e] != '\n') e++;
            fprintf(log, "%.*s\n", (int)(e - a), s + a);
            lines++;
            a = e + 1;
        }
        if (a < n) fprintf(log, "[... %zu more bytes]\n", n - a);
    }
    fflush(log);
}

ql_status ql_review_begin(ql_llama *m, const ql_token_data *valid, const ql_review_options *o,
                          FILE *log, ql_review **out) {
    *out = NULL;
    int64_t want = o->prompts > o->samples ? o->prompts : o->samples;
    if (want > valid->n) want = valid->n;
    if (want <= 0 || o->max_new_tokens <= 0) return QL_OK;
    ql_review *r = ql_calloc(1, sizeof *r, "review");
    if (!r) return QL_ENOMEM;
    r->o = *o;
    snprintf(r->python, sizeof r->python, "%s", o->python ? o->python : "python3");
    ql_status st = ql_tokenizer_load(o->tokenizer, &r->tok);
    if (st != QL_OK) ql_error_wrap(st, "review: the model's tokenizer: ");
    if (st == QL_OK) st = choose(r, valid, want);
    if (st == QL_OK) st = generate(r, m, BASE);
    if (st != QL_OK) {
        ql_review_free(r);
        return st;
    }
    run_tests(r, BASE);
    if (log) {
        fprintf(log,
                "review: the base model's answers to %lld held-out prompt%s (greedy, at most "
                "%lld new tokens) in %.1f s\n",
                (long long)r->n, r->n == 1 ? "" : "s", (long long)o->max_new_tokens,
                r->gen_s[BASE]);
        log_samples(r, BASE, log);
    }
    *out = r;
    return QL_OK;
}

/* ------------------------------------------------------------ the outputs */

static ql_status append_metrics(const ql_review *r, int64_t step, const char *path) {
    FILE *f = fopen(path, "a");
    if (!f) return ql_error(QL_EIO, "%s: cannot append: %s", path, strerror(errno));
    ql_status st = QL_OK;
    for (int k = BASE; k <= ADAPTER && st == QL_OK; k++)
        for (int64_t i = 0; i < r->n && i < r->o.samples && st == QL_OK; i++) {
            const item *t = &r->it[i];
            size_t n;
            const char *s = shown(t, k, &n);
            json_t *o = json_pack("{s:I, s:I, s:s, s:s, s:s, s:s%, s:I, s:s}", "step",
                                  (json_int_t)(k == BASE ? 0 : step), "sample", (json_int_t)i + 1,
                                  "model", k == BASE ? "base" : "adapter", "source", t->source,
                                  "prompt", t->prompt ? t->prompt : "", "completion", s, n,
                                  "new_tokens", (json_int_t)t->ans[k].new_tokens, "stop",
                                  ql_gen_stop_name(t->ans[k].stop));
            if (o && t->tested[k])
                json_object_set_new(o, "test",
                                    json_string(ql_sandbox_verdict_name(t->res[k].verdict)));
            char *line = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            json_decref(o);
            if (!line || fprintf(f, "%s\n", line) < 0)
                st = ql_error(QL_EIO, "%s: cannot write a sample line", path);
            free(line);
        }
    if (fclose(f) != 0 && st == QL_OK)
        st = ql_error(QL_EIO, "%s: write failed: %s", path, strerror(errno));
    return st;
}

static const char *verdict(const item *t, int k) {
    if (!t->test) return "–";
    if (!t->tested[k]) return "not run";
    return ql_sandbox_verdict_name(t->res[k].verdict);
}

static void sb_pre_cell(sbuf *b, const item *t, int k) {
    size_t n;
    const char *s = shown(t, k, &n);
    sb_printf(b, "<td><sub>%s, %lld tokens, stop: %s</sub><pre>", verdict(t, k),
              (long long)t->ans[k].new_tokens, ql_gen_stop_name(t->ans[k].stop));
    sb_html(b, s, n);
    sb_str(b, "</pre></td>");
}

static ql_status write_sheet(const ql_review *r, int64_t step, const char *out_dir) {
    sbuf b = {0};
    int64_t tested = 0, pass[2] = {0, 0};
    for (int64_t i = 0; i < r->n; i++)
        if (r->it[i].tested[BASE] && r->it[i].tested[ADAPTER]) {
            tested++;
            for (int k = 0; k < 2; k++) pass[k] += r->it[i].res[k].verdict == QL_SB_PASS;
        }
    sb_printf(&b, "# Review: %s\n\n", out_dir);
    sb_printf(&b,
              "Base model `%s` and the same model with the adapter `%s/adapter` after %lld "
              "steps, on %lld held-out prompt%s of the validation set (records with unit tests "
              "first). Greedy decoding, at most %lld new tokens; an answer ends at the "
              "end-of-text token, at the limit, or (for code with a test) at the first line "
              "that starts at column 0. The base answers were generated when training "
              "started (%.1f s), the adapter's when it ended (%.1f s).\n\n",
              r->o.model, out_dir, (long long)step, (long long)r->n, r->n == 1 ? "" : "s",
              (long long)r->o.max_new_tokens, r->gen_s[BASE], r->gen_s[ADAPTER]);
    ql_sandbox_net net = QL_SB_NET_NOT_ASKED;
    for (int64_t i = 0; i < r->n; i++)
        if (r->it[i].tested[BASE]) net = r->it[i].res[BASE].net;
    if (tested)
        sb_printf(&b,
                  "**Unit tests** (the record's `test` run after the answer by `%s` in a "
                  "separate process with time and memory limits; network %s): base model "
                  "%lld/%lld pass, adapter %lld/%lld.\n\n",
                  r->python, ql_sandbox_net_name(net), (long long)pass[BASE], (long long)tested,
                  (long long)pass[ADAPTER], (long long)tested);
    if (r->tests_unavailable) sb_printf(&b, "Unit tests were not run: %s\n\n", r->tests_note);
    sb_printf(&b, "| # | record | base | adapter |\n|---|---|---|---|\n");
    for (int64_t i = 0; i < r->n; i++)
        sb_printf(&b, "| [%lld](#%lld) | `%s` | %s | %s |\n", (long long)i + 1, (long long)i + 1,
                  r->it[i].source, verdict(&r->it[i], BASE), verdict(&r->it[i], ADAPTER));
    for (int64_t i = 0; i < r->n; i++) {
        const item *t = &r->it[i];
        sb_printf(&b, "\n<a id=\"%lld\"></a>\n## %lld. `%s`\n\nPrompt:\n\n<pre>", (long long)i + 1,
                  (long long)i + 1, t->source);
        if (t->prompt) sb_html(&b, t->prompt, strlen(t->prompt));
        sb_str(&b, "</pre>\n\n<table><tr><th>base model</th><th>adapter</th></tr><tr>");
        sb_pre_cell(&b, t, BASE);
        sb_pre_cell(&b, t, ADAPTER);
        sb_str(&b, "</tr></table>\n");
        if (t->ref) {
            sb_str(&b, "\n<details><summary>reference answer</summary><pre>");
            sb_html(&b, t->ref, strlen(t->ref));
            sb_str(&b, "</pre></details>\n");
        }
        for (int k = 0; k < 2; k++)
            if (t->tested[k] && t->res[k].verdict != QL_SB_PASS && t->res[k].tail[0]) {
                const char *tail = t->res[k].tail;
                size_t tl = strlen(tail);
                /* The last few lines of the test's output. */
                size_t from = tl, lines = 0;
                while (from > 0 && lines < 6)
                    if (tail[--from] == '\n' && from + 1 < tl) lines++;
                sb_printf(&b, "\n<details><summary>%s: test output (last lines)</summary><pre>",
                          k == BASE ? "base model" : "adapter");
                sb_html(&b, tail + from, tl - from);
                sb_str(&b, "</pre></details>\n");
            }
    }
    if (b.oom) {
        free(b.p);
        return ql_error(QL_ENOMEM, "out of memory writing the review sheet");
    }
    char *path = ql_fs_join(out_dir, "review.md");
    ql_status st = path ? ql_fs_write_atomic(path, b.p, b.len) : QL_ENOMEM;
    free(path);
    free(b.p);
    return st;
}

ql_status ql_review_end(ql_review *r, ql_llama *m, int64_t step, const char *out_dir,
                        const char *metrics_path, FILE *log) {
    if (!r) return QL_OK;
    QL_TRY(generate(r, m, ADAPTER));
    run_tests(r, ADAPTER);
    if (log) {
        fprintf(log, "review: the adapter's answers in %.1f s\n", r->gen_s[ADAPTER]);
        log_samples(r, ADAPTER, log);
    }
    if (metrics_path) QL_TRY(append_metrics(r, step, metrics_path));
    if (r->o.prompts > 0) {
        QL_TRY(write_sheet(r, step, out_dir));
        if (log) {
            int64_t tested = 0, pass[2] = {0, 0};
            for (int64_t i = 0; i < r->n; i++)
                if (r->it[i].tested[BASE] && r->it[i].tested[ADAPTER]) {
                    tested++;
                    for (int k = 0; k < 2; k++) pass[k] += r->it[i].res[k].verdict == QL_SB_PASS;
                }
            if (tested)
                fprintf(log, "review: unit tests pass: base model %lld/%lld, adapter %lld/%lld\n",
                        (long long)pass[BASE], (long long)tested, (long long)pass[ADAPTER],
                        (long long)tested);
            fprintf(log, "review: %s/review.md\n", out_dir);
        }
    }
    return QL_OK;
}

ql_review *ql_review_start(const ql_config *c, ql_llama *m, const ql_token_data *valid, FILE *log) {
    if (!valid || valid->n == 0 || (c->review.prompts <= 0 && c->review.samples <= 0)) return NULL;
    ql_review_options o = {.prompts = c->review.prompts,
                           .samples = c->review.samples,
                           .max_new_tokens = c->review.max_new_tokens,
                           .run_tests = c->review.tests,
                           .model = c->model,
                           .tokenizer = c->model};
    ql_review *r = NULL;
    if (ql_review_begin(m, valid, &o, log, &r) != QL_OK) {
        if (log) fprintf(log, "note: no samples or review sheet: %s\n", ql_error_message());
        ql_error_clear();
        return NULL;
    }
    return r;
}

void ql_review_finish(ql_review *r, ql_llama *m, const ql_config *c, int64_t steps, FILE *log) {
    if (!r) return;
    char *metrics = ql_fs_join(c->output_dir, "metrics.jsonl");
    if (!metrics || ql_review_end(r, m, steps, c->output_dir, metrics, log) != QL_OK) {
        if (log)
            fprintf(log, "note: the review was not finished: %s\n",
                    metrics ? ql_error_message() : "out of memory");
        ql_error_clear();
    }
    free(metrics);
    ql_review_free(r);
}
