/* Normalizers and pre-tokenizers: how text is cut into the pieces that BPE
 * sees (shared FORMATS.md §6.2). Regexes are tokenizers' Oniguruma patterns
 * run by PCRE2 with Unicode properties (PCRE2_UTF | PCRE2_UCP), JIT-compiled
 * when the library can. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

/* pre_tokenizers/byte_level.rs */
const char ql_tok_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Meta Llama-3 tokenizer.json (and llama.cpp's "llama-bpe") */
const char ql_tok_llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* Qwen2 tokenizer.json: the Llama-3 pattern with single digits */
const char ql_tok_qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Oniguruma's \s is exactly the White_Space property. PCRE2's \s under
 * PCRE2_UCP differs (10.42 also matches U+180E MONGOLIAN VOWEL SEPARATOR), so
 * \s and \S are spelled out as that list: \s -> [list], \S -> [^list], and
 * \s inside a class -> list. */
#define WHITE_SPACE                                                                                \
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{"   \
    "202F}\\x{205F}\\x{3000}"
static ql_status translate(const char *p, size_t n, const char *where, ql_tok_buf *out) {
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            i++;
            if (d == 's') {
                const char *w = in_class ? WHITE_SPACE : "[" WHITE_SPACE "]";
                QL_TRY(ql_tok_buf_append(out, w, strlen(w)));
            } else if (d == 'S') {
                if (in_class)
                    return ql_error(QL_EUNSUPPORTED, "%s: \\S inside a character class", where);
                QL_TRY(ql_tok_buf_append(out, "[^" WHITE_SPACE "]", strlen("[^" WHITE_SPACE "]")));
            } else {
                char e[2] = {c, d};
                QL_TRY(ql_tok_buf_append(out, e, 2));
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            QL_TRY(ql_tok_buf_append(out, &c, 1));
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && p[i + 1] == '^') QL_TRY(ql_tok_buf_append(out, p + ++i, 1));
            if (i + 1 < n && p[i + 1] == ']') QL_TRY(ql_tok_buf_append(out, p + ++i, 1));
            continue;
        }
        if (in_class && c == '[')
            return ql_error(QL_EUNSUPPORTED, "%s: nested character classes", where);
        if (in_class && c == ']') in_class = 0;
        QL_TRY(ql_tok_buf_append(out, &c, 1));
    }
    return QL_OK;
}

ql_status ql_tok_regex_compile(const char *pattern, size_t len, int literal, const char *where,
                               pcre2_code **re, int *jit) {
    ql_tok_buf b = {0};
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
    if (literal) {
        opts |= PCRE2_LITERAL;
        QL_TRY(ql_tok_buf_append(&b, pattern, len));
    } else {
        ql_status st = translate(pattern, len, where, &b);
        if (st != QL_OK) {
            ql_tok_buf_free(&b);
            return st;
        }
    }
    int err;
    PCRE2_SIZE off;
    *re = pcre2_compile((PCRE2_SPTR)b.p, b.n, opts, &err, &off, NULL);
    ql_tok_buf_free(&b);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return ql_error(QL_EUNSUPPORTED, "%s: regex /%.*s/ does not compile with PCRE2: %s", where,
                        (int)len, pattern, (const char *)msg);
    }
    *jit = pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE) == 0;
    return QL_OK;
}

/* Non-overlapping matches in p[0..n) as Oniguruma's find_iter gives them,
 * with the gaps between them: spans flagged match / not match. */
