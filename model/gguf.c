#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Values are read with memcpy straight from the mapping. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "GGUF reader assumes a little-endian host");

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
/* Nested arrays are legal but never used; a bound keeps a hostile file from
 * recursing deep. */
#define MAX_ARRAY_DEPTH 8
/* Smallest encodings: a KV is key length + type + 1 value byte; a tensor info
 * is name length + n_dims + type + offset. Used to bound counts by file size
 * before allocating tables for them. */
#define MIN_KV_BYTES 13
#define MIN_TENSOR_BYTES 24

typedef struct rd {
    const uint8_t *p;
    uint64_t pos, len;
    const char *path;
} rd;

static uint64_t left(const rd *r) { return r->len - r->pos; }

static ql_status need(rd *r, uint64_t n, const char *what) {
    if (n <= left(r)) return QL_OK;
    return ql_error(QL_EFORMAT,
                    "%s: %s: needs %" PRIu64 " bytes at offset %" PRIu64
                    " but the file ends at %" PRIu64 " (truncated?)",
                    r->path, what, n, r->pos, r->len);
}

static ql_status rd_u32(rd *r, uint32_t *v, const char *what) {
    QL_TRY(need(r, 4, what));
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return QL_OK;
}

static ql_status rd_u64(rd *r, uint64_t *v, const char *what) {
    QL_TRY(need(r, 8, what));
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return QL_OK;
}

/* A GGUF string: u64 length then bytes. */
static ql_status rd_str(rd *r, ql_gguf_str *s, const char *what) {
    uint64_t n;
    QL_TRY(rd_u64(r, &n, what));
    if (n > left(r))
        return ql_error(QL_EFORMAT,
                        "%s: %s: string length %" PRIu64 " at offset %" PRIu64
                        " runs past the end of the file (%" PRIu64 " bytes left)",
                        r->path, what, n, r->pos - 8, left(r));
    s->p = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += n;
    return QL_OK;
}

