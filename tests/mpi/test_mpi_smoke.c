/* The MPI test harness works: ranks start under mpiexec (as root, over-
 * subscribed) and an all-reduce of values chosen to sum exactly agrees on
 * every rank. Later dist/ tests build on this label. */
#include <mpi.h>
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECK(size >= 2);
    /* Element i of rank r is (r + 1) * 2^-(i % 20): small powers of two scaled
     * by integers, so every partial sum is exact in float32 in any order. */
    enum { N = 4096 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)(rank + 1) * ldexpf(1.0f, -(i % 20));
    MPI_Allreduce(MPI_IN_PLACE, x, N, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    float tri = (float)(size * (size + 1) / 2);
    int exact = 1;
    for (int i = 0; i < N; i++) exact &= x[i] == tri * ldexpf(1.0f, -(i % 20));
    CHECK(exact);
    int failed = check_failed_;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    if (rank != 0) return failed ? 1 : 0;
    return CHECK_DONE() || failed;
}
