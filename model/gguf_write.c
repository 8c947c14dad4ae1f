/* GGUF version 3 writer (model/gguf_write.h). Layout, as ggml's gguf.cpp reads
 * it: magic "GGUF", version, tensor count and metadata count (u64); each
 * key-value (string key, u32 type, value); each tensor's info (name, u32
 * n_dims, u64 ne[n_dims], u32 type, u64 offset into the data section); zero
 * padding to the alignment; then the tensors, each padded with zeros to a
 * multiple of the alignment. */
#include "model/gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "core/bytebuf.h"
#include "core/fsutil.h"

#define MAX_ALIGN 4096 /* the largest alignment the writer pads to */

static ql_status grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return QL_OK;
    size_t c = *cap ? 2 * *cap : 16;
    void *q = realloc(*p, c * size);
    if (!q) return ql_error(QL_ENOMEM, "out of memory building a GGUF file");
    *p = q;
    *cap = c;
    return QL_OK;
}

static ql_status new_kv(ql_gguf_writer *w, const char *key, uint32_t type, ql_gguf_out_kv **out) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, key))
            return ql_error(QL_EINTERNAL, "GGUF metadata key '%s' added twice", key);
    QL_TRY(grow((void **)&w->kvs, &w->cap_kv, w->n_kv, sizeof *w->kvs));
    ql_gguf_out_kv *kv = &w->kvs[w->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key))) return ql_error(QL_ENOMEM, "out of memory building a GGUF file");
    kv->type = type;
    w->n_kv++;
    *out = kv;
    return QL_OK;
}

ql_status ql_gguf_writer_add_str(ql_gguf_writer *w, const char *key, const char *value) {
    ql_gguf_out_kv *kv;
    QL_TRY(new_kv(w, key, QL_GGUF_STRING, &kv));
    if (!(kv->str = strdup(value)))
        return ql_error(QL_ENOMEM, "out of memory building a GGUF file");
    return QL_OK;
}

ql_status ql_gguf_writer_add_f32(ql_gguf_writer *w, const char *key, float value) {
    ql_gguf_out_kv *kv;
    QL_TRY(new_kv(w, key, QL_GGUF_F32, &kv));
    kv->f32 = value;
    return QL_OK;
}

ql_status ql_gguf_writer_add_u32(ql_gguf_writer *w, const char *key, uint32_t value) {
    ql_gguf_out_kv *kv;
    QL_TRY(new_kv(w, key, QL_GGUF_U32, &kv));
    kv->u32 = value;
    return QL_OK;
}

ql_status ql_gguf_writer_copy_kv(ql_gguf_writer *w, const ql_gguf_kv *kv) {
    ql_gguf_out_kv *o;
    QL_TRY(new_kv(w, kv->key, kv->type, &o));
    /* An array's value starts with its element type (u32) and count (u64),
     * which the reader's `at` skips. */
    const uint8_t *from = kv->type == QL_GGUF_ARRAY ? kv->at - 12 : kv->at;
    o->raw_len = (size_t)kv->size + (kv->type == QL_GGUF_ARRAY ? 12 : 0);
    if (!(o->raw = malloc(o->raw_len ? o->raw_len : 1)))
        return ql_error(QL_ENOMEM, "out of memory building a GGUF file");
    memcpy(o->raw, from, o->raw_len);
    return QL_OK;
}

static ql_status new_tensor(ql_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                            uint32_t type, uint64_t nbytes, ql_gguf_out_tensor **out) {
    int64_t block;
    uint64_t bsize;
    if (!ql_gguf_type_size(type, &block, &bsize))
        return ql_error(QL_EINTERNAL, "GGUF tensor '%s': unknown type %u", name, type);
    if (n_dims < 1 || n_dims > QL_GGUF_MAX_DIMS)
        return ql_error(QL_EINTERNAL, "GGUF tensor '%s': %d dimensions", name, n_dims);
    if (ne[0] % block)
        return ql_error(QL_EINTERNAL, "GGUF tensor '%s': ne[0] %lld is not a multiple of %lld",
                        name, (long long)ne[0], (long long)block);
    uint64_t numel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return ql_error(QL_EINTERNAL, "GGUF tensor '%s': dimension %d is %lld", name, d,
                            (long long)ne[d]);
        numel *= (uint64_t)ne[d];
    }
    if (numel / (uint64_t)block * bsize != nbytes)
        return ql_error(QL_EINTERNAL, "GGUF tensor '%s': %llu bytes for %llu elements", name,
                        (unsigned long long)nbytes, (unsigned long long)numel);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return ql_error(QL_EINTERNAL, "GGUF tensor '%s' added twice", name);
    QL_TRY(grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors));
    ql_gguf_out_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return ql_error(QL_ENOMEM, "out of memory building a GGUF file");
    t->n_dims = n_dims;
    for (int d = 0; d < QL_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = type;
    t->nbytes = nbytes;
    w->n_tensors++;
    *out = t;
    return QL_OK;
}

