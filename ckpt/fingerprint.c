#include "ckpt/fingerprint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/sha256.h"

#define SAMPLE (1 << 20)

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int is_model_file(const char *name) {
    return !strcmp(name, "config.json") || ends_with(name, ".safetensors") ||
           ends_with(name, ".gguf");
}

static void put_u64(ql_sha256 *s, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    ql_sha256_update(s, b, 8);
}

/* name, size, the first MiB and the last MiB (not overlapping the first). */
static ql_status add_file(ql_sha256 *s, const char *path, const char *name, uint8_t *buf) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        ql_status st = ql_error(QL_EIO, "%s: cannot read: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    uint64_t size = (uint64_t)sb.st_size;
    ql_sha256_update(s, name, strlen(name) + 1);
    put_u64(s, size);
    uint64_t head = size < SAMPLE ? size : SAMPLE;
    uint64_t tail = size - head < SAMPLE ? size - head : SAMPLE;
    uint64_t offs[2] = {0, size - tail}, lens[2] = {head, tail};
    for (int k = 0; k < 2; k++) {
        ssize_t got = lens[k] ? pread(fd, buf, lens[k], (off_t)offs[k]) : 0;
        if (got < 0 || (uint64_t)got != lens[k]) {
            close(fd);
            return ql_error(QL_EIO, "%s: short read while fingerprinting", path);
        }
        ql_sha256_update(s, buf, lens[k]);
    }
    close(fd);
    return QL_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

ql_status ql_model_fingerprint(const char *path, char hex[QL_SHA256_HEX]) {
    uint8_t *buf = ql_malloc(SAMPLE, "a fingerprint buffer");
    if (!buf) return QL_ENOMEM;
    ql_sha256 s;
    ql_sha256_init(&s);
    ql_status st = QL_OK;
    if (!ql_fs_is_dir(path)) {
        const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        st = add_file(&s, path, name, buf);
    } else {
        DIR *d = opendir(path);
        if (!d) {
            free(buf);
            return ql_error(QL_EIO, "%s: cannot list: %s", path, strerror(errno));
        }
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while (st == QL_OK && (e = readdir(d))) {
            if (!is_model_file(e->d_name)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **g = realloc(names, cap * sizeof *g);
                if (!g) {
                    st = ql_error(QL_ENOMEM, "out of memory");
                    break;
                }
                names = g;
            }
            names[n] = strdup(e->d_name);
            if (!names[n])
                st = ql_error(QL_ENOMEM, "out of memory");
            else
                n++;
        }
        closedir(d);
        if (n) qsort(names, n, sizeof *names, by_name);
        for (size_t i = 0; st == QL_OK && i < n; i++) {
            char *p = ql_fs_join(path, names[i]);
            st = p ? add_file(&s, p, names[i], buf) : QL_ENOMEM;
            free(p);
        }
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
    }
    free(buf);
    if (st != QL_OK) return st;
    uint8_t dg[QL_SHA256_LEN];
    ql_sha256_final(&s, dg);
    ql_sha256_hex(dg, hex);
    return QL_OK;
}

void ql_data_fingerprint(const ql_token_data *d, const ql_packing *p, char hex[QL_SHA256_HEX]) {
    ql_sha256 s;
    ql_sha256_init(&s);
    put_u64(&s, (uint64_t)p->n_rows);
    for (int64_t r = 0; r < p->n_rows; r++) {
        int64_t n_rec = p->row_off[r + 1] - p->row_off[r];
        put_u64(&s, (uint64_t)n_rec);
        for (int64_t k = p->row_off[r]; k < p->row_off[r + 1]; k++) {
            int64_t rec = p->rec[k], a = d->off[rec], b = d->off[rec + 1];
            put_u64(&s, (uint64_t)(b - a));
            ql_sha256_update(&s, d->ids + a, (size_t)(b - a) * sizeof *d->ids);
            ql_sha256_update(&s, d->targets + a, (size_t)(b - a) * sizeof *d->targets);
        }
    }
    uint8_t dg[QL_SHA256_LEN];
    ql_sha256_final(&s, dg);
    ql_sha256_hex(dg, hex);
}

ql_status ql_new_run_id(char id[QL_RUN_ID_LEN + 1]) {
    uint8_t b[QL_RUN_ID_LEN / 2];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return ql_error(QL_EIO, "cannot draw a run id: getrandom: %s", strerror(errno));
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof b; i++) {
        id[2 * i] = digits[b[i] >> 4];
        id[2 * i + 1] = digits[b[i] & 15];
    }
    id[QL_RUN_ID_LEN] = 0;
    return QL_OK;
}
