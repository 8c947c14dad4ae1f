/* Ids back to text through tokenizers' decoder chain (the decoders/ folder): each
 * step maps a list of strings to a list of strings, and the result is their
 * concatenation. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

typedef struct strlist {
    ql_tok_buf b;
    ql_tok_spans s; /* start/end into b */
} strlist;

static ql_status sl_add(strlist *l, const char *p, size_t n) {
    size_t at = l->b.n;
    QL_TRY(ql_tok_buf_append(&l->b, p, n));
    return ql_tok_spans_push(&l->s, at, l->b.n, 0);
}

static void sl_free(strlist *l) {
    ql_tok_buf_free(&l->b);
    free(l->s.v);
}

/* Appends piece bytes: every char through the GPT-2 table, or, when one char
 * is not in it, the piece's own bytes (ByteLevel::decode_chain). */
static ql_status bytelevel_piece(ql_tok_buf *o, const char *p, size_t n) {
    const unsigned char *u = (const unsigned char *)p;
    size_t at = o->n;
    QL_TRY(ql_tok_buf_reserve(o, n));
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)ql_tok_utf8_dec(u + i, &cp);
        int b = ql_tok_cp_to_byte(cp);
        if (b < 0) {
            o->n = at;
            return ql_tok_buf_append(o, p, n);
        }
        o->p[o->n++] = (char)b;
    }
    o->p[o->n] = 0;
    return QL_OK;
}

static int is_byte_token(const char *p, size_t n, int *byte) {
    if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>') return 0;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = p[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        v = v * 16 + d;
    }
    *byte = v;
    return 1;
}

static ql_status flush_bytes(strlist *o, ql_tok_buf *bytes) {
    if (!bytes->n) return QL_OK;
    if (ql_tok_utf8_valid(bytes->p, bytes->n) == bytes->n) {
        QL_TRY(sl_add(o, bytes->p, bytes->n));
    } else {
        for (size_t k = 0; k < bytes->n; k++) QL_TRY(sl_add(o, "\xEF\xBF\xBD", 3));
    }
    bytes->n = 0;
    return QL_OK;
}

