/* One checkpoint shard: an HDF5 file holding one rank's slice of the flat
 * adapter vector and of AdamW's m and v, with what a reader needs to place
 * them (docs/checkpoint-format.md):
 *
 *   /params, /adam_m, /adam_v   float32 [length], contiguous, little-endian
 *   attributes of /             format_version, rank, world_size, n_total,
 *                               offset, length, step (int64), run_id
 *                               (string), rng_state (uint64 [4])
 *
 * A shard is made once, in a fresh file: HDF5 allocates the datasets and
 * writes the metadata; the data bytes are then written into that space and
 * hashed in one pass, and the file fsynced. It is never opened for writing
 * again. HDF5's own error printing is off: every
 * HDF5 failure becomes one ql_error message that names the file. */
#ifndef QL_CKPT_SHARD_H
#define QL_CKPT_SHARD_H

#include <stdint.h>

#include "ckpt/lock.h"
#include "core/sha256.h"
#include "core/status.h"

#define QL_SHARD_FORMAT_VERSION 1
#define QL_RUN_ID_LEN 32

typedef struct ql_shard_desc {
    int rank, world;
    int64_t n_total;        /* elements of the whole flat vector */
    int64_t offset, length; /* this shard's range of it */
    int64_t step;
    char run_id[QL_RUN_ID_LEN + 1];
    uint64_t rng[4];
} ql_shard_desc;

/* Creates `path` (which must not exist), writes the three vectors of
 * d->length floats and the attributes, closes the file, fsyncs it and
 * returns its size and checksum (ckpt/checksum.h). On failure the file may be left behind
 * (it lives in a temporary directory that the caller removes). */
ql_status ql_shard_write(const char *path, const ql_shard_desc *d, const float *params,
                         const float *m, const float *v, ql_file_locking locking, int64_t *bytes,
                         uint8_t sha[QL_SHA256_LEN]);

typedef struct ql_shard ql_shard;

/* Opens a shard read-only and reads its attributes into *d, checking that
 * they are consistent and that the datasets have d->length elements. */
ql_status ql_shard_open(const char *path, ql_file_locking locking, ql_shard **out,
                        ql_shard_desc *d);
/* Elements first .. first+count-1 of the shard's "params", "adam_m" or
 * "adam_v" (indices relative to the shard) into dst. */
ql_status ql_shard_read(ql_shard *s, const char *dataset, int64_t first, int64_t count, float *dst);
void ql_shard_close(ql_shard *s);

/* In one pass over the file: elements first .. first+count-1 of the three
 * datasets into dst[0..2] ("params", "adam_m", "adam_v"; NULL: not wanted)
 * and the checksum of the whole file (ckpt/checksum.h), with its size.
 * For contiguous little-endian float32 datasets, as qlora writes them;
 * otherwise QL_EUNSUPPORTED (read with ql_shard_read and ql_cksum_file). */
ql_status ql_shard_read_verify(ql_shard *s, int64_t first, int64_t count, float *const dst[3],
                               uint8_t sha[QL_SHA256_LEN], int64_t *bytes);

/* "shard-RRRRR-of-WWWWW.h5" into buf (at least 32 bytes). */
void ql_shard_name(int rank, int world, char *buf, size_t n);

#endif
