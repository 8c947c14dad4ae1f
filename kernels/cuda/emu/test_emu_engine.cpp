/* Checks the CUDA emulator's engine (emu_runtime.cpp) with kernels written
 * as the ones in kernels/cuda/ are: block barriers and shared memory, warp
 * shuffles, ldmatrix + mma.sync with the PTX ISA's fragment layouts, the
 * fatal diagnostics (in fork()ed children), Hopper launch limits, copy
 * directions, memory poison and the shuffled thread and block schedules. Every
 * expected value is computed here on the host, independently of the engine.
 * Exit status 0 when every check passes. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/mma.cuh"
#include "test_child.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            g_pass++;                                                                              \
        } else {                                                                                   \
            g_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static uint32_t g_rng = 12345;
static int rnd(int n) {
    g_rng = g_rng * 1664525u + 1013904223u;
    return (int)((g_rng >> 8) % (uint32_t)n);
}

template <class T> static T *dev_from(const std::vector<T> &h) {
    void *d = nullptr;
    cudaMalloc(&d, h.size() * sizeof(T));
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return (T *)d;
}
template <class T> static std::vector<T> host_from(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

/* --- 1. block tree reduction --------------------------------------------------------- */
__global__ void k_block_sum(const float *in, float *out) {
    __shared__ float sh[256];
    const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    sh[t] = in[b * 256 + t];
    __syncthreads();
    for (unsigned s = 128; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    if (t == 0) out[b] = sh[0];
}

static void test_reduction() {
    const dim3 grids[] = {dim3(5), dim3(3, 2, 2), dim3(2, 3), dim3(1, 1, 4)};
    const dim3 blocks[] = {dim3(256), dim3(32, 8), dim3(16, 16), dim3(8, 8, 4)};
    for (int c = 0; c < 4; c++) {
        const int nb = (int)(grids[c].x * grids[c].y * grids[c].z);
        /* Integer values: every summation order gives the exact sum. */
        std::vector<float> in((size_t)nb * 256);
        for (float &v : in) v = (float)(rnd(201) - 100);
        float *d_in = dev_from(in), *d_out;
        cudaMalloc((void **)&d_out, (size_t)nb * sizeof(float));
        QL_LAUNCH((grids[c], blocks[c], 0, 0), k_block_sum)(d_in, d_out);
        CHECK(cudaGetLastError() == cudaSuccess, "config %d", c);
        const std::vector<float> out = host_from(d_out, (size_t)nb);
        for (int b = 0; b < nb; b++) {
            double want = 0;
            for (int i = 0; i < 256; i++) want += in[(size_t)b * 256 + (size_t)i];
            CHECK(out[(size_t)b] == (float)want, "config %d block %d: %g, want %g", c, b,
                  out[(size_t)b], want);
        }
        cudaFree(d_in);
        cudaFree(d_out);
    }
}

/* --- 2. butterfly shuffles ------------------------------------------------------------ */
struct pair8 {
    int32_t sum;
    float max;
};

__global__ void k_shfl(const float *f, const double *d, const pair8 *p, float *of, double *od,
                       pair8 *op) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float x = f[i];
    double y = d[i];
    pair8 q = p[i];
    for (int m = 16; m > 0; m >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, m);
        y += __shfl_xor_sync(0xffffffffu, y, m);
        const pair8 o = __shfl_xor_sync(0xffffffffu, q, m);
        q.sum += o.sum;
        q.max = fmaxf(q.max, o.max);
    }
    of[i] = x;
    od[i] = y;
    op[i] = q;
}

