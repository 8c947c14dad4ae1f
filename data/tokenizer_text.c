/* Text helpers of the tokenizer: the GPT-2 byte <-> code point table (shared
 * FORMATS.md §6.1), UTF-8 checks in Rust's terms, growable buffers. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

/* Printable bytes keep their code point; the other 68, in byte order, take
 * U+0100.. so that every byte is a visible character. */
#define R(b)                                                                                       \
    ((b) <= 0x20                  ? 256 + (b)                                                      \
     : (b) >= 0x7F && (b) <= 0xA0 ? 289 + (b)-0x7F                                                 \
     : (b) == 0xAD                ? 323                                                            \
                                  : (b))
#define R4(b) R(b), R(b + 1), R(b + 2), R(b + 3)
#define R16(b) R4(b), R4(b + 4), R4(b + 8), R4(b + 12)
const uint16_t ql_tok_byte_to_cp[256] = {
    R16(0x00), R16(0x10), R16(0x20), R16(0x30), R16(0x40), R16(0x50), R16(0x60), R16(0x70),
    R16(0x80), R16(0x90), R16(0xA0), R16(0xB0), R16(0xC0), R16(0xD0), R16(0xE0), R16(0xF0),
};
#undef R16
#undef R4
#undef R

int ql_tok_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(0x7F + cp - 289);
    if (cp == 323) return 0xAD;
    return -1;
}

/* > 0: a valid char of that many bytes; < 0: an invalid maximal subpart of
 * -r bytes (Unicode's "substitution of maximal subparts", which Rust's
 * from_utf8_lossy follows). */
static int utf8_step(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else
        return -1;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        unsigned d = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) return -k;
    }
    return need + 1;
}

size_t ql_tok_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs dominate real text: skip them eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int r = utf8_step(u + i, n - i);
        if (r < 0) return i;
        i += (size_t)r;
    }
    return n;
}

int ql_tok_utf8_dec(const unsigned char *s, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0) {
        *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

int ql_tok_utf8_enc(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

ql_status ql_tok_buf_reserve(ql_tok_buf *b, size_t more) {
    if (b->n + more + 1 <= b->cap) return QL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return ql_error(QL_ENOMEM, "tokenizer: out of memory for a %zu-byte buffer", cap);
    b->p = p;
    b->cap = cap;
    return QL_OK;
}

ql_status ql_tok_buf_append(ql_tok_buf *b, const void *s, size_t n) {
    QL_TRY(ql_tok_buf_reserve(b, n));
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return QL_OK;
}

ql_status ql_tok_buf_append_lossy(ql_tok_buf *b, const char *s, size_t n) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending valid bytes */
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int r = utf8_step(u + i, n - i);
        if (r > 0) {
            i += (size_t)r;
            continue;
        }
        QL_TRY(ql_tok_buf_append(b, s + run, i - run));
        QL_TRY(ql_tok_buf_append(b, fffd, 3));
        i += (size_t)(-r);
        run = i;
    }
    return ql_tok_buf_append(b, s + run, n - run);
}

void ql_tok_buf_free(ql_tok_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

ql_status ql_tok_spans_push(ql_tok_spans *s, size_t start, size_t end, int match) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        ql_tok_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return ql_error(QL_ENOMEM, "tokenizer: out of memory for %zu spans", cap);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (ql_tok_span){start, end, match};
    return QL_OK;
}

ql_status ql_ids_reserve(ql_ids *ids, size_t more) {
    if (ids->n + more <= ids->cap) return QL_OK;
    size_t cap = ids->cap ? ids->cap : 256;
    while (cap < ids->n + more) cap *= 2;
    int32_t *v = realloc(ids->v, cap * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "tokenizer: out of memory for %zu token ids", cap);
    ids->v = v;
    ids->cap = cap;
    return QL_OK;
}

ql_status ql_ids_push(ql_ids *ids, int32_t id) {
    if (ids->n == ids->cap) QL_TRY(ql_ids_reserve(ids, 1));
    ids->v[ids->n++] = id;
    return QL_OK;
}

void ql_ids_free(ql_ids *ids) {
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}
