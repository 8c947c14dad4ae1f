#include "data/cache.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fsutil.h"
#include "model/gguf.h"

static const char MAGIC[8] = {'Q', 'L', 'T', 'O', 'K', 'C', '0', '1'};
enum { N_HEADER = 7 }; /* n, tokens, truncated, targets, max_len, max_id, extra_len */
#define HEADER_BYTES (sizeof MAGIC + QL_SHA256_LEN + N_HEADER * sizeof(int64_t))

/* Length-prefixed pieces, so that ("ab", "c") and ("a", "bc") differ. */
static void add_piece(ql_sha256 *s, const void *p, uint64_t n) {
    ql_sha256_update(s, &n, sizeof n);
    ql_sha256_update(s, p, (size_t)n);
}

void ql_cache_add_text(ql_sha256 *s, const char *label, const char *text) {
    add_piece(s, label, strlen(label));
    add_piece(s, text, strlen(text));
}

static ql_status add_file(ql_sha256 *s, const char *label, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return ql_error(QL_EIO, "%s: cannot read: %s", path, strerror(errno));
    uint64_t n = (uint64_t)st.st_size;
    add_piece(s, label, strlen(label));
    ql_sha256_update(s, &n, sizeof n);
    return ql_sha256_add_file(s, path);
}

/* A file that may be absent: its absence is part of the key too. */
static ql_status add_optional(ql_sha256 *s, const char *dir, const char *name) {
    char *p = ql_fs_join(dir, name);
    if (!p) return QL_ENOMEM;
    ql_status st = QL_OK;
    if (ql_fs_exists(p))
        st = add_file(s, name, p);
    else
        ql_cache_add_text(s, name, "(absent)");
    free(p);
    return st;
}

ql_status ql_cache_key_begin(ql_sha256 *s, const char *data_path) {
    ql_sha256_init(s);
    char v[32];
    snprintf(v, sizeof v, "%d", QL_CACHE_VERSION);
    ql_cache_add_text(s, "qlora tokenized data", v);
    return add_file(s, "data", data_path);
}

static int is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4] = {0};
    size_t got = fread(m, 1, 4, f);
    fclose(f);
    return got == 4 && !memcmp(m, "GGUF", 4);
}

ql_status ql_cache_add_tokenizer(ql_sha256 *s, const char *path) {
    if (!ql_fs_is_dir(path) && is_gguf(path)) {
        ql_gguf_file g;
        QL_TRY(ql_gguf_open(path, &g));
        add_piece(s, "gguf metadata", 13);
        add_piece(s, g.map, g.data_offset);
        ql_gguf_close(&g);
        return QL_OK;
    }
    char *dir, *json;
    if (ql_fs_is_dir(path)) {
        dir = strdup(path);
        json = ql_fs_join(path, "tokenizer.json");
    } else {
        dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash)
            *slash = '\0';
        else if (dir)
            strcpy(dir, ".");
        json = strdup(path);
    }
    ql_status st = dir && json ? QL_OK : ql_error(QL_ENOMEM, "out of memory");
    if (st == QL_OK) st = add_file(s, "tokenizer.json", json);
    if (st == QL_OK) st = add_optional(s, dir, "tokenizer_config.json");
    if (st == QL_OK) st = add_optional(s, dir, "chat_template.jinja");
    free(dir);
    free(json);
    return st;
}

char *ql_cache_file(const char *dir, const uint8_t key[QL_SHA256_LEN]) {
    char hex[2 * QL_SHA256_LEN + 1], name[2 * QL_SHA256_LEN + 16];
    ql_sha256_hex(key, hex);
    snprintf(name, sizeof name, "tokens-%s.bin", hex);
    return ql_fs_join(dir, name);
}

/* ---- reading ---------------------------------------------------------------- */

typedef struct reader {
    FILE *f;
    ql_sha256 s;
    char *why;
    size_t why_len;
} reader;

static int fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(reader *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, r->why_len, fmt, ap);
    va_end(ap);
    return 0;
}

static int get(reader *r, void *p, size_t n) {
    if (n && fread(p, 1, n, r->f) != n) return 0;
    ql_sha256_update(&r->s, p, n);
    return 1;
}