static void test_shuffle() {
    const int n = 2 * 64;
    std::vector<float> f(n);
    std::vector<double> d(n);
    std::vector<pair8> p(n);
    /* Integers and quarters: exact in any order of addition. */
    for (int i = 0; i < n; i++) {
        f[(size_t)i] = (float)(rnd(1001) - 500);
        d[(size_t)i] = (rnd(4001) - 2000) * 0.25;
        p[(size_t)i] = pair8{rnd(2001) - 1000, (float)(rnd(1000) - 500) * 0.5f};
    }
    float *df = dev_from(f), *of;
    double *dd = dev_from(d), *od;
    pair8 *dp = dev_from(p), *op;
    cudaMalloc((void **)&of, n * sizeof(float));
    cudaMalloc((void **)&od, n * sizeof(double));
    cudaMalloc((void **)&op, n * sizeof(pair8));
    QL_LAUNCH((2, 64, 0, 0), k_shfl)(df, dd, dp, of, od, op);
    const std::vector<float> rf = host_from(of, n);
    const std::vector<double> rd = host_from(od, n);
    const std::vector<pair8> rp = host_from(op, n);
    for (int w = 0; w < n / 32; w++) {
        double sf = 0, sd = 0;
        int32_t ss = 0;
        float mx = -INFINITY;
        for (int l = 0; l < 32; l++) {
            const size_t i = (size_t)(w * 32 + l);
            sf += f[i], sd += d[i], ss += p[i].sum, mx = p[i].max > mx ? p[i].max : mx;
        }
        int bad = 0;
        for (int l = 0; l < 32; l++) {
            const size_t i = (size_t)(w * 32 + l);
            bad += rf[i] != (float)sf || rd[i] != sd || rp[i].sum != ss || rp[i].max != mx;
        }
        CHECK(bad == 0, "warp %d: %d lanes without the warp total", w, bad);
    }
    cudaFree(df), cudaFree(dd), cudaFree(dp), cudaFree(of), cudaFree(od), cudaFree(op);
}

/* --- 3. ldmatrix + mma.sync ------------------------------------------------------------- */
/* Per block: C (16x16) = A (16xK, row-major) · B (Kx16, row-major), and C2 (16x8) =
 * the same A times B's first 8 columns with B's fragments packed by hand. */
__global__ void k_mma(const __nv_bfloat16 *A, const __nv_bfloat16 *B, float *C, float *C2, int K) {
    /* Padded rows (80 and 48 bytes) keep every row 16-byte aligned. */
    __shared__ __align__(16) __nv_bfloat16 sa[16][40];
    __shared__ __align__(16) __nv_bfloat16 sb[32][24];
    const int lane = threadIdx.x, g = lane / 4, c = lane % 4;
    A += (size_t)blockIdx.x * 16 * K;
    B += (size_t)blockIdx.x * K * 16;
    for (int i = lane; i < 16 * K; i += 32) sa[i / K][i % K] = A[i];
    for (int i = lane; i < K * 16; i += 32) sb[i / 16][i % 16] = B[i];
    __syncthreads();
    float acc[2][4] = {}, acc2[4] = {};
    for (int k0 = 0; k0 < K; k0 += 16) {
        uint32_t a[4], b[4];
        /* Lanes 0-15 give rows 0-15 at column k0, lanes 16-31 the same rows at
         * k0+8: matrices 0..3 are A's quadrants (rows 0-7|8-15) x (cols lo|hi). */
        ql_ldmatrix_x4(a, &sa[lane % 16][k0 + (lane / 16) * 8]);
        /* B's rows k0..k0+15 at columns 0 and 8, transposed: b[0],b[1] are the
         * first n-tile's b0,b1, b[2],b[3] the second's. */
        ql_ldmatrix_x4_trans(b, &sb[k0 + lane % 16][(lane / 16) * 8]);
        ql_mma_bf16(acc[0], a, b[0], b[1]);
        ql_mma_bf16(acc[1], a, b[2], b[3]);
        const uint32_t b0 = ql_pack_bf16x2(__bfloat162float(sb[k0 + 2 * c][g]),
                                           __bfloat162float(sb[k0 + 2 * c + 1][g]));
        const uint32_t b1 = ql_pack_bf16x2(__bfloat162float(sb[k0 + 2 * c + 8][g]),
                                           __bfloat162float(sb[k0 + 2 * c + 9][g]));
        ql_mma_bf16(acc2, a, b0, b1);
    }
    C += (size_t)blockIdx.x * 256;
    C2 += (size_t)blockIdx.x * 128;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i / 2), col = 2 * c + i % 2;
        C[row * 16 + col] = acc[0][i];
        C[row * 16 + 8 + col] = acc[1][i];
        C2[row * 8 + col] = acc2[i];
    }
}

