/* SHA-256 (FIPS 180-4), for content keys such as the tokenized-data cache's:
 * two files hash alike only if their bytes are the same. */
#ifndef QL_SHA256_H
#define QL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define QL_SHA256_LEN 32

typedef struct ql_sha256 {
    uint32_t h[8];
    uint64_t bytes; /* message length so far */
    uint8_t buf[64];
    size_t n_buf;
} ql_sha256;

void ql_sha256_init(ql_sha256 *s);
void ql_sha256_update(ql_sha256 *s, const void *data, size_t len);
/* Pads, writes the digest and leaves `s` to be re-initialised. */
void ql_sha256_final(ql_sha256 *s, uint8_t out[QL_SHA256_LEN]);

/* One call over a buffer. */
void ql_sha256_buf(const void *data, size_t len, uint8_t out[QL_SHA256_LEN]);

/* Adds a whole file's bytes to `s`, read in blocks (the file may be large).
 * A file that cannot be read is QL_EIO naming it. */
ql_status ql_sha256_add_file(ql_sha256 *s, const char *path);

/* 64 lowercase hex digits and a NUL. */
void ql_sha256_hex(const uint8_t d[QL_SHA256_LEN], char hex[2 * QL_SHA256_LEN + 1]);

#endif
