/* The emulated NCCL (emu_nccl.cpp) against what NCCL's documentation says,
 * at any world size (ctest runs it alone and under mpirun at 2 ranks, with
 * QL_EMU_DEVICES = the ranks): the result codes of bad arguments, the
 * collective checks of ncclCommInitRankConfig, the collectives' exact sums
 * in rank order, a group's work happening at ncclGroupEnd, the non-blocking
 * protocol, and the strict checks (host memory, another device's memory,
 * overlap that is not in place, a group whose operations touch each other's
 * memory), and, at a world of one, the watch on a collective's input and
 * output until it lands (races stop the program; ordered work does not).
 * Independent of qlora: the expected values are computed here. */
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include "cuda_runtime.h"
#include "nccl.h"
#include "test_child.h"

static int g_rank, g_size, g_fails, g_checks;

__global__ void k_fill(float *p, float v) { p[threadIdx.x] = v; }

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            g_fails++;                                                                             \
            fprintf(stderr, "rank %d: %s:%d: CHECK failed: %s (last NCCL error: %s)\n", g_rank,    \
                    __FILE__, __LINE__, #cond, ncclGetLastError(nullptr));                         \
        }                                                                                          \
    } while (0)

static bool last_says(const char *what) { return strstr(ncclGetLastError(nullptr), what); }

static float *dev_floats(size_t n) {
    void *p = nullptr;
    CHECK(cudaMalloc(&p, n * sizeof(float)) == cudaSuccess);
    return (float *)p;
}

/* Rank r's value at i: integers and halves, so that sums are exact. */
static float val(int r, size_t i) { return (float)((int)(i % 501) - 250 + 7 * r) * 0.5f; }
static float total(size_t i) {
    double s = 0;
    for (int r = 0; r < g_size; r++) s += val(r, i);
    return (float)s;
}

static ncclComm_t make_comm(int blocking) {
    ncclUniqueId id;
    if (g_rank == 0) CHECK(ncclGetUniqueId(&id) == ncclSuccess);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = blocking;
    ncclComm_t c = nullptr;
    ncclResult_t r = ncclCommInitRankConfig(&c, g_size, id, g_rank, &cfg);
    CHECK(r == (blocking ? ncclSuccess : ncclInProgress) && c);
    return c;
}

/* Polls a non-blocking communicator: in progress once, then done. */
static void poll_done(ncclComm_t c) {
    ncclResult_t st = ncclInternalError;
    CHECK(ncclCommGetAsyncError(c, &st) == ncclSuccess && st == ncclInProgress);
    CHECK(ncclCommGetAsyncError(c, &st) == ncclSuccess && st == ncclSuccess);
}

/* Runs body in a child, which must die of SIGABRT with every needle on
 * stderr. The child makes no MPI call (a world of one). */
template <class F>
static void expect_abort(const char *what, F body, const char *n1, const char *n2) {
    std::string msg;
    const int st = ql_emu_run_child(body, &msg);
    const bool died = ql_emu_aborted(st);
    const bool named = msg.find(n1) != std::string::npos && msg.find(n2) != std::string::npos;
    if (!died || !named)
        fprintf(stderr, "%s: status %#x, stderr: %s\n", what, (unsigned)st, msg.c_str());
    CHECK(died && named);
}

/* A collective on a stream of its own may read its input and write its
 * output at any time until the program waits for it: other work that
 * touches them before that wait is a race the emulator stops at (when the
 * result lands), and work ordered after the collective is not. World of
 * one only (the children fork). */
