#include "ckpt/checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { READ_BLOCK = 4 << 20 };

/* Bytes [lo, hi) of the file into the piece's hash: from memory where a
 * segment has them, else read. 0, or the errno of a failed read. */
static int hash_range(ql_sha256 *s, int fd, uint64_t lo, uint64_t hi, const ql_cksum_seg *segs,
                      int n_segs, uint8_t **buf) {
    uint64_t pos = lo;
    int k = 0;
    while (pos < hi) {
        while (k < n_segs && segs[k].off + segs[k].len <= pos) k++;
        uint64_t end = hi;
        const uint8_t *mem = NULL;
        if (k < n_segs && segs[k].off <= pos) {
            end = segs[k].off + segs[k].len < hi ? segs[k].off + segs[k].len : hi;
            if (segs[k].mem) mem = (const uint8_t *)segs[k].mem + (pos - segs[k].off);
            if (segs[k].mem && segs[k].store) {
                for (uint64_t done = 0; done < end - pos;) {
                    ssize_t put =
                        pwrite(fd, mem + done, (size_t)(end - pos - done), (off_t)(pos + done));
                    if (put < 0 && errno == EINTR) continue;
                    if (put <= 0) return put < 0 ? errno : EIO;
                    done += (uint64_t)put;
                }
            }
            if (segs[k].fill) {
                uint8_t *dst = (uint8_t *)segs[k].fill + (pos - segs[k].off);
                for (uint64_t done = 0; done < end - pos;) {
                    ssize_t got =
                        pread(fd, dst + done, (size_t)(end - pos - done), (off_t)(pos + done));
                    if (got < 0 && errno == EINTR) continue;
                    if (got <= 0) return got < 0 ? errno : EIO;
                    done += (uint64_t)got;
                }
                mem = dst;
            }
        } else if (k < n_segs && segs[k].off < hi) {
            end = segs[k].off; /* a gap before the next segment: in the file */
        }
        if (mem) {
            ql_sha256_update(s, mem, (size_t)(end - pos));
            pos = end;
            continue;
        }
        if (!*buf && !(*buf = malloc(READ_BLOCK))) return ENOMEM;
        while (pos < end) {
            size_t want = end - pos < READ_BLOCK ? (size_t)(end - pos) : READ_BLOCK;
            ssize_t got = pread(fd, *buf, want, (off_t)pos);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return got < 0 ? errno : EIO; /* EIO: the file got shorter */
            ql_sha256_update(s, *buf, (size_t)got);
            pos += (uint64_t)got;
        }
    }
    return 0;
}

ql_status ql_cksum_segments(int fd, const char *path, uint64_t size, const ql_cksum_seg *segs,
                            int n_segs, uint8_t out[QL_SHA256_LEN]) {
    int64_t pieces = (int64_t)((size + QL_CKSUM_PIECE - 1) / QL_CKSUM_PIECE);
    uint8_t *digests = malloc((size_t)(pieces ? pieces : 1) * QL_SHA256_LEN);
    if (!digests) return ql_error(QL_ENOMEM, "out of memory hashing %s", path);
    int err = 0, storing = 0;
    for (int i = 0; i < n_segs; i++) storing |= segs[i].store;
#pragma omp parallel
    {
        uint8_t *buf = NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < pieces; p++) {
            ql_sha256 s;
            ql_sha256_init(&s);
            uint64_t lo = (uint64_t)p * QL_CKSUM_PIECE;
            uint64_t hi = lo + QL_CKSUM_PIECE < size ? lo + QL_CKSUM_PIECE : size;
            int e = hash_range(&s, fd, lo, hi, segs, n_segs, &buf);
#ifdef SYNC_FILE_RANGE_WRITE
            /* Start the disk on this piece now, so that the fsync after
             * the pass finds little left to do: the writes go to disk while
             * the other pieces are still being hashed. */
            if (storing && !e)
                sync_file_range(fd, (off_t)lo, (off_t)(hi - lo), SYNC_FILE_RANGE_WRITE);
#endif
            if (e) {
#pragma omp critical(ql_cksum_err)
                if (!err) err = e;
            }
            ql_sha256_final(&s, digests + p * QL_SHA256_LEN);
        }
        free(buf);
    }
    if (err) {
        free(digests);
        return ql_error(err == ENOMEM ? QL_ENOMEM : QL_EIO, "%s: I/O failed: %s", path,
                        strerror(err));
    }
    ql_sha256_buf(digests, (size_t)pieces * QL_SHA256_LEN, out);
    free(digests);
    return QL_OK;
}

ql_status ql_cksum_file(const char *path, uint8_t out[QL_SHA256_LEN], int64_t *bytes) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ql_error(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ql_error(QL_EIO, "%s: stat: %s", path, strerror(e));
    }
    ql_status st = ql_cksum_segments(fd, path, (uint64_t)sb.st_size, NULL, 0, out);
    close(fd);
    if (st == QL_OK) *bytes = (int64_t)sb.st_size;
    return st;
}
