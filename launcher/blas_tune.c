/* OpenBLAS 0.3.21 (Debian 12) does not recognise some virtualised Xeons and
 * newer ones (Emerald Rapids, model 207) and runs its SSE3 "Prescott"
 * kernels there: on a 2-core Emerald Rapids VM a 1024³ sgemm ran at 30
 * GFLOP/s with them, 118 with the AVX2 "Haswell" ones and 200 with the
 * AVX-512 "SkylakeX" ones. It chooses when the library is loaded, so
 * the only remedy is to set OPENBLAS_CORETYPE and start the program again,
 * before anything else (MPI included) has begun. A user's own
 * OPENBLAS_CORETYPE is always respected. */
#include "launcher/blas_tune.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ql_blas_tune_or_reexec(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    if (strcmp(openblas_get_corename(), "Prescott") != 0) return;
    const char *core = NULL;
    /* What OpenBLAS' SkylakeX kernels use; libgcc also checks the OS saves
     * the AVX-512 registers. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slower kernels */
    unsetenv("OPENBLAS_CORETYPE");
}
