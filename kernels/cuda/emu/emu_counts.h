/* What the emulated device was asked to do, counted since the program
 * started: plain C, so that C tests linked against the emulated "cuda"
 * backend can check that a training step, once warm, neither allocates nor
 * makes the host wait for the device more than it must. A real GPU has no
 * such counters; tests read them only under QL_CUDA_EMU.
 *
 * QL_EMU_TRACE_WAITS=1 prints every host wait as it happens, with the
 * call's stack (resolve the addresses with addr2line -f -e <program>). */
#ifndef QL_EMU_COUNTS_H
#define QL_EMU_COUNTS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ql_emu_counts {
    long long launches;   /* kernels */
    long long matmuls;    /* cublasLtMatmul calls */
    long long host_waits; /* calls that return only when the device caught
                             up: cudaMemcpy to or from the host,
                             cudaDeviceSynchronize, cudaStreamSynchronize,
                             cudaEventSynchronize, cudaFree */
    long long allocs;     /* cudaMalloc */
    long long frees;      /* cudaFree of a live buffer */
} ql_emu_counts;

void ql_emu_get_counts(ql_emu_counts *out);

#ifdef __cplusplus
}
#endif

#endif