static ql_status step(const ql_tok_dec *d, const strlist *in, strlist *o) {
    ql_status st = QL_OK;
    switch (d->kind) {
    case QL_DEC_BYTELEVEL: {
        ql_tok_buf raw = {0};
        for (size_t i = 0; i < in->s.n && st == QL_OK; i++)
            st = bytelevel_piece(&raw, in->b.p + in->s.v[i].start,
                                 in->s.v[i].end - in->s.v[i].start);
        size_t at = o->b.n;
        if (st == QL_OK) st = ql_tok_buf_append_lossy(&o->b, raw.p ? raw.p : "", raw.n);
        if (st == QL_OK) st = ql_tok_spans_push(&o->s, at, o->b.n, 0);
        ql_tok_buf_free(&raw);
        return st;
    }
    case QL_DEC_FUSE: {
        size_t at = o->b.n;
        for (size_t i = 0; i < in->s.n; i++)
            QL_TRY(ql_tok_buf_append(&o->b, in->b.p + in->s.v[i].start,
                                     in->s.v[i].end - in->s.v[i].start));
        return ql_tok_spans_push(&o->s, at, o->b.n, 0);
    }
    case QL_DEC_BYTEFALLBACK: {
        ql_tok_buf bytes = {0};
        for (size_t i = 0; i < in->s.n && st == QL_OK; i++) {
            const char *p = in->b.p + in->s.v[i].start;
            size_t n = in->s.v[i].end - in->s.v[i].start;
            int b;
            if (is_byte_token(p, n, &b)) {
                char c = (char)b;
                st = ql_tok_buf_append(&bytes, &c, 1);
                continue;
            }
            st = flush_bytes(o, &bytes);
            if (st == QL_OK) st = sl_add(o, p, n);
        }
        if (st == QL_OK) st = flush_bytes(o, &bytes);
        ql_tok_buf_free(&bytes);
        return st;
    }
    case QL_DEC_METASPACE:
    case QL_DEC_REPLACE:
        for (size_t i = 0; i < in->s.n; i++) {
            const char *p = in->b.p + in->s.v[i].start;
            size_t n = in->s.v[i].end - in->s.v[i].start, at = o->b.n, run = 0;
            const char *to = d->kind == QL_DEC_REPLACE ? d->b : " ";
            size_t to_len = d->kind == QL_DEC_REPLACE ? d->b_len : 1;
            if (d->kind == QL_DEC_METASPACE && i == 0 && d->prepend != QL_PREPEND_NEVER) to_len = 0;
            for (size_t k = 0; d->a_len && k + d->a_len <= n;) {
                if (memcmp(p + k, d->a, d->a_len)) {
                    k++;
                    continue;
                }
                QL_TRY(ql_tok_buf_append(&o->b, p + run, k - run));
                QL_TRY(ql_tok_buf_append(&o->b, to, to_len));
                k += d->a_len;
                run = k;
            }
            QL_TRY(ql_tok_buf_append(&o->b, p + run, n - run));
            QL_TRY(ql_tok_spans_push(&o->s, at, o->b.n, 0));
        }
        return QL_OK;
    case QL_DEC_STRIP:
        for (size_t i = 0; i < in->s.n; i++) {
            const char *p = in->b.p + in->s.v[i].start;
            size_t n = in->s.v[i].end - in->s.v[i].start, a = 0, e = n;
            for (int k = 0; k < d->start && a + d->a_len <= e && !memcmp(p + a, d->a, d->a_len);
                 k++)
                a += d->a_len;
            for (int k = 0;
                 k < d->stop && e >= a + d->a_len && !memcmp(p + e - d->a_len, d->a, d->a_len); k++)
                e -= d->a_len;
            QL_TRY(sl_add(o, p + a, e - a));
        }
        return QL_OK;
    }
    return ql_error(QL_EINTERNAL, "tokenizer: unknown decoder kind %d", (int)d->kind);
}

ql_status ql_tokenizer_decode(const ql_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                              char **text, size_t *len) {
    const ql_tok_model *m = t->m;
    strlist a = {0}, b = {0};
    ql_status st = QL_OK;
    *text = NULL;
    if (len) *len = 0;
    for (size_t i = 0; i < n && st == QL_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= m->n_ids || m->piece_len[id] == UINT32_MAX) {
            st = ql_error(QL_EINVAL, "decode: id %d at position %zu is not in the vocabulary of %s",
                          (int)id, i, m->path);
            break;
        }
        if ((flags & QL_TOK_SKIP_SPECIAL) && m->special[id]) continue;
        st = sl_add(&a, m->pool + m->piece_off[id], m->piece_len[id]);
    }
    for (int k = 0; k < m->n_dec && st == QL_OK; k++) {
        b.b.n = 0;
        b.s.n = 0;
        st = step(&m->dec[k], &a, &b);
        strlist tmp = a;
        a = b;
        b = tmp;
    }
    ql_tok_buf out = {0};
    for (size_t i = 0; i < a.s.n && st == QL_OK; i++) {
        if (m->n_dec == 0 && i > 0) st = ql_tok_buf_append(&out, " ", 1);
        if (st == QL_OK)
            st = ql_tok_buf_append(&out, a.b.p + a.s.v[i].start, a.s.v[i].end - a.s.v[i].start);
    }
    if (st == QL_OK) st = ql_tok_buf_reserve(&out, 0);
    sl_free(&a);
    sl_free(&b);
    if (st != QL_OK) {
        ql_tok_buf_free(&out);
        return st;
    }
    out.p[out.n] = 0;
    *text = out.p;
    if (len) *len = out.n;
    return QL_OK;
}
