/* The NCCL device communicator (dist/comm_nccl.c) at any world size: one
 * rank on this machine's GPU (tests/gpu/run.sh), or several under mpirun
 * with a GPU each (the CUDA emulator's build runs it at 2 and 3 ranks over
 * its MPI-backed NCCL, kernels/cuda/emu/emu_nccl.cpp).
 *
 * Every part of the path runs: the unique id, the non-blocking
 * ncclCommInitRankConfig and its polling, the own stream, the grouped
 * ncclReduce / ncclBroadcast over the uneven slice partition (N is not a
 * multiple of 2 or 3), in place and not, ncclAllReduce in float32, float64
 * and int64, ncclCommFinalize. Verification is exact, as nccl-tests does it:
 * rank r contributes integers times powers of two, small enough that every
 * partial sum is exact in float, so the sums must be these bits whatever the
 * order of addition.
 *
 * On the emulator only (its NCCL checks pointers, NCCL does not by default):
 * a host buffer is refused with NCCL's reason in the message, and the next
 * collective still works (the failed group was closed). With
 * QL_TEST_NCCL_SHARED_DEVICE=1 (two ranks on one emulated device) opening
 * the communicator must fail on every rank, naming the duplicate GPU.
 * Exit 77 without a GPU or without NCCL. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dist/comm.h"
#include "kernels/cuda_api.h"

#ifdef QL_HAVE_NCCL
enum { N = 100003 };

/* Rank r's contribution to element i: an integer in [-999, 999] times
 * 2^-(r mod 3). At most 2^15 ranks' worth of these sums stays within float's
 * 24 bits, so every sum is exact. */
static float contrib(int r, int64_t i) {
    return ldexpf((float)((i * 37 + (int64_t)r * 101) % 1999 - 999), -(r % 3));
}

static float sum_of(int size, int64_t i) {
    double s = 0;
    for (int r = 0; r < size; r++) s += (double)contrib(r, i);
    return (float)s;
}

/* What rank r owns of an all-gather: distinct per rank and element. */
static float owned(int r, int64_t i) { return (float)(r * 1000003 + (int)(i % 1000)) * 0.5f; }

/* The first element of [lo, hi) where got differs from the bits of want(i);
 * -1 when none does. */
static int64_t first_diff(const float *got, int64_t lo, int64_t hi, float (*want)(int, int64_t),
                          int arg) {
    for (int64_t i = lo; i < hi; i++) {
        float w = want(arg, i);
        if (memcmp(&got[i - lo], &w, sizeof w)) return i;
    }
    return -1;
}

static float want_sum(int size, int64_t i) { return sum_of(size, i); }

/* want(arg, i) where i belongs to owner(i)'s slice. */
static int g_size;
static float want_owned(int unused, int64_t i) {
    (void)unused;
    for (int r = 0; r < g_size; r++) {
        int64_t off, len;
        ql_dist_slice(N, g_size, r, &off, &len);
        if (i >= off && i < off + len) return owned(r, i);
    }
    return NAN;
}
#endif