static int read_body(reader *r, const uint8_t key[QL_SHA256_LEN], ql_token_data *d, void *extra,
                     size_t extra_len, int64_t file_size) {
    char magic[sizeof MAGIC];
    uint8_t k[QL_SHA256_LEN];
    int64_t h[N_HEADER];
    if (!get(r, magic, sizeof magic) || memcmp(magic, MAGIC, sizeof MAGIC))
        return fail(r, "not a qlora data cache file of this version");
    if (!get(r, k, sizeof k) || !get(r, h, sizeof h)) return fail(r, "truncated header");
    if (memcmp(k, key, sizeof k)) return fail(r, "it holds another key");
    int64_t n = h[0], n_tok = h[1];
    if (n < 0 || n_tok < 0 || n > file_size || n_tok > file_size || h[6] != (int64_t)extra_len)
        return fail(r, "inconsistent header");
    int64_t want = (int64_t)HEADER_BYTES + 8 * (n + 1) + 8 * n + 8 * n_tok + (int64_t)extra_len +
                   QL_SHA256_LEN;
    if (want != file_size)
        return fail(r, "%lld bytes where the header implies %lld", (long long)file_size,
                    (long long)want);
    d->n = n;
    d->n_truncated = h[2];
    d->n_targets = h[3];
    d->max_len = h[4];
    d->max_id = (int32_t)h[5];
    d->off = malloc((size_t)(n + 1) * sizeof *d->off);
    d->line = malloc((size_t)(n ? n : 1) * sizeof *d->line);
    d->ids = malloc((size_t)(n_tok ? n_tok : 1) * sizeof *d->ids);
    d->targets = malloc((size_t)(n_tok ? n_tok : 1) * sizeof *d->targets);
    if (!d->off || !d->line || !d->ids || !d->targets) return fail(r, "out of memory");
    if (!get(r, d->off, (size_t)(n + 1) * sizeof *d->off) ||
        !get(r, d->line, (size_t)n * sizeof *d->line) ||
        !get(r, d->ids, (size_t)n_tok * sizeof *d->ids) ||
        !get(r, d->targets, (size_t)n_tok * sizeof *d->targets) || !get(r, extra, extra_len))
        return fail(r, "truncated");
    uint8_t sum[QL_SHA256_LEN], want_sum[QL_SHA256_LEN];
    ql_sha256_final(&r->s, sum);
    if (fread(want_sum, 1, sizeof want_sum, r->f) != sizeof want_sum) return fail(r, "truncated");
    if (memcmp(sum, want_sum, sizeof sum)) return fail(r, "checksum mismatch (corrupt)");
    /* The checksum vouches for the bytes; these vouch for the writer. */
    if (d->off[0] != 0 || d->off[n] != n_tok) return fail(r, "inconsistent record table");
    for (int64_t i = 0; i < n; i++)
        if (d->off[i + 1] < d->off[i]) return fail(r, "inconsistent record table");
    return 1;
}

int ql_cache_read(const char *file, const uint8_t key[QL_SHA256_LEN], const char *data_path,
                  ql_token_data *d, void *extra, size_t extra_len, char *why, size_t why_len) {
    memset(d, 0, sizeof *d);
    if (why_len) why[0] = '\0';
    reader r = {.why = why, .why_len = why_len};
    struct stat st;
    if (stat(file, &st) != 0) {
        if (errno != ENOENT) fail(&r, "cannot read it: %s", strerror(errno));
        return 0;
    }
    r.f = fopen(file, "rb");
    if (!r.f) return fail(&r, "cannot open it: %s", strerror(errno));
    ql_sha256_init(&r.s);
    unsigned char *scratch = extra_len ? malloc(extra_len) : NULL;
    int ok =
        (!extra_len || scratch) && read_body(&r, key, d, scratch, extra_len, (int64_t)st.st_size);
    if (extra_len && !scratch) fail(&r, "out of memory");
    fclose(r.f);
    if (ok) {
        d->path = strdup(data_path);
        if (!d->path) ok = fail(&r, "out of memory");
    }
    if (ok && extra_len) memcpy(extra, scratch, extra_len);
    free(scratch);
    if (!ok) ql_jsonl_tokens_free(d);
    return ok;
}

/* ---- writing ---------------------------------------------------------------- */

typedef struct writer {
    ql_fs_tmpfile f;
    ql_sha256 s;
} writer;

static ql_status put(writer *w, const void *p, size_t n) {
    ql_sha256_update(&w->s, p, n);
    return ql_fs_tmpfile_write(&w->f, p, n);
}

ql_status ql_cache_write(const char *file, const uint8_t key[QL_SHA256_LEN], const ql_token_data *d,
                         const void *extra, size_t extra_len) {
    char *dir = strdup(file);
    if (!dir) return ql_error(QL_ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    ql_status st = QL_OK;
    if (slash && slash != dir) {
        *slash = '\0';
        st = ql_fs_mkdirs(dir);
    }
    free(dir);
    QL_TRY(st);
    writer w;
    ql_sha256_init(&w.s);
    QL_TRY(ql_fs_tmpfile_open(file, &w.f));
    int64_t n = d->n, n_tok = d->off[n];
    int64_t h[N_HEADER] = {n,          n_tok,     d->n_truncated,    d->n_targets,
                           d->max_len, d->max_id, (int64_t)extra_len};
    st = put(&w, MAGIC, sizeof MAGIC);
    if (st == QL_OK) st = put(&w, key, QL_SHA256_LEN);
    if (st == QL_OK) st = put(&w, h, sizeof h);
    if (st == QL_OK) st = put(&w, d->off, (size_t)(n + 1) * sizeof *d->off);
    if (st == QL_OK) st = put(&w, d->line, (size_t)n * sizeof *d->line);
    if (st == QL_OK) st = put(&w, d->ids, (size_t)n_tok * sizeof *d->ids);
    if (st == QL_OK) st = put(&w, d->targets, (size_t)n_tok * sizeof *d->targets);
    if (st == QL_OK && extra_len) st = put(&w, extra, extra_len);
    if (st == QL_OK) {
        uint8_t sum[QL_SHA256_LEN];
        ql_sha256_final(&w.s, sum);
        st = ql_fs_tmpfile_write(&w.f, sum, sizeof sum);
    }
    if (st == QL_OK) st = ql_fs_tmpfile_commit(&w.f);
    ql_fs_tmpfile_abort(&w.f);
    return st;
}