static ql_status find_matches(ql_tokenizer *t, const ql_tok_pretok *op, const char *p, size_t n,
                              ql_tok_spans *out) {
    out->n = 0;
    size_t pos = 0, prev = 0, last_match_end = SIZE_MAX;
    while (pos <= n) {
        int rc = op->jit ? pcre2_jit_match(op->re, (PCRE2_SPTR)p, n, pos, 0, t->md, t->mctx)
                         : pcre2_match(op->re, (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK, t->md,
                                       t->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ql_error(QL_EINTERNAL, "tokenizer: regex match failed at byte %zu: %s", pos,
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t s = ov[0], e = ov[1];
        if (s == e && last_match_end == e) {
            /* an empty match right after the previous one: step one char */
            if (pos >= n) break;
            pos++;
            while (pos < n && ((unsigned char)p[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        pos = e;
        last_match_end = e;
        if (s == e) continue; /* empty pieces are dropped anyway */
        if (prev != s) QL_TRY(ql_tok_spans_push(out, prev, s, 0));
        QL_TRY(ql_tok_spans_push(out, s, e, 1));
        prev = e;
    }
    if (prev != n) QL_TRY(ql_tok_spans_push(out, prev, n, 0));
    if (op->invert)
        for (size_t i = 0; i < out->n; i++) out->v[i].match = !out->v[i].match;
    return QL_OK;
}

/* NormalizedString::split: turns (span, is_match) into the pieces kept. */
static void apply_behavior(ql_tok_spans *s, ql_tok_behavior b) {
    size_t w = 0;
    switch (b) {
    case QL_SPLIT_ISOLATED: return;
    case QL_SPLIT_REMOVED:
        for (size_t i = 0; i < s->n; i++)
            if (!s->v[i].match) s->v[w++] = s->v[i];
        break;
    case QL_SPLIT_CONTIGUOUS: {
        int prev = 0;
        for (size_t i = 0; i < s->n; i++) {
            if (w > 0 && s->v[i].match == prev)
                s->v[w - 1].end = s->v[i].end;
            else
                s->v[w++] = s->v[i];
            prev = s->v[i].match;
        }
        break;
    }
    case QL_SPLIT_MERGED_PREV: {
        int prev = 0;
        for (size_t i = 0; i < s->n; i++) {
            if (s->v[i].match && !prev && w > 0)
                s->v[w - 1].end = s->v[i].end;
            else
                s->v[w++] = s->v[i];
            prev = s->v[i].match;
        }
        break;
    }
    case QL_SPLIT_MERGED_NEXT: {
        /* from the right: a match joins the piece after it */
        int prev = 0;
        size_t r = s->n;
        for (size_t i = s->n; i-- > 0;) {
            if (s->v[i].match && !prev && r < s->n)
                s->v[r].start = s->v[i].start;
            else
                s->v[--r] = s->v[i];
            prev = s->v[i].match;
        }
        memmove(s->v, s->v + r, (s->n - r) * sizeof *s->v);
        w = s->n - r;
        break;
    }
    }
    s->n = w;
}

static ql_status recurse_spans(ql_tokenizer *t, int depth, const char *p, const ql_tok_spans *sp,
                               int at_origin, ql_ids *out) {
    for (size_t i = 0; i < sp->n; i++) {
        const ql_tok_span *s = &sp->v[i];
        if (s->end == s->start) continue;
        QL_TRY(ql_tok_pretokenize(t, depth + 1, p + s->start, s->end - s->start,
                                  at_origin && s->start == 0, out));
    }
    return QL_OK;
}

ql_status ql_tok_pretokenize(ql_tokenizer *t, int depth, const char *p, size_t n, int at_origin,
                             ql_ids *out) {
    const ql_tok_model *m = t->m;
    if (n == 0) return QL_OK;
    if (depth == m->n_pretok)
        return t->piece_hook ? t->piece_hook(t->piece_ctx, p, n) : ql_tok_bpe_word(t, p, n, out);
    const ql_tok_pretok *op = &m->pretok[depth];
    ql_tok_buf *buf = &t->pt_buf[depth];
    ql_tok_spans *sp = &t->pt_spans[depth];
    switch (op->kind) {
    case QL_PT_BYTELEVEL:
        if (op->add_prefix_space && p[0] != ' ') {
            buf->n = 0;
            QL_TRY(ql_tok_buf_append(buf, " ", 1));
            QL_TRY(ql_tok_buf_append(buf, p, n));
            p = buf->p;
            n = buf->n;
        }
        if (!op->re) return ql_tok_pretokenize(t, depth + 1, p, n, at_origin, out);
        QL_TRY(find_matches(t, op, p, n, sp));
        return recurse_spans(t, depth, p, sp, at_origin, out);
    case QL_PT_SPLIT:
    case QL_PT_NUMERIC:
        QL_TRY(find_matches(t, op, p, n, sp));
        apply_behavior(sp, op->behavior);
        return recurse_spans(t, depth, p, sp, at_origin, out);
    case QL_PT_METASPACE: {
        buf->n = 0;
        int starts = n >= op->rep_len && !memcmp(p, op->rep, op->rep_len);
        int prepend =
            op->prepend == QL_PREPEND_ALWAYS || (op->prepend == QL_PREPEND_FIRST && at_origin);
        QL_TRY(ql_tok_buf_reserve(buf, (n + 1) * op->rep_len));
        /* a leading ' ' becomes the replacement too, so it counts as one */
        if (prepend && !starts && p[0] != ' ') QL_TRY(ql_tok_buf_append(buf, op->rep, op->rep_len));
        size_t run = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] != ' ') continue;
            QL_TRY(ql_tok_buf_append(buf, p + run, i - run));
            QL_TRY(ql_tok_buf_append(buf, op->rep, op->rep_len));
            run = i + 1;
        }
        QL_TRY(ql_tok_buf_append(buf, p + run, n - run));
        if (!op->split) return ql_tok_pretokenize(t, depth + 1, buf->p, buf->n, at_origin, out);
        /* split on the replacement, each piece starting with it */
        sp->n = 0;
        size_t start = 0;
        for (size_t i = 0; i + op->rep_len <= buf->n; i++) {
            if (memcmp(buf->p + i, op->rep, op->rep_len)) continue;
            if (i > start) QL_TRY(ql_tok_spans_push(sp, start, i, 0));
            start = i;
            i += op->rep_len - 1;
        }
        if (start < buf->n) QL_TRY(ql_tok_spans_push(sp, start, buf->n, 0));
        return recurse_spans(t, depth, buf->p, sp, at_origin, out);
    }
    }
    return ql_error(QL_EINTERNAL, "tokenizer: unknown pre-tokenizer kind %d", (int)op->kind);
}

/* Normalizers in order: NFC, Prepend (non-empty text only), literal Replace. */
ql_status ql_tok_normalize(const ql_tok_model *m, const char *s, size_t n, ql_tok_buf *out,
                           ql_tok_buf *tmp) {
    out->n = 0;
    QL_TRY(ql_tok_buf_append(out, s, n));
    for (int k = 0; k < m->n_norm; k++) {
        const ql_tok_norm *nm = &m->norm[k];
        if (nm->kind == QL_NORM_NFC) {
            QL_TRY(ql_tok_nfc(out->p, out->n, tmp));
        } else if (nm->kind == QL_NORM_PREPEND) {
            if (out->n == 0) continue;
            tmp->n = 0;
            QL_TRY(ql_tok_buf_append(tmp, nm->a, nm->a_len));
            QL_TRY(ql_tok_buf_append(tmp, out->p, out->n));
        } else {
            tmp->n = 0;
            size_t run = 0;
            for (size_t i = 0; nm->a_len && i + nm->a_len <= out->n;) {
                if (memcmp(out->p + i, nm->a, nm->a_len)) {
                    i++;
                    continue;
                }
                QL_TRY(ql_tok_buf_append(tmp, out->p + run, i - run));
                QL_TRY(ql_tok_buf_append(tmp, nm->b, nm->b_len));
                i += nm->a_len;
                run = i;
            }
            QL_TRY(ql_tok_buf_append(tmp, out->p + run, out->n - run));
        }
        ql_tok_buf t = *out;
        *out = *tmp;
        *tmp = t;
    }
    return QL_OK;
}