static float bf_to_f(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_mma() {
    const int tiles = 4;
    for (int K = 16; K <= 32; K += 16) {
        std::vector<uint16_t> a((size_t)tiles * 16 * K), b((size_t)tiles * K * 16);
        /* Random bf16 with exponents in [-4, 3] and both signs. */
        for (uint16_t &v : a) v = (uint16_t)(rnd(2) << 15 | (123 + rnd(8)) << 7 | rnd(128));
        for (uint16_t &v : b) v = (uint16_t)(rnd(2) << 15 | (123 + rnd(8)) << 7 | rnd(128));
        __nv_bfloat16 *dA = (__nv_bfloat16 *)dev_from(a), *dB = (__nv_bfloat16 *)dev_from(b);
        float *dC, *dC2;
        cudaMalloc((void **)&dC, (size_t)tiles * 256 * sizeof(float));
        cudaMalloc((void **)&dC2, (size_t)tiles * 128 * sizeof(float));
        QL_LAUNCH((tiles, 32, 0, 0), k_mma)(dA, dB, dC, dC2, K);
        const std::vector<float> C = host_from(dC, (size_t)tiles * 256);
        const std::vector<float> C2 = host_from(dC2, (size_t)tiles * 128);
        int bad = 0, bad2 = 0;
        for (int t = 0; t < tiles; t++)
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 16; j++) {
                    double s = 0, mag = 0;
                    for (int k = 0; k < K; k++) {
                        const double p = (double)bf_to_f(a[(size_t)(t * 16 * K + i * K + k)]) *
                                         bf_to_f(b[(size_t)(t * K * 16 + k * 16 + j)]);
                        s += p, mag += fabs(p);
                    }
                    const double tol = 1e-5 * mag;
                    bad += fabs(C[(size_t)(t * 256 + i * 16 + j)] - s) > tol;
                    if (j < 8) bad2 += fabs(C2[(size_t)(t * 128 + i * 8 + j)] - s) > tol;
                }
        CHECK(bad == 0, "K=%d: %d of %d elements off (ldmatrix.trans B)", K, bad, tiles * 256);
        CHECK(bad2 == 0, "K=%d: %d of %d elements off (hand-packed B)", K, bad2, tiles * 128);
        cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dC2);
    }
}

/* --- 4. fatal diagnostics ---------------------------------------------------------------- */
__global__ void k_nop(int *) {}

