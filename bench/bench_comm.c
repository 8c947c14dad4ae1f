/* The collectives of one data-parallel step alone, on a flat vector of n
 * float32 (the adapter): reduce-scatter (rank-ordered sum), the norm's
 * all-gather of one double per rank, all-gather of the slices, and the
 * step's agreement; under mpirun, any number of ranks. bench/bench_dist.sh
 * runs it next to `qlora train` to separate the transfer from the waiting.
 *
 *   mpirun -np R bench_comm [--n N] [--iters K] [--bucket-mb B]
 *
 * Rank 0 prints one JSON line: the median seconds per step's collectives
 * over K iterations (after one warm-up) and the algorithm bandwidth of the
 * reduce-scatter + all-gather pair (2 n 4 bytes (R-1)/R per rank per step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/comm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    fprintf(stderr, "bench_comm: %s: %s\n", what, ql_error_message());
    exit(1);
}

int main(int argc, char **argv) {
    long long n = 4884480; /* SmolLM2-135M, LoRA r 16 on all seven projections */
    int iters = 10;
    long bucket_mb = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bucket-mb") && i + 1 < argc)
            bucket_mb = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_comm [--n N] [--iters K] [--bucket-mb B]\n");
            return 2;
        }
    }
    if (n < 1 || iters < 1 || bucket_mb < 1) return 2;
    ql_world w;
    ql_comm *c;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK) die("world");
    if (ql_comm_open(&w, &c) != QL_OK) die("communicator");
    ql_comm_set_bucket(c, bucket_mb * (1 << 20) / (long)sizeof(float));
    int R = ql_comm_size(c), me = ql_comm_rank(c);
    float *g = malloc((size_t)n * sizeof *g), *p = malloc((size_t)n * sizeof *p);
    double *norms = malloc((size_t)R * sizeof *norms), *t = malloc((size_t)iters * sizeof *t);
    if (!g || !p || !norms || !t) return 1;
    int64_t off, len;
    ql_dist_slice(n, R, me, &off, &len);
    for (long long i = 0; i < n; i++) p[i] = 0.001f * (float)(i % 1000);
    for (int it = -1; it < iters; it++) {
        for (long long i = 0; i < n; i++) g[i] = (float)((i + me) % 7) * 0.125f;
        if (ql_comm_barrier(c) != QL_OK) die("barrier");
        double t0 = now_s(), sq = 0, loss[2] = {1.0, 2.0};
        if (ql_comm_agree(c, QL_OK) != QL_OK) die("agree");
        if (ql_comm_allreduce_sum(c, loss, 2, QL_DT_F64) != QL_OK) die("all-reduce");
        if (ql_comm_reduce_scatter_sum(c, g, g + off, n, QL_DT_F32) != QL_OK) die("reduce-scatter");
        for (int64_t i = 0; i < len; i++) sq += (double)g[off + i] * g[off + i];
        if (ql_comm_allgather_bytes(c, &sq, norms, sizeof sq) != QL_OK) die("norm");
        if (ql_comm_allgather(c, p + off, p, n, QL_DT_F32) != QL_OK) die("all-gather");
        if (it >= 0) t[it] = now_s() - t0;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    double med = t[iters / 2];
    if (me == 0)
        printf("{\"ranks\": %d, \"n\": %lld, \"iters\": %d, \"bucket_mb\": %ld, \"step_comm_s\": "
               "%.6f, "
               "\"step_comm_s_min\": %.6f, \"algbw_gb_s\": %.3f}\n",
               R, n, iters, bucket_mb, med, t[0],
               med > 0 ? 2.0 * (double)n * 4 * (R - 1) / R / med / 1e9 : 0.0);
    free(g);
    free(p);
    free(norms);
    free(t);
    ql_comm_close(c);
    return 0;
}
