/* The BPE model on one pre-token (tokenizers models/bpe/model.rs::merge_word
 * and word.rs::merge_all): start from single characters (bytes, for
 * byte-level models), then repeatedly apply the lowest-ranked merge, leftmost
 * first, from a min-heap with stale entries skipped. A per-handle cache keeps
 * the ids of words already seen. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

#define CACHE_SLOTS (1u << 17)
#define CACHE_MAX_KEY 255

void ql_tok_cache_free(ql_tok_cache *c) {
    free(c->slots);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

static void cache_clear(ql_tok_cache *c) {
    memset(c->slots, 0, (c->mask + 1) * sizeof *c->slots);
    c->n = c->keys_len = c->ids_len = 0;
}

static const struct ql_tok_cslot *cache_get(const ql_tok_cache *c, uint64_t h, const char *p,
                                            size_t n) {
    if (!c->slots) return NULL;
    size_t i = (size_t)h & c->mask;
    for (;;) {
        const struct ql_tok_cslot *s = &c->slots[i];
        if (!s->hash) return NULL;
        if (s->hash == h && s->key_len == n && !memcmp(c->keys + s->key_off, p, n)) return s;
        i = (i + 1) & c->mask;
    }
}

/* Best effort: a failed allocation only means no caching. */
static void cache_put(ql_tok_cache *c, uint64_t h, const char *p, size_t n, const int32_t *ids,
                      size_t n_ids) {
    if (n_ids > UINT16_MAX) return;
    if (!c->slots) {
        c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
        if (!c->slots) return;
        c->mask = CACHE_SLOTS - 1;
    }
    if (4 * (c->n + 1) > 3 * (c->mask + 1)) cache_clear(c);
    if (c->keys_len + n > c->keys_cap) {
        size_t cap = c->keys_cap ? 2 * c->keys_cap : 1 << 18;
        while (cap < c->keys_len + n) cap *= 2;
        char *k = realloc(c->keys, cap);
        if (!k) return;
        c->keys = k;
        c->keys_cap = cap;
    }
    if (c->ids_len + n_ids > c->ids_cap) {
        size_t cap = c->ids_cap ? 2 * c->ids_cap : 1 << 16;
        while (cap < c->ids_len + n_ids) cap *= 2;
        int32_t *v = realloc(c->ids, cap * sizeof *v);
        if (!v) return;
        c->ids = v;
        c->ids_cap = cap;
    }
    size_t i = (size_t)h & c->mask;
    while (c->slots[i].hash) i = (i + 1) & c->mask;
    memcpy(c->keys + c->keys_len, p, n);
    memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids);
    c->slots[i] = (struct ql_tok_cslot){h, (uint32_t)c->keys_len, (uint32_t)c->ids_len, (uint16_t)n,
                                        (uint16_t)n_ids};
    c->keys_len += n;
    c->ids_len += n_ids;
    c->n++;
}

