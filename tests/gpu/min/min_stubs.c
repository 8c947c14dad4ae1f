/* What the nvcc-only build of tests/gpu/run.sh links in place of the parts
 * of qlora it does not compile (file readers, MPI, the OpenBLAS backend):
 * the GPU training programs use one process, generated weights and the
 * cpu-ref backend, so none of these is reached; each says so if it is. */
#include <stdio.h>
#include <stdlib.h>

#include "dist/comm.h"
#include "kernels/backend.h"
#include "model/source.h"

static void unreachable(const char *what) {
    fprintf(stderr, "nvcc-only build: %s is not part of this build\n", what);
    abort();
}

/* ql_llama_options_default names the "cpu" backend; here it is cpu-ref. */
const ql_backend *ql_backend_cpu(void) { return ql_backend_cpu_ref(); }

ql_status ql_model_source_open(const char *path, ql_model_source *s) {
    (void)s;
    return ql_error(QL_EUNSUPPORTED, "%s: model files are not read in the nvcc-only build", path);
}

void ql_model_source_close(ql_model_source *s) {
    if (s && s->close) s->close(s);
}

/* Single process: the optimizer calls these only with a communicator. */
int ql_comm_size(const ql_comm *c) { return (void)c, 1; }
int ql_comm_rank(const ql_comm *c) { return (void)c, 0; }
void ql_dist_slice(int64_t n, int size, int rank, int64_t *off, int64_t *len) {
    (void)size, (void)rank;
    *off = 0;
    *len = n;
}
ql_status ql_comm_reduce_scatter_sum(ql_comm *c, const void *in, void *out, int64_t n,
                                     ql_dtype dt) {
    (void)c, (void)in, (void)out, (void)n, (void)dt;
    unreachable("ql_comm_reduce_scatter_sum");
    return QL_EUNSUPPORTED;
}
ql_status ql_comm_allgather(ql_comm *c, const void *in, void *out, int64_t n, ql_dtype dt) {
    (void)c, (void)in, (void)out, (void)n, (void)dt;
    unreachable("ql_comm_allgather");
    return QL_EUNSUPPORTED;
}
int ql_comm_can_overlap(const ql_comm *c) { return (void)c, 0; }
ql_status ql_comm_reduce_scatter_sum_start(ql_comm *c, const void *in, void *out, int64_t n,
                                           int64_t lo, int64_t hi, ql_dtype dt) {
    (void)c, (void)in, (void)out, (void)n, (void)lo, (void)hi, (void)dt;
    unreachable("ql_comm_reduce_scatter_sum_start");
    return QL_EUNSUPPORTED;
}
ql_status ql_comm_allgather_start(ql_comm *c, const void *in, void *out, int64_t n, int64_t lo,
                                  int64_t hi, ql_dtype dt, int *part) {
    (void)c, (void)in, (void)out, (void)n, (void)lo, (void)hi, (void)dt, (void)part;
    unreachable("ql_comm_allgather_start");
    return QL_EUNSUPPORTED;
}
ql_status ql_comm_join(ql_comm *c, int part) { return (void)c, (void)part, QL_OK; }
ql_status ql_comm_wait(ql_comm *c) { return (void)c, QL_OK; }
ql_status ql_comm_allgather_bytes(ql_comm *c, const void *in, void *out, int64_t bytes) {
    (void)c, (void)in, (void)out, (void)bytes;
    unreachable("ql_comm_allgather_bytes");
    return QL_EUNSUPPORTED;
}
