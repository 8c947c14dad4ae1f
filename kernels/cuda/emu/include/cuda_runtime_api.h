/* CPU emulator of the CUDA subset kernels/cuda/ and dist/comm_nccl.c use (see
 * kernels/cuda/emu/README.md): the host runtime API, in C as the toolkit's
 * cuda_runtime_api.h is, so that C code (dist/comm_nccl.c) can include it.
 * cuda_runtime.h adds the device side, which is C++.
 *
 * Names and values are NVIDIA's, so that a value that leaks into a log reads
 * the same as on a GPU. Only what the project calls is declared: anything
 * else fails to compile, and a new call must be emulated on purpose. */
#ifndef QL_EMU_CUDA_RUNTIME_API_H
#define QL_EMU_CUDA_RUNTIME_API_H

#include <stddef.h>

#include "library_types.h"

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
} cudaError_t;

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
} cudaFuncAttribute;

/* cudaStreamCreateWithFlags */
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
/* cudaEventCreateWithFlags */
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

typedef struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
    int l2CacheSize;
    size_t sharedMemPerBlockOptin;
    int maxThreadsPerBlock;
} cudaDeviceProp;

#ifdef __cplusplus
extern "C" {
#endif

/* QL_EMU_DEVICES devices (default 1); the current device is the calling
 * thread's, as in CUDA, and starts at 0. */
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int byte, size_t bytes, cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
/* Streams: work runs when it is enqueued, so a stream is always complete,
 * except that the emulated NCCL marks one pending (below). */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);

/* --- the emulator's own, for emu_nccl.cpp ---------------------------------- */
/* The device whose allocation holds [p, p + bytes), or -1 when no single
 * cudaMalloc allocation does (host memory, a freed or overrun buffer). */
int ql_emu_device_of(const void *p, size_t bytes);
/* 1 for the null stream and for streams created and not yet destroyed. */
int ql_emu_stream_valid(cudaStream_t s);
/* The next cudaStreamQuery(s) answers cudaErrorNotReady once, as a GPU's
 * stream does while a collective is still running on it: callers that poll
 * take that path too. cudaStreamSynchronize clears it. */
void ql_emu_stream_mark_pending(cudaStream_t s);
/* bytes of src land at dst when the program next synchronises with s: a
 * cudaStreamSynchronize, a cudaStreamQuery that answers cudaSuccess, a
 * cudaDeviceSynchronize, or a wait for (cudaStreamWaitEvent,
 * cudaEventSynchronize, cudaEventQuery) an event recorded on s after this
 * call; also before s's next kernel, copy, matmul, or a collective that
 * touches them, in order. The null stream: at once. src is copied.
 * [in, in + in_bytes) is what the operation (named `what`) reads: if it or
 * dst changes before the bytes land, other work touched them while the
 * operation could still be running, and the program stops with a report. */
void ql_emu_stream_defer(cudaStream_t s, const char *what, void *dst, const void *src, size_t bytes,
                         const void *in, size_t in_bytes);
/* Host code never touches device memory on a GPU (it would fault), so here
 * device allocations are mapped without access while the program's own
 * code runs. Inside the emulator's calls (a kernel, a copy, a collective,
 * a cuBLASLt matmul), bracketed by _open/_close (nested, per thread), an
 * allocation opens on its first touch and closes at the outermost _close.
 * _open_range opens [p, p + bytes) at once, for memory a system call or
 * MPI will access (the kernel does not fault on behalf of a syscall; it
 * fails it). A host read or write of device memory outside them stops the
 * program with the address and the allocation it hit. QL_EMU_HOST_GUARD=0
 * turns this off. */
void ql_emu_device_open(void);
void ql_emu_device_open_range(const void *p, size_t bytes);
void ql_emu_device_close(void);
/* Every deferred write of s lands now; for the legacy stream (NULL), those
 * of every blocking stream (created without cudaStreamNonBlocking), which
 * the legacy stream's work waits for. */
void ql_emu_stream_land(cudaStream_t s);
/* s's deferred writes land, in order, up to the last one that touches
 * [p, p + bytes): what a later operation of s that reads or writes those
 * bytes must see. */
void ql_emu_stream_land_touching(cudaStream_t s, const void *p, size_t bytes);
/* One more cublasLtMatmul for ql_emu_get_counts (emu_counts.h). */
void ql_emu_count_matmul(void);

#ifdef __cplusplus
}
/* ql_emu_device_open/close for the length of a scope. */
struct ql_emu_device_scope {
    ql_emu_device_scope() { ql_emu_device_open(); }
    ~ql_emu_device_scope() { ql_emu_device_close(); }
    ql_emu_device_scope(const ql_emu_device_scope &) = delete;
    ql_emu_device_scope &operator=(const ql_emu_device_scope &) = delete;
};
#endif

#endif