static char *str_dup(ql_gguf_str s) {
    char *c = malloc(s.len + 1);
    if (c) {
        memcpy(c, s.p, s.len);
        c[s.len] = '\0';
    }
    return c;
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                  "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                  "UINT64", "INT64",   "FLOAT64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Bytes of a fixed-size value type; 0 for STRING, ARRAY and unknown types. */
static uint64_t vtype_size(uint32_t t) {
    switch (t) {
    case QL_GGUF_U8:
    case QL_GGUF_I8:
    case QL_GGUF_BOOL: return 1;
    case QL_GGUF_U16:
    case QL_GGUF_I16: return 2;
    case QL_GGUF_U32:
    case QL_GGUF_I32:
    case QL_GGUF_F32: return 4;
    case QL_GGUF_U64:
    case QL_GGUF_I64:
    case QL_GGUF_F64: return 8;
    default: return 0;
    }
}

static ql_status skip_value(rd *r, uint32_t type, const char *what, int depth);

static ql_status skip_array(rd *r, uint32_t *elem, uint64_t *count, const char *what, int depth) {
    QL_TRY(rd_u32(r, elem, what));
    QL_TRY(rd_u64(r, count, what));
    uint64_t sz = vtype_size(*elem);
    if (sz) {
        if (*count > left(r) / sz)
            return ql_error(QL_EFORMAT,
                            "%s: %s: array of %" PRIu64
                            " %s runs past the end of the file (%" PRIu64 " bytes left)",
                            r->path, what, *count, vtype_name(*elem), left(r));
        r->pos += *count * sz;
        return QL_OK;
    }
    if (*elem == QL_GGUF_ARRAY && depth + 1 >= MAX_ARRAY_DEPTH)
        return ql_error(QL_EFORMAT, "%s: %s: arrays nested deeper than %d levels", r->path, what,
                        MAX_ARRAY_DEPTH);
    if (*elem != QL_GGUF_STRING && *elem != QL_GGUF_ARRAY)
        return ql_error(QL_EFORMAT, "%s: %s: array element type %u is not a GGUF value type",
                        r->path, what, *elem);
    /* Every string or nested array takes at least 8 bytes: bounds the loop. */
    if (*count > left(r) / 8)
        return ql_error(QL_EFORMAT,
                        "%s: %s: array of %" PRIu64 " %s runs past the end of the file (%" PRIu64
                        " bytes left)",
                        r->path, what, *count, vtype_name(*elem), left(r));
    for (uint64_t i = 0; i < *count; i++) QL_TRY(skip_value(r, *elem, what, depth + 1));
    return QL_OK;
}

static ql_status skip_value(rd *r, uint32_t type, const char *what, int depth) {
    uint64_t sz = vtype_size(type);
    if (sz) {
        QL_TRY(need(r, sz, what));
        r->pos += sz;
        return QL_OK;
    }
    if (type == QL_GGUF_STRING) {
        ql_gguf_str s;
        return rd_str(r, &s, what);
    }
    if (type == QL_GGUF_ARRAY) {
        uint32_t elem;
        uint64_t count;
        return skip_array(r, &elem, &count, what, depth);
    }
    return ql_error(QL_EFORMAT, "%s: %s: value type %u is not a GGUF value type", r->path, what,
                    type);
}

static int has_nul(ql_gguf_str s) { return memchr(s.p, 0, s.len) != NULL; }

static ql_status read_kvs(rd *r, ql_gguf_file *f, uint64_t n) {
    char what[384];
    for (uint64_t i = 0; i < n; i++) {
        ql_gguf_kv *kv = &f->kvs[i];
        ql_gguf_str key;
        snprintf(what, sizeof what, "key of metadata entry %" PRIu64, i);
        QL_TRY(rd_str(r, &key, what));
        if (has_nul(key) || key.len == 0)
            return ql_error(QL_EFORMAT,
                            "%s: metadata entry %" PRIu64
                            " has an empty key or a NUL byte in its key",
                            r->path, i);
        kv->key = str_dup(key);
        if (!kv->key) return ql_error(QL_ENOMEM, "out of memory reading %s", r->path);
        f->n_kv = i + 1;
        snprintf(what, sizeof what, "metadata key '%s'", kv->key);
        QL_TRY(rd_u32(r, &kv->type, what));
        uint64_t start = r->pos;
        if (kv->type == QL_GGUF_ARRAY) {
            QL_TRY(skip_array(r, &kv->elem, &kv->count, what, 0));
            kv->at = r->p + start + 12;
            kv->size = r->pos - start - 12;
        } else {
            if (kv->type > QL_GGUF_F64)
                return ql_error(QL_EFORMAT, "%s: metadata key '%s' has unknown value type %u",
                                r->path, kv->key, kv->type);
            QL_TRY(skip_value(r, kv->type, what, 0));
            kv->at = r->p + start;
            kv->size = r->pos - start;
        }
    }
    return QL_OK;
}

static int cmp_kv_ptr(const void *a, const void *b) {
    return strcmp((*(const ql_gguf_kv *const *)a)->key, (*(const ql_gguf_kv *const *)b)->key);
}

static ql_status check_unique_keys(const ql_gguf_file *f) {
    if (f->n_kv < 2) return QL_OK;
    const ql_gguf_kv **v = malloc(f->n_kv * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    for (size_t i = 0; i < f->n_kv; i++) v[i] = &f->kvs[i];
    qsort(v, f->n_kv, sizeof *v, cmp_kv_ptr);
    ql_status st = QL_OK;
    for (size_t i = 1; i < f->n_kv && st == QL_OK; i++)
        if (!strcmp(v[i - 1]->key, v[i]->key))
            st = ql_error(QL_EFORMAT, "%s: metadata key '%s' appears more than once", f->path,
                          v[i]->key);
    free(v);
    return st;
}

static ql_status read_alignment(ql_gguf_file *f) {
    f->alignment = QL_GGUF_DEFAULT_ALIGNMENT;
    const ql_gguf_kv *kv = ql_gguf_find_kv(f, "general.alignment");
    if (!kv) return QL_OK;
    /* ggml reads it with gguf_get_val_u32, which insists on the type. */
    if (kv->type != QL_GGUF_U32)
        return ql_error(QL_EFORMAT, "%s: metadata key 'general.alignment' is %s, expected UINT32",
                        f->path, vtype_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->at, 4);
    if (a == 0 || (a & (a - 1)))
        return ql_error(QL_EFORMAT,
                        "%s: metadata key 'general.alignment' is %u, expected a power of 2",
                        f->path, a);
    f->alignment = a;
    return QL_OK;
}

static ql_status read_tensor_infos(rd *r, ql_gguf_file *f, uint64_t n) {
    char what[384];
    for (uint64_t i = 0; i < n; i++) {
        ql_gguf_tensor *t = &f->tensors[i];
        ql_gguf_str name;
        snprintf(what, sizeof what, "name of tensor info %" PRIu64, i);
        QL_TRY(rd_str(r, &name, what));
        if (has_nul(name) || name.len == 0)
            return ql_error(QL_EFORMAT,
                            "%s: tensor info %" PRIu64
                            " has an empty name or a NUL byte in its name",
                            r->path, i);
        t->name = str_dup(name);
        if (!t->name) return ql_error(QL_ENOMEM, "out of memory reading %s", r->path);
        f->n_tensors = i + 1;
        snprintf(what, sizeof what, "tensor '%s'", t->name);
        uint32_t nd;
        QL_TRY(rd_u32(r, &nd, what));
        if (nd > QL_GGUF_MAX_DIMS)
            return ql_error(QL_EFORMAT, "%s: tensor '%s' has %u dimensions; GGUF allows at most %d",
                            r->path, t->name, nd, QL_GGUF_MAX_DIMS);
        t->n_dims = (int)nd;
        t->numel = 1;
        for (int d = 0; d < QL_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (int d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            QL_TRY(rd_u64(r, &ne, what));
            if (ne > (uint64_t)INT64_MAX)
                return ql_error(QL_EFORMAT, "%s: tensor '%s' has a negative dimension ne[%d]",
                                r->path, t->name, d);
            t->ne[d] = (int64_t)ne;
            if (ne && (uint64_t)t->numel > (uint64_t)INT64_MAX / ne)
                return ql_error(QL_EFORMAT, "%s: tensor '%s' has more than 2^63 elements", r->path,
                                t->name);
            t->numel *= (int64_t)ne;
        }
        QL_TRY(rd_u32(r, &t->type, what));
        int64_t block;
        uint64_t bytes;
        if (!ql_gguf_type_size(t->type, &block, &bytes))
            return ql_error(QL_EFORMAT, "%s: tensor '%s' has unknown ggml type %u", r->path,
                            t->name, t->type);
        if (t->ne[0] % block)
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s' of type %s has ne[0] = %" PRId64
                            ", not a multiple of its block size %" PRId64,
                            r->path, t->name, ql_gguf_type_name(t->type), t->ne[0], block);
        uint64_t blocks = (uint64_t)(t->numel / block);
        if (blocks > UINT64_MAX / bytes)
            return ql_error(QL_EFORMAT, "%s: tensor '%s' is too large", r->path, t->name);
        t->nbytes = blocks * bytes;
        QL_TRY(rd_u64(r, &t->offset, what));
        if (t->offset % f->alignment)
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s' has data offset %" PRIu64
                            ", not a multiple of the alignment %" PRIu64,
                            r->path, t->name, t->offset, f->alignment);
    }
    return QL_OK;
}

static int cmp_by_name(const void *a, const void *b, void *ctx) {
    const ql_gguf_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const ql_gguf_tensor *x = (const ql_gguf_tensor *)ctx + *(const size_t *)a;
    const ql_gguf_tensor *y = (const ql_gguf_tensor *)ctx + *(const size_t *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Places every tensor's data and checks it lies inside the file without
 * overlapping another. */
static ql_status place_tensors(ql_gguf_file *f) {
    size_t n = f->n_tensors;
    if (n == 0) return QL_OK;
    if (f->data_offset > f->map_len)
        return ql_error(QL_EFORMAT,
                        "%s: tensor data would start at offset %" PRIu64
                        " but the file ends at %zu (truncated?)",
                        f->path, f->data_offset, f->map_len);
    uint64_t avail = f->map_len - f->data_offset;
    for (size_t i = 0; i < n; i++) {
        ql_gguf_tensor *t = &f->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s' data (%" PRIu64 " bytes at file offset %" PRIu64
                            ") runs past the end of the file (%zu bytes; truncated?)",
                            f->path, t->name, t->nbytes, f->data_offset + t->offset, f->map_len);
        t->data = (const uint8_t *)f->map + f->data_offset + t->offset;
    }
    size_t *ord = malloc(n * sizeof *ord);
    f->by_name = malloc(n * sizeof *f->by_name);
    if (!ord || !f->by_name) {
        free(ord);
        return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    }
    for (size_t i = 0; i < n; i++) ord[i] = f->by_name[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_by_offset, f->tensors);
    qsort_r(f->by_name, n, sizeof *f->by_name, cmp_by_name, f->tensors);
    ql_status st = QL_OK;
    size_t far = ord[0]; /* the tensor whose data reaches furthest so far */
    for (size_t k = 1; k < n && st == QL_OK; k++) {
        const ql_gguf_tensor *a = &f->tensors[far], *b = &f->tensors[ord[k]];
        if (b->nbytes && a->offset + a->nbytes > b->offset)
            st = ql_error(QL_EFORMAT,
                          "%s: data of tensors '%s' (offset %" PRIu64 ", %" PRIu64
                          " bytes) and '%s' (offset %" PRIu64 ", %" PRIu64 " bytes) overlap",
                          f->path, a->name, a->offset, a->nbytes, b->name, b->offset, b->nbytes);
        if (b->offset + b->nbytes > a->offset + a->nbytes) far = ord[k];
    }
    for (size_t k = 1; k < n && st == QL_OK; k++)
        if (!strcmp(f->tensors[f->by_name[k - 1]].name, f->tensors[f->by_name[k]].name))
            st = ql_error(QL_EFORMAT, "%s: tensor '%s' appears more than once", f->path,
                          f->tensors[f->by_name[k]].name);
    free(ord);
    return st;
}

static ql_status parse(ql_gguf_file *f) {
    rd r = {.p = f->map, .pos = 0, .len = f->map_len, .path = f->path};
    uint32_t magic, version;
    QL_TRY(rd_u32(&r, &magic, "header"));
    if (magic != GGUF_MAGIC)
        return ql_error(QL_EFORMAT,
                        "%s: not a GGUF file (magic bytes %02x %02x %02x %02x, expected \"GGUF\")",
                        f->path, r.p[0], r.p[1], r.p[2], r.p[3]);
    QL_TRY(rd_u32(&r, &version, "header"));
    if (version != 2 && version != 3) {
        if (version == 1)
            return ql_error(QL_EFORMAT,
                            "%s: GGUF version 1 is not supported (versions 2 and 3 are)", f->path);
        if (!(version & 0xffffu))
            return ql_error(QL_EFORMAT,
                            "%s: GGUF version field is 0x%08x: a big-endian file? only "
                            "little-endian GGUF versions 2 and 3 are supported",
                            f->path, version);
        return ql_error(QL_EFORMAT, "%s: GGUF version %u is not supported (versions 2 and 3 are)",
                        f->path, version);
    }
    f->version = version;
    uint64_t n_tensors, n_kv;
    QL_TRY(rd_u64(&r, &n_tensors, "header"));
    QL_TRY(rd_u64(&r, &n_kv, "header"));
    if (n_kv > left(&r) / MIN_KV_BYTES)
        return ql_error(QL_EFORMAT,
                        "%s: header claims %" PRIu64
                        " metadata entries, more than the file's %" PRIu64
                        " remaining bytes can hold (truncated or corrupt)",
                        f->path, n_kv, left(&r));
    f->kvs = calloc(n_kv ? n_kv : 1, sizeof *f->kvs);
    if (!f->kvs) return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    QL_TRY(read_kvs(&r, f, n_kv));
    QL_TRY(check_unique_keys(f));
    QL_TRY(read_alignment(f));
    if (n_tensors > left(&r) / MIN_TENSOR_BYTES)
        return ql_error(QL_EFORMAT,
                        "%s: header claims %" PRIu64 " tensors, more than the file's %" PRIu64
                        " remaining bytes can hold (truncated or corrupt)",
                        f->path, n_tensors, left(&r));
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors) return ql_error(QL_ENOMEM, "out of memory reading %s", f->path);
    QL_TRY(read_tensor_infos(&r, f, n_tensors));
    f->data_offset = (r.pos + f->alignment - 1) / f->alignment * f->alignment;
    return place_tensors(f);
}

ql_status ql_gguf_open(const char *path, ql_gguf_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ql_error(errno == ENOENT ? QL_ENOTFOUND : QL_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ql_error(QL_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ql_error(QL_EFORMAT, "%s: not a regular file", path);
    }
    if (sb.st_size < 24) {
        close(fd);
        return ql_error(QL_EFORMAT,
                        "%s: file is %lld bytes, shorter than the 24-byte GGUF header (truncated?)",
                        path, (long long)sb.st_size);
    }
    f->path = strdup(path);
    f->map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    ql_status st;
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        st = ql_error(QL_EIO, "%s: mmap failed: %s", path, strerror(e));
        goto fail;
    }
    f->map_len = (size_t)sb.st_size;
    if (!f->path) {
        st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        goto fail;
    }
    st = parse(f);
    if (st == QL_OK) return QL_OK;
fail:
    ql_gguf_close(f);
    return st;
}

void ql_gguf_close(ql_gguf_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n_kv; i++) free(f->kvs[i].key);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    free(f->by_name);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const ql_gguf_kv *ql_gguf_find_kv(const ql_gguf_file *f, const char *key) {
    /* Files hold a few dozen keys: a scan is fine. */
    for (size_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kvs[i].key, key)) return &f->kvs[i];
    return NULL;
}

