/* Checkpoint write and read against plain files, side by side.
 *
 *   [mpirun -np R] bench_ckpt [--params N] [--reps K] [--dir DIR]
 *
 * Before each timed write every dirty page is written back (sync).
 * Each rank holds its slice (ql_dist_slice) of params, AdamW m and v, N
 * float32 each in all (default 42M: a Llama-3-8B-sized adapter, r = 16 on
 * every linear layer). Timed, alternating, K times (the median is kept):
 *
 *   write  ql_ckpt_save (HDF5 shards, SHA-256, fsync, manifest, renames,
 *          LATEST) against each rank fwrite-ing the same bytes to a plain
 *          file and fsync-ing it;
 *   read   ql_ckpt_read_meta + ql_ckpt_load_slice (sizes, attributes,
 *          SHA-256 of every file read, the datasets) against fread of the
 *          plain file. Both read cold: each file is dropped from the page
 *          cache (posix_fadvise DONTNEED, after its fsync) before reading.
 *
 * Prints a table on rank 0 and one JSON line (bench/bench_ckpt.sh collects
 * them into bench/results/). */
#include <fcntl.h>
#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/checksum.h"
#include "ckpt/ckpt.h"
#include "ckpt/store.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "dist/comm.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void drop_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* Every write starts with no dirty pages waiting (sync), so that neither
 * side pays for the other's writeback. */
static void settle(ql_comm *c) {
    sync();
    ql_comm_barrier(c);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_d);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static int die(ql_comm *c, const char *what) {
    fprintf(stderr, "bench_ckpt: rank %d: %s: %s\n", ql_comm_rank(c), what, ql_error_message());
    ql_comm_abort(c, 1);
}

typedef struct bench {
    ql_comm *c;
    int rank, size;
    int64_t off, len, ck_bytes;
    size_t bytes;
    float *v3, *r3;
    const char *root, *plain;
    ql_ckpt_meta *meta;
    const ql_ckpt_io *io;
} bench;

static int write_ours(bench *b, double *t) {
    ql_ckpt_slice s = {.offset = b->off,
                       .length = b->len,
                       .params = b->v3,
                       .m = b->v3 + b->len,
                       .v = b->v3 + 2 * b->len};
    ql_ckpt_saved saved;
    /* Like the plain file, which is removed first: the previous
     * checkpoint's pages are free before the new one is written (in a VM,
     * pages never touched before cost a host fault each). */
    if (b->rank == 0) ql_fs_remove_tree(b->root);
    settle(b->c);
    double t0 = now();
    if (ql_ckpt_save(b->c, b->io, b->meta, &s, &saved) != QL_OK) return die(b->c, "save");
    ql_comm_barrier(b->c);
    *t = now() - t0;
    b->ck_bytes = saved.bytes;
    return 0;
}

static int write_plain(bench *b, double *t) {
    remove(b->plain);
    settle(b->c);
    double t0 = now();
    FILE *f = fopen(b->plain, "wb");
    if (!f || fwrite(b->v3, 1, b->bytes, f) != b->bytes || fflush(f) != 0 || fsync(fileno(f)) != 0)
        return die(b->c, "plain write");
    fclose(f);
    ql_comm_barrier(b->c);
    *t = now() - t0;
    return 0;
}

/* Cold: the files are dropped from the page cache first. */
static int read_ours(bench *b, double *t) {
    char step_dir[1300], file[48], path[1400];
    ql_ckpt_step_name(b->meta->step, file, sizeof file);
    snprintf(step_dir, sizeof step_dir, "%s/%s", b->root, file);
    ql_shard_name(b->rank, b->size, file, sizeof file);
    snprintf(path, sizeof path, "%s/%s", step_dir, file);
    drop_cache(path);
    ql_comm_barrier(b->c);
    double t0 = now();
    ql_ckpt_meta m;
    int rng_ok;
    ql_ckpt_slice in = {.offset = b->off,
                        .length = b->len,
                        .params = b->r3,
                        .m = b->r3 + b->len,
                        .v = b->r3 + 2 * b->len};
    if (ql_ckpt_read_meta(b->c, step_dir, &m) != QL_OK) return die(b->c, "read manifest");
    if (ql_ckpt_load_slice(b->c, step_dir, &m, QL_LOCK_BEST_EFFORT, &in, &rng_ok) != QL_OK)
        return die(b->c, "load");
    ql_comm_barrier(b->c);
    *t = now() - t0;
    ql_ckpt_meta_free(&m);
    if (memcmp(b->r3, b->v3, b->bytes) != 0) {
        fprintf(stderr, "bench_ckpt: rank %d: read back differs\n", b->rank);
        ql_comm_abort(b->c, 1);
    }
    return 0;
}

