/* The tokenized-data cache (docs/data.md, "Packing and order").
 *
 * Tokenizing a large JSONL file takes minutes; a restarted job should not
 * do it again. A cache file holds one data set's ql_token_data and an opaque
 * block (the loader's report), under a key that is the SHA-256 of everything
 * the tokens depend on: the data file's bytes, the tokenizer's files (see
 * ql_cache_add_tokenizer), the options that change tokenization, and
 * QL_CACHE_VERSION. Any change to one of them is another key, so a stale
 * entry is never read; it is simply not found.
 *
 * Files are written atomically (core/fsutil.h) and end with the SHA-256 of
 * their contents. A file that is unreadable, truncated, corrupt or holds
 * another key is not used: the reader says why, and the caller rebuilds and
 * replaces it. The layout is the host's byte order (little-endian on every
 * machine this runs on); a file from a machine of the other order fails the
 * magic check and is rebuilt. */
#ifndef QL_CACHE_H
#define QL_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/sha256.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"

/* Bump when tokenization or record handling changes what a data file becomes,
 * so that older cache entries stop matching. */
#define QL_CACHE_VERSION 1

/* A key begins with the version and the data file's bytes. */
ql_status ql_cache_key_begin(ql_sha256 *s, const char *data_path);
/* The files a tokenizer is read from, as ql_tokenizer_load finds them:
 * tokenizer.json (given, or in a model directory) with tokenizer_config.json
 * and chat_template.jinja beside it when present; for a GGUF file, its header
 * and metadata (where the tokenizer lives), not its tensor data. */
ql_status ql_cache_add_tokenizer(ql_sha256 *s, const char *path);
/* A labelled piece of text (options, names), unambiguous when pieces follow. */
void ql_cache_add_text(ql_sha256 *s, const char *label, const char *text);

/* DIR/tokens-<64 hex digits>.bin, malloc'd. */
char *ql_cache_file(const char *dir, const uint8_t key[QL_SHA256_LEN]);

/* Reads a cache file. Returns 1 with *d filled (d->path = a copy of
 * data_path) and `extra` (extra_len bytes) restored when the file holds this
 * key; 0 when there is no usable file, with the reason in why[] ("" when the
 * file does not exist). */
int ql_cache_read(const char *file, const uint8_t key[QL_SHA256_LEN], const char *data_path,
                  ql_token_data *d, void *extra, size_t extra_len, char *why, size_t why_len);

/* Writes a cache file atomically, creating its directory if needed. */
ql_status ql_cache_write(const char *file, const uint8_t key[QL_SHA256_LEN], const ql_token_data *d,
                         const void *extra, size_t extra_len);

#endif
