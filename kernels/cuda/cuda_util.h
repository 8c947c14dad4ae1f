/* Shared by the .cu files: the one macro that turns a CUDA error into a
 * ql_status. Not for C code (it needs cuda_runtime.h). */
#ifndef QL_CUDA_UTIL_H
#define QL_CUDA_UTIL_H

#include <cuda_runtime.h>

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
