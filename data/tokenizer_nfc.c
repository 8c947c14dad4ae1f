/* Unicode Normalization Form C (UAX #15): canonical decomposition, canonical
 * ordering of combining marks, canonical composition. Text whose chars all
 * lie outside ql_nfc_check (most text: ASCII, CJK, precomposed letters) is
 * already NFC and is copied as is. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"
#include "data/tokenizer_nfc.h"

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7 };
enum { LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int in_check(uint32_t cp) {
    int lo = 0, hi = ql_nfc_n_check - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < ql_nfc_check[mid][0])
            hi = mid - 1;
        else if (cp > ql_nfc_check[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int ccc_of(uint32_t cp) {
    int lo = 0, hi = ql_nfc_n_ccc - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        uint32_t c = ql_nfc_ccc[mid] >> 8;
        if (cp < c)
            hi = mid - 1;
        else if (cp > c)
            lo = mid + 1;
        else
            return (int)(ql_nfc_ccc[mid] & 0xFF);
    }
    return 0;
}

static const ql_nfc_decomp_row *decomp_of(uint32_t cp) {
    int lo = 0, hi = ql_nfc_n_decomp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < ql_nfc_decomp[mid].cp)
            hi = mid - 1;
        else if (cp > ql_nfc_decomp[mid].cp)
            lo = mid + 1;
        else
            return &ql_nfc_decomp[mid];
    }
    return NULL;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
        b < TBASE + TCOUNT)
        return a + (b - TBASE);
    uint64_t key = (uint64_t)a << 21 | b;
    int lo = 0, hi = ql_nfc_n_comp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (key < ql_nfc_comp[mid].key)
            hi = mid - 1;
        else if (key > ql_nfc_comp[mid].key)
            lo = mid + 1;
        else
            return ql_nfc_comp[mid].cp;
    }
    return 0;
}

typedef struct cpbuf {
    uint32_t *cp;
    uint8_t *cc;
    size_t n, cap;
} cpbuf;

static int push(cpbuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        uint32_t *c = realloc(b->cp, cap * sizeof *c);
        if (c) b->cp = c;
        uint8_t *k = realloc(b->cc, cap);
        if (k) b->cc = k;
        if (!c || !k) return 0;
        b->cap = cap;
    }
    b->cp[b->n] = cp;
    b->cc[b->n] = (uint8_t)ccc_of(cp);
    b->n++;
    return 1;
}

ql_status ql_tok_nfc(const char *s, size_t n, ql_tok_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    int plain = 1;
    for (size_t i = 0; i < n && plain;) {
        if (u[i] < 0xCC) { /* below U+0300 everything is NFC */
            i += u[i] < 0x80 ? 1 : 2;
            continue;
        }
        uint32_t cp;
        i += (size_t)ql_tok_utf8_dec(u + i, &cp);
        plain = !in_check(cp);
    }
    out->n = 0;
    if (plain) return ql_tok_buf_append(out, s, n);

    cpbuf b = {0};
    ql_status st = QL_OK;
    for (size_t i = 0; i < n && st == QL_OK;) {
        uint32_t cp;
        i += (size_t)ql_tok_utf8_dec(u + i, &cp);
        int ok = 1;
        const ql_nfc_decomp_row *d;
        if (cp >= SBASE && cp < SBASE + SCOUNT) {
            uint32_t si = cp - SBASE;
            ok = push(&b, LBASE + si / NCOUNT) && push(&b, VBASE + (si % NCOUNT) / TCOUNT);
            if (ok && si % TCOUNT) ok = push(&b, TBASE + si % TCOUNT);
        } else if ((d = decomp_of(cp)) != NULL) {
            for (int k = 0; k < d->len && ok; k++) ok = push(&b, ql_nfc_decomp_cps[d->off + k]);
        } else {
            ok = push(&b, cp);
        }
        if (!ok) st = ql_error(QL_ENOMEM, "tokenizer: out of memory normalizing text");
    }
    /* canonical ordering: a stable sort of each run of non-starters */
    for (size_t i = 1; i < b.n && st == QL_OK; i++) {
        if (!b.cc[i]) continue;
        size_t j = i;
        uint32_t cp = b.cp[i];
        uint8_t cc = b.cc[i];
        while (j > 0 && b.cc[j - 1] > cc) {
            b.cp[j] = b.cp[j - 1];
            b.cc[j] = b.cc[j - 1];
            j--;
        }
        b.cp[j] = cp;
        b.cc[j] = cc;
    }
    /* composition, in place: w is the output length */
    size_t w = 0, starter = SIZE_MAX;
    int last_cc = 0;
    for (size_t i = 0; i < b.n && st == QL_OK; i++) {
        uint32_t cp = b.cp[i];
        int cc = b.cc[i];
        if (starter != SIZE_MAX) {
            int adjacent = w - 1 == starter;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                uint32_t c = compose(b.cp[starter], cp);
                if (c) {
                    b.cp[starter] = c;
                    continue;
                }
            }
        }
        if (cc == 0) {
            starter = w;
            last_cc = 0;
        } else {
            last_cc = cc;
        }
        b.cp[w] = cp;
        b.cc[w] = (uint8_t)cc;
        w++;
    }
    for (size_t i = 0; i < w && st == QL_OK; i++) {
        char e[4];
        st = ql_tok_buf_append(out, e, (size_t)ql_tok_utf8_enc(b.cp[i], e));
    }
    free(b.cp);
    free(b.cc);
    return st;
}