static inline int merge_less(const ql_tok_merge *a, const ql_tok_merge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(ql_tok_merge *h, size_t *n, ql_tok_merge x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static ql_tok_merge heap_pop(ql_tok_merge *h, size_t *n) {
    ql_tok_merge top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n) break;
        size_t c = l + 1 < *n && merge_less(&h[l + 1], &h[l]) ? l + 1 : l;
        if (!merge_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static ql_status reserve(ql_tokenizer *t, size_t n) {
    if (n <= t->syms_cap) return QL_OK;
    size_t cap = t->syms_cap ? t->syms_cap : 256;
    while (cap < n) cap *= 2;
    ql_tok_sym *s = realloc(t->syms, cap * sizeof *s);
    if (s) t->syms = s;
    /* every merge pushes at most two entries; the initial pairs are < n */
    ql_tok_merge *h = realloc(t->heap, 3 * cap * sizeof *h);
    if (h) t->heap = h;
    if (!s || !h) return ql_error(QL_ENOMEM, "tokenizer: out of memory for a %zu-char word", n);
    t->syms_cap = cap;
    t->heap_cap = 3 * cap;
    return QL_OK;
}

typedef struct word {
    ql_tok_sym *s;
    size_t n;
    int32_t unk_id;   /* pending (fused) unknown, -1 none */
    uint32_t unk_len; /* its byte length */
} word;

static inline void word_add(word *w, int32_t id, uint32_t len) {
    size_t i = w->n++;
    w->s[i] = (ql_tok_sym){id, (int32_t)i - 1, (int32_t)i + 1, len};
}

/* One character (its UTF-8 `c`, as the vocabulary spells it) that has an id
 * or not: the rest of merge_word's per-char logic. */
static void word_char(const ql_tok_model *m, word *w, int32_t id, const char *c, size_t cn,
                      uint32_t byte_len) {
    if (id >= 0) {
        if (w->unk_id >= 0) {
            word_add(w, w->unk_id, w->unk_len);
            w->unk_id = -1;
        }
        word_add(w, id, byte_len);
        return;
    }
    if (m->byte_fallback) {
        int all = 1;
        for (size_t k = 0; k < cn; k++) all &= m->fallback_id[(unsigned char)c[k]] >= 0;
        if (all) {
            /* a pending unknown stays pending across byte tokens, as in merge_word */
            for (size_t k = 0; k < cn; k++) word_add(w, m->fallback_id[(unsigned char)c[k]], 1);
            return;
        }
    }
    if (m->unk_id < 0) return; /* no unk token: the char is dropped, as tokenizers does */
    if (w->unk_id >= 0 && m->fuse_unk) {
        w->unk_len += byte_len;
    } else {
        if (w->unk_id >= 0) word_add(w, w->unk_id, w->unk_len);
        w->unk_id = m->unk_id;
        w->unk_len = byte_len;
    }
}

static void merge_all(const ql_tok_model *m, ql_tok_merge *heap, ql_tok_sym *s, size_t n) {
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const struct ql_tok_pslot *e = ql_tok_pmap_get(&m->merges, s[i].id, s[i + 1].id);
        if (e) heap_push(heap, &hn, (ql_tok_merge){e->rank, (uint32_t)i, e->id});
    }
    while (hn > 0) {
        ql_tok_merge top = heap_pop(heap, &hn);
        ql_tok_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0 || (size_t)cur->next >= n) continue;
        ql_tok_sym *right = &s[cur->next];
        const struct ql_tok_pslot *e = ql_tok_pmap_get(&m->merges, cur->id, right->id);
        if (!e || e->id != top.id) continue; /* stale */
        cur->id = top.id;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0 && (size_t)cur->next < n) s[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            const struct ql_tok_pslot *p = ql_tok_pmap_get(&m->merges, s[cur->prev].id, cur->id);
            if (p) heap_push(heap, &hn, (ql_tok_merge){p->rank, (uint32_t)cur->prev, p->id});
        }
        if (cur->next >= 0 && (size_t)cur->next < n) {
            const struct ql_tok_pslot *q = ql_tok_pmap_get(&m->merges, cur->id, s[cur->next].id);
            if (q) heap_push(heap, &hn, (ql_tok_merge){q->rank, top.pos, q->id});
        }
    }
}

ql_status ql_tok_bpe_word(ql_tokenizer *t, const char *p, size_t n, ql_ids *out) {
    const ql_tok_model *m = t->m;
    if (m->ignore_merges) {
        int32_t id = m->byte_level ? ql_tok_smap_get(&m->raw_vocab, m->raw_pool, p, n)
                                   : ql_tok_smap_get(&m->vocab, m->pool, p, n);
        if (id >= 0) return ql_ids_push(out, id);
    }
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY) {
        h = ql_tok_hash(p, n);
        const struct ql_tok_cslot *c = cache_get(&t->cache, h, p, n);
        if (c) {
            QL_TRY(ql_ids_reserve(out, c->n_ids));
            memcpy(out->v + out->n, t->cache.ids + c->ids_off, c->n_ids * sizeof(int32_t));
            out->n += c->n_ids;
            return QL_OK;
        }
    }
    /* a char can become up to 4 byte-fallback symbols; byte-level UTF-8 of a
     * mapped char is at most 2 */
    QL_TRY(reserve(t, 4 * n + 1));
    word w = {t->syms, 0, -1, 0};
    const unsigned char *u = (const unsigned char *)p;
    if (m->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = m->byte_sym[u[i]];
            if (id >= 0) {
                word_char(m, &w, id, NULL, 0, 1);
            } else {
                char c[4];
                int cn = ql_tok_utf8_enc(ql_tok_byte_to_cp[u[i]], c);
                word_char(m, &w, -1, c, (size_t)cn, 1);
            }
        }
    } else {
        for (size_t i = 0; i < n;) {
            int32_t id;
            size_t cl;
            if (u[i] < 0x80) {
                id = m->byte_sym[u[i]];
                cl = 1;
            } else {
                uint32_t cp;
                cl = (size_t)ql_tok_utf8_dec(u + i, &cp);
                id = ql_tok_smap_get(&m->vocab, m->pool, p + i, cl);
            }
            word_char(m, &w, id, p + i, cl, (uint32_t)cl);
            i += cl;
        }
    }
    if (w.unk_id >= 0) word_add(&w, w.unk_id, w.unk_len);
    if (w.n > 0) w.s[w.n - 1].next = -1;
    if (w.n > 1) merge_all(m, t->heap, w.s, w.n);
    size_t start = out->n;
    QL_TRY(ql_ids_reserve(out, w.n));
    for (size_t i = 0; i < w.n; i++)
        if (w.s[i].len) out->v[out->n++] = w.s[i].id;
    if (n <= CACHE_MAX_KEY) cache_put(&t->cache, h, p, n, out->v + start, out->n - start);
    return QL_OK;
}