ql_status ql_gguf_writer_add_tensor(ql_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *ne, uint32_t type, const void *data,
                                    uint64_t nbytes) {
    ql_gguf_out_tensor *t;
    QL_TRY(new_tensor(w, name, n_dims, ne, type, nbytes, &t));
    t->data = data;
    return QL_OK;
}

ql_status ql_gguf_writer_add_tensor_fill(ql_gguf_writer *w, const char *name, int n_dims,
                                         const int64_t *ne, uint32_t type, uint64_t nbytes,
                                         ql_gguf_fill_fn fill, void *ctx, size_t index) {
    ql_gguf_out_tensor *t;
    QL_TRY(new_tensor(w, name, n_dims, ne, type, nbytes, &t));
    t->fill = fill;
    t->fill_ctx = ctx;
    t->fill_index = index;
    return QL_OK;
}

/* ---- the file ----------------------------------------------------------- */

/* The header and infos go through a ql_bytebuf (they are small); the tensor
 * data is written from the caller's memory. */
/* GGUF is little-endian; so are the machines qlora builds for (x86-64,
 * aarch64), which the static assertion below keeps honest. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF writer assumes little-endian");

static void put_u32(ql_bytebuf *b, uint32_t v) { ql_bytebuf_put(b, &v, 4); }
static void put_u64(ql_bytebuf *b, uint64_t v) { ql_bytebuf_put(b, &v, 8); }
static void put_str(ql_bytebuf *b, const char *s) {
    put_u64(b, strlen(s));
    ql_bytebuf_put(b, s, strlen(s));
}

static uint64_t pad_to(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

ql_status ql_gguf_writer_save(const ql_gguf_writer *w, const char *path) {
    const uint64_t align = w->alignment ? w->alignment : QL_GGUF_DEFAULT_ALIGNMENT;
    if (align > MAX_ALIGN || (align & (align - 1)))
        return ql_error(QL_EUNSUPPORTED,
                        "%s: GGUF alignment %llu: the writer pads to a power of 2 "
                        "up to %d",
                        path, (unsigned long long)align, MAX_ALIGN);
    ql_bytebuf b = {0};
    ql_bytebuf_put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, w->n_tensors);
    put_u64(&b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        const ql_gguf_out_kv *kv = &w->kvs[i];
        put_str(&b, kv->key);
        put_u32(&b, kv->type);
        if (kv->raw)
            ql_bytebuf_put(&b, kv->raw, kv->raw_len);
        else if (kv->type == QL_GGUF_STRING)
            put_str(&b, kv->str);
        else if (kv->type == QL_GGUF_F32)
            ql_bytebuf_put(&b, &kv->f32, 4);
        else
            put_u32(&b, kv->u32);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const ql_gguf_out_tensor *t = &w->tensors[i];
        put_str(&b, t->name);
        put_u32(&b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&b, (uint64_t)t->ne[d]);
        put_u32(&b, t->type);
        put_u64(&b, off);
        off = pad_to(off + t->nbytes, align);
    }
    static const uint8_t zeros[MAX_ALIGN];
    ql_bytebuf_put(&b, zeros, pad_to(b.len, align) - b.len);
    if (b.oom) {
        free(b.p);
        return ql_error(QL_ENOMEM, "out of memory writing %s", path);
    }

    /* One staging buffer for the tensors that are filled as they go. */
    uint64_t fill_max = 0;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].data && w->tensors[i].nbytes > fill_max) fill_max = w->tensors[i].nbytes;
    void *stage = fill_max ? ql_malloc((size_t)fill_max, "a GGUF tensor") : NULL;
    if (fill_max && !stage) {
        free(b.p);
        return QL_ENOMEM;
    }

    ql_fs_tmpfile f;
    ql_status st = ql_fs_tmpfile_open(path, &f);
    if (st == QL_OK) st = ql_fs_tmpfile_write(&f, b.p, b.len);
    for (size_t i = 0; st == QL_OK && i < w->n_tensors; i++) {
        const ql_gguf_out_tensor *t = &w->tensors[i];
        const void *data = t->data;
        if (!data) {
            st = t->fill(t->fill_ctx, t->fill_index, stage);
            data = stage;
        }
        if (st == QL_OK) st = ql_fs_tmpfile_write(&f, data, t->nbytes);
        /* The last one too: ggml, reading the data section whole, reads
         * every tensor's padded size. */
        if (st == QL_OK) st = ql_fs_tmpfile_write(&f, zeros, pad_to(t->nbytes, align) - t->nbytes);
    }
    if (st == QL_OK) st = ql_fs_tmpfile_commit(&f);
    ql_fs_tmpfile_abort(&f);
    free(stage);
    free(b.p);
    return st;
}

void ql_gguf_writer_free(ql_gguf_writer *w) {
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].str);
        free(w->kvs[i].raw);
    }
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    memset(w, 0, sizeof *w);
}
