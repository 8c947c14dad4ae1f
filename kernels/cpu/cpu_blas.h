/* OpenBLAS inside OpenMP: the fast kernels split work into tiles whose shape
 * depends only on the problem size, and run one single-threaded sgemm per
 * tile. That keeps results independent of the thread count (a threaded sgemm
 * would choose its own partition) and keeps OpenBLAS' pthread pool from
 * oversubscribing inside an OpenMP region. The caller's OpenBLAS thread
 * setting is restored afterwards, so plain sgemm elsewhere is unaffected. */
#ifndef QL_CPU_BLAS_H
#define QL_CPU_BLAS_H

#include <cblas.h>

static inline int ql_blas_serial_begin(void) {
    int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
}

static inline void ql_blas_serial_end(int saved) {
    if (saved != 1) openblas_set_num_threads(saved);
}

static inline int64_t ql_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ql_ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

#endif