static void test_races(ncclComm_t c, float *a, float *b, float *cbuf) {
    enum { N = 64 };
    float h[N], got[N];
    for (int i = 0; i < N; i++) h[i] = (float)(i + 1);
    cudaStream_t s = nullptr;
    cudaEvent_t ev = nullptr;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess);
    CHECK(cudaMemcpy(a, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
    const size_t bytes = sizeof h;

    expect_abort(
        "input overwritten on the legacy stream",
        [&] {
            ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s);
            cudaMemsetAsync(a + 5, 0, sizeof(float), nullptr);
            cudaStreamSynchronize(s);
        },
        "ncclAllReduce", "byte 22 of its 256-byte input was changed"); /* 6.0f: 00 00 c0 40 */
    expect_abort(
        "output written before the wait",
        [&] {
            ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s);
            cudaMemsetAsync(b, 0, bytes, nullptr);
            cudaStreamSynchronize(s);
        },
        "ncclAllReduce", "of its 256-byte output was changed");
    expect_abort(
        "in-place input overwritten, landed by an event query",
        [&] {
            ncclAllReduce(a, a, N, ncclFloat32, ncclSum, c, s);
            cudaEventRecord(ev, s);
            cudaMemcpy(a + N - 1, h, sizeof(float), cudaMemcpyHostToDevice);
            while (cudaEventQuery(ev) == cudaErrorNotReady) {
            }
        },
        "race", "byte 255 of its 256-byte input"); /* 64.0f to 1.0f: the top byte */

    /* Ordered: after an event wait on the legacy stream, on the same
     * stream (a memset, a kernel, a collective that overwrites the input),
     * or after a synchronization. */
    const float one = 1.0f;
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    CHECK(cudaEventRecord(ev, s) == cudaSuccess);
    CHECK(cudaStreamWaitEvent(nullptr, ev, 0) == cudaSuccess);
    CHECK(cudaMemsetAsync(a, 0, bytes, nullptr) == cudaSuccess);
    CHECK(ncclAllReduce(b, cbuf, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    CHECK(cudaMemsetAsync(b, 0, bytes, s) == cudaSuccess);
    CHECK(ncclAllReduce(cbuf, a, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    ql_emu_launch("k_fill", k_fill, dim3(1), dim3(N), 0, s)(cbuf, one);
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    CHECK(ncclAllReduce(cbuf, a, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    CHECK(ncclAllReduce(a, cbuf, N, ncclFloat32, ncclSum, c, s) == ncclSuccess);
    CHECK(cudaStreamSynchronize(s) == cudaSuccess);
    CHECK(cudaMemcpy(got, b, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(!memcmp(got, h, bytes)); /* h went a -> b -> cbuf -> a -> b */
    CHECK(cudaMemcpy(got, a, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    bool ones = true;
    for (int i = 0; i < N; i++) ones = ones && got[i] == 1.0f;
    CHECK(cudaMemcpy(got, cbuf, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int i = 0; i < N; i++) ones = ones && got[i] == 1.0f;
    CHECK(ones); /* the last two: ones cbuf -> a -> cbuf, the first read a before */
    /* A blocking stream: the legacy stream's work waits for it. */
    cudaStream_t sb = nullptr;
    CHECK(cudaStreamCreateWithFlags(&sb, cudaStreamDefault) == cudaSuccess);
    CHECK(cudaMemcpy(a, h, bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, sb) == ncclSuccess);
    CHECK(cudaMemsetAsync(a, 0, bytes, nullptr) == cudaSuccess);
    CHECK(cudaMemcpy(got, b, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(!memcmp(got, h, bytes));
    CHECK(cudaStreamDestroy(sb) == cudaSuccess);
    CHECK(cudaEventDestroy(ev) == cudaSuccess);
    CHECK(cudaStreamDestroy(s) == cudaSuccess);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    CHECK(cudaSetDevice(g_rank) == cudaSuccess);
    int dev = -1;
    CHECK(cudaGetDevice(&dev) == cudaSuccess && dev == g_rank);

    /* --- codes and strings ----------------------------------------------------------- */
    int version = 0;
    CHECK(ncclGetVersion(&version) == ncclSuccess && version == NCCL_VERSION_CODE);
    CHECK(NCCL_VERSION(2, 18, 0) == 21800 && NCCL_VERSION(2, 8, 4) == 2804);
    CHECK(ncclInProgress == 7 && ncclRemoteError == 6 && ncclFloat32 == 7 && ncclInt64 == 4 &&
          ncclFloat64 == 8 && ncclFloat == ncclFloat32 && ncclInt == ncclInt32);
    CHECK(!strcmp(ncclGetErrorString(ncclSuccess), "no error"));
    CHECK(ncclGroupEnd() == ncclInvalidUsage);
    float *a = dev_floats(1000), *b = dev_floats(1000), *cbuf = dev_floats(1000);
    CHECK(ncclAllReduce(a, b, 10, ncclFloat32, ncclSum, nullptr, nullptr) == ncclInvalidArgument);

    /* --- init: config, then the checks every rank makes together ------------------------ */
    ncclUniqueId id;
    CHECK(ncclGetUniqueId(&id) == ncclSuccess); /* each rank its own */
    ncclComm_t c = nullptr;
    ncclConfig_t raw;
    memset(&raw, 0, sizeof raw);
    CHECK(ncclCommInitRankConfig(&c, g_size, id, g_rank, &raw) == ncclInvalidArgument && !c);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 2;
    CHECK(ncclCommInitRankConfig(&c, g_size, id, g_rank, &cfg) == ncclInvalidArgument);
    if (g_size > 1) {
        CHECK(ncclCommInitRankConfig(&c, g_size, id, g_rank, nullptr) == ncclInvalidArgument);
        CHECK(last_says("unique id different from rank 0's"));
        ncclUniqueId shared = id;
        MPI_Bcast(&shared, sizeof shared, MPI_BYTE, 0, MPI_COMM_WORLD);
        CHECK(ncclCommInitRank(&c, g_size, shared, (g_rank + 1) % g_size) == ncclInvalidArgument);
        CHECK(last_says("passed rank"));
        CHECK(ncclCommInitRank(&c, g_size + 1, shared, g_rank) == ncclInvalidArgument);
        CHECK(last_says("MPI_COMM_WORLD has"));
    }

    /* --- blocking communicator: argument checks --------------------------------------- */
    c = make_comm(1);
    int n = 0, me = -1;
    CHECK(ncclCommCount(c, &n) == ncclSuccess && n == g_size);
    CHECK(ncclCommUserRank(c, &me) == ncclSuccess && me == g_rank);
    CHECK(ncclBroadcast(a, a, 10, ncclFloat32, g_size, c, nullptr) == ncclInvalidArgument);
    CHECK(ncclReduce(a, b, 10, ncclFloat32, ncclSum, -1, c, nullptr) == ncclInvalidArgument);
    CHECK(ncclAllReduce(a, b, 10, ncclNumTypes, ncclSum, c, nullptr) == ncclInvalidArgument);
    CHECK(ncclAllReduce(a, b, 10, ncclFloat32, ncclNumOps, c, nullptr) == ncclInvalidArgument);
    CHECK(ncclAllReduce(a, b, 10, ncclFloat32, ncclProd, c, nullptr) == ncclInvalidUsage);
    CHECK(ncclAllReduce(a, b, 10, ncclBfloat16, ncclSum, c, nullptr) == ncclInvalidUsage);
    CHECK(ncclBroadcast(a, b, 10, ncclBfloat16, 0, c, nullptr) == ncclSuccess); /* no sum */
    CHECK(ncclAllGather(a, b, SIZE_MAX / 2, ncclFloat32, c, nullptr) == ncclInvalidArgument);
    float host[16];
    CHECK(ncclAllReduce(host, b, 16, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidArgument);
    CHECK(last_says("not inside one device allocation"));
    CHECK(ncclAllReduce(a, b, 1001, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidArgument);
    CHECK(ncclAllReduce(a, a + 1, 10, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidArgument);
    CHECK(last_says("without being in place"));
    cudaStream_t bogus = (cudaStream_t)(uintptr_t)0x1000;
    CHECK(ncclAllReduce(a, b, 10, ncclFloat32, ncclSum, c, bogus) == ncclUnhandledCudaError);
    int ndev = 0;
    cudaGetDeviceCount(&ndev);
    if (ndev > 1) {
        CHECK(cudaSetDevice((g_rank + 1) % ndev) == cudaSuccess);
        float *other = dev_floats(16);
        CHECK(cudaSetDevice(g_rank) == cudaSuccess);
        CHECK(ncclAllReduce(other, b, 16, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidArgument);
        CHECK(last_says("memory of device"));
        cudaFree(other);
    }

    /* --- results: rank-ordered exact sums, in place and not ---------------------------- */
    const size_t N = 1000, per = N / (size_t)g_size;
    float h[1000], got[1000];
    for (size_t i = 0; i < N; i++) h[i] = val(g_rank, i);
    CHECK(cudaMemcpy(a, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, nullptr) == ncclSuccess);
    cudaMemcpy(got, b, sizeof got, cudaMemcpyDeviceToHost);
    bool ok = true;
    for (size_t i = 0; i < N; i++) ok = ok && got[i] == total(i);
    CHECK(ok);
    CHECK(ncclReduceScatter(a, a + (size_t)g_rank * per, per, ncclFloat32, ncclSum, c, nullptr) ==
          ncclSuccess);
    cudaMemcpy(got, a + (size_t)g_rank * per, per * sizeof(float), cudaMemcpyDeviceToHost);
    ok = true;
    for (size_t i = 0; i < per; i++) ok = ok && got[i] == total((size_t)g_rank * per + i);
    CHECK(ok);
    const int root = g_size - 1;
    CHECK(cudaMemcpy(a, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(ncclReduce(a, a, N, ncclFloat32, ncclSum, root, c, nullptr) == ncclSuccess);
    CHECK(ncclBroadcast(a, b, N, ncclFloat32, root, c, nullptr) == ncclSuccess);
    cudaMemcpy(got, b, sizeof got, cudaMemcpyDeviceToHost);
    ok = true;
    for (size_t i = 0; i < N; i++) ok = ok && got[i] == total(i);
    CHECK(ok);
    for (size_t i = 0; i < per; i++) h[i] = (float)(g_rank * 10000 + (int)i);
    CHECK(cudaMemcpy(cbuf, h, per * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(ncclAllGather(cbuf, b, per, ncclFloat32, c, nullptr) == ncclSuccess);
    cudaMemcpy(got, b, per * g_size * sizeof(float), cudaMemcpyDeviceToHost);
    ok = true;
    for (size_t i = 0; i < per * (size_t)g_size; i++)
        ok = ok && got[i] == (float)((int)(i / per) * 10000 + (int)(i % per));
    CHECK(ok);

    /* --- groups: work at the outermost ncclGroupEnd; hazards between operations ------- */
    for (size_t i = 0; i < N; i++) h[i] = val(g_rank, i);
    CHECK(cudaMemcpy(a, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
    float poison[4]; /* what cbuf's tail holds before the group runs */
    cudaMemcpy(poison, cbuf + 996, sizeof poison, cudaMemcpyDeviceToHost);
    CHECK(ncclGroupStart() == ncclSuccess);
    CHECK(ncclGroupStart() == ncclSuccess);
    CHECK(ncclAllReduce(a, cbuf, N, ncclFloat32, ncclSum, c, nullptr) == ncclSuccess);
    CHECK(ncclAllReduce(cbuf, b, N, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidUsage);
    CHECK(last_says("writes"));
    CHECK(ncclGroupEnd() == ncclSuccess);
    float before[4];
    cudaMemcpy(before, cbuf + 996, sizeof before, cudaMemcpyDeviceToHost);
    CHECK(!memcmp(before, poison, sizeof before)); /* not run yet */
    CHECK(ncclGroupEnd() == ncclSuccess);
    cudaMemcpy(got, cbuf, sizeof got, cudaMemcpyDeviceToHost);
    ok = true;
    for (size_t i = 0; i < N; i++) ok = ok && got[i] == total(i);
    CHECK(ok);

    CHECK(ncclCommDestroy(c) == ncclSuccess);
    CHECK(ncclAllReduce(a, b, 10, ncclFloat32, ncclSum, c, nullptr) == ncclInvalidArgument);
    CHECK(last_says("not a live communicator"));

    /* --- non-blocking: ncclInProgress, and polling before the next call -------------- */
    cudaStream_t s = nullptr;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    c = make_comm(0);
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s) == ncclInvalidUsage);
    CHECK(last_says("in progress"));
    poll_done(c);
    CHECK(ncclAllReduce(a, b, N, ncclFloat32, ncclSum, c, s) == ncclInProgress);
    poll_done(c);
    CHECK(cudaStreamQuery(s) == cudaErrorNotReady);
    CHECK(cudaStreamQuery(s) == cudaSuccess);
    CHECK(ncclGroupStart() == ncclSuccess);
    CHECK(ncclReduce(a, b, N, ncclFloat32, ncclSum, 0, c, s) == ncclSuccess);
    CHECK(ncclGroupEnd() == ncclInProgress);
    poll_done(c);
    CHECK(ncclCommFinalize(c) == ncclInProgress);
    CHECK(ncclCommDestroy(c) == ncclInvalidUsage);
    poll_done(c);
    CHECK(ncclCommDestroy(c) == ncclSuccess);
    CHECK(cudaStreamDestroy(s) == cudaSuccess);
    CHECK(cudaStreamQuery(s) == cudaErrorInvalidResourceHandle);

    /* --- abort frees this rank alone ------------------------------------------------------ */
    c = make_comm(1);
    if (g_size == 1) test_races(c, a, b, cbuf);
    CHECK(ncclCommAbort(c) == ncclSuccess);
    CHECK(ncclCommAbort(nullptr) == ncclSuccess);

    cudaFree(a);
    cudaFree(b);
    cudaFree(cbuf);
    printf("rank %d of %d: %d checks, %d failed\n", g_rank, g_size, g_checks, g_fails);
    MPI_Finalize();
    return g_fails ? 1 : 0;
}
