/* The commit protocol of ckpt/ckpt.h (and RELIABILITY.md, "Commit recipe"). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/fault.h"
#include "ckpt/store.h"
#include "core/fsutil.h"

/* What each rank tells rank 0 about its shard (fixed size for allgather). */
typedef struct shard_rec {
    int64_t rank, offset, length, bytes;
    uint8_t sha[QL_SHA256_LEN];
    uint64_t rng[4];
} shard_rec;

#define PATH_N 4096

/* Rank 0, after every shard is written: manifest, directory, LATEST, prune.
 * Until the directory is renamed nothing is visible; after it, a failure
 * to replace LATEST leaves a complete directory that LATEST does not name
 * (resume ignores it), and never removes it: LATEST may already name it. */
static ql_status commit(const ql_ckpt_io *io, ql_ckpt_meta *meta, const char *tmp,
                        const char *final, ql_ckpt_saved *out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    ql_status st = ql_manifest_encode(meta, &buf, &len);
    char *mpath = st == QL_OK ? ql_fs_join(tmp, "manifest.pb") : NULL;
    if (st == QL_OK && !mpath) st = QL_ENOMEM;
    if (st == QL_OK) {
        if (ql_ckpt_fault("manifest-enospc", -1))
            st = ql_error(QL_EIO, "%s: write failed: No space left on device (injected fault)",
                          mpath);
        else
            st = ql_fs_write_atomic(mpath, buf, len);
    }
    free(mpath);
    free(buf);
    if (st == QL_OK && ql_ckpt_fault("rename-dir", -1))
        st = ql_error(QL_EIO, "%s: rename from %s failed: injected fault", final, tmp);
    if (st == QL_OK) st = ql_fs_commit_dir(tmp, final, 1);
    if (st != QL_OK) {
        ql_fs_remove_tree(tmp);
        return st;
    }
    out->bytes += (int64_t)len;
    QL_TRY(ql_ckpt_write_latest(io->root, meta->step));
    ql_ckpt_prune(io->root, meta->step, io->keep_last, out->warning, sizeof out->warning);
    return QL_OK;
}

ql_status ql_ckpt_save(ql_comm *c, const ql_ckpt_io *io, ql_ckpt_meta *meta, const ql_ckpt_slice *s,
                       ql_ckpt_saved *out) {
    int rank = ql_comm_rank(c), size = ql_comm_size(c);
    memset(out, 0, sizeof *out);
    char name[40], tmp[PATH_N] = "", final[PATH_N];
    ql_ckpt_step_name(meta->step, name, sizeof name);
    snprintf(final, sizeof final, "%s/%s", io->root, name);

    /* 1. rank 0 makes the temporary directory and tells the others. */
    ql_status st = QL_OK;
    if (rank == 0) {
        st = ql_fs_mkdirs(io->root);
        if (st == QL_OK) {
            ql_ckpt_remove_stale(io->root);
            char *t = NULL;
            st = ql_fs_mkdtemp_beside(final, &t);
            if (st == QL_OK && strlen(t) >= sizeof tmp)
                st = ql_error(QL_EINVAL, "%s: path too long", t);
            if (st == QL_OK) snprintf(tmp, sizeof tmp, "%s", t);
            free(t);
        }
    }
    QL_TRY(ql_comm_agree(c, st));
    QL_TRY(ql_comm_bcast(c, tmp, sizeof tmp, 0));

    /* 2. every rank writes and fsyncs its shard. */
    char file[48], path[PATH_N + 64];
    ql_shard_name(rank, size, file, sizeof file);
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    ql_shard_desc d = {.rank = rank,
                       .world = size,
                       .n_total = meta->n_params,
                       .offset = s->offset,
                       .length = s->length,
                       .step = meta->step};
    snprintf(d.run_id, sizeof d.run_id, "%s", meta->run_id);
    memcpy(d.rng, s->rng, sizeof d.rng);
    shard_rec rec = {.rank = rank, .offset = s->offset, .length = s->length};
    memcpy(rec.rng, s->rng, sizeof rec.rng);
    st = ql_shard_write(path, &d, s->params, s->m, s->v, io->locking, &rec.bytes, rec.sha);

    /* 3. the ranks agree; a failure anywhere ends the save everywhere. */
    st = ql_comm_agree(c, st);
    if (st != QL_OK) {
        if (rank == 0) ql_fs_remove_tree(tmp);
        return st;
    }
    shard_rec *all = ql_calloc((size_t)size, sizeof *all, "the shard table");
    st = all ? QL_OK : QL_ENOMEM;
    if (st == QL_OK) st = ql_comm_allgather_bytes(c, &rec, all, sizeof rec);
    for (int i = 0; st == QL_OK && i < size; i++) out->bytes += all[i].bytes;

    /* 4. rank 0 commits. */
    if (st == QL_OK && rank == 0) {
        meta->shards = ql_calloc((size_t)size, sizeof *meta->shards, "the shard table");
        if (!meta->shards) st = QL_ENOMEM;
        for (int i = 0; st == QL_OK && i < size; i++) {
            ql_ckpt_shard *sh = &meta->shards[i];
            ql_shard_name(i, size, sh->file, sizeof sh->file);
            sh->rank = i;
            sh->offset = all[i].offset;
            sh->length = all[i].length;
            sh->bytes = all[i].bytes;
            ql_sha256_hex(all[i].sha, sh->checksum);
            memcpy(sh->rng, all[i].rng, sizeof sh->rng);
        }
        meta->n_shards = size;
        meta->world.size = size;
        if (st == QL_OK) st = commit(io, meta, tmp, final, out);
        free(meta->shards);
        meta->shards = NULL;
        meta->n_shards = 0;
        if (st != QL_OK && ql_fs_exists(tmp)) ql_fs_remove_tree(tmp);
    }
    free(all);
    snprintf(out->dir, sizeof out->dir, "%s", final);
    return ql_comm_agree(c, st);
}
