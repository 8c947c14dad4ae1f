/* Checkpoints: saving, loading and verifying OUT/checkpoints/step-NNNNNNNN/
 * (docs/checkpoint-format.md).
 *
 * Save (collective): rank 0 makes a temporary directory beside the final
 * one; every rank writes its shard into it (ckpt/shard.h) and fsyncs it; the
 * ranks agree; rank 0 writes manifest.pb (temporary file, fsync, rename),
 * renames the directory into place, fsyncs the parent, replaces LATEST the
 * same way, and only then prunes old checkpoints. A failure anywhere removes
 * the temporary directory and leaves the previous checkpoint as it was; every
 * rank returns the same status.
 *
 * Load (collective): every rank reads the ranges of the shards that overlap
 * its own slice, whatever the world size that wrote them, after checking
 * each file's size, attributes and SHA-256 against the manifest. */
#ifndef QL_CKPT_H
#define QL_CKPT_H

#include <stdint.h>
#include <stdio.h>

#include "ckpt/lock.h"
#include "ckpt/manifest.h"
#include "core/status.h"
#include "dist/comm.h"

/* This rank's part of the state. */
typedef struct ql_ckpt_slice {
    int64_t offset, length; /* the rank's range of the flat adapter vector */
    float *params, *m, *v;  /* host memory [length] */
    uint64_t rng[4];        /* the rank's dropout stream */
} ql_ckpt_slice;

typedef struct ql_ckpt_io {
    const char *root; /* OUT/checkpoints */
    int64_t keep_last;
    ql_file_locking locking;
} ql_ckpt_io;

typedef struct ql_ckpt_saved {
    char dir[4096];     /* the committed directory */
    int64_t bytes;      /* of all its files */
    char warning[1024]; /* from pruning ("" when none) */
} ql_ckpt_saved;

/* Writes `meta` (every field but the shard table, which is filled in here;
 * rank 0's copy is the one written) with this rank's slice `s`. */
ql_status ql_ckpt_save(ql_comm *c, const ql_ckpt_io *io, ql_ckpt_meta *meta, const ql_ckpt_slice *s,
                       ql_ckpt_saved *out);

/* Rank 0 reads DIR/manifest.pb and sends its bytes to every rank; each
 * decodes and checks it (ckpt/manifest.h) and that its step matches the
 * directory's name. */
ql_status ql_ckpt_read_meta(ql_comm *c, const char *dir, ql_ckpt_meta *m);

/* Fills s->params, s->m, s->v over [s->offset, s->offset + s->length) from
 * the shards of `m` (any world size). Every shard file it reads is checked
 * first: present, the recorded size, attributes that match the manifest (run
 * id, step, rank, range), then the SHA-256. *rng_restored = 1 when the
 * checkpoint has this world size, and s->rng is then this rank's stored
 * stream. */
ql_status ql_ckpt_load_slice(ql_comm *c, const char *dir, const ql_ckpt_meta *m,
                             ql_file_locking locking, ql_ckpt_slice *s, int *rng_restored);

/* One process, no communicator: checks the manifest and every shard (present,
 * size, attributes, datasets, SHA-256). Each fault is printed to `report`
 * (when not NULL) as "FAULT <file>: <what>"; the first one's status and
 * message are returned. *m is filled when the manifest could be read (the
 * caller frees it with ql_ckpt_meta_free); n_faults may be NULL. */
ql_status ql_ckpt_verify(const char *dir, ql_file_locking locking, FILE *report, ql_ckpt_meta *m,
                         int *n_faults);

/* Checks one shard file against its manifest entry: size, attributes, then
 * (with hash != 0) the SHA-256. */
ql_status ql_ckpt_check_shard(const char *dir, const ql_ckpt_meta *m, int i,
                              ql_file_locking locking, int hash);

#endif
