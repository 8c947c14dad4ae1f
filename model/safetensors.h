/* The safetensors container (shared FORMATS.md §4.5): reader and writer.
 *
 * The reader maps the file and validates it as strictly as the Rust reference
 * does (header bounds, JSON shape, dtypes, sizes, a data buffer covered with
 * no holes or overlaps); every problem is a QL_EFORMAT whose message names the
 * file and the tensor. The writer reproduces the Rust writer's bytes: tensors
 * ordered by dtype (descending enum order) then name, compact JSON with
 * {"format":"pt"} metadata, header padded with spaces to a multiple of 8. */
#ifndef QL_SAFETENSORS_H
#define QL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define QL_ST_MAX_DIMS 8
/* The Rust reader's limit on the header length. */
#define QL_ST_MAX_HEADER 100000000ull

typedef struct ql_st_tensor {
    char *name;
    ql_dtype dtype;
    int ndim;
    int64_t shape[QL_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte offsets within the data buffer, end exclusive */
    const void *data;    /* points into the mapping; may be unaligned */
} ql_st_tensor;

typedef struct ql_st_file {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *data; /* start of the data buffer */
    uint64_t data_len;
    ql_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *format; /* __metadata__["format"], or NULL */
} ql_st_file;

/* Maps and validates a file. On failure *f is left empty (safe to close). */
ql_status ql_st_open(const char *path, ql_st_file *f);
void ql_st_close(ql_st_file *f);

/* The tensor called `name`, or NULL. */
const ql_st_tensor *ql_st_find(const ql_st_file *f, const char *name);

/* "[1536, 576]" into buf (for messages). */
const char *ql_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);

/* Converts a floating tensor (F32, F16, BF16, F64) to float32. */
ql_status ql_st_to_f32(const ql_st_file *f, const ql_st_tensor *t, float *out);

/* One tensor to write. `data` is borrowed until ql_st_write returns. */
typedef struct ql_st_entry {
    const char *name;
    ql_dtype dtype;
    int ndim;
    int64_t shape[QL_ST_MAX_DIMS];
    const void *data;
    uint64_t nbytes; /* must equal numel * itemsize */
} ql_st_entry;

/* The header (JSON plus padding) the writer would produce, and the data
 * order: order[i] is the index into `e` of the i-th tensor in the file.
 * *header is malloc'd; its length is a multiple of 8. */
ql_status ql_st_header(const ql_st_entry *e, size_t n, char **header, size_t *header_len,
                       size_t *order);

/* Size in bytes the file for these entries will have. */
uint64_t ql_st_file_size(const ql_st_entry *e, size_t n);

/* Writes the entries to `path` (temporary file, fsync, rename). */
ql_status ql_st_write(const char *path, const ql_st_entry *e, size_t n);

#endif
