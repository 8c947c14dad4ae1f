#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fsutil.h"

/* Dtypes the format defines but this project does not read. */
static const char *const st_other_dtypes[] = {"F4",          "F6_E2M3",     "F6_E3M2",
                                              "F8_E5M2",     "F8_E4M3",     "F8_E8M0",
                                              "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"};

const char *ql_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

void ql_st_close(ql_st_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f->format);
    memset(f, 0, sizeof *f);
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const ql_st_tensor *)a)->name, ((const ql_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const ql_st_tensor *base = ctx;
    const ql_st_tensor *x = &base[*(const size_t *)a], *y = &base[*(const size_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* One header entry -> t. `p` is the file path for messages. */
static ql_status parse_entry(const char *p, const char *name, json_t *v, uint64_t data_len,
                             ql_st_tensor *t) {
    if (!json_is_object(v))
        return ql_error(QL_EFORMAT, "%s: tensor '%s': header entry is not a JSON object", p, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return ql_error(QL_EFORMAT, "%s: tensor '%s': missing string field 'dtype'", p, name);
    const char *dn = json_string_value(jd);
    int dt = ql_dtype_from_name(dn);
    if (dt < 0) {
        for (size_t i = 0; i < sizeof st_other_dtypes / sizeof *st_other_dtypes; i++)
            if (!strcmp(dn, st_other_dtypes[i]))
                return ql_error(QL_EUNSUPPORTED, "%s: tensor '%s': dtype '%s' is not supported", p,
                                name, dn);
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': unknown dtype '%s' (expected a safetensors dtype such "
                        "as F32, BF16, F16, U8)",
                        p, name, dn);
    }
    t->dtype = (ql_dtype)dt;
    if (!json_is_array(js))
        return ql_error(QL_EFORMAT, "%s: tensor '%s': missing array field 'shape'", p, name);
    if (json_array_size(js) > QL_ST_MAX_DIMS)
        return ql_error(QL_EFORMAT, "%s: tensor '%s': shape has %zu dimensions (at most %d)", p,
                        name, json_array_size(js), QL_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (!json_uint(json_array_get(js, (size_t)i), &d))
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s': shape entry %d is not a non-negative integer", p,
                            name, i);
        t->shape[i] = (int64_t)d;
        if (d && numel > UINT64_MAX / 16 / d) overflow = 1;
        numel *= d;
    }
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_uint(json_array_get(jo, 0), &b) ||
        !json_uint(json_array_get(jo, 1), &e))
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': 'data_offsets' must be two non-negative integers "
                        "[begin, end]",
                        p, name);
    t->begin = b;
    t->end = e;
    if (e < b)
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin",
                        p, name, b, e);
    if (e > data_len)
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] out of range: data buffer is %" PRIu64 " bytes",
                        p, name, b, e, data_len);
    char sh[256];
    if (overflow || numel * ql_dtype_size(t->dtype) != e - b)
        return ql_error(QL_EFORMAT,
                        "%s: tensor '%s': dtype %s shape %s needs %s%" PRIu64
                        " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                        p, name, dn, ql_st_shape_str(t->shape, t->ndim, sh, sizeof sh),
                        overflow ? "more than " : "",
                        overflow ? UINT64_MAX / 16 : numel * ql_dtype_size(t->dtype), b, e, e - b);
    t->numel = (int64_t)numel;
    return QL_OK;
}

static ql_status parse_metadata(const char *p, json_t *v, ql_st_file *f) {
    if (!json_is_object(v))
        return ql_error(QL_EFORMAT, "%s: '__metadata__' must be an object of strings", p);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!json_is_string(x))
            return ql_error(QL_EFORMAT, "%s: '__metadata__' value for key '%s' is not a string", p,
                            k);
        if (!strcmp(k, "format")) {
            f->format = strdup(json_string_value(x));
            if (!f->format) return ql_error(QL_ENOMEM, "out of memory reading %s", p);
        }
    }
    return QL_OK;
}

/* Every byte of the data buffer belongs to exactly one tensor. */
static ql_status check_coverage(const char *p, ql_st_file *f) {
    size_t n = f->n_tensors;
    size_t *idx = ql_malloc((n ? n : 1) * sizeof *idx, "safetensors offsets");
    if (!idx) return QL_ENOMEM;
    for (size_t i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, n, sizeof *idx, cmp_by_offset, f->tensors);
    uint64_t pos = 0;
    const ql_st_tensor *prev = NULL;
    ql_status st = QL_OK;
    for (size_t i = 0; i < n; i++) {
        const ql_st_tensor *t = &f->tensors[idx[i]];
        if (t->begin < pos) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                          "] overlap tensor '%s' at [%" PRIu64 ", %" PRIu64 "]",
                          p, t->name, t->begin, t->end, prev->name, prev->begin, prev->end);
            goto out;
        }
        if (t->begin > pos) {
            st = ql_error(QL_EFORMAT,
                          "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                          "] leave a hole: bytes [%" PRIu64 ", %" PRIu64
                          ") of the data buffer belong to no tensor",
                          p, t->name, t->begin, t->end, pos, t->begin);
            goto out;
        }
        pos = t->end;
        prev = t;
    }
    if (pos != f->data_len)
        st = ql_error(QL_EFORMAT,
                      "%s: data buffer is %" PRIu64 " bytes but the tensors cover only %" PRIu64
                      " (%" PRIu64 " trailing bytes belong to no tensor)",
                      p, f->data_len, pos, f->data_len - pos);
