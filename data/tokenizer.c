/* Tokenizer handles and the encode pipeline (tokenizers
 * TokenizerImpl::encode_single_sequence): added tokens that are matched on
 * the raw text, then the normalizers, then added tokens matched on the
 * normalized text, then pre-tokenizers and BPE on what is left, then the
 * BOS/EOS template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "data/tokenizer_impl.h"

static ql_status handle_new(ql_tok_model *m, ql_tokenizer **out) {
    ql_tokenizer *t = ql_calloc(1, sizeof *t, "tokenizer handle");
    if (!t) return QL_ENOMEM;
    t->m = m;
    t->md = pcre2_match_data_create(16, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    t->jstack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!t->md || !t->mctx) {
        ql_tokenizer_free(t);
        return ql_error(QL_ENOMEM, "tokenizer: out of memory for regex match data");
    }
    if (t->jstack) pcre2_jit_stack_assign(t->mctx, NULL, t->jstack);
    *out = t;
    return QL_OK;
}

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4] = {0};
    size_t got = fread(m, 1, 4, f);
    fclose(f);
    return got == 4 && !memcmp(m, "GGUF", 4);
}

ql_status ql_tokenizer_load(const char *path, ql_tokenizer **out) {
    *out = NULL;
    ql_tok_model *m = NULL;
    if (ql_fs_is_dir(path)) {
        char *json = ql_fs_join(path, "tokenizer.json");
        if (!json) return QL_ENOMEM;
        ql_status st;
        if (!ql_fs_exists(json))
            st = ql_error(QL_ENOTFOUND, "%s: no tokenizer.json in this model directory", path);
        else
            st = ql_tok_load_json(json, path, &m);
        free(json);
        QL_TRY(st);
    } else if (!ql_fs_exists(path)) {
        return ql_error(QL_ENOTFOUND, "%s: no such tokenizer file or model directory", path);
    } else if (has_gguf_magic(path)) {
        QL_TRY(ql_tok_load_gguf(path, &m));
    } else {
        char *dir = strdup(path);
        if (!dir) return ql_error(QL_ENOMEM, "tokenizer: out of memory");
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(dir, ".");
        ql_status st = ql_tok_load_json(path, dir, &m);
        free(dir);
        QL_TRY(st);
    }
    ql_status st = handle_new(m, out);
    if (st != QL_OK) ql_tok_model_unref(m);
    return st;
}

ql_status ql_tokenizer_clone(const ql_tokenizer *t, ql_tokenizer **out) {
    atomic_fetch_add(&t->m->refs, 1);
    ql_status st = handle_new(t->m, out);
    if (st != QL_OK) ql_tok_model_unref(t->m);
    return st;
}

void ql_tokenizer_free(ql_tokenizer *t) {
    if (!t) return;
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jstack);
    ql_tok_buf_free(&t->norm_buf);
    ql_tok_buf_free(&t->norm_tmp);
    for (int i = 0; i < QL_TOK_MAX_PRETOK; i++) {
        ql_tok_buf_free(&t->pt_buf[i]);
        free(t->pt_spans[i].v);
    }
    free(t->seg_raw.v);
    free(t->seg_norm.v);
    free(t->syms);
    free(t->heap);
    ql_tok_cache_free(&t->cache);
    ql_tok_model_unref(t->m);
    free(t);
}

const ql_tokenizer_info *ql_tokenizer_info_of(const ql_tokenizer *t) { return &t->m->info; }

const char *ql_tokenizer_piece(const ql_tokenizer *t, int32_t id, size_t *len) {
    const ql_tok_model *m = t->m;
    if (id < 0 || id >= m->n_ids || m->piece_len[id] == UINT32_MAX) return NULL;
    if (len) *len = m->piece_len[id];
    return m->pool + m->piece_off[id];
}

int32_t ql_tokenizer_piece_id(const ql_tokenizer *t, const char *piece, size_t len) {
    const ql_tok_model *m = t->m;
    for (size_t i = 0; i < m->n_added; i++)
        if (m->added[i].len == len && !memcmp(m->pool + m->added[i].off, piece, len))
            return m->added[i].id;
    return ql_tok_smap_get(&m->vocab, m->pool, piece, len);
}

int ql_tokenizer_is_special(const ql_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->m->n_ids && t->m->special[id];
}

/* One stretch of text between raw-matched added tokens. */
static ql_status encode_segment(ql_tokenizer *t, const char *p, size_t n, int at_origin,
                                unsigned flags, ql_ids *out) {
    const ql_tok_model *m = t->m;
    if (n == 0) return QL_OK;
    if (m->n_norm) {
        QL_TRY(ql_tok_normalize(m, p, n, &t->norm_buf, &t->norm_tmp));
        p = t->norm_buf.p;
        n = t->norm_buf.n;
    }
    if (!m->has_norm_added) return ql_tok_pretokenize(t, 0, p, n, at_origin, out);
    QL_TRY(ql_tok_added_split(m, &m->trie_norm, p, n, flags & QL_TOK_PARSE_SPECIAL, &t->seg_norm));
    for (size_t i = 0; i < t->seg_norm.n; i++) {
        const ql_tok_span *s = &t->seg_norm.v[i];
        if (s->match)
            QL_TRY(ql_ids_push(out, m->added[s->match - 1].id));
        else
            QL_TRY(ql_tok_pretokenize(t, 0, p + s->start, s->end - s->start,
                                      at_origin && s->start == 0, out));
    }
    return QL_OK;
}

ql_status ql_tokenizer_encode(ql_tokenizer *t, const char *text, size_t len, unsigned flags,
                              ql_ids *out) {
    const ql_tok_model *m = t->m;
    size_t valid = ql_tok_utf8_valid(text, len);
    if (valid != len)
        return ql_error(QL_EINVAL, "tokenizer: the text is not valid UTF-8 at byte %zu", valid);
    if (flags & QL_TOK_ADD_BOS_EOS)
        for (int i = 0; i < m->n_prefix; i++) QL_TRY(ql_ids_push(out, m->prefix[i]));
    if (!m->has_raw_added) {
        QL_TRY(encode_segment(t, text, len, 1, flags, out));
    } else {
        QL_TRY(ql_tok_added_split(m, &m->trie_raw, text, len, flags & QL_TOK_PARSE_SPECIAL,
                                  &t->seg_raw));
        for (size_t i = 0; i < t->seg_raw.n; i++) {
            const ql_tok_span *s = &t->seg_raw.v[i];
            if (s->match)
                QL_TRY(ql_ids_push(out, m->added[s->match - 1].id));
            else
                QL_TRY(encode_segment(t, text + s->start, s->end - s->start, s->start == 0, flags,
                                      out));
        }
    }
    if (flags & QL_TOK_ADD_BOS_EOS)
        for (int i = 0; i < m->n_suffix; i++) QL_TRY(ql_ids_push(out, m->suffix[i]));
    return QL_OK;
}
