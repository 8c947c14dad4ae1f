/* CPU emulator of the CUDA subset kernels/cuda/ uses (see
 * kernels/cuda/emu/README.md): the data-type enum shared by the runtime and
 * cuBLASLt headers. Values are NVIDIA's (library_types.h), so a value that
 * leaks into a log reads the same as on a GPU. */
#ifndef QL_EMU_LIBRARY_TYPES_H
#define QL_EMU_LIBRARY_TYPES_H

typedef enum cudaDataType_t {
    CUDA_R_16F = 2,
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16BF = 14,
} cudaDataType_t;
typedef cudaDataType_t cudaDataType;

#endif
