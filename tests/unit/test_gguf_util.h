/* Shared by the GGUF tests: fixture paths, and copies of a fixture with a
 * few bytes patched, so each malformed file differs from a valid one in
 * exactly the field under test. */
#ifndef QL_TEST_GGUF_UTIL_H
#define QL_TEST_GGUF_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/status.h"

static char gguf_tmp[] = "/tmp/ql_test_gguf_XXXXXX";

/* QL_SOURCE_DIR/tests/fixtures/gguf/NAME (ctest sets QL_SOURCE_DIR). */
static inline const char *fixture(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(buf[k], sizeof buf[k], "%s/tests/fixtures/gguf/%s", src ? src : ".", name);
    return buf[k];
}

static inline const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", gguf_tmp, name);
    return buf[k];
}

typedef struct bytes {
    unsigned char *p;
    size_t n;
} bytes;

static inline bytes load(const char *path) {
    bytes b = {0};
    char *d;
    size_t n;
    if (ql_fs_read_file(path, &d, &n) != QL_OK) {
        fprintf(stderr, "cannot read %s: %s (set QL_SOURCE_DIR to the repository root)\n", path,
                ql_error_message());
        exit(1);
    }
    b.p = (unsigned char *)d;
    b.n = n;
    return b;
}

static inline bytes copy_of(bytes b) {
    bytes c = {malloc(b.n ? b.n : 1), b.n};
    memcpy(c.p, b.p, b.n);
    return c;
}

static inline const char *save(const char *name, const void *p, size_t n) {
    const char *path = tmp_path(name);
    /* A fresh inode: ext4 flushes a file truncated by "wb" when it is
     * closed, which made thousands of rewrites of one name crawl. */
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
    return path;
}

/* Offset of the first byte after the GGUF string `s` (u64 length + bytes)
 * in b; the test aborts if it is absent, since a fixture changed. */
static inline size_t after_str(bytes b, const char *s) {
    size_t len = strlen(s);
    unsigned char *needle = malloc(8 + len);
    uint64_t l = len;
    memcpy(needle, &l, 8);
    memcpy(needle + 8, s, len);
    unsigned char *at = memmem(b.p, b.n, needle, 8 + len);
    free(needle);
    if (!at) {
        fprintf(stderr, "fixture lacks the string '%s'\n", s);
        exit(1);
    }
    return (size_t)(at - b.p) + 8 + len;
}

static inline void put_u32(bytes b, size_t at, uint32_t v) { memcpy(b.p + at, &v, 4); }
static inline void put_u64(bytes b, size_t at, uint64_t v) { memcpy(b.p + at, &v, 8); }
static inline uint32_t get_u32(bytes b, size_t at) {
    uint32_t v;
    memcpy(&v, b.p + at, 4);
    return v;
}
static inline uint64_t get_u64(bytes b, size_t at) {
    uint64_t v;
    memcpy(&v, b.p + at, 8);
    return v;
}

/* Field offsets inside the tensor info of `name`. */
static inline size_t tinfo_ndims(bytes b, const char *name) { return after_str(b, name); }
static inline size_t tinfo_ne(bytes b, const char *name, int d) {
    return after_str(b, name) + 4 + 8 * d;
}
static inline size_t tinfo_type(bytes b, const char *name) {
    size_t at = after_str(b, name);
    return at + 4 + 8 * get_u32(b, at);
}
static inline size_t tinfo_offset(bytes b, const char *name) { return tinfo_type(b, name) + 4; }

/* Offset of the value of metadata key `key` (after its type field). */
static inline size_t kv_value(bytes b, const char *key) { return after_str(b, key) + 4; }

/* Replaces the bytes of string `from` (as stored, length-prefixed) with
 * `to`, which must have the same length. */
static inline void rename_str(bytes b, const char *from, const char *to) {
    size_t end = after_str(b, from);
    memcpy(b.p + end - strlen(from), to, strlen(to));
}

static inline int msg_has(const char *needle) {
    const char *m = ql_error_message();
    if (needle == NULL || strstr(m, needle)) return 1;
    fprintf(stderr, "  message lacks '%s': %s\n", needle, m);
    return 0;
}

#endif