int main(void) {
#ifndef QL_HAVE_NCCL
    printf("skip: built without NCCL\n");
    return 77;
#else
    int ndev = ql_cuda_device_count();
    if (ndev < 1) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    ql_world w;
    ql_comm *host = NULL, *dev = NULL;
    CHECK(ql_world_detect(NULL, NULL, &w) == QL_OK);
    CHECK(ql_comm_open(&w, &host) == QL_OK);
    if (!host) return CHECK_DONE();
    const int size = ql_comm_size(host), rank = ql_comm_rank(host);
    g_size = size;
    int device = -2;
    CHECK(ql_comm_bind_device(host, &device) == QL_OK);
    CHECKF(device == (w.local_rank > 0 ? w.local_rank : 0) % ndev, "rank %d bound device %d", rank,
           device);
    ql_cuda_device_info info;
    CHECK(ql_cuda_get_device_info(device, &info) == QL_OK);
    const int emulated = strstr(info.name, "CUDA emulator") != NULL;
    const char *shared = getenv("QL_TEST_NCCL_SHARED_DEVICE");
    if (shared && !strcmp(shared, "1")) {
        /* NCCL refuses two ranks on one GPU; every rank must hear why. */
        ql_status st = ql_comm_open_device(host, &dev);
        CHECKF(st == QL_EBACKEND && strstr(ql_error_message(), "duplicate GPU"),
               "rank %d: status %d: %s", rank, (int)st, ql_error_message());
        CHECK(dev == NULL);
        CHECK(ql_comm_close(host) == QL_OK);
        return CHECK_DONE();
    }
    ql_status st = ql_comm_open_device(host, &dev);
    CHECKF(st == QL_OK, "rank %d: %s", rank, ql_error_message());
    if (st != QL_OK) return CHECK_DONE();
    CHECK(ql_comm_device_memory(dev) && !ql_comm_device_memory(host));
    CHECK(ql_comm_size(dev) == size && ql_comm_rank(dev) == rank);

    int64_t off, len;
    ql_dist_slice(N, size, rank, &off, &len);
    const size_t bytes = N * sizeof(float);
    float *h = malloc(bytes), *back = malloc(bytes);
    void *a = NULL, *b = NULL;
    CHECK(ql_cuda_malloc(bytes, &a) == QL_OK);
    CHECK(ql_cuda_malloc(bytes, &b) == QL_OK);
    if (!h || !back || !a || !b) return CHECK_DONE();
    for (int64_t i = 0; i < N; i++) h[i] = contrib(rank, i);
    int64_t bad;

    /* reduce-scatter into another buffer: this rank's slice of the sums at
     * b[0, len), and nothing written past it */
    CHECK(ql_cuda_upload(a, h, bytes) == QL_OK);
    CHECK(ql_cuda_memset(b, 0x7f, bytes, NULL) == QL_OK);
    CHECK(ql_comm_reduce_scatter_sum(dev, a, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, b, bytes) == QL_OK);
    bad = first_diff(back, off, off + len, want_sum, size);
    CHECKF(bad < 0, "rank %d: reduce-scatter element %lld: got %.9g, want %.9g", rank,
           (long long)bad, bad < 0 ? 0.0 : (double)back[bad - off],
           bad < 0 ? 0.0 : (double)sum_of(size, bad));
    int tail_ok = 1;
    for (int64_t i = len; i < N; i++) tail_ok &= ((uint32_t *)back)[i] == 0x7f7f7f7fu;
    CHECKF(tail_ok, "rank %d: reduce-scatter wrote past its slice of %lld", rank, (long long)len);

    /* in place: the slice's sums over the input's own slice (out = in + off) */
    CHECK(ql_comm_reduce_scatter_sum(dev, a, (float *)a + off, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, (float *)a + off, (size_t)len * sizeof(float)) == QL_OK);
    bad = first_diff(back, off, off + len, want_sum, size);
    CHECKF(bad < 0, "rank %d: in-place reduce-scatter differs at element %lld", rank,
           (long long)bad);

    /* all-gather from another buffer: every rank's slice in place in b */
    for (int64_t i = 0; i < len; i++) h[i] = owned(rank, off + i);
    CHECK(ql_cuda_upload(a, h, (size_t)len * sizeof(float)) == QL_OK);
    CHECK(ql_cuda_memset(b, 0xff, bytes, NULL) == QL_OK);
    CHECK(ql_comm_allgather(dev, a, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, b, bytes) == QL_OK);
    bad = first_diff(back, 0, N, want_owned, 0);
    CHECKF(bad < 0, "rank %d: all-gather differs at element %lld", rank, (long long)bad);

    /* in place: only the own slice is set before */
    CHECK(ql_cuda_memset(a, 0xff, bytes, NULL) == QL_OK);
    CHECK(ql_cuda_upload((float *)a + off, h, (size_t)len * sizeof(float)) == QL_OK);
    CHECK(ql_comm_allgather(dev, (float *)a + off, a, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, a, bytes) == QL_OK);
    bad = first_diff(back, 0, N, want_owned, 0);
    CHECKF(bad < 0, "rank %d: in-place all-gather differs at element %lld", rank, (long long)bad);

    /* overlap (ql_comm_can_overlap): the in-place all-gather in uneven
     * parts that straddle slices, each joined by the compute stream before
     * the download; then the in-place reduce-scatter in parts, from the
     * end down as the backward pass starts them, then ql_comm_wait. The same
     * bits as the whole calls. On the emulator a part's result lands only at
     * the join or wait, so a missing one would read the 0xff fill. */
    CHECK(ql_comm_can_overlap(dev));
    CHECK(ql_cuda_memset(a, 0xff, bytes, NULL) == QL_OK);
    CHECK(ql_cuda_upload((float *)a + off, h, (size_t)len * sizeof(float)) == QL_OK);
    static const int64_t cuts[] = {0, 1, 777, N / 3 + 5, N / 2, N - 2, N};
    int parts[6], n_parts = 0;
    for (int k = 0; k + 1 < (int)(sizeof cuts / sizeof cuts[0]); k++)
        CHECK(ql_comm_allgather_start(dev, (float *)a + off, a, N, cuts[k], cuts[k + 1], QL_DT_F32,
                                      &parts[n_parts++]) == QL_OK);
    for (int k = 0; k < n_parts; k++) {
        CHECK(ql_comm_join(dev, parts[k]) == QL_OK);
        const int64_t lo = cuts[k], hi = cuts[k + 1];
        CHECK(ql_cuda_download(back, (float *)a + lo, (size_t)(hi - lo) * sizeof(float)) == QL_OK);
        bad = first_diff(back, lo, hi, want_owned, 0);
        CHECKF(bad < 0, "rank %d: all-gather part %d [%lld, %lld) differs at element %lld", rank, k,
               (long long)lo, (long long)hi, (long long)bad);
    }
    CHECK(ql_comm_wait(dev) == QL_OK);
    for (int64_t i = 0; i < N; i++) h[i] = contrib(rank, i);
    CHECK(ql_cuda_upload(a, h, bytes) == QL_OK);
    for (int k = (int)(sizeof cuts / sizeof cuts[0]) - 1; k > 0; k--)
        CHECK(ql_comm_reduce_scatter_sum_start(dev, a, (float *)a + off, N, cuts[k - 1], cuts[k],
                                               QL_DT_F32) == QL_OK);
    CHECK(ql_comm_wait(dev) == QL_OK);
    CHECK(ql_cuda_download(back, (float *)a + off, (size_t)len * sizeof(float)) == QL_OK);
    bad = first_diff(back, off, off + len, want_sum, size);
    CHECKF(bad < 0, "rank %d: reduce-scatter in parts differs at element %lld", rank,
           (long long)bad);

    /* all-reduce (in place, the API's only form), float32 */
    for (int64_t i = 0; i < N; i++) h[i] = contrib(rank, i);
    CHECK(ql_cuda_upload(b, h, bytes) == QL_OK);
    CHECK(ql_comm_allreduce_sum(dev, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, b, bytes) == QL_OK);
    bad = first_diff(back, 0, N, want_sum, size);
    CHECKF(bad < 0, "rank %d: all-reduce differs at element %lld", rank, (long long)bad);

    /* float64 and int64: values float32 could not hold (43 and 42 bits) */
    enum { M = 1001 };
    double hd[M], bd[M];
    int64_t hi[M], bi[M];
    for (int i = 0; i < M; i++) {
        hd[i] = ldexp((double)(i + 1) * (rank + 1), -20) + (double)(1 << 20);
        hi[i] = ((int64_t)1 << 40) * (rank + 1) + i * 3 - rank;
    }
    void *d = NULL;
    CHECK(ql_cuda_malloc(sizeof hd, &d) == QL_OK);
    CHECK(ql_cuda_upload(d, hd, sizeof hd) == QL_OK);
    CHECK(ql_comm_allreduce_sum(dev, d, M, QL_DT_F64) == QL_OK);
    CHECK(ql_cuda_download(bd, d, sizeof bd) == QL_OK);
    int f64_ok = 1, i64_ok = 1;
    const double tri = (double)size * (size + 1) / 2;
    for (int i = 0; i < M; i++)
        f64_ok &= bd[i] == ldexp((double)(i + 1) * tri, -20) + (double)size * (double)(1 << 20);
    CHECKF(f64_ok, "rank %d: float64 all-reduce", rank);
    CHECK(ql_cuda_upload(d, hi, sizeof hi) == QL_OK);
    CHECK(ql_comm_allreduce_sum(dev, d, M, QL_DT_I64) == QL_OK);
    CHECK(ql_cuda_download(bi, d, sizeof bi) == QL_OK);
    for (int i = 0; i < M; i++)
        i64_ok &= bi[i] == ((int64_t)1 << 40) * (int64_t)tri + (int64_t)size * i * 3 -
                               (int64_t)size * (size - 1) / 2;
    CHECKF(i64_ok, "rank %d: int64 all-reduce", rank);
    ql_cuda_free(d);

    /* fewer elements than ranks: some slices are empty */
    for (int64_t n = 0; n <= 2; n++) {
        float one[2] = {contrib(rank, 0), contrib(rank, 1)}, got[2] = {0, 0};
        int64_t o, l;
        ql_dist_slice(n, size, rank, &o, &l);
        CHECK(ql_cuda_upload(a, one, sizeof one) == QL_OK);
        CHECK(ql_comm_reduce_scatter_sum(dev, a, (float *)a + o, n, QL_DT_F32) == QL_OK);
        CHECK(ql_cuda_download(got, a, sizeof got) == QL_OK);
        for (int64_t i = o; i < o + l; i++)
            CHECKF(got[i] == sum_of(size, i), "rank %d: n = %lld, element %lld", rank, (long long)n,
                   (long long)i);
    }

    if (emulated) {
        /* host memory where device memory belongs: refused inside the
         * grouped ncclReduce calls, with the emulated NCCL's reason */
        st = ql_comm_reduce_scatter_sum(dev, h, (float *)a + off, N, QL_DT_F32);
        CHECKF(st == QL_EBACKEND && strstr(ql_error_message(), "device allocation"),
               "rank %d: status %d: %s", rank, (int)st, ql_error_message());
        /* the group was closed: the next collective runs as usual */
        for (int64_t i = 0; i < N; i++) h[i] = contrib(rank, i);
        CHECK(ql_cuda_upload(a, h, bytes) == QL_OK);
        CHECK(ql_comm_reduce_scatter_sum(dev, a, (float *)a + off, N, QL_DT_F32) == QL_OK);
        CHECK(ql_cuda_download(back, (float *)a + off, (size_t)len * sizeof(float)) == QL_OK);
        bad = first_diff(back, off, off + len, want_sum, size);
        CHECKF(bad < 0, "rank %d: reduce-scatter after a refused one differs at element %lld", rank,
               (long long)bad);
    }

    /* agree and bcast go through the host communicator: the last rank fails */
    CHECK(ql_comm_agree(dev, QL_OK) == QL_OK);
    const int last = size - 1;
    st = ql_comm_agree(dev, rank == last ? ql_error(QL_EIO, "disk full") : QL_OK);
    CHECKF(st == QL_EIO, "rank %d: agree returned %d", rank, (int)st);
    CHECK(ql_comm_failed_rank(dev) == last);
    CHECKF(strstr(ql_comm_agreed_message(dev), "disk full") != NULL, "rank %d: '%s'", rank,
           ql_comm_agreed_message(dev));
    int64_t word = rank == 0 ? 0x1234567890LL : 0;
    CHECK(ql_comm_bcast(dev, &word, sizeof word, 0) == QL_OK);
    CHECK(word == 0x1234567890LL);

    ql_cuda_free(a);
    ql_cuda_free(b);
    free(h);
    free(back);
    CHECK(ql_comm_close(dev) == QL_OK);
    CHECK(ql_comm_close(host) == QL_OK);
    return CHECK_DONE();
#endif
}