__global__ void k_divergent(int *out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

__global__ void k_half_return(int *out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void k_misaligned(int *out) {
    __shared__ __align__(16) __nv_bfloat16 sh[16 * 16 + 8];
    for (int i = threadIdx.x; i < 16 * 16 + 8; i += 32) sh[i] = __float2bfloat16_rn(1.0f);
    __syncthreads();
    uint32_t r[4];
    ql_ldmatrix_x4(r, &sh[(threadIdx.x % 16) * 16 + 4]); /* 8 bytes into the row */
    out[threadIdx.x] = (int)r[0];
}

static void launch_divergent(int *d) { QL_LAUNCH((1, 32, 0, 0), k_divergent)(d); }
static void launch_half_return(int *d) { QL_LAUNCH((1, 32, 0, 0), k_half_return)(d); }
static void launch_misaligned(int *d) { QL_LAUNCH((1, 32, 0, 0), k_misaligned)(d); }

/* Runs launch in a child, after `flip` extra launches so both thread orders
 * get their turn; the child must die of SIGABRT with every needle on stderr. */
static void expect_abort(const char *what, void (*launch)(int *), int flip,
                         std::initializer_list<const char *> needles) {
    std::string msg;
    const int st = ql_emu_run_child(
        [&] {
            int *d;
            cudaMalloc((void **)&d, 32 * sizeof(int));
            for (int i = 0; i < flip; i++) QL_LAUNCH((1, 1, 0, 0), k_nop)(d);
            launch(d);
        },
        &msg);
    const bool aborted = ql_emu_aborted(st);
    bool named = true;
    for (const char *s : needles) named = named && msg.find(s) != std::string::npos;
    CHECK(aborted && named, "%s (order %d): status %#x, stderr: %s", what, flip, st, msg.c_str());
}

/* Host code reading and writing device memory, as no GPU program may. */
static void host_reads_device(int *d) {
    volatile int *v = d;
    fprintf(stderr, "read %d\n", v[3]);
}
static void host_writes_device(int *d) { ((volatile int *)d)[31] = 5; }

static void test_deaths() {
    for (int flip = 0; flip < 2; flip++) {
        expect_abort("divergent __syncthreads", launch_divergent, flip,
                     {"divergent", "k_divergent", "test_emu_engine.cpp"});
        expect_abort("shuffle after half the warp returned", launch_half_return, flip,
                     {"k_half_return", "collective", "test_emu_engine.cpp"});
        expect_abort("misaligned ldmatrix", launch_misaligned, flip,
                     {"k_misaligned", "16-byte aligned", "test_emu_engine.cpp"});
    }
    expect_abort("host read of device memory", host_reads_device, 0,
                 {"host code touched device memory", "byte 12 of a 128-byte"});
    expect_abort("host write of device memory", host_writes_device, 1,
                 {"host code touched device memory", "byte 124 of a 128-byte"});
}

/* --- 5. launch limits ------------------------------------------------------------------- */
__global__ void k_flag(int *flag) {
    if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) *flag = 1;
}

__global__ void k_flag_smem(int *flag) {
    QL_DYN_SMEM(buf);
    buf[threadIdx.x] = 0;
    if (threadIdx.x == 0) *flag = 1;
}

static int take_flag(int *d) {
    int h = -1;
    cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
    cudaMemsetAsync(d, 0, sizeof(int), 0);
    return h;
}

/* A refused launch sets the last error exactly once and runs nothing. */
static void expect_refused(const char *what, int *flag) {
    const cudaError_t e = cudaGetLastError();
    CHECK(e != cudaSuccess, "%s: launch not refused", what);
    CHECK(cudaGetLastError() == cudaSuccess, "%s: error not cleared by the first read", what);
    CHECK(take_flag(flag) == 0, "%s: the kernel ran", what);
}

static void test_launch_limits() {
    int *flag;
    cudaMalloc((void **)&flag, sizeof(int));
    cudaMemsetAsync(flag, 0, sizeof(int), 0);
    (void)cudaGetLastError();

    QL_LAUNCH((1, 1025, 0, 0), k_flag)(flag);
    expect_refused("1025 threads", flag);
    QL_LAUNCH((1, 1024, 0, 0), k_flag)(flag);
    CHECK(cudaGetLastError() == cudaSuccess && take_flag(flag) == 1, "1024 threads must run");

    QL_LAUNCH((dim3(1, 65536), 1, 0, 0), k_flag)(flag);
    expect_refused("grid.y 65536", flag);
    QL_LAUNCH((dim3(1, 65535), 1, 0, 0), k_flag)(flag);
    CHECK(cudaGetLastError() == cudaSuccess && take_flag(flag) == 1, "grid.y 65535 must run");

    QL_LAUNCH((1, 32, 64 * 1024, 0), k_flag_smem)(flag);
    expect_refused("64 KiB dynamic smem without the attribute", flag);
    CHECK(cudaFuncSetAttribute(k_flag_smem, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               64 * 1024) == cudaSuccess,
          "opt-in to 64 KiB refused");
    QL_LAUNCH((1, 32, 64 * 1024, 0), k_flag_smem)(flag);
    CHECK(cudaGetLastError() == cudaSuccess && take_flag(flag) == 1,
          "64 KiB with the attribute must run");
    QL_LAUNCH((1, 32, 64 * 1024 + 16, 0), k_flag_smem)(flag);
    expect_refused("more dynamic smem than the attribute allows", flag);
    CHECK(cudaFuncSetAttribute(k_flag_smem, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               228 * 1024) != cudaSuccess,
          "opt-in to 228 KiB accepted (Hopper's limit is 227 KiB)");
    CHECK(cudaFuncSetAttribute(k_flag_smem, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               227 * 1024) == cudaSuccess,
          "opt-in to 227 KiB refused");
    QL_LAUNCH((1, 32, 228 * 1024, 0), k_flag_smem)(flag);
    expect_refused("228 KiB dynamic smem", flag);
    cudaFree(flag);
}

/* --- 6. copies and poison ----------------------------------------------------------------- */
__global__ void k_dyn_poison(int *bad, int bytes) {
    QL_DYN_SMEM(buf);
    int n = 0;
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) n += buf[i] != 0xFF;
    bad[blockIdx.x * blockDim.x + threadIdx.x] = n;
    __syncthreads();
    /* Dirty it so that the next block shows whether it is refilled. */
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) buf[i] = 0;
}

