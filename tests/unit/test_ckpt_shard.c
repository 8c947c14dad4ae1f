/* ckpt/shard.h: an HDF5 shard written and read back bit for bit (whole and
 * in ranges), its checksum (ckpt/checksum.h) as defined, also for files of
 * several pieces and segments in memory, attributes as written; damaged files
 * (truncated, not HDF5, missing attributes) are errors that name the file,
 * and HDF5 prints nothing of its own to stderr. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ckpt/checksum.h"
#include "ckpt/shard.h"
#include "core/fsutil.h"
#include "core/rng.h"

static char dir[] = "/tmp/ql_test_ckpt_shard_XXXXXX";

static void fill(float *x, int64_t n, uint64_t seed) {
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = ql_rng_normal(&r);
}

/* stderr into a file while `fn` runs; returns how many bytes were written. */
static long quiet_stderr_bytes(void (*fn)(void)) {
    char path[256];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static ql_status last_status;
static char last_msg[QL_ERROR_MAX];
static char bad_path[512];
static void open_bad(void) {
    ql_shard *s = NULL;
    ql_shard_desc d;
    last_status = ql_shard_open(bad_path, QL_LOCK_BEST_EFFORT, &s, &d);
    snprintf(last_msg, sizeof last_msg, "%s", ql_error_message());
    ql_shard_close(s);
}

static void test_round_trip(void) {
    enum { N = 10007 };
    float *p = malloc(N * sizeof *p), *m = malloc(N * sizeof *m), *v = malloc(N * sizeof *v);
    float *got = malloc(N * sizeof *got);
    fill(p, N, 1);
    fill(m, N, 2);
    fill(v, N, 3);
    ql_shard_desc d = {.rank = 2,
                       .world = 4,
                       .n_total = 40000,
                       .offset = 20001,
                       .length = N,
                       .step = 1234,
                       .rng = {1, 2, 3, 0xfedcba9876543210ull}};
    strcpy(d.run_id, "0123456789abcdef0123456789abcdef");
    char path[512];
    snprintf(path, sizeof path, "%s/shard-00002-of-00004.h5", dir);
    int64_t bytes = 0;
    uint8_t sha[QL_SHA256_LEN];
    CHECK(ql_shard_write(path, &d, p, m, v, QL_LOCK_BEST_EFFORT, &bytes, sha) == QL_OK);
    CHECK(bytes > 3 * N * 4 && bytes < 3 * N * 4 + 8192);
    /* A second write to the same name is refused: shards are never reopened. */
    int64_t b2;
    uint8_t s2[QL_SHA256_LEN];
    CHECK(ql_shard_write(path, &d, p, m, v, QL_LOCK_BEST_EFFORT, &b2, s2) == QL_EIO);
    CHECK(strstr(ql_error_message(), path) != NULL);

    /* One piece (< 16 MiB): the checksum is SHA-256(SHA-256(file)). */
    uint8_t whole[QL_SHA256_LEN], want_sha[QL_SHA256_LEN];
    ql_sha256 hs;
    ql_sha256_init(&hs);
    CHECK(ql_sha256_add_file(&hs, path) == QL_OK);
    ql_sha256_final(&hs, whole);
    ql_sha256_buf(whole, sizeof whole, want_sha);
    CHECK(!memcmp(sha, want_sha, sizeof sha));

    ql_shard *s = NULL;
    ql_shard_desc r;
    CHECK(ql_shard_open(path, QL_LOCK_BEST_EFFORT, &s, &r) == QL_OK);
    CHECK(r.rank == 2 && r.world == 4 && r.n_total == 40000 && r.offset == 20001 && r.length == N &&
          r.step == 1234);
    CHECK(!strcmp(r.run_id, d.run_id));
    CHECK(!memcmp(r.rng, d.rng, sizeof r.rng));
    const float *want[3] = {p, m, v};
    const char *names[3] = {"params", "adam_m", "adam_v"};
    for (int k = 0; k < 3; k++) {
        memset(got, 0, N * sizeof *got);
        CHECK(ql_shard_read(s, names[k], 0, N, got) == QL_OK);
        CHECKF(!memcmp(got, want[k], N * sizeof *got), "%s differs", names[k]);
        CHECK(ql_shard_read(s, names[k], 777, 1000, got) == QL_OK);
        CHECK(!memcmp(got, want[k] + 777, 1000 * sizeof *got));
    }
    CHECK(ql_shard_read(s, "params", N - 5, 10, got) == QL_EINTERNAL);
    /* One pass: a range of two of the datasets, and the file's checksum. */
    float *two = calloc(2 * 1000, sizeof *two);
    float *const dst[3] = {two, NULL, two + 1000};
    uint8_t sha2[QL_SHA256_LEN];
    int64_t bytes2 = 0;
    CHECK(ql_shard_read_verify(s, 4321, 1000, dst, sha2, &bytes2) == QL_OK);
    CHECK(!memcmp(two, p + 4321, 1000 * sizeof *two) && !memcmp(two + 1000, v + 4321, 1000 * 4));
    CHECK(!memcmp(sha2, sha, sizeof sha) && bytes2 == bytes);
    CHECK(ql_shard_read_verify(s, 0, 0, dst, sha2, &bytes2) == QL_OK && !memcmp(sha2, sha, 32));
    free(two);
    ql_shard_close(s);

    /* Truncated: an error naming the file, and HDF5's stack not on stderr. */
    char tpath[512];
    snprintf(tpath, sizeof tpath, "%s/truncated.h5", dir);
    char *data;
    size_t len;
    CHECK(ql_fs_read_file(path, &data, &len) == QL_OK);
    FILE *f = fopen(tpath, "wb");
    fwrite(data, 1, len / 2, f);
    fclose(f);
    snprintf(bad_path, sizeof bad_path, "%s", tpath);
    long err_bytes = quiet_stderr_bytes(open_bad);
    CHECK(last_status == QL_EFORMAT);
    CHECKF(strstr(last_msg, tpath) != NULL, "message: %s", last_msg);
    CHECKF(err_bytes == 0, "HDF5 wrote %ld bytes to stderr", err_bytes);
    printf("truncated: %s\n", last_msg);

    /* Not HDF5 at all. */
    snprintf(bad_path, sizeof bad_path, "%s/text.h5", dir);
    f = fopen(bad_path, "w");
    fputs("not an hdf5 file\n", f);
    fclose(f);
    err_bytes = quiet_stderr_bytes(open_bad);
    CHECK(last_status == QL_EFORMAT && strstr(last_msg, bad_path) != NULL);
    CHECK(err_bytes == 0);
    /* Missing. */
    snprintf(bad_path, sizeof bad_path, "%s/none.h5", dir);
    err_bytes = quiet_stderr_bytes(open_bad);
    CHECK(last_status == QL_EFORMAT && strstr(last_msg, bad_path) != NULL);
    CHECK(err_bytes == 0);
    free(data);
    free(p);
    free(m);
    free(v);
    free(got);
}

/* A zero-length slice (more ranks than elements) is a valid shard. */
static void test_empty(void) {
    ql_shard_desc d = {.rank = 3, .world = 4, .n_total = 3, .offset = 3, .length = 0, .step = 1};
    strcpy(d.run_id, "0123456789abcdef0123456789abcdef");
    char path[512];
    snprintf(path, sizeof path, "%s/empty.h5", dir);
    int64_t bytes;
    uint8_t sha[QL_SHA256_LEN];
    float dummy = 0;
    CHECK(ql_shard_write(path, &d, &dummy, &dummy, &dummy, QL_LOCK_OFF, &bytes, sha) == QL_OK);
    ql_shard *s = NULL;
    ql_shard_desc r;
    CHECK(ql_shard_open(path, QL_LOCK_STRICT, &s, &r) == QL_OK);
    CHECK(r.length == 0 && r.offset == 3);
    CHECK(ql_shard_read(s, "adam_v", 0, 0, &dummy) == QL_OK);
    ql_shard_close(s);
}

/* The checksum of a file of several pieces (40 MiB + 5: three), from disk
 * and from segments half in memory, against the definition computed with
 * the plain sequential SHA-256 (tested against sha256sum in test_sha256). */
static void test_checksum(void) {
    size_t n = (40u << 20) + 5;
    uint8_t *data = malloc(n);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/pieces.bin", dir);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    uint8_t digests[3 * QL_SHA256_LEN], want[QL_SHA256_LEN], got[QL_SHA256_LEN];
    for (int p = 0; p < 3; p++) {
        size_t lo = (size_t)p * QL_CKSUM_PIECE,
               len = n - lo < QL_CKSUM_PIECE ? n - lo : QL_CKSUM_PIECE;
        ql_sha256_buf(data + lo, len, digests + p * QL_SHA256_LEN);
    }
    ql_sha256_buf(digests, sizeof digests, want);
    int64_t bytes = 0;
    CHECK(ql_cksum_file(path, got, &bytes) == QL_OK && bytes == (int64_t)n);
    CHECK(!memcmp(got, want, sizeof want));
    /* a run in memory across a piece boundary, a file-backed segment, gaps */
    int fd = open(path, O_RDONLY);
    ql_cksum_seg segs[2] = {{.off = 1000, .len = 20u << 20, .mem = data + 1000},
                            {.off = 30u << 20, .len = 4096}};
    memset(got, 0, sizeof got);
    CHECK(ql_cksum_segments(fd, path, n, segs, 2, got) == QL_OK);
    CHECK(!memcmp(got, want, sizeof want));
    /* bytes in memory that differ from the file's change the result */
    data[5000] ^= 1;
    CHECK(ql_cksum_segments(fd, path, n, segs, 2, got) == QL_OK);
    CHECK(memcmp(got, want, sizeof want) != 0);
    close(fd);
    /* an empty file: SHA-256 of nothing */
    f = fopen(path, "wb");
    fclose(f);
    CHECK(ql_cksum_file(path, got, &bytes) == QL_OK && bytes == 0);
    ql_sha256_buf("", 0, want);
    CHECK(!memcmp(got, want, sizeof want));
    free(data);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_round_trip();
    test_empty();
    test_checksum();
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
