/* Shared by the .cu files: the one macro that turns a CUDA error into a
 * ql_status. Not for C code (it needs cuda_runtime.h). */
#ifndef QL_CUDA_UTIL_H
#define QL_CUDA_UTIL_H

#include <cuda_runtime.h>

/* Kernel launches and dynamic shared memory go through these macros so that
 * the same source also runs in the CPU emulator (kernels/cuda/emu/, built
 * with QL_CUDA_EMU): QL_LAUNCH((grid, block, smem, stream), kernel)(args). */
#define QL_UNPAREN(...) __VA_ARGS__
#ifdef QL_CUDA_EMU
#define QL_LAUNCH(cfg, ...) ql_emu_launch(#__VA_ARGS__, __VA_ARGS__, QL_UNPAREN cfg)
#define QL_DYN_SMEM(name) unsigned char *const name = QL_EMU_DYN_SMEM()
#else
#define QL_LAUNCH(cfg, ...) __VA_ARGS__<<<QL_UNPAREN cfg>>>
#define QL_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

extern "C" {
#include "core/status.h"
}

/* Evaluates a CUDA runtime call; on failure records "<call> failed at
 * file:line: <cudaGetErrorName>: <cudaGetErrorString>" and returns
 * QL_EBACKEND from the enclosing function. A non-sticky error is cleared so a
 * later, unrelated check does not report it again. */
#define QL_CUDA_TRY(call)                                                                          \
    do {                                                                                           \
        cudaError_t ql_cuda_e_ = (call);                                                           \
        if (ql_cuda_e_ != cudaSuccess) {                                                           \
            (void)cudaGetLastError();                                                              \
            return ql_error(QL_EBACKEND, "CUDA: %s failed at %s:%d: %s: %s", #call, __FILE__,      \
                            __LINE__, cudaGetErrorName(ql_cuda_e_),                                \
                            cudaGetErrorString(ql_cuda_e_));                                       \
        }                                                                                          \
    } while (0)

#endif
