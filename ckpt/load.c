/* Reading checkpoints back: the manifest through rank 0, each rank's slice
 * from the shards that overlap it (elastic re-partitioning), and the checks
 * that make a damaged checkpoint an error naming the file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/checksum.h"
#include "ckpt/ckpt.h"
#include "ckpt/store.h"
#include "core/fsutil.h"

/* The last component of a directory path, without trailing slashes. */
static void base_name(const char *p, char *buf, size_t n) {
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && p[start - 1] != '/') start--;
    snprintf(buf, n, "%.*s", (int)(len - start), p + start);
}

/* The step in the directory's name must be the manifest's. */
static ql_status check_step_name(const char *dir, const char *path, int64_t step) {
    char name[256];
    base_name(dir, name, sizeof name);
    int64_t named = ql_ckpt_parse_step(name);
    if (named >= 0 && named != step)
        return ql_error(QL_EFORMAT, "%s: records step %" PRId64 ", but its directory is %s", path,
                        step, name);
    return QL_OK;
}

ql_status ql_ckpt_read_meta(ql_comm *c, const char *dir, ql_ckpt_meta *m) {
    memset(m, 0, sizeof *m);
    char *path = ql_fs_join(dir, "manifest.pb");
    if (!path) return QL_ENOMEM;
    char *data = NULL;
    size_t len = 0;
    ql_status st = QL_OK;
    if (ql_comm_rank(c) == 0) {
        if (!ql_fs_exists(path))
            st = ql_error(QL_ENOTFOUND, "%s: missing (the checkpoint is incomplete)", path);
        else
            st = ql_fs_read_file(path, &data, &len);
    }
    st = ql_comm_agree(c, st);
    int64_t n = (int64_t)len;
    if (st == QL_OK) st = ql_comm_bcast(c, &n, sizeof n, 0);
    if (st == QL_OK && ql_comm_rank(c) != 0) {
        data = malloc((size_t)n + 1);
        if (!data) st = ql_error(QL_ENOMEM, "out of memory for %s", path);
    }
    st = ql_comm_agree(c, st);
    if (st == QL_OK) st = ql_comm_bcast(c, data, n, 0);
    if (st == QL_OK) st = ql_manifest_decode((const uint8_t *)data, (size_t)n, path, m);
    free(data);
    if (st == QL_OK) {
        st = check_step_name(dir, path, m->step);
        if (st != QL_OK) ql_ckpt_meta_free(m);
    }
    free(path);
    return st;
}

/* The file's checksum against the manifest's (no HDF5 call: safe on a
 * second thread). */
static ql_status check_hash(const char *path, const ql_ckpt_shard *sh) {
    uint8_t sha[QL_SHA256_LEN];
    char hex[QL_SHA256_HEX];
    int64_t bytes;
    QL_TRY(ql_cksum_file(path, sha, &bytes));
    ql_sha256_hex(sha, hex);
    if (strcmp(hex, sh->checksum) != 0)
        return ql_error(QL_EFORMAT,
                        "%s: checksum mismatch: %.16s..., the manifest records %.16s... "
                        "(the file is damaged)",
                        path, hex, sh->checksum);
    return QL_OK;
}

ql_status ql_ckpt_check_shard(const char *dir, const ql_ckpt_meta *m, int i,
                              ql_file_locking locking, int hash) {
    const ql_ckpt_shard *sh = &m->shards[i];
    char *path = ql_fs_join(dir, sh->file);
    if (!path) return QL_ENOMEM;
    ql_status st = QL_OK;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = ql_error(errno == ENOENT ? QL_ENOTFOUND : QL_EIO, "%s: %s (the manifest lists it)",
                      path, errno == ENOENT ? "missing" : strerror(errno));
        goto out;
    }
    /* The run and step first (a manifest that belongs elsewhere names the
     * manifest), then the size (a truncated shard names the shard). */
    int size_ok = (int64_t)sb.st_size == sh->bytes;
    char size_msg[QL_ERROR_MAX];
    snprintf(size_msg, sizeof size_msg, "%s: %lld bytes, the manifest records %" PRId64 "%s", path,
             (long long)sb.st_size, sh->bytes,
             (int64_t)sb.st_size < sh->bytes ? " (truncated)" : "");
    ql_shard *s = NULL;
    ql_shard_desc d;
    st = ql_shard_open(path, locking, &s, &d);
    if (st != QL_OK && !size_ok) st = ql_error(QL_EFORMAT, "%s", size_msg);
    if (st != QL_OK) goto out;
    ql_shard_close(s);
    if (strcmp(d.run_id, m->run_id) != 0 || d.step != m->step) {
        st = ql_error(QL_EFORMAT,
                      "%s/manifest.pb: records run %s at step %" PRId64 ", but %s was written by "
                      "run %s at step %" PRId64 " (a manifest from another run or another step)",
                      dir, m->run_id, m->step, path, d.run_id, d.step);
        goto out;
    }
    if (!size_ok) {
        st = ql_error(QL_EFORMAT, "%s", size_msg);
        goto out;
    }
    if (d.rank != sh->rank || d.world != m->world.size || d.offset != sh->offset ||
        d.length != sh->length || d.n_total != m->n_params) {
        st =
            ql_error(QL_EFORMAT,
                     "%s: holds rank %d of %d, [%" PRId64 ", %" PRId64 ") of %" PRId64
                     "; the manifest expects rank %d of %d, [%" PRId64 ", %" PRId64 ") of %" PRId64,
                     path, d.rank, d.world, d.offset, d.offset + d.length, d.n_total, sh->rank,
                     m->world.size, sh->offset, sh->offset + sh->length, m->n_params);
        goto out;
    }
    if (hash) st = check_hash(path, sh);
