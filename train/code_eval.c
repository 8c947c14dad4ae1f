/* Code-evaluation records and test runs (train/code_eval.h). */
#include "train/code_eval.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ql_code_set_free(ql_code_set *s) {
    for (int64_t i = 0; i < s->n; i++) {
        free(s->r[i].prompt);
        free(s->r[i].completion);
        free(s->r[i].test);
        free(s->r[i].source);
    }
    free(s->r);
    memset(s, 0, sizeof *s);
}

static ql_status add_record(ql_code_set *s, int64_t *cap, const json_t *o, const char *path,
                            int64_t line) {
    const json_t *p = json_object_get(o, "prompt"), *c = json_object_get(o, "completion"),
                 *t = json_object_get(o, "test"), *src = json_object_get(o, "source");
    if (!json_is_string(p))
        return ql_error(QL_EFORMAT, "%s:%lld: a code record needs a string \"prompt\"", path,
                        (long long)line);
    if (c && !json_is_string(c))
        return ql_error(QL_EFORMAT, "%s:%lld: \"completion\" must be a string", path,
                        (long long)line);
    if (t && !json_is_null(t) && !json_is_string(t))
        return ql_error(QL_EFORMAT, "%s:%lld: \"test\" must be a string (Python code)", path,
                        (long long)line);
    if (s->n == *cap) {
        int64_t nc = *cap ? 2 * *cap : 64;
        ql_code_record *nr = realloc(s->r, (size_t)nc * sizeof *nr);
        if (!nr) return ql_error(QL_ENOMEM, "out of memory reading %s", path);
        s->r = nr;
        *cap = nc;
    }
    ql_code_record *r = &s->r[s->n];
    memset(r, 0, sizeof *r);
    r->line = line;
    r->prompt = strndup(json_string_value(p), json_string_length(p));
    r->completion = c ? strndup(json_string_value(c), json_string_length(c)) : strdup("");
    r->test = json_is_string(t) ? strndup(json_string_value(t), json_string_length(t)) : NULL;
    if (json_is_string(src)) {
        r->source = strdup(json_string_value(src));
    } else {
        size_t n = strlen(path) + 32;
        r->source = malloc(n);
        if (r->source) snprintf(r->source, n, "%s:%lld", path, (long long)line);
    }
    s->n++;
    if (!r->prompt || !r->completion || !r->source || (json_is_string(t) && !r->test))
        return ql_error(QL_ENOMEM, "out of memory reading %s", path);
    if (r->test) s->n_tests++;
    return QL_OK;
}

ql_status ql_code_set_load(const char *path, ql_code_set *s) {
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "r");
    if (!f) return ql_error(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int64_t no = 0, rcap = 0;
    ql_status st = QL_OK;
    while (st == QL_OK && (got = getline(&line, &cap, f)) >= 0) {
        no++;
        size_t k = 0;
        while (k < (size_t)got && strchr(" \t\r\n", line[k])) k++;
        if (k == (size_t)got) continue;
        json_error_t e;
        json_t *o = json_loadb(line, (size_t)got, 0, &e);
        if (!json_is_object(o))
            st = ql_error(QL_EFORMAT, "%s:%lld: not a JSON object (%s)", path, (long long)no,
                          o ? "another JSON value" : e.text);
        else
            st = add_record(s, &rcap, o, path, no);
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (st != QL_OK) ql_code_set_free(s);
    return st;
}

size_t ql_code_prompt_len(const char *prompt) {
    size_t n = strlen(prompt);
    while (n > 0 && strchr(" \t\r\n", prompt[n - 1])) n--;
    return n;
}

char *ql_code_program(const char *prompt, size_t np, const char *completion, size_t clen,
                      const char *test, size_t *len) {
    size_t nt = test ? strlen(test) : 0;
    int nl = clen == 0 || completion[clen - 1] != '\n';
    char *p = malloc(np + clen + 2 + nt + 1);
    if (!p) return NULL;
    memcpy(p, prompt, np);
    memcpy(p + np, completion, clen);
    size_t k = np + clen;
    if (nl) p[k++] = '\n';
    p[k++] = '\n';
    if (nt) memcpy(p + k, test, nt);
    k += nt;
    p[k] = '\0';
    if (len) *len = k;
    return p;
}

ql_status ql_code_run_test(const char *python, const ql_code_record *rec, const char *completion,
                           size_t clen, const ql_sandbox_limits *lim, ql_sandbox_result *res) {
    if (!rec->test) return ql_error(QL_EINVAL, "%s: the record has no test", rec->source);
    size_t len;
    char *prog = ql_code_program(rec->prompt, ql_code_prompt_len(rec->prompt), completion, clen,
                                 rec->test, &len);
    if (!prog) return ql_error(QL_ENOMEM, "out of memory");
    ql_status st = ql_sandbox_run_python(python, prog, len, lim, res);
    free(prog);
    return st;
}

void ql_code_gen_config(ql_gen_config *c, int64_t max_new_tokens, int batch) {
    ql_gen_config_default(c);
    c->max_new_tokens = max_new_tokens;
    c->batch = batch;
    c->stop_at_dedent = 1;
}