static void test_copies_and_poison() {
    unsigned char h[64], h2[64];
    memset(h, 7, sizeof h);
    unsigned char *d;
    cudaMalloc((void **)&d, sizeof h);
    CHECK(cudaMemcpy(h2, h, sizeof h, cudaMemcpyHostToDevice) != cudaSuccess,
          "HostToDevice into host memory accepted");
    CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess,
          "DeviceToHost from host memory accepted");
    CHECK(cudaMemcpy(h2, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess,
          "DeviceToHost refused");
    int not_ff = 0;
    for (unsigned char v : h2) not_ff += v != 0xFF;
    CHECK(not_ff == 0, "fresh device memory: %d of 64 bytes not 0xFF", not_ff);
    CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess,
          "HostToDevice refused");
    cudaFree(d);

    const int blocks = 3, threads = 64, bytes = 4096;
    int *bad;
    cudaMalloc((void **)&bad, blocks * threads * sizeof(int));
    QL_LAUNCH((blocks, threads, bytes, 0), k_dyn_poison)(bad, bytes);
    const std::vector<int> got = host_from(bad, blocks * threads);
    for (int b = 0; b < blocks; b++) {
        int n = 0;
        for (int t = 0; t < threads; t++) n += got[(size_t)(b * threads + t)];
        CHECK(n == 0, "block %d: %d bytes of dynamic smem not 0xFF at the start", b, n);
    }
    cudaFree(bad);
}

/* --- 7. the shuffled schedule -------------------------------------------------------------------
 */
/* Thread i reads its neighbour's slot with no barrier after the writes. The
 * emulator runs a block's threads first to last on one launch and last to
 * first on the next, so the read sees the poison on one and the neighbour's
 * value on the other: the GPU tests run every op twice and demand identical
 * bits, and this difference is what turns a missing __syncthreads into a
 * failure there. */
__global__ void k_race(int *out, int sync) {
    QL_DYN_SMEM(raw);
    int *sh = (int *)raw;
    const int i = threadIdx.x, n = blockDim.x;
    sh[i] = 1000 + i;
    if (sync) __syncthreads();
    out[i] = sh[(i + 1) % n];
}

/* Blocks that read what other blocks write: the result depends on which ran
 * first, as it would on a GPU. */
__global__ void k_block_race(int *flag, int *seen) {
    const unsigned b = blockIdx.x, n = gridDim.x;
    if (threadIdx.x == 0) {
        flag[b] = 1;
        seen[b] = flag[(b + 1) % n];
    }
}

static void test_schedule() {
    const int n = 64;
    int *d;
    cudaMalloc((void **)&d, n * sizeof(int));
    std::vector<int> run[2];
    for (int r = 0; r < 2; r++) {
        QL_LAUNCH((1, n, n * sizeof(int), 0), k_race)(d, 0);
        run[r] = host_from(d, n);
    }
    CHECK(run[0] != run[1], "a racy kernel gave the same results on consecutive launches");
    for (int r = 0; r < 2; r++) {
        QL_LAUNCH((1, n, n * sizeof(int), 0), k_race)(d, 1);
        run[r] = host_from(d, n);
    }
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += run[0][(size_t)i] != 1000 + (i + 1) % n || run[1][(size_t)i] != run[0][(size_t)i];
    CHECK(bad == 0, "with the barrier: %d wrong or unstable results", bad);
    /* Blocks run in a fresh order each launch, not in index order. */
    int *flag, *seen;
    cudaMalloc((void **)&flag, n * sizeof(int));
    cudaMalloc((void **)&seen, n * sizeof(int));
    for (int r = 0; r < 2; r++) {
        cudaMemsetAsync(flag, 0, n * sizeof(int), 0);
        QL_LAUNCH((n, 32, 0, 0), k_block_race)(flag, seen);
        run[r] = host_from(seen, n);
    }
    int first = 0; /* blocks that saw their successor's flag: ran after it */
    for (int i = 0; i < n; i++) first += run[0][(size_t)i];
    CHECK(run[0] != run[1] && first > 1 && first < n - 1,
          "blocks ran in the same order twice (%d of %d after their successor)", first, n);
    cudaFree(flag);
    cudaFree(seen);
    cudaFree(d);
}

int main() {
    test_reduction();
    test_shuffle();
    test_mma();
    test_deaths();
    test_launch_limits();
    test_copies_and_poison();
    test_schedule();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
