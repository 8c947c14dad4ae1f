/* Internals of data/tokenizer*.c: the shared read-only tables (ql_tok_model)
 * and the per-handle scratch state. Not for use outside data/tokenizer*.c. */
#ifndef QL_TOKENIZER_IMPL_H
#define QL_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer.h"

/* ---- string -> id hash map over a byte pool (tokenizer_map.c) ---------- */

typedef struct ql_tok_smap {
    struct ql_tok_sslot {
        uint32_t off, len; /* key bytes: pool[off .. off+len) */
        int32_t val;
        uint32_t hash;
    } * slots;
    size_t mask, n;
} ql_tok_smap;

uint64_t ql_tok_hash(const void *p, size_t n);
ql_status ql_tok_smap_init(ql_tok_smap *m, size_t expected);
void ql_tok_smap_free(ql_tok_smap *m);
/* Inserts or overwrites. `pool` is where off/len point. */
void ql_tok_smap_put(ql_tok_smap *m, const char *pool, uint32_t off, uint32_t len, int32_t val);
int32_t ql_tok_smap_get(const ql_tok_smap *m, const char *pool, const void *key, size_t len);

/* (left id, right id) -> (rank, merged id). */
typedef struct ql_tok_pmap {
    struct ql_tok_pslot {
        uint64_t key; /* UINT64_MAX = empty */
        uint32_t rank;
        int32_t id;
    } * slots;
    size_t mask, n;
} ql_tok_pmap;

