/* LoRA dropout masks on the host (kernels/dropout.h). The generator is
 * counter-based, so one loop serves both CPU tables and OpenMP may split it
 * anywhere: every element's byte depends on (seed, index) only. */
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dropout.h"

ql_status ql_dropout_mask_cpu(uint64_t seed, uint64_t thresh, int64_t n, uint8_t *mask) {
    const int64_t pairs = n / 2;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < pairs; j++) {
        const uint64_t u = ql_dropout_draw(seed, (uint64_t)j);
        mask[2 * j] = ql_dropout_keep_half(u, 0, thresh);
        mask[2 * j + 1] = ql_dropout_keep_half(u, 1, thresh);
    }
    if (n & 1) mask[n - 1] = ql_dropout_keep(seed, thresh, n - 1);
    return QL_OK;
}
