/* Hugging Face tokenizers, reimplemented: byte-level BPE (GPT-2, Llama-3,
 * Qwen2, SmolLM2) and SentencePiece-style BPE (Llama-2, Mistral: Metaspace or
 * Prepend/Replace normalizers, <0xNN> byte fallback), from a tokenizer.json,
 * a model directory or a GGUF file's tokenizer.ggml.* metadata
 * (shared FORMATS.md §5.4, §6; docs/tokenizer.md).
 *
 * The ids are those of the Python `tokenizers` library for the same file and
 * text: tests/unit/test_tokenizer_reference.c checks that on more than 1 MB of
 * text per tokenizer.
 *
 * A ql_tokenizer keeps scratch buffers and a word cache, so one handle is used
 * by one thread at a time; ql_tokenizer_clone gives another thread its own
 * handle over the same (shared, read-only) tables. */
#ifndef QL_TOKENIZER_H
#define QL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct ql_tokenizer ql_tokenizer;

/* A growable id buffer: encode appends to it. Zero-initialize, then free with
 * ql_ids_free. */
typedef struct ql_ids {
    int32_t *v;
    size_t n, cap;
} ql_ids;

ql_status ql_ids_push(ql_ids *ids, int32_t id);
ql_status ql_ids_reserve(ql_ids *ids, size_t more);
void ql_ids_free(ql_ids *ids);

typedef struct ql_tokenizer_info {
    int32_t vocab_size;                     /* 1 + the largest id of the model and added tokens */
    int32_t bos_id, eos_id, pad_id, unk_id; /* -1 when the tokenizer has none */
    int add_bos, add_eos;                   /* what the model's tokenizer config asks for */
    const char *chat_template;              /* NULL when none is known */
    const char *kind;                       /* "byte-level BPE" or "BPE" */
    const char *path;                       /* the file the vocabulary came from */
} ql_tokenizer_info;

/* `path` is a tokenizer.json, a directory holding one, or a .gguf file.
 * Beside a tokenizer.json, tokenizer_config.json (bos/eos/pad tokens,
 * add_bos_token/add_eos_token, chat_template) and chat_template.jinja are read
 * when present. A tokenizer this code cannot reproduce exactly (another model
 * type, normalizer, pre-tokenizer or decoder) is QL_EUNSUPPORTED naming the
 * file and the type. */
ql_status ql_tokenizer_load(const char *path, ql_tokenizer **out);
/* A new handle sharing t's tables, for use by another thread. */
ql_status ql_tokenizer_clone(const ql_tokenizer *t, ql_tokenizer **out);
void ql_tokenizer_free(ql_tokenizer *t);

const ql_tokenizer_info *ql_tokenizer_info_of(const ql_tokenizer *t);

enum {
    /* Added tokens marked special (<|im_start|>, <s>...) in the text become
     * their ids; without it they are tokenized as plain text (HF's
     * encode_special_tokens=True). Non-special added tokens always match. */
    QL_TOK_PARSE_SPECIAL = 1u << 0,
    /* Put BOS/EOS around the text as info.add_bos/add_eos say (HF's
     * add_special_tokens=True). */
    QL_TOK_ADD_BOS_EOS = 1u << 1,
};

/* Appends the ids of `len` bytes of UTF-8 text to *out. Invalid UTF-8 is
 * QL_EINVAL naming the byte offset. */
ql_status ql_tokenizer_encode(ql_tokenizer *t, const char *text, size_t len, unsigned flags,
                              ql_ids *out);

enum {
    QL_TOK_SKIP_SPECIAL = 1u << 0, /* leave special added tokens out of the text */
};

/* Text of n ids as HF's decoder chain gives it (invalid UTF-8 from byte tokens
 * becomes U+FFFD). *text is malloc'd and NUL-terminated; an id outside the
 * vocabulary is QL_EINVAL. */
ql_status ql_tokenizer_decode(const ql_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                              char **text, size_t *len);

/* The vocabulary string of an id as stored (byte-level pieces in their
 * mapped form, "Ġthe"); NULL for an id with no token. */
const char *ql_tokenizer_piece(const ql_tokenizer *t, int32_t id, size_t *len);
/* The id of a piece given as stored, or -1. */
int32_t ql_tokenizer_piece_id(const ql_tokenizer *t, const char *piece, size_t len);
/* 1 for added tokens marked special. */
int ql_tokenizer_is_special(const ql_tokenizer *t, int32_t id);

#endif
