/* The GGUF container (shared FORMATS.md §5): reader and dequantizer.
 *
 * ql_gguf_open maps the file and validates it as strictly as ggml's own
 * reader does: magic, version (2 or 3), every length and count against the
 * file size, value and tensor types, dimensions, alignment (general.alignment,
 * default 32) and tensor data that stays inside the file and does not overlap.
 * Every problem is a QL_EFORMAT whose message names the file and the key or
 * tensor. Opening allocates only the key and tensor tables: tensor data and
 * metadata arrays stay in the mapping until asked for.
 *
 * The model-level view (config, Hugging Face names, Q/K un-permutation) is
 * ql_gguf_source_open in model/source.h. */
#ifndef QL_GGUF_H
#define QL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define QL_GGUF_MAX_DIMS 4
#define QL_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, as numbered in the file. */
typedef enum ql_gguf_vtype {
    QL_GGUF_U8 = 0,
    QL_GGUF_I8 = 1,
    QL_GGUF_U16 = 2,
    QL_GGUF_I16 = 3,
    QL_GGUF_U32 = 4,
    QL_GGUF_I32 = 5,
    QL_GGUF_F32 = 6,
    QL_GGUF_BOOL = 7,
    QL_GGUF_STRING = 8,
    QL_GGUF_ARRAY = 9,
    QL_GGUF_U64 = 10,
    QL_GGUF_I64 = 11,
    QL_GGUF_F64 = 12,
} ql_gguf_vtype;

/* The ggml tensor types this project dequantizes (ids as in the file). */
enum {
    QL_GGML_F32 = 0,
    QL_GGML_F16 = 1,
    QL_GGML_Q4_0 = 2,
    QL_GGML_Q4_1 = 3,
    QL_GGML_Q8_0 = 8,
    QL_GGML_BF16 = 30,
};

/* A string inside the mapping: not NUL-terminated. */
typedef struct ql_gguf_str {
    const char *p;
    uint64_t len;
} ql_gguf_str;

typedef struct ql_gguf_kv {
    char *key;         /* NUL-terminated copy */
    uint32_t type;     /* ql_gguf_vtype */
    uint32_t elem;     /* arrays: element type */
    uint64_t count;    /* arrays: number of elements */
    const uint8_t *at; /* the value's bytes; for arrays, the first element */
    uint64_t size;     /* bytes from `at` to the end of the value */
} ql_gguf_kv;

typedef struct ql_gguf_tensor {
    char *name; /* NUL-terminated copy */
    int n_dims;
    int64_t ne[QL_GGUF_MAX_DIMS]; /* ne[0] varies fastest; unused dims are 1 */
    uint32_t type;                /* ggml type id */
    uint64_t offset;              /* from the start of the data section */
    uint64_t nbytes;
    int64_t numel;
    const uint8_t *data; /* into the mapping */
} ql_gguf_tensor;

typedef struct ql_gguf_file {
    char *path;
    void *map;
    size_t map_len;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; /* file offset of the data section */
    ql_gguf_kv *kvs;      /* file order */
    size_t n_kv;
    ql_gguf_tensor *tensors; /* file order */
    size_t n_tensors;
    size_t *by_name; /* tensor indices sorted by name */
} ql_gguf_file;

/* Maps and validates a file. On failure *f is left empty (safe to close). */
ql_status ql_gguf_open(const char *path, ql_gguf_file *f);
void ql_gguf_close(ql_gguf_file *f);

const ql_gguf_kv *ql_gguf_find_kv(const ql_gguf_file *f, const char *key);
const ql_gguf_tensor *ql_gguf_find_tensor(const ql_gguf_file *f, const char *name);

/* Typed metadata getters. An absent key is QL_ENOTFOUND (with a message, so
 * a caller for which the key is optional checks ql_gguf_find_kv first); a key
 * of the wrong type or out of range is QL_EFORMAT naming the file and key. */

/* Any integer type with a non-negative value. */
ql_status ql_gguf_get_u64(const ql_gguf_file *f, const char *key, uint64_t *out);
/* FLOAT32 or FLOAT64 (integers are accepted too: some writers use them). */
ql_status ql_gguf_get_f64(const ql_gguf_file *f, const char *key, double *out);
ql_status ql_gguf_get_bool(const ql_gguf_file *f, const char *key, int *out);
/* A view into the mapping; valid until ql_gguf_close. */
ql_status ql_gguf_get_str(const ql_gguf_file *f, const char *key, ql_gguf_str *out);

/* Arrays (tokenizer.ggml.tokens / merges / token_type / scores). The result
 * is malloc'd (caller frees); string views point into the mapping. */
ql_status ql_gguf_get_str_array(const ql_gguf_file *f, const char *key, ql_gguf_str **out,
                                uint64_t *n);
/* Elements of any integer type, widened. */
ql_status ql_gguf_get_int_array(const ql_gguf_file *f, const char *key, int64_t **out, uint64_t *n);
/* FLOAT32 elements. */
ql_status ql_gguf_get_f32_array(const ql_gguf_file *f, const char *key, float **out, uint64_t *n);

/* tokenizer.ggml.<which>_token_id ("bos", "eos", "unknown", "padding", ...):
 * *id = -1 when absent; an id outside tokenizer.ggml.tokens is QL_EFORMAT. */
ql_status ql_gguf_token_id(const ql_gguf_file *f, const char *which, int64_t *id);

/* "Q4_1" etc., or NULL for a type id ggml does not define. */
const char *ql_gguf_type_name(uint32_t type);
/* Elements per block and bytes per block; 0 for an unknown type. */
int ql_gguf_type_size(uint32_t type, int64_t *block, uint64_t *bytes);
/* 1 for the types ql_gguf_dequantize handles (F32 F16 BF16 Q8_0 Q4_0 Q4_1). */
int ql_gguf_can_dequantize(uint32_t type);
/* n elements (a multiple of the type's block) from `src` to float32,
 * bit-exact with ggml's reference dequantization. */
ql_status ql_gguf_dequantize(uint32_t type, const void *src, int64_t n, float *dst);
/* n floats (a multiple of 32) to Q8_0 blocks (n / 32 * 34 bytes), bit-exact
 * with ggml's reference quantization. */
void ql_gguf_quantize_q8_0(const float *x, int64_t n, void *dst);
/* A whole tensor to float32 in its stored order (numel floats). */
ql_status ql_gguf_tensor_f32(const ql_gguf_file *f, const ql_gguf_tensor *t, float *out);

/* The file behind a source made by ql_gguf_source_open (NULL for any other
 * source), for readers of the tokenizer.ggml.* keys. */
struct ql_model_source;
const ql_gguf_file *ql_gguf_source_file(const struct ql_model_source *s);

#endif