out:
    free(path);
    return st;
}

/* Reads the part of shard i that overlaps [s->offset, s->offset + length). */
static ql_status read_overlap(const char *dir, const ql_ckpt_meta *m, int i,
                              ql_file_locking locking, ql_ckpt_slice *s) {
    const ql_ckpt_shard *sh = &m->shards[i];
    int64_t lo = s->offset > sh->offset ? s->offset : sh->offset;
    int64_t hi_s = s->offset + s->length, hi_h = sh->offset + sh->length;
    int64_t hi = hi_s < hi_h ? hi_s : hi_h;
    /* The cheap checks first, so that a missing or foreign file is named as
     * such rather than as a checksum mismatch. */
    QL_TRY(ql_ckpt_check_shard(dir, m, i, locking, 0));
    char *path = ql_fs_join(dir, sh->file);
    if (!path) return QL_ENOMEM;
    /* One pass: the wanted ranges straight into the slice, the checksum
     * over the whole file as it is read. */
    ql_shard *f = NULL;
    ql_status st = ql_shard_open(path, locking, &f, NULL);
    int64_t n = hi > lo ? hi - lo : 0, at = hi > lo ? lo - s->offset : 0;
    float *const dst[3] = {s->params ? s->params + at : NULL, s->m ? s->m + at : NULL,
                           s->v ? s->v + at : NULL};
    uint8_t sha[QL_SHA256_LEN];
    int64_t bytes;
    if (st == QL_OK) st = ql_shard_read_verify(f, n ? lo - sh->offset : 0, n, dst, sha, &bytes);
    if (st == QL_EUNSUPPORTED) {
        /* Not laid out as qlora writes shards: HDF5 reads, a second pass
         * hashes. */
        static const char *const names[3] = {"params", "adam_m", "adam_v"};
        st = QL_OK;
        for (int k = 0; st == QL_OK && k < 3; k++)
            if (dst[k]) st = ql_shard_read(f, names[k], lo - sh->offset, n, dst[k]);
        if (st == QL_OK) st = ql_cksum_file(path, sha, &bytes);
    }
    ql_shard_close(f);
    if (st == QL_OK) {
        char hex[QL_SHA256_HEX];
        ql_sha256_hex(sha, hex);
        if (strcmp(hex, sh->checksum) != 0)
            st = ql_error(QL_EFORMAT,
                          "%s: checksum mismatch: %.16s..., the manifest records %.16s... (the "
                          "file is damaged)",
                          path, hex, sh->checksum);
    }
    free(path);
    return st;
}

ql_status ql_ckpt_load_slice(ql_comm *c, const char *dir, const ql_ckpt_meta *m,
                             ql_file_locking locking, ql_ckpt_slice *s, int *rng_restored) {
    int rank = ql_comm_rank(c), size = ql_comm_size(c);
    *rng_restored = 0;
    ql_status st = QL_OK;
    if (s->offset < 0 || s->length < 0 || s->offset + s->length > m->n_params)
        st = ql_error(QL_EINVAL,
                      "%s: the checkpoint holds %" PRId64 " adapter elements; this rank's slice is "
                      "[%" PRId64 ", %" PRId64 ")",
                      dir, m->n_params, s->offset, s->offset + s->length);
    for (int i = 0; st == QL_OK && i < m->n_shards; i++) {
        const ql_ckpt_shard *sh = &m->shards[i];
        int overlaps = sh->offset < s->offset + s->length && s->offset < sh->offset + sh->length;
        /* Empty shards overlap nobody: they are checked round-robin, so that
         * every file of the checkpoint is verified by some rank. */
        int mine = overlaps || (sh->length == 0 && i % size == rank) ||
                   (s->length == 0 && sh->length == 0 && i == rank);
        if (mine) st = read_overlap(dir, m, i, locking, s);
    }
    st = ql_comm_agree(c, st);
    if (st == QL_OK && m->world.size == size) {
        memcpy(s->rng, m->shards[rank].rng, sizeof s->rng);
        *rng_restored = 1;
    }
    return st;
}

ql_status ql_ckpt_verify(const char *dir, ql_file_locking locking, FILE *report, ql_ckpt_meta *out,
                         int *n_faults) {
    ql_ckpt_meta m;
    int faults = 0;
    ql_status first = QL_OK;
    char first_msg[QL_ERROR_MAX] = "";
    char *mpath = ql_fs_join(dir, "manifest.pb");
    if (!mpath) return QL_ENOMEM;
    ql_status st =
        ql_fs_exists(mpath)
            ? ql_manifest_read(mpath, &m)
            : ql_error(QL_ENOTFOUND, "%s: missing (the checkpoint is incomplete)", mpath);
    if (st == QL_OK) {
        st = check_step_name(dir, mpath, m.step);
        if (st != QL_OK) ql_ckpt_meta_free(&m);
    }
    free(mpath);
    if (st != QL_OK) {
        if (report) fprintf(report, "FAULT %s\n", ql_error_message());
        if (n_faults) *n_faults = 1;
        if (out) memset(out, 0, sizeof *out);
        return st;
    }
    for (int i = 0; i < m.n_shards; i++) {
        ql_status s = ql_ckpt_check_shard(dir, &m, i, locking, 1);
        if (s == QL_OK) continue;
        faults++;
        if (report) fprintf(report, "FAULT %s\n", ql_error_message());
        if (first == QL_OK) {
            first = s;
            snprintf(first_msg, sizeof first_msg, "%s", ql_error_message());
        }
    }
    if (n_faults) *n_faults = faults;
    if (out)
        *out = m;
    else
        ql_ckpt_meta_free(&m);
    if (first != QL_OK) return ql_error(first, "%s", first_msg);
    return QL_OK;
}