out:
    free(idx);
    return st;
}

ql_status ql_st_open(const char *path, ql_st_file *f) {
    memset(f, 0, sizeof *f);
    ql_status st = QL_OK;
    json_t *root = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ql_error(errno == ENOENT ? QL_ENOTFOUND : QL_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ql_error(QL_EIO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return ql_error(QL_EFORMAT,
                        "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length "
                        "(truncated?)",
                        path, size);
    }
    f->path = strdup(path);
    f->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        st = ql_error(QL_EIO, "%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    f->map_len = (size_t)size;
    if (!f->path) {
        st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        goto fail;
    }
    const uint8_t *m = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | m[i];
    if (hlen > QL_ST_MAX_HEADER) {
        st = ql_error(QL_EFORMAT, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes",
                      path, hlen, QL_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        st = ql_error(QL_EFORMAT,
                      "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64
                      " bytes; truncated?)",
                      path, hlen, size);
        goto fail;
    }
    const char *hdr = (const char *)m + 8;
    if (hlen == 0 || hdr[0] != '{') {
        st = ql_error(QL_EFORMAT, "%s: header does not start with '{'", path);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = ql_error(QL_EFORMAT, "%s: header is not valid JSON: %s (header byte %d)", path,
                      jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        st = ql_error(QL_EFORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }
    f->data = m + 8 + hlen;
    f->data_len = size - 8 - hlen;
    size_t cap = json_object_size(root);
    f->tensors = ql_calloc(cap ? cap : 1, sizeof *f->tensors, "safetensors tensor table");
    if (!f->tensors) {
        st = QL_ENOMEM;
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if ((st = parse_metadata(path, val, f)) != QL_OK) goto fail;
            continue;
        }
        ql_st_tensor *t = &f->tensors[f->n_tensors];
        if ((st = parse_entry(path, key, val, f->data_len, t)) != QL_OK) goto fail;
        t->name = strdup(key);
        if (!t->name) {
            st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
            goto fail;
        }
        t->data = f->data + t->begin;
        f->n_tensors++;
    }
    if ((st = check_coverage(path, f)) != QL_OK) goto fail;
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
    json_decref(root);
    return QL_OK;
fail:
    json_decref(root);
    ql_st_close(f);
    return st;
}

const ql_st_tensor *ql_st_find(const ql_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

ql_status ql_st_to_f32(const ql_st_file *f, const ql_st_tensor *t, float *out) {
    if (t->dtype != QL_DT_F32 && t->dtype != QL_DT_F16 && t->dtype != QL_DT_BF16 &&
        t->dtype != QL_DT_F64)
        return ql_error(QL_EFORMAT, "%s: tensor '%s': dtype %s is not a floating type", f->path,
                        t->name, ql_dtype_name(t->dtype));
    size_t isz = ql_dtype_size(t->dtype);
    const void *src = t->data;
    void *copy = NULL;
    /* Other writers need not align the data buffer; the converters read whole
     * elements, so give them an aligned copy. */
    if ((uintptr_t)src % isz) {
        copy = ql_malloc((size_t)(t->end - t->begin), "an aligned tensor copy");
        if (!copy) return QL_ENOMEM;
        memcpy(copy, src, (size_t)(t->end - t->begin));
        src = copy;
    }
    ql_dtype_to_f32(t->dtype, src, out, (size_t)t->numel);
    free(copy);
    return QL_OK;
}

/* ------------------------------------------------------------------ writer */

static int cmp_write_order(const void *a, const void *b, void *ctx) {
    const ql_st_entry *base = ctx;
    const ql_st_entry *x = &base[*(const size_t *)a], *y = &base[*(const size_t *)b];
    int ox = ql_dtype_st_order(x->dtype), oy = ql_dtype_st_order(y->dtype);
    if (ox != oy) return ox > oy ? -1 : 1;
    return strcmp(x->name, y->name);
}

typedef struct hbuf {
    char *p;
    size_t len, cap;
} hbuf;

static int hb_put(hbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (b->len + n + 1 > cap) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* serde_json's string escaping: the two specials, short forms for the usual
 * control characters, \u00xx for the rest below 0x20; UTF-8 passes through. */
static int hb_put_name(hbuf *b, const char *s) {
    int r = hb_put(b, "\"", 1);
    for (; *s && !r; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                e = esc;
            }
        }
        r = e ? hb_put(b, e, strlen(e)) : hb_put(b, (const char *)&c, 1);
    }
    return r ? r : hb_put(b, "\"", 1);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static ql_status check_entries(const ql_st_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const ql_st_entry *x = &e[i];
        if (!strcmp(x->name, "__metadata__"))
            return ql_error(QL_EINVAL, "safetensors: '__metadata__' cannot name a tensor");
        if (x->ndim < 0 || x->ndim > QL_ST_MAX_DIMS || (int)x->dtype < 0 || x->dtype >= QL_DT_COUNT)
            return ql_error(QL_EINVAL, "safetensors: tensor '%s': bad dtype or rank", x->name);
        uint64_t numel = 1;
        for (int d = 0; d < x->ndim; d++) numel *= (uint64_t)x->shape[d];
        if (numel * ql_dtype_size(x->dtype) != x->nbytes)
            return ql_error(QL_EINVAL,
                            "safetensors: tensor '%s': %" PRIu64 " bytes given for %" PRIu64
                            " elements of %s",
                            x->name, x->nbytes, numel, ql_dtype_name(x->dtype));
    }
    const char **names = ql_malloc((n ? n : 1) * sizeof *names, "safetensors names");
    if (!names) return QL_ENOMEM;
    for (size_t i = 0; i < n; i++) names[i] = e[i].name;
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i], names[i - 1])) {
            ql_status st = ql_error(QL_EINVAL, "safetensors: tensor '%s' given twice", names[i]);
            free(names);
            return st;
        }
    free(names);
    return QL_OK;
}

ql_status ql_st_header(const ql_st_entry *e, size_t n, char **header, size_t *header_len,
                       size_t *order) {
    for (size_t i = 0; i < n; i++) order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_write_order, (void *)e);
    QL_TRY(check_entries(e, n));
    hbuf b = {0};
    static const char meta[] = "{\"__metadata__\":{\"format\":\"pt\"}";
    int r = hb_put(&b, meta, sizeof meta - 1);
    uint64_t off = 0;
    char tmp[128];
    for (size_t i = 0; i < n && !r; i++) {
        const ql_st_entry *x = &e[order[i]];
        r |= hb_put(&b, ",", 1);
        r |= hb_put_name(&b, x->name);
        int k =
            snprintf(tmp, sizeof tmp, ":{\"dtype\":\"%s\",\"shape\":[", ql_dtype_name(x->dtype));
        r |= hb_put(&b, tmp, (size_t)k);
        for (int d = 0; d < x->ndim; d++) {
            k = snprintf(tmp, sizeof tmp, "%s%" PRId64, d ? "," : "", x->shape[d]);
            r |= hb_put(&b, tmp, (size_t)k);
        }
        k = snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
                     off + x->nbytes);
        r |= hb_put(&b, tmp, (size_t)k);
        off += x->nbytes;
    }
    r |= hb_put(&b, "}", 1);
    while (!r && b.len % 8) r |= hb_put(&b, " ", 1);
    if (r) {
        free(b.p);
        return ql_error(QL_ENOMEM, "out of memory building a safetensors header");
    }
    *header = b.p;
    *header_len = b.len;
    return QL_OK;
}