ql_status ql_tok_pmap_init(ql_tok_pmap *m, size_t expected);
void ql_tok_pmap_free(ql_tok_pmap *m);
void ql_tok_pmap_put(ql_tok_pmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
/* NULL when the pair has no merge. */
static inline const struct ql_tok_pslot *ql_tok_pmap_get(const ql_tok_pmap *m, int32_t a,
                                                         int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 32) & m->mask;
    for (;;) {
        const struct ql_tok_pslot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ---- pipeline descriptions -------------------------------------------- */

typedef enum ql_tok_behavior {
    QL_SPLIT_ISOLATED,
    QL_SPLIT_REMOVED,
    QL_SPLIT_MERGED_PREV,
    QL_SPLIT_MERGED_NEXT,
    QL_SPLIT_CONTIGUOUS,
} ql_tok_behavior;

typedef enum ql_tok_pretok_kind {
    QL_PT_SPLIT,     /* regex (or literal) split */
    QL_PT_BYTELEVEL, /* optional prefix space + GPT-2 regex; marks byte-level input */
    QL_PT_METASPACE, /* ' ' -> replacement, prepend, optional split */
    QL_PT_NUMERIC,   /* Digits: \p{N} split (one char or runs) */
} ql_tok_pretok_kind;

typedef enum ql_tok_prepend {
    QL_PREPEND_ALWAYS,
    QL_PREPEND_FIRST,
    QL_PREPEND_NEVER
} ql_tok_prepend;

typedef struct ql_tok_pretok {
    ql_tok_pretok_kind kind;
    pcre2_code *re; /* SPLIT, BYTELEVEL (use_regex), NUMERIC */
    int jit;        /* re was JIT-compiled */
    ql_tok_behavior behavior;
    int invert;
    int add_prefix_space; /* BYTELEVEL */
    char rep[8];          /* METASPACE replacement, UTF-8 */
    size_t rep_len;
    ql_tok_prepend prepend;
    int split; /* METASPACE */
} ql_tok_pretok;

typedef enum ql_tok_norm_kind { QL_NORM_PREPEND, QL_NORM_REPLACE, QL_NORM_NFC } ql_tok_norm_kind;

typedef struct ql_tok_norm {
    ql_tok_norm_kind kind;
    char *a; /* PREPEND: the prefix; REPLACE: the literal pattern */
    size_t a_len;
    char *b; /* REPLACE: the content */
    size_t b_len;
} ql_tok_norm;

typedef enum ql_tok_dec_kind {
    QL_DEC_BYTELEVEL,
    QL_DEC_METASPACE,
    QL_DEC_REPLACE,
    QL_DEC_BYTEFALLBACK,
    QL_DEC_FUSE,
    QL_DEC_STRIP,
} ql_tok_dec_kind;

typedef struct ql_tok_dec {
    ql_tok_dec_kind kind;
    char *a, *b; /* REPLACE pattern/content; METASPACE replacement; STRIP content */
    size_t a_len, b_len;
    int start, stop;        /* STRIP */
    ql_tok_prepend prepend; /* METASPACE */
} ql_tok_dec;

typedef struct ql_tok_added {
    uint32_t off, len; /* content in the model pool */
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} ql_tok_added;

/* Byte trie over added-token contents for leftmost-longest matching. */
typedef struct ql_tok_trie {
    struct ql_tok_tnode {
        int32_t child;   /* first child, -1 none */
        int32_t sibling; /* next sibling, -1 none */
        int32_t added;   /* index into added[] ending here, -1 none */
        uint8_t byte;
    } * nodes;
    size_t n, cap;
    int32_t root[256]; /* first-level nodes, -1 none */
} ql_tok_trie;

#define QL_TOK_MAX_PRETOK 8
#define QL_TOK_MAX_NORM 8
#define QL_TOK_MAX_DEC 8
#define QL_TOK_MAX_TEMPLATE 8

/* The shared, read-only part of a tokenizer. */
typedef struct ql_tok_model {
    atomic_int refs;
    char *path;
    char *chat_template;
    ql_tokenizer_info info;

    char *pool; /* every piece and added-token content, back to back */
    size_t pool_len, pool_cap;

    int32_t n_ids;
    size_t ids_cap;
    uint32_t *piece_off, *piece_len; /* per id; piece_len == UINT32_MAX: no token */
    uint8_t *special;                /* per id */

    ql_tok_smap vocab; /* model.vocab: piece as stored -> id */
    /* Byte-level: the pieces' raw bytes -> id (what a text piece is looked
     * up by), with its own pool. Other models: unused. */
    ql_tok_smap raw_vocab;
    char *raw_pool;
    size_t raw_len;
    ql_tok_pmap merges;

    int byte_level;
    int ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;
    /* byte-level: id of the one-char token of each byte (-1 none);
     * otherwise: id of each single ASCII char (-1 none). */
    int32_t byte_sym[256];
    int32_t fallback_id[256]; /* <0xNN>, -1 none */

    ql_tok_norm norm[QL_TOK_MAX_NORM];
    int n_norm;
    ql_tok_pretok pretok[QL_TOK_MAX_PRETOK];
    int n_pretok;
    ql_tok_dec dec[QL_TOK_MAX_DEC];
    int n_dec;

    ql_tok_added *added;
    size_t n_added;
    ql_tok_trie trie_raw;  /* normalized=false tokens */
    ql_tok_trie trie_norm; /* normalized=true tokens */
    int has_raw_added, has_norm_added;

    /* Post-processor: ids before and after the text. */
    int32_t prefix[QL_TOK_MAX_TEMPLATE], suffix[QL_TOK_MAX_TEMPLATE];
    int n_prefix, n_suffix;
} ql_tok_model;

/* ---- per-handle state ---------------------------------------------------- */

typedef struct ql_tok_buf {
    char *p;
    size_t n, cap;
} ql_tok_buf;

typedef struct ql_tok_span {
    size_t start, end;
    int match;
} ql_tok_span;

typedef struct ql_tok_spans {
    ql_tok_span *v;
    size_t n, cap;
} ql_tok_spans;

typedef struct ql_tok_sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* 0 = merged away */
} ql_tok_sym;

typedef struct ql_tok_merge {
    uint32_t rank;
    uint32_t pos;
    int32_t id;
} ql_tok_merge;

/* Word cache: raw piece bytes -> ids. Cleared when full. */
typedef struct ql_tok_cache {
    struct ql_tok_cslot {
        uint64_t hash; /* 0 = empty */
        uint32_t key_off, ids_off;
        uint16_t key_len, n_ids;
    } * slots;
    size_t mask, n;
    char *keys;
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} ql_tok_cache;

struct ql_tokenizer {
    ql_tok_model *m;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    ql_tok_buf norm_buf, norm_tmp;
    ql_tok_buf pt_buf[QL_TOK_MAX_PRETOK];
    ql_tok_spans pt_spans[QL_TOK_MAX_PRETOK];
    ql_tok_spans seg_raw, seg_norm;
    ql_tok_sym *syms;
    size_t syms_cap;
    ql_tok_merge *heap;
    size_t heap_cap;
    ql_tok_cache cache;
    /* Tests: when set, pre-tokenized pieces go here instead of to BPE. */
    ql_status (*piece_hook)(void *ctx, const char *p, size_t n);
    void *piece_ctx;
};

/* ---- functions shared between the files ------------------------------------- */

/* tokenizer_text.c */
extern const uint16_t ql_tok_byte_to_cp[256]; /* GPT-2 byte -> code point */
int ql_tok_cp_to_byte(uint32_t cp);           /* inverse, -1 when not in the table */
/* Length of the valid UTF-8 prefix; == n when all valid. */
size_t ql_tok_utf8_valid(const char *s, size_t n);
/* Decodes one char at s (valid UTF-8 assumed), returns its byte length. */
int ql_tok_utf8_dec(const unsigned char *s, uint32_t *cp);
int ql_tok_utf8_enc(uint32_t cp, char out[4]);
/* Appends s to b with invalid sequences replaced by U+FFFD as Rust's
 * String::from_utf8_lossy does (one per maximal invalid subpart). */
ql_status ql_tok_buf_append_lossy(ql_tok_buf *b, const char *s, size_t n);
ql_status ql_tok_buf_append(ql_tok_buf *b, const void *s, size_t n);
ql_status ql_tok_buf_reserve(ql_tok_buf *b, size_t more);
void ql_tok_buf_free(ql_tok_buf *b);
ql_status ql_tok_spans_push(ql_tok_spans *s, size_t start, size_t end, int match);

/* tokenizer_model.c: building the shared tables */
ql_status ql_tok_model_new(const char *path, ql_tok_model **out);
void ql_tok_model_unref(ql_tok_model *m);
ql_status ql_tok_pool_add(ql_tok_model *m, const char *s, size_t n, uint32_t *off);
/* Declares id's piece (ids may come in any order). */
ql_status ql_tok_set_piece(ql_tok_model *m, int32_t id, const char *s, size_t n);
ql_status ql_tok_add_merge(ql_tok_model *m, const char *a, size_t na, const char *b, size_t nb,
                           uint32_t rank, const char *where);
ql_status ql_tok_add_added(ql_tok_model *m, int32_t id, const char *s, size_t n, int special,
                           int normalized, int lstrip, int rstrip, int single_word);
/* After pieces, merges, added tokens and the pipeline are set. */
ql_status ql_tok_model_finish(ql_tok_model *m);

/* tokenizer_pretok.c */
/* The normalizers on s[0..n) into *out (tmp: scratch). */
ql_status ql_tok_normalize(const ql_tok_model *m, const char *s, size_t n, ql_tok_buf *out,
                           ql_tok_buf *tmp);
/* Compiles a tokenizers (Oniguruma) regex with PCRE2; `where` names it in errors. */
ql_status ql_tok_regex_compile(const char *pattern, size_t len, int literal, const char *where,
                               pcre2_code **re, int *jit);
extern const char ql_tok_gpt2_regex[];
extern const char ql_tok_llama3_regex[];
extern const char ql_tok_qwen2_regex[];
/* Runs pre-tokenizer `depth` and the rest on p[0..n) and the model on every piece. */
ql_status ql_tok_pretokenize(ql_tokenizer *t, int depth, const char *p, size_t n, int at_origin,
                             ql_ids *out);

/* tokenizer_nfc.c: NFC of valid UTF-8 s[0..n) into *out (replacing it). */
ql_status ql_tok_nfc(const char *s, size_t n, ql_tok_buf *out);

/* tokenizer_bpe.c */
ql_status ql_tok_bpe_word(ql_tokenizer *t, const char *p, size_t n, ql_ids *out);
void ql_tok_cache_free(ql_tok_cache *c);

/* tokenizer_added.c */
ql_status ql_tok_trie_add(ql_tok_trie *tr, const char *s, size_t n, int32_t added);
void ql_tok_trie_init(ql_tok_trie *tr);
void ql_tok_trie_free(ql_tok_trie *tr);
/* HF AddedVocabulary::find_matches: spans of s[0..n), match = 1 + added index
 * for added tokens, 0 for text between them. */
ql_status ql_tok_added_split(const ql_tok_model *m, const ql_tok_trie *tr, const char *s, size_t n,
                             int parse_special, ql_tok_spans *out);

/* tokenizer_json.c / tokenizer_gguf.c */
ql_status ql_tok_load_json(const char *json_path, const char *config_dir, ql_tok_model **out);
ql_status ql_tok_load_gguf(const char *path, ql_tok_model **out);

#endif
