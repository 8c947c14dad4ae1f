/* Writing GGUF files (shared FORMATS.md §5): version 3, little-endian, the
 * default 32-byte alignment or another one. A writer collects metadata and tensors, then
 * writes the file in one pass, atomically (a temporary file beside the
 * destination, fsynced and renamed into place), so a reader never sees half
 * of one. It is the counterpart of model/gguf.h's reader, which checks what
 * this writes in tests/unit/test_gguf_write.c. */
#ifndef QL_GGUF_WRITE_H
#define QL_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/gguf.h"

typedef struct ql_gguf_out_kv {
    char *key;
    uint32_t type; /* a ql_gguf_vtype */
    char *str;     /* QL_GGUF_STRING */
    float f32;
    uint32_t u32;
    uint8_t *raw; /* any other type: the value as encoded in a file */
    size_t raw_len;
} ql_gguf_out_kv;

/* Fills a tensor's nbytes at save time (for tensors too many to hold). */
typedef ql_status (*ql_gguf_fill_fn)(void *ctx, size_t index, void *dst);

typedef struct ql_gguf_out_tensor {
    char *name;
    int n_dims;
    int64_t ne[QL_GGUF_MAX_DIMS]; /* ne[0] varies fastest */
    uint32_t type;                /* a ggml type ql_gguf_type_size knows */
    const void *data;             /* the caller's, until ql_gguf_writer_save returns */
    ql_gguf_fill_fn fill;         /* or this, when data is NULL */
    void *fill_ctx;
    size_t fill_index;
    uint64_t nbytes;
} ql_gguf_out_tensor;

typedef struct ql_gguf_writer {
    /* 0: 32. Another value pads to it; the caller writes general.alignment
     * (u32) with the same value, as readers lay the file out by that key. */
    uint64_t alignment;
    ql_gguf_out_kv *kvs;
    size_t n_kv, cap_kv;
    ql_gguf_out_tensor *tensors;
    size_t n_tensors, cap_tensors;
} ql_gguf_writer;

/* Metadata in the order added; a key added twice is QL_EINTERNAL. */
ql_status ql_gguf_writer_add_str(ql_gguf_writer *w, const char *key, const char *value);
ql_status ql_gguf_writer_add_f32(ql_gguf_writer *w, const char *key, float value);
ql_status ql_gguf_writer_add_u32(ql_gguf_writer *w, const char *key, uint32_t value);
/* A copy of another file's metadata entry, any type, arrays included. */
ql_status ql_gguf_writer_copy_kv(ql_gguf_writer *w, const ql_gguf_kv *kv);
/* A tensor: nbytes must be what ggml stores for ne of `type` (ne[0] a
 * multiple of the type's block). `data` is not copied. */
ql_status ql_gguf_writer_add_tensor(ql_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *ne, uint32_t type, const void *data,
                                    uint64_t nbytes);
/* The same, its bytes produced by fill(ctx, index, dst) while the file is
 * written, one tensor at a time. */
ql_status ql_gguf_writer_add_tensor_fill(ql_gguf_writer *w, const char *name, int n_dims,
                                         const int64_t *ne, uint32_t type, uint64_t nbytes,
                                         ql_gguf_fill_fn fill, void *ctx, size_t index);
/* Writes the file to `path` atomically. */
ql_status ql_gguf_writer_save(const ql_gguf_writer *w, const char *path);
void ql_gguf_writer_free(ql_gguf_writer *w);

#endif
