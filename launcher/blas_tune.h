#ifndef QL_LAUNCHER_BLAS_TUNE_H
#define QL_LAUNCHER_BLAS_TUNE_H

/* Restarts the process with OPENBLAS_CORETYPE=Haswell when OpenBLAS fell back
 * to its SSE3 kernels on a CPU that has AVX2 and FMA. Returns normally when
 * nothing needs doing or the restart is not possible. */
void ql_blas_tune_or_reexec(char **argv);

#endif
