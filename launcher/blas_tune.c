/* OpenBLAS 0.3.21 (Debian 12) does not recognise some virtualised Xeons and
 * runs its SSE3 "Prescott" kernels there, about half the speed of its AVX2
 * "Haswell" ones on the same CPU. It chooses when the library is loaded, so
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
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
    if (setenv("OPENBLAS_CORETYPE", "Haswell", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slower kernels */
    unsetenv("OPENBLAS_CORETYPE");
}
