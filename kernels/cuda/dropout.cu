/* LoRA dropout masks on the device (kernels/dropout.h): the same bytes as the
 * CPU backends, drawn where the LoRA kernels read them, so a step with
 * dropout makes no host round trip for its masks. Each thread makes eight
 * elements (four draws) and stores them as one 64-bit word. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/dropout.h"

#define DROPOUT_THREADS 256

__global__ void k_dropout_mask(uint64_t seed, uint64_t thresh, int64_t n, uint8_t *mask,
                               int aligned) {
    const int64_t groups = (n + 7) / 8;
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups;
         g += (int64_t)gridDim.x * blockDim.x) {
        const int64_t e0 = g * 8;
        if (aligned && e0 + 8 <= n) {
            uint64_t word = 0;
            for (int i = 0; i < 8; i += 2) { /* e0 is even: one draw per pair */
                const uint64_t u = ql_dropout_draw(seed, (uint64_t)(e0 + i) >> 1);
                word |= (uint64_t)ql_dropout_keep_half(u, 0, thresh) << (8 * i);
                word |= (uint64_t)ql_dropout_keep_half(u, 1, thresh) << (8 * i + 8);
            }
            *(uint64_t *)(mask + e0) = word; /* little-endian: byte i is element e0 + i */
        } else {
            for (int64_t e = e0; e < n && e < e0 + 8; e++)
                mask[e] = ql_dropout_keep(seed, thresh, e);
        }
    }
}

extern "C" ql_status ql_dropout_mask_cuda(uint64_t seed, uint64_t thresh, int64_t n,
                                          uint8_t *mask) {
    if (n <= 0) return QL_OK;
    const int aligned = ((uintptr_t)mask & 7) == 0;
    QL_LAUNCH((ql_cuda_grid((n + 7) / 8, DROPOUT_THREADS), DROPOUT_THREADS, 0, ql_cuda_stream()),
              k_dropout_mask)
    (seed, thresh, n, mask, aligned);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
