/* The checksum of a checkpoint file: SHA-256 over the SHA-256 digests of the
 * file's consecutive 16 MiB pieces (the last one shorter; an empty file has
 * no piece), written as 64 lowercase hex digits. In Python:
 *
 *     h = hashlib.sha256()
 *     for i in range(0, len(data), 16 << 20):
 *         h.update(hashlib.sha256(data[i:i + (16 << 20)]).digest())
 *     h.hexdigest()
 *
 * Pieces are hashed in parallel (OpenMP threads), which keeps the checksum
 * off the critical path of a save or a load where one SHA-256 stream, at
 * one core's speed, would not be. */
#ifndef QL_CKPT_CHECKSUM_H
#define QL_CKPT_CHECKSUM_H

#include <stdint.h>

#include "core/sha256.h"
#include "core/status.h"

#define QL_CKSUM_PIECE (16u << 20)

/* A byte range of the file and where its bytes are: in memory (`mem`), or
 * to be read from the file (mem == NULL); with `fill`, read from the file
 * into `fill` (a load: one pass both reads and hashes); with `store`, the
 * bytes of `mem` are first written to the file there (a save: one pass
 * both writes and hashes; fd must be open for writing). */
typedef struct ql_cksum_seg {
    uint64_t off, len;
    const void *mem;
    void *fill;
    int store;
} ql_cksum_seg;

/* The checksum of a file of `size` bytes whose ranges `segs` (sorted, not
 * overlapping; gaps are read from fd) cover it. `path` names it in
 * messages. */
ql_status ql_cksum_segments(int fd, const char *path, uint64_t size, const ql_cksum_seg *segs,
                            int n_segs, uint8_t out[QL_SHA256_LEN]);

/* The checksum of a whole file read from disk, and its size. */
ql_status ql_cksum_file(const char *path, uint8_t out[QL_SHA256_LEN], int64_t *bytes);

#endif
