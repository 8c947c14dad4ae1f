/* Building the shared tables of a tokenizer: pieces by id, the vocabulary
 * and merge maps, added tokens, and what is derived from them once at load
 * (the raw-byte vocabulary of byte-level models, per-byte symbols, tries). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"

ql_status ql_tok_model_new(const char *path, ql_tok_model **out) {
    ql_tok_model *m = ql_calloc(1, sizeof *m, "tokenizer");
    if (!m) return QL_ENOMEM;
    atomic_init(&m->refs, 1);
    m->path = strdup(path);
    if (!m->path) {
        free(m);
        return ql_error(QL_ENOMEM, "tokenizer: out of memory");
    }
    m->info.bos_id = m->info.eos_id = m->info.pad_id = m->info.unk_id = -1;
    m->info.path = m->path;
    m->unk_id = -1;
    for (int i = 0; i < 256; i++) m->byte_sym[i] = m->fallback_id[i] = -1;
    ql_tok_trie_init(&m->trie_raw);
    ql_tok_trie_init(&m->trie_norm);
    *out = m;
    return QL_OK;
}

void ql_tok_model_unref(ql_tok_model *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    for (int i = 0; i < m->n_pretok; i++) pcre2_code_free(m->pretok[i].re);
    for (int i = 0; i < m->n_norm; i++) {
        free(m->norm[i].a);
        free(m->norm[i].b);
    }
    for (int i = 0; i < m->n_dec; i++) {
        free(m->dec[i].a);
        free(m->dec[i].b);
    }
    ql_tok_trie_free(&m->trie_raw);
    ql_tok_trie_free(&m->trie_norm);
    ql_tok_smap_free(&m->vocab);
    ql_tok_smap_free(&m->raw_vocab);
    ql_tok_pmap_free(&m->merges);
    free(m->added);
    free(m->piece_off);
    free(m->piece_len);
    free(m->special);
    free(m->pool);
    free(m->raw_pool);
    free(m->chat_template);
    free(m->path);
    free(m);
}

ql_status ql_tok_pool_add(ql_tok_model *m, const char *s, size_t n, uint32_t *off) {
    if (m->pool_len + n + 1 > m->pool_cap) {
        size_t cap = m->pool_cap ? m->pool_cap : 1 << 16;
        while (cap < m->pool_len + n + 1) cap *= 2;
        if (cap > UINT32_MAX)
            return ql_error(QL_EUNSUPPORTED, "%s: vocabulary over 4 GiB", m->path);
        char *p = realloc(m->pool, cap);
        if (!p) return ql_error(QL_ENOMEM, "%s: out of memory for the vocabulary", m->path);
        m->pool = p;
        m->pool_cap = cap;
    }
    memcpy(m->pool + m->pool_len, s, n);
    m->pool[m->pool_len + n] = 0; /* pieces are handed out as C strings */
    *off = (uint32_t)m->pool_len;
    m->pool_len += n + 1;
    return QL_OK;
}

static ql_status grow_ids(ql_tok_model *m, int32_t id) {
    if (id < m->n_ids) return QL_OK;
    size_t n = (size_t)id + 1;
    if (n > m->ids_cap) {
        size_t cap = m->ids_cap ? m->ids_cap : 1024;
        while (cap < n) cap *= 2;
        uint32_t *po = realloc(m->piece_off, cap * sizeof *po);
        if (po) m->piece_off = po;
        uint32_t *pl = realloc(m->piece_len, cap * sizeof *pl);
        if (pl) m->piece_len = pl;
        uint8_t *sp = realloc(m->special, cap);
        if (sp) m->special = sp;
        if (!po || !pl || !sp)
            return ql_error(QL_ENOMEM, "%s: out of memory for %zu ids", m->path, n);
        for (size_t i = m->ids_cap; i < cap; i++) {
            m->piece_len[i] = UINT32_MAX;
            m->special[i] = 0;
        }
        m->ids_cap = cap;
    }
    m->n_ids = (int32_t)n;
    return QL_OK;
}

ql_status ql_tok_set_piece(ql_tok_model *m, int32_t id, const char *s, size_t n) {
    if (id < 0) return ql_error(QL_EFORMAT, "%s: negative token id %d", m->path, (int)id);
    if (!m->vocab.slots) QL_TRY(ql_tok_smap_init(&m->vocab, 1024));
    QL_TRY(grow_ids(m, id));
    uint32_t off;
    QL_TRY(ql_tok_pool_add(m, s, n, &off));
    m->piece_off[id] = off;
    m->piece_len[id] = (uint32_t)n;
    ql_tok_smap_put(&m->vocab, m->pool, off, (uint32_t)n, id);
    return QL_OK;
}

ql_status ql_tok_add_merge(ql_tok_model *m, const char *a, size_t na, const char *b, size_t nb,
                           uint32_t rank, const char *where) {
    int32_t ia = ql_tok_smap_get(&m->vocab, m->pool, a, na);
    int32_t ib = ql_tok_smap_get(&m->vocab, m->pool, b, nb);
    if (ia < 0 || ib < 0) {
        const char *s = ia < 0 ? a : b;
        int n = (int)(ia < 0 ? na : nb);
        return ql_error(QL_EFORMAT, "%s: %s[%u]: token \"%.*s\" is not in the vocabulary", m->path,
                        where, rank, n, s);
    }
    char stack[256], *cat = na + nb <= sizeof stack ? stack : malloc(na + nb);
    if (!cat) return ql_error(QL_ENOMEM, "%s: out of memory", m->path);
    memcpy(cat, a, na);
    memcpy(cat + na, b, nb);
    int32_t id = ql_tok_smap_get(&m->vocab, m->pool, cat, na + nb);
    if (id < 0) {
        ql_error(QL_EFORMAT, "%s: %s[%u]: the merged token \"%.*s\" is not in the vocabulary",
                 m->path, where, rank, (int)(na + nb), cat);
    }
    if (cat != stack) free(cat);
    if (id < 0) return QL_EFORMAT;
    if (!m->merges.slots) return ql_error(QL_EINTERNAL, "%s: merge table not sized", m->path);
    ql_tok_pmap_put(&m->merges, ia, ib, rank, id);
    return QL_OK;
}

