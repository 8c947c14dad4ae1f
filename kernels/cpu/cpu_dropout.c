/* LoRA dropout masks on the host (kernels/dropout.h). The generator is
 * counter-based, so one loop serves both CPU tables and OpenMP may split it
 * anywhere: every element's byte depends on (seed, index) only. */
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dropout.h"

ql_status ql_dropout_mask_cpu(uint64_t seed, uint64_t thresh, int64_t n, uint8_t *mask) {
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < n; e++) mask[e] = ql_dropout_keep(seed, thresh, e);
    return QL_OK;
}
