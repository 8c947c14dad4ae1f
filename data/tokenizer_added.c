/* Added tokens (<|im_start|>, <s>, user tokens): cut out of the text before
 * anything else, leftmost-longest, with tokenizers' lstrip / rstrip /
 * single_word adjustments (tokenizer/added_vocabulary.rs::find_matches). */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

void ql_tok_trie_init(ql_tok_trie *tr) {
    memset(tr, 0, sizeof *tr);
    for (int i = 0; i < 256; i++) tr->root[i] = -1;
}

void ql_tok_trie_free(ql_tok_trie *tr) {
    free(tr->nodes);
    ql_tok_trie_init(tr);
}

static int32_t new_node(ql_tok_trie *tr, uint8_t byte) {
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? 2 * tr->cap : 64;
        struct ql_tok_tnode *v = realloc(tr->nodes, cap * sizeof *v);
        if (!v) return -1;
        tr->nodes = v;
        tr->cap = cap;
    }
    tr->nodes[tr->n] = (struct ql_tok_tnode){-1, -1, -1, byte};
    return (int32_t)tr->n++;
}

ql_status ql_tok_trie_add(ql_tok_trie *tr, const char *s, size_t n, int32_t added) {
    if (n == 0) return QL_OK;
    const uint8_t *u = (const uint8_t *)s;
    int32_t cur = tr->root[u[0]];
    if (cur < 0) {
        cur = new_node(tr, u[0]);
        if (cur < 0) return ql_error(QL_ENOMEM, "tokenizer: out of memory for added tokens");
        tr->root[u[0]] = cur;
    }
    for (size_t i = 1; i < n; i++) {
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != u[i]) c = tr->nodes[c].sibling;
        if (c < 0) {
            c = new_node(tr, u[i]);
            if (c < 0) return ql_error(QL_ENOMEM, "tokenizer: out of memory for added tokens");
            tr->nodes[c].sibling = tr->nodes[cur].child;
            tr->nodes[cur].child = c;
        }
        cur = c;
    }
    tr->nodes[cur].added = added;
    return QL_OK;
}

/* Rust's char::is_whitespace / regex \s: the White_Space property. */
static int is_white(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* regex \w, approximated outside ASCII: letters, marks and digits of other
 * scripts count, spaces and the general punctuation blocks do not. Only
 * single_word tokens use it. */
static int is_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (is_white(c)) return 0;
    if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xA0 && c <= 0xBF))
        return 0;
    return 1;
}

/* The code point that ends just before s[i] (valid UTF-8 assumed). */
static uint32_t cp_before(const char *s, size_t i) {
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    ql_tok_utf8_dec((const unsigned char *)s + k, &cp);
    return cp;
}

static size_t char_before(const char *s, size_t i) {
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

ql_status ql_tok_added_split(const ql_tok_model *m, const ql_tok_trie *tr, const char *s, size_t n,
                             int parse_special, ql_tok_spans *out) {
    const uint8_t *u = (const uint8_t *)s;
    size_t pos = 0, start_offset = 0;
    out->n = 0;
    while (pos < n) {
        size_t i = pos, best_end = 0;
        int32_t best = -1;
        for (; i < n; i++) {
            int32_t c = tr->root[u[i]];
            if (c < 0) continue;
            size_t k = i + 1;
            for (;;) {
                if (tr->nodes[c].added >= 0) {
                    best = tr->nodes[c].added;
                    best_end = k;
                }
                if (k >= n) break;
                int32_t d = tr->nodes[c].child;
                while (d >= 0 && tr->nodes[d].byte != u[k]) d = tr->nodes[d].sibling;
                if (d < 0) break;
                c = d;
                k++;
            }
            if (best >= 0) break;
        }
        if (best < 0) break;
        size_t start = i, stop = best_end;
        pos = best_end; /* the matcher goes on after this match, kept or not */
        const ql_tok_added *a = &m->added[best];
        if (a->special && !parse_special) continue;
        if (a->single_word) {
            uint32_t cp;
            int start_space = start == 0 || !is_word(cp_before(s, start));
            int stop_space = stop == n || (ql_tok_utf8_dec(u + stop, &cp), !is_word(cp));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0 && is_white(cp_before(s, ns))) ns = char_before(s, ns);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                int l = ql_tok_utf8_dec(u + stop, &cp);
                if (!is_white(cp)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start) QL_TRY(ql_tok_spans_push(out, start_offset, start, 0));
        QL_TRY(ql_tok_spans_push(out, start, stop, 1 + best));
        start_offset = stop;
    }
    if (start_offset < n) QL_TRY(ql_tok_spans_push(out, start_offset, n, 0));
    return QL_OK;
}