ql_status ql_tok_add_added(ql_tok_model *m, int32_t id, const char *s, size_t n, int special,
                           int normalized, int lstrip, int rstrip, int single_word) {
    if (id < 0)
        return ql_error(QL_EFORMAT, "%s: added token with negative id %d", m->path, (int)id);
    if (n == 0) return QL_OK; /* tokenizers ignores empty added tokens */
    QL_TRY(grow_ids(m, id));
    /* The same content twice: the later one wins, as in AddedVocabulary. */
    for (size_t i = 0; i < m->n_added; i++) {
        ql_tok_added *a = &m->added[i];
        if (a->len == n && !memcmp(m->pool + a->off, s, n)) {
            memmove(a, a + 1, (m->n_added - i - 1) * sizeof *a);
            m->n_added--;
            break;
        }
    }
    ql_tok_added *v = realloc(m->added, (m->n_added + 1) * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "%s: out of memory", m->path);
    m->added = v;
    uint32_t off;
    QL_TRY(ql_tok_pool_add(m, s, n, &off));
    m->added[m->n_added++] = (ql_tok_added){off,
                                            (uint32_t)n,
                                            id,
                                            (uint8_t) !!special,
                                            (uint8_t) !!normalized,
                                            (uint8_t) !!lstrip,
                                            (uint8_t) !!rstrip,
                                            (uint8_t) !!single_word};
    /* id -> token looks at added tokens first (simple_id_to_token). */
    m->piece_off[id] = off;
    m->piece_len[id] = (uint32_t)n;
    m->special[id] = (uint8_t) !!special;
    return QL_OK;
}

/* Byte-level models look text pieces up by their raw bytes: each vocabulary
 * piece is mapped back through the GPT-2 table once here, so that encoding
 * never builds the mapped strings. Pieces with a char outside the table can
 * never be produced from text and are left out. */
static ql_status build_raw_vocab(ql_tok_model *m) {
    QL_TRY(ql_tok_smap_init(&m->raw_vocab, m->vocab.n));
    m->raw_pool = malloc(m->pool_len + 1);
    if (!m->raw_pool) return ql_error(QL_ENOMEM, "%s: out of memory", m->path);
    m->raw_len = 0;
    for (size_t i = 0; i <= m->vocab.mask; i++) {
        const struct ql_tok_sslot *s = &m->vocab.slots[i];
        if (s->val < 0) continue;
        const unsigned char *p = (const unsigned char *)m->pool + s->off;
        size_t start = m->raw_len, k = 0;
        int ok = 1;
        while (k < s->len) {
            uint32_t cp;
            if (ql_tok_utf8_valid((const char *)p + k, s->len - k) == 0) {
                ok = 0;
                break;
            }
            k += (size_t)ql_tok_utf8_dec(p + k, &cp);
            int b = ql_tok_cp_to_byte(cp);
            if (b < 0) {
                ok = 0;
                break;
            }
            m->raw_pool[m->raw_len++] = (char)b;
        }
        if (!ok) {
            m->raw_len = start;
            continue;
        }
        ql_tok_smap_put(&m->raw_vocab, m->raw_pool, (uint32_t)start, (uint32_t)(m->raw_len - start),
                        s->val);
    }
    return QL_OK;
}

ql_status ql_tok_model_finish(ql_tok_model *m) {
    if (!m->vocab.slots) QL_TRY(ql_tok_smap_init(&m->vocab, 16));
    if (!m->merges.slots) QL_TRY(ql_tok_pmap_init(&m->merges, 16));
    m->info.vocab_size = m->n_ids;
    m->info.kind = m->byte_level ? "byte-level BPE" : "BPE";
    if (m->byte_level) {
        QL_TRY(build_raw_vocab(m));
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            m->byte_sym[b] = ql_tok_smap_get(&m->raw_vocab, m->raw_pool, &c, 1);
        }
    } else {
        for (int b = 0; b < 128; b++) {
            char c = (char)b;
            m->byte_sym[b] = ql_tok_smap_get(&m->vocab, m->pool, &c, 1);
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->fallback_id[b] = ql_tok_smap_get(&m->vocab, m->pool, name, 6);
    }
    /* Normalized added tokens are matched in their normalized form. */
    ql_tok_buf nb = {0}, tmp = {0};
    ql_status st = QL_OK;
    for (size_t i = 0; i < m->n_added && st == QL_OK; i++) {
        const ql_tok_added *a = &m->added[i];
        if (!a->normalized) {
            st = ql_tok_trie_add(&m->trie_raw, m->pool + a->off, a->len, (int32_t)i);
            m->has_raw_added = 1;
            continue;
        }
        m->has_norm_added = 1;
        if (m->n_norm == 0) {
            st = ql_tok_trie_add(&m->trie_norm, m->pool + a->off, a->len, (int32_t)i);
            continue;
        }
        nb.n = 0;
        st = ql_tok_normalize(m, m->pool + a->off, a->len, &nb, &tmp);
        if (st == QL_OK) st = ql_tok_trie_add(&m->trie_norm, nb.p, nb.n, (int32_t)i);
    }
    ql_tok_buf_free(&nb);
    ql_tok_buf_free(&tmp);
    return st;
}
