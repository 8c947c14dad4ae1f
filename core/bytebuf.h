/* A growing byte buffer for output built in memory before it is written
 * (JSON text, HTML, a GGUF header). Appends after a failed allocation do
 * nothing and set `oom`, so a writer checks once at the end. The bytes are
 * always followed by a NUL, so text can be used as a C string. */
#ifndef QL_BYTEBUF_H
#define QL_BYTEBUF_H

#include <stddef.h>
#include <string.h>

typedef struct ql_bytebuf {
    char *p; /* malloc'd; the caller frees it */
    size_t len, cap;
    int oom;
} ql_bytebuf;

void ql_bytebuf_put(ql_bytebuf *b, const void *src, size_t n);
static inline void ql_bytebuf_puts(ql_bytebuf *b, const char *s) {
    ql_bytebuf_put(b, s, strlen(s));
}

#endif