const ql_gguf_tensor *ql_gguf_find_tensor(const ql_gguf_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ql_gguf_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- typed getters ------------------------------------------------------ */

static ql_status find(const ql_gguf_file *f, const char *key, const ql_gguf_kv **kv) {
    *kv = ql_gguf_find_kv(f, key);
    if (!*kv) return ql_error(QL_ENOTFOUND, "%s: metadata key '%s' is missing", f->path, key);
    return QL_OK;
}

static void type_str(const ql_gguf_kv *kv, char *buf, size_t n) {
    if (kv->type == QL_GGUF_ARRAY)
        snprintf(buf, n, "an array of %s", vtype_name(kv->elem));
    else
        snprintf(buf, n, "%s", vtype_name(kv->type));
}

static ql_status wrong_type(const ql_gguf_file *f, const ql_gguf_kv *kv, const char *expected) {
    char got[48];
    type_str(kv, got, sizeof got);
    return ql_error(QL_EFORMAT, "%s: metadata key '%s' is %s, expected %s", f->path, kv->key, got,
                    expected);
}

static int is_int_type(uint32_t t) {
    return t <= QL_GGUF_I32 || t == QL_GGUF_U64 || t == QL_GGUF_I64;
}

/* An integer element widened to int64; a UINT64 above INT64_MAX saturates
 * (callers reject it as out of range). */
static int64_t int_at(uint32_t t, const uint8_t *p) {
    switch (t) {
    case QL_GGUF_U8: return *p;
    case QL_GGUF_I8: return (int8_t)*p;
    case QL_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case QL_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case QL_GGUF_U32: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case QL_GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case QL_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    default: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

ql_status ql_gguf_get_u64(const ql_gguf_file *f, const char *key, uint64_t *out) {
    const ql_gguf_kv *kv;
    QL_TRY(find(f, key, &kv));
    if (!is_int_type(kv->type)) return wrong_type(f, kv, "an unsigned integer");
    if (kv->type == QL_GGUF_U64) {
        memcpy(out, kv->at, 8);
        return QL_OK;
    }
    int64_t v = int_at(kv->type, kv->at);
    if (v < 0)
        return ql_error(QL_EFORMAT, "%s: metadata key '%s' is %" PRId64 ", expected >= 0", f->path,
                        key, v);
    *out = (uint64_t)v;
    return QL_OK;
}

ql_status ql_gguf_get_f64(const ql_gguf_file *f, const char *key, double *out) {
    const ql_gguf_kv *kv;
    QL_TRY(find(f, key, &kv));
    if (kv->type == QL_GGUF_F32) {
        float v;
        memcpy(&v, kv->at, 4);
        *out = v;
    } else if (kv->type == QL_GGUF_F64) {
        memcpy(out, kv->at, 8);
    } else if (is_int_type(kv->type)) {
        *out = (double)int_at(kv->type, kv->at);
    } else {
        return wrong_type(f, kv, "a number (FLOAT32 or FLOAT64)");
    }
    return QL_OK;
}

ql_status ql_gguf_get_bool(const ql_gguf_file *f, const char *key, int *out) {
    const ql_gguf_kv *kv;
    QL_TRY(find(f, key, &kv));
    if (kv->type != QL_GGUF_BOOL) return wrong_type(f, kv, "BOOL");
    if (kv->at[0] > 1)
        return ql_error(QL_EFORMAT,
                        "%s: metadata key '%s' is a BOOL with value %u, expected 0 or 1", f->path,
                        key, kv->at[0]);
    *out = kv->at[0];
    return QL_OK;
}

ql_status ql_gguf_get_str(const ql_gguf_file *f, const char *key, ql_gguf_str *out) {
    const ql_gguf_kv *kv;
    QL_TRY(find(f, key, &kv));
    if (kv->type != QL_GGUF_STRING) return wrong_type(f, kv, "STRING");
    uint64_t n;
    memcpy(&n, kv->at, 8);
    out->p = (const char *)kv->at + 8;
    out->len = n;
    return QL_OK;
}

static ql_status find_array(const ql_gguf_file *f, const char *key, const ql_gguf_kv **kv,
                            const char *expected) {
    QL_TRY(find(f, key, kv));
    if ((*kv)->type != QL_GGUF_ARRAY) return wrong_type(f, *kv, expected);
    return QL_OK;
}

ql_status ql_gguf_get_str_array(const ql_gguf_file *f, const char *key, ql_gguf_str **out,
                                uint64_t *n) {
    const ql_gguf_kv *kv;
    QL_TRY(find_array(f, key, &kv, "an array of STRING"));
    if (kv->elem != QL_GGUF_STRING) return wrong_type(f, kv, "an array of STRING");
    ql_gguf_str *v = malloc((kv->count ? kv->count : 1) * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "out of memory reading '%s' of %s", key, f->path);
    const uint8_t *p = kv->at; /* lengths were checked at open */
    for (uint64_t i = 0; i < kv->count; i++) {
        memcpy(&v[i].len, p, 8);
        v[i].p = (const char *)p + 8;
        p += 8 + v[i].len;
    }
    *out = v;
    *n = kv->count;
    return QL_OK;
}

ql_status ql_gguf_get_int_array(const ql_gguf_file *f, const char *key, int64_t **out,
                                uint64_t *n) {
    const ql_gguf_kv *kv;
    QL_TRY(find_array(f, key, &kv, "an array of integers"));
    if (!is_int_type(kv->elem)) return wrong_type(f, kv, "an array of integers");
    uint64_t sz = vtype_size(kv->elem);
    int64_t *v = malloc((kv->count ? kv->count : 1) * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "out of memory reading '%s' of %s", key, f->path);
    for (uint64_t i = 0; i < kv->count; i++) v[i] = int_at(kv->elem, kv->at + i * sz);
    *out = v;
    *n = kv->count;
    return QL_OK;
}

ql_status ql_gguf_get_f32_array(const ql_gguf_file *f, const char *key, float **out, uint64_t *n) {
    const ql_gguf_kv *kv;
    QL_TRY(find_array(f, key, &kv, "an array of FLOAT32"));
    if (kv->elem != QL_GGUF_F32) return wrong_type(f, kv, "an array of FLOAT32");
    float *v = malloc((kv->count ? kv->count : 1) * sizeof *v);
    if (!v) return ql_error(QL_ENOMEM, "out of memory reading '%s' of %s", key, f->path);
    if (kv->count) memcpy(v, kv->at, kv->count * 4);
    *out = v;
    *n = kv->count;
    return QL_OK;
}

ql_status ql_gguf_token_id(const ql_gguf_file *f, const char *which, int64_t *id) {
    char key[128];
    snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", which);
    *id = -1;
    if (!ql_gguf_find_kv(f, key)) return QL_OK;
    uint64_t v;
    QL_TRY(ql_gguf_get_u64(f, key, &v));
    const ql_gguf_kv *toks = ql_gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (toks && toks->type == QL_GGUF_ARRAY && v >= toks->count)
        return ql_error(QL_EFORMAT,
                        "%s: metadata key '%s' is %" PRIu64
                        ", outside tokenizer.ggml.tokens (%" PRIu64 " tokens)",
                        f->path, key, v, toks->count);
    if (v > (uint64_t)INT64_MAX)
        return ql_error(QL_EFORMAT, "%s: metadata key '%s' is out of range", f->path, key);
    *id = (int64_t)v;
    return QL_OK;
}
