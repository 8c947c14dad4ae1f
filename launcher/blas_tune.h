#ifndef QL_LAUNCHER_BLAS_TUNE_H
#define QL_LAUNCHER_BLAS_TUNE_H

/* Restarts the process with OPENBLAS_CORETYPE=SkylakeX (AVX-512) or Haswell
 * (AVX2 and FMA) when OpenBLAS fell back to its SSE3 kernels on a CPU that
 * has those instructions. Returns normally when
 * nothing needs doing or the restart is not possible. */
void ql_blas_tune_or_reexec(char **argv);

#endif