uint64_t ql_st_file_size(const ql_st_entry *e, size_t n) {
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    char *h = NULL;
    size_t hl = 0;
    uint64_t total = 8;
    if (order && ql_st_header(e, n, &h, &hl, order) == QL_OK) total += hl;
    free(h);
    free(order);
    for (size_t i = 0; i < n; i++) total += e[i].nbytes;
    return total;
}

ql_status ql_st_write(const char *path, const ql_st_entry *e, size_t n) {
    size_t *order = ql_malloc((n ? n : 1) * sizeof *order, "safetensors write order");
    if (!order) return QL_ENOMEM;
    char *h = NULL;
    size_t hl = 0;
    ql_status st = ql_st_header(e, n, &h, &hl, order);
    if (st != QL_OK) {
        free(order);
        return ql_error_wrap(st, "%s: ", path);
    }
    ql_fs_tmpfile f;
    st = ql_fs_tmpfile_open(path, &f);
    if (st == QL_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        st = ql_fs_tmpfile_write(&f, len8, 8);
        if (st == QL_OK) st = ql_fs_tmpfile_write(&f, h, hl);
        for (size_t i = 0; i < n && st == QL_OK; i++)
            st = ql_fs_tmpfile_write(&f, e[order[i]].data, (size_t)e[order[i]].nbytes);
        if (st == QL_OK)
            st = ql_fs_tmpfile_commit(&f);
        else
            ql_fs_tmpfile_abort(&f);
    }
    free(h);
    free(order);
    return st;
}