static int read_plain(bench *b, double *t) {
    drop_cache(b->plain);
    ql_comm_barrier(b->c);
    double t0 = now();
    FILE *f = fopen(b->plain, "rb");
    if (!f || fread(b->r3, 1, b->bytes, f) != b->bytes) return die(b->c, "plain read");
    fclose(f);
    ql_comm_barrier(b->c);
    *t = now() - t0;
    return 0;
}

int main(int argc, char **argv) {
    int64_t n = 42 * 1000 * 1000;
    int reps = 3;
    const char *base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--params") && i + 1 < argc)
            n = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            base = argv[++i];
        else {
            fprintf(stderr,
                    "usage: [mpirun -np R] bench_ckpt [--params N] [--reps K] [--dir DIR]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 50) reps = 3;
    ql_world w;
    ql_comm *c;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK || ql_comm_open(&w, &c) != QL_OK) {
        fprintf(stderr, "bench_ckpt: %s\n", ql_error_message());
        return 1;
    }
    int rank = ql_comm_rank(c), size = ql_comm_size(c);
    /* As qlora train does (launcher/job.c): ranks sharing a node share its
     * cores, unless OMP_NUM_THREADS says otherwise. */
    if (!getenv("OMP_NUM_THREADS") && w.local_size > 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int per = (int)(cores / w.local_size);
        omp_set_num_threads(per > 0 ? per : 1);
    }
    int64_t off, len;
    ql_dist_slice(n, size, rank, &off, &len);
    float *v3 = malloc((size_t)(3 * len + 1) * sizeof *v3);
    float *r3 = malloc((size_t)(3 * len + 1) * sizeof *r3);
    if (!v3 || !r3) {
        fprintf(stderr, "bench_ckpt: out of memory\n");
        return 1;
    }
    ql_rng g;
    ql_rng_seed_stream(&g, 1, (uint64_t)rank);
    for (int64_t i = 0; i < 3 * len; i++) v3[i] = ql_rng_normal(&g);

    char dir[1024] = "";
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/ql_bench_ckpt_XXXXXX", base);
        if (!mkdtemp(dir)) {
            perror(dir);
            ql_comm_abort(c, 1);
        }
    }
    ql_comm_bcast(c, dir, sizeof dir, 0);
    char root[1100], plain[1200];
    snprintf(root, sizeof root, "%s/checkpoints", dir);
    snprintf(plain, sizeof plain, "%s/plain-%05d.bin", dir, rank);

    ql_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.format_version = QL_MANIFEST_FORMAT_VERSION;
    snprintf(meta.run_id, sizeof meta.run_id, "%032d", 0);
    snprintf(meta.schedule.kind, sizeof meta.schedule.kind, "cosine");
    meta.world.size = size;
    meta.world.dp = size;
    meta.world.pp = 1;
    meta.config_yaml = "model: m\noutput_dir: o\ndata:\n  train: t\n";
    meta.n_params = n;
    ql_ckpt_io io = {.root = root, .keep_last = 1, .locking = QL_LOCK_BEST_EFFORT};
    size_t bytes = (size_t)(3 * len) * sizeof(float);

    double *tw = calloc((size_t)reps, sizeof *tw), *tp = calloc((size_t)reps, sizeof *tp);
    double *rw = calloc((size_t)reps, sizeof *rw), *rp = calloc((size_t)reps, sizeof *rp);
    int64_t ck_bytes = 0;
    bench b = {.c = c,
               .rank = rank,
               .size = size,
               .off = off,
               .len = len,
               .bytes = bytes,
               .v3 = v3,
               .r3 = r3,
               .root = root,
               .plain = plain,
               .meta = &meta,
               .io = &io};
    for (int k = 0; k < reps; k++) {
        /* Alternate which side goes first, so that neither always inherits
         * the other's page cache and writeback. */
        meta.step = k + 1;
        int st = k % 2 ? write_plain(&b, &tp[k]) || write_ours(&b, &tw[k])
                       : write_ours(&b, &tw[k]) || write_plain(&b, &tp[k]);
        st = st || (k % 2 ? read_plain(&b, &rp[k]) || read_ours(&b, &rw[k])
                          : read_ours(&b, &rw[k]) || read_plain(&b, &rp[k]));
        if (st) return 1;
        ck_bytes = b.ck_bytes;
    }
    /* What the CPU gives here: the checksum over this rank's bytes from
     * memory (all its threads) and one memcpy of them. */
    double hash_s, copy_s;
    {
        ql_comm_barrier(c);
        double t0 = now();
        ql_cksum_seg seg = {.off = 0, .len = bytes, .mem = v3};
        uint8_t d[QL_SHA256_LEN];
        ql_cksum_segments(-1, "memory", bytes, &seg, 1, d);
        hash_s = now() - t0;
        t0 = now();
        memcpy(r3, v3, bytes);
        copy_s = now() - t0;
        double t2[2] = {hash_s, copy_s};
        ql_comm_allreduce_sum(c, t2, 2, QL_DT_F64);
        hash_s = t2[0] / size;
        copy_s = t2[1] / size;
    }
    if (rank == 0) {
        double w_ours = median(tw, reps), w_plain = median(tp, reps);
        double r_ours = median(rw, reps), r_plain = median(rp, reps);
        double mb = (double)n * 12 / 1e6;
        printf("checkpoint of %" PRId64 " parameters (params + m + v: %.0f MB) at %d rank(s), "
               "median of %d\n",
               n, mb, size, reps);
        printf("%-6s %12s %12s %10s %10s\n", "", "qlora s", "plain s", "ratio", "qlora MB/s");
        printf("%-6s %12.3f %12.3f %10.2f %10.0f\n", "write", w_ours, w_plain, w_ours / w_plain,
               mb / w_ours);
        printf("%-6s %12.3f %12.3f %10.2f %10.0f\n", "read", r_ours, r_plain, r_ours / r_plain,
               mb / r_ours);
        printf("bytes on disk: %" PRId64 " (plain %.0f, overhead %.4f%%)\n", ck_bytes, mb * 1e6,
               100.0 * ((double)ck_bytes - mb * 1e6) / (mb * 1e6));
        double per = (double)bytes / 1e6;
        printf("per rank, from memory: checksum %.0f MB/s (%d thread(s)), memcpy %.0f MB/s\n",
               per / hash_s, omp_get_max_threads(), per / copy_s);
        printf("{\"ranks\": %d, \"params\": %" PRId64 ", \"reps\": %d, \"bytes\": %" PRId64
               ", \"plain_bytes\": %" PRId64 ", \"write_s\": %.4f, \"plain_write_s\": %.4f, "
               "\"write_ratio\": %.3f, \"read_s\": %.4f, \"plain_read_s\": %.4f, "
               "\"read_ratio\": %.3f, \"checksum_MBps_per_rank\": %.0f, \"threads_per_rank\": %d, "
               "\"memcpy_MBps_per_rank\": %.0f}\n",
               size, n, reps, ck_bytes, n * 12, w_ours, w_plain, w_ours / w_plain, r_ours, r_plain,
               r_ours / r_plain, (double)bytes / 1e6 / hash_s, omp_get_max_threads(),
               (double)bytes / 1e6 / copy_s);
        fflush(stdout);
    }
    ql_comm_barrier(c);
    if (rank == 0) ql_fs_remove_tree(dir);
    free(v3);
    free(r3);
    free(tw);
    free(tp);
    free(rw);
    free(rp);
    ql_comm_close(c);
    return 0;
}
