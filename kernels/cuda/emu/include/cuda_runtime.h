/* CPU emulator of the CUDA subset kernels/cuda/ uses (see
 * kernels/cuda/emu/README.md). With this directory first on the include path
 * and QL_CUDA_EMU defined, the .cu files compile as C++17 and their kernels
 * run on the host: every thread of a block is a fiber, blocks run one after
 * another, and __syncthreads, warp shuffles, ldmatrix and mma.sync are
 * barriers between the fibers. It exists to check the kernels' indexing,
 * synchronisation and launch limits without a GPU; it says nothing about
 * speed, and its float results differ from a GPU's in the last bits (host
 * libm, a different mma summation order).
 *
 * The host runtime API is in cuda_runtime_api.h, which C code can include;
 * this header adds the device side (C++). Only what kernels/cuda/ needs is
 * here; anything else fails to compile, which is the point: a new intrinsic
 * must be emulated on purpose. */
#ifndef QL_EMU_CUDA_RUNTIME_H
#define QL_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <utility>

#include "cuda_runtime_api.h"

/* --- qualifiers ------------------------------------------------------------------ */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* One block runs at a time, so a function-static array is exactly the
 * block's shared memory. */
#define __shared__ static
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))

/* --- vector types ------------------------------------------------------------------ */
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    uint4 v = {x, y, z, w};
    return v;
}
static inline float4 make_float4(float x, float y, float z, float w) {
    float4 v = {x, y, z, w};
    return v;
}

/* --- runtime API: the host side is cuda_runtime_api.h (C) ---------------------------- */
/* Records the kernel's opt-in dynamic shared memory; a launch asking for
 * more than 48 KiB without it fails as on the device. */
cudaError_t ql_emu_func_set_smem(const void *kernel, int attr, int value);
template <class F>
static inline cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute a, int v) {
    return ql_emu_func_set_smem((const void *)kernel, (int)a, v);
}

/* --- the device side ------------------------------------------------------------------- */
struct ql_emu_thread {
    uint3 tid;
    int lane, warp;
    unsigned coll; /* warp collectives so far: picks the exchange buffer */
};
struct ql_emu_block {
    uint3 idx;
    dim3 dim, grid;
    unsigned char *dyn_smem;
};
extern thread_local ql_emu_thread *ql_emu_cur;
extern thread_local ql_emu_block ql_emu_blk;

#define threadIdx (ql_emu_cur->tid)
#define blockIdx (ql_emu_blk.idx)
#define blockDim (ql_emu_blk.dim)
#define gridDim (ql_emu_blk.grid)
#define warpSize 32

/* The dynamic shared memory of the running block (poisoned with 0xFF bytes at
 * the start of every block, so a read before a write shows up as NaN). */
#define QL_EMU_DYN_SMEM() (ql_emu_blk.dyn_smem)

void ql_emu_syncthreads(const char *file, int line);
#define __syncthreads() ql_emu_syncthreads(__FILE__, __LINE__)

/* Exchanges 8 bytes per lane within the warp: every lane of the warp must
 * call it from the same place. out receives lane `src`'s value. */
void ql_emu_warp_exchange(const char *file, int line, uint64_t mine, int src, uint64_t *out);
template <class T>
static inline T ql_emu_shfl_xor(const char *file, int line, unsigned mask, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    extern void ql_emu_check_mask(const char *, int, unsigned);
    ql_emu_check_mask(file, line, mask);
    uint64_t bits = 0, got = 0;
    memcpy(&bits, &v, sizeof v);
    ql_emu_warp_exchange(file, line, bits, ql_emu_cur->lane ^ lane_mask, &got);
    T r;
    memcpy(&r, &got, sizeof r);
    return r;
}
#define __shfl_xor_sync(mask, v, lane_mask)                                                        \
    ql_emu_shfl_xor(__FILE__, __LINE__, (mask), (v), (lane_mask))

/* ldmatrix.x4 (.trans) and mma.sync.m16n8k16 bf16 -> f32 as the PTX ISA
 * describes their fragments (kernels/cuda/mma.cuh). */
void ql_emu_ldmatrix_x4(const char *file, int line, uint32_t r[4], const void *row_addr, int trans);
void ql_emu_mma_bf16_16816(const char *file, int line, float d[4], const uint32_t a[4], uint32_t b0,
                           uint32_t b1);

template <class T> static inline T __ldg(const T *p) { return *p; }
static inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) {
    /* Fibers switch only at barriers: a read-modify-write is atomic. */
    unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

/* Correctly rounded arithmetic: the emulator is compiled with
 * -ffp-contract=off, so a*b is one rounding as __fmul_rn is. */
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* --- launches ---------------------------------------------------------------------------- */
/* Runs body() once per thread of every block of the grid, or records a
 * launch error (cudaGetLastError) when the configuration exceeds a Hopper
 * GPU's limits. */
typedef void (*ql_emu_body_fn)(void *ctx);
void ql_emu_run_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem,
                     ql_emu_body_fn body, void *ctx);

template <class... P> struct ql_emu_launch_t {
    void (*kernel)(P...);
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <class... A> void operator()(A &&...a) const {
        ql_emu_stream_land(stream); /* after the stream's earlier work */
        /* Arguments convert to the parameter types once, as a launch copies
         * them; every thread then receives its own copy. */
        std::tuple<P...> args(std::forward<A>(a)...);
        struct ctx_t {
            void (*k)(P...);
            std::tuple<P...> *args;
        } ctx = {kernel, &args};
        ql_emu_run_grid(
            name, (const void *)kernel, grid, block, smem,
            [](void *c) {
                ctx_t *x = (ctx_t *)c;
                std::apply(x->k, *x->args);
            },
            &ctx);
    }
};
template <class... P>
static inline ql_emu_launch_t<P...> ql_emu_launch(const char *name, void (*k)(P...), dim3 g, dim3 b,
                                                  size_t smem, cudaStream_t stream) {
    return ql_emu_launch_t<P...>{k, name, g, b, smem, stream};
}

#endif
