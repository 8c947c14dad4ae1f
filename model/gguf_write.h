/* Writing GGUF files (shared FORMATS.md §5): version 3, little-endian, the
 * default 32-byte alignment. A writer collects metadata and tensors, then
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
    uint32_t type; /* QL_GGUF_STRING, QL_GGUF_F32 or QL_GGUF_U32 */
    char *str;
    float f32;
    uint32_t u32;
} ql_gguf_out_kv;

typedef struct ql_gguf_out_tensor {
    char *name;
    int n_dims;
    int64_t ne[QL_GGUF_MAX_DIMS]; /* ne[0] varies fastest */
    uint32_t type;                /* QL_GGML_F32, F16 or BF16 */
    const void *data;             /* the caller's, until ql_gguf_writer_save returns */
    uint64_t nbytes;
} ql_gguf_out_tensor;

typedef struct ql_gguf_writer {
    ql_gguf_out_kv *kvs;
    size_t n_kv, cap_kv;
    ql_gguf_out_tensor *tensors;
    size_t n_tensors, cap_tensors;
} ql_gguf_writer;

/* Metadata in the order added; a key added twice is QL_EINTERNAL. */
ql_status ql_gguf_writer_add_str(ql_gguf_writer *w, const char *key, const char *value);
ql_status ql_gguf_writer_add_f32(ql_gguf_writer *w, const char *key, float value);
ql_status ql_gguf_writer_add_u32(ql_gguf_writer *w, const char *key, uint32_t value);
/* A tensor of an unquantized type: nbytes must be numel times its element
 * size. `data` is not copied. */
ql_status ql_gguf_writer_add_tensor(ql_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *ne, uint32_t type, const void *data,
                                    uint64_t nbytes);
/* Writes the file to `path` atomically. */
ql_status ql_gguf_writer_save(const ql_gguf_writer *w, const char *path);
void ql_gguf_writer_free(ql_gguf_writer *w);

#endif
