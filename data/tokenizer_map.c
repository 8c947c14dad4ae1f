/* Open-addressing hash maps of the tokenizer: piece bytes -> id, and the BPE
 * merge table (left id, right id) -> (rank, merged id). Linear probing at a
 * load factor of at most 1/2; built once at load, then only read. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return x;
}

/* Pieces are short (a few bytes on average): eight bytes per multiply. */
uint64_t ql_tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix(h ^ w) * 0x9E3779B97F4A7C15ull;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = mix(h ^ w ^ ((uint64_t)n << 59)) * 0x9E3779B97F4A7C15ull;
    }
    return mix(h) | 1; /* never 0: the word cache uses 0 for "empty" */
}

static size_t table_size(size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected + 2) cap *= 2;
    return cap;
}

ql_status ql_tok_smap_init(ql_tok_smap *m, size_t expected) {
    size_t cap = table_size(expected);
    m->slots = ql_calloc(cap, sizeof *m->slots, "tokenizer vocabulary table");
    if (!m->slots) return QL_ENOMEM;
    for (size_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->mask = cap - 1;
    m->n = 0;
    return QL_OK;
}

void ql_tok_smap_free(ql_tok_smap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static void smap_grow(ql_tok_smap *m) {
    size_t cap = 2 * (m->mask + 1);
    struct ql_tok_sslot *old = m->slots, *s = calloc(cap, sizeof *s);
    QL_ASSERT(s); /* tables are sized up front; growth is a rare fallback */
    for (size_t i = 0; i < cap; i++) s[i].val = -1;
    size_t old_cap = m->mask + 1;
    m->slots = s;
    m->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].val < 0) continue;
        size_t j = old[i].hash & m->mask;
        while (s[j].val >= 0) j = (j + 1) & m->mask;
        s[j] = old[i];
    }
    free(old);
}

void ql_tok_smap_put(ql_tok_smap *m, const char *pool, uint32_t off, uint32_t len, int32_t val) {
    if (2 * (m->n + 1) > m->mask + 1) smap_grow(m);
    uint32_t h = (uint32_t)ql_tok_hash(pool + off, len);
    size_t i = h & m->mask;
    while (m->slots[i].val >= 0) {
        struct ql_tok_sslot *s = &m->slots[i];
        if (s->hash == h && s->len == len && !memcmp(pool + s->off, pool + off, len)) {
            s->val = val;
            return;
        }
        i = (i + 1) & m->mask;
    }
    m->slots[i] = (struct ql_tok_sslot){off, len, val, h};
    m->n++;
}

int32_t ql_tok_smap_get(const ql_tok_smap *m, const char *pool, const void *key, size_t len) {
    if (!m->slots) return -1;
    uint32_t h = (uint32_t)ql_tok_hash(key, len);
    size_t i = h & m->mask;
    for (;;) {
        const struct ql_tok_sslot *s = &m->slots[i];
        if (s->val < 0) return -1;
        if (s->hash == h && s->len == len && !memcmp(pool + s->off, key, len)) return s->val;
        i = (i + 1) & m->mask;
    }
}

ql_status ql_tok_pmap_init(ql_tok_pmap *m, size_t expected) {
    size_t cap = table_size(expected);
    m->slots = ql_malloc(cap * sizeof *m->slots, "tokenizer merge table");
    if (!m->slots) return QL_ENOMEM;
    for (size_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->n = 0;
    return QL_OK;
}

void ql_tok_pmap_free(ql_tok_pmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* A later merge of the same pair replaces the earlier one, as the Rust
 * HashMap collect in tokenizers' BpeBuilder::build does. */
void ql_tok_pmap_put(ql_tok_pmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    QL_ASSERT(2 * (m->n + 1) <= m->mask + 1);
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & m->mask;
    if (m->slots[i].key == UINT64_MAX) m->n++;
    m->slots[i] = (struct ql_tok_pslot){key, rank, id};
}
