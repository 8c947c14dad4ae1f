/* Where this process sits in the job: global rank and size, local rank and
 * size on its node, the node's index and host name, and who launched it.
 * Read from the environment alone (before MPI starts), so that every rank can
 * choose its GPU and name itself in messages from the first line on. */
#ifndef QL_DIST_WORLD_H
#define QL_DIST_WORLD_H

#include "core/status.h"

typedef enum ql_launcher {
    QL_LAUNCH_SINGLETON, /* no launcher: rank 0 of 1 */
    QL_LAUNCH_MPIRUN,    /* Open MPI's mpirun/mpiexec (OMPI_COMM_WORLD_*) */
    QL_LAUNCH_SRUN,      /* Slurm's srun (SLURM_PROCID, SLURM_LOCALID, ...) */
    QL_LAUNCH_PMIX       /* another PMIx launcher (PMIX_RANK) */
} ql_launcher;

#define QL_HOST_MAX 256

typedef struct ql_world {
    ql_launcher launcher;
    int rank, size;
    int local_rank, local_size;
    int node, n_nodes; /* -1 when the launcher does not say */
    char host[QL_HOST_MAX];
} ql_world;

/* `get` looks a variable up (getenv when NULL; tests pass their own table).
 * Inconsistent or malformed variables are QL_EINVAL naming the variable. */
typedef const char *(*ql_getenv_fn)(const char *name, void *ctx);
ql_status ql_world_detect(ql_getenv_fn get, void *ctx, ql_world *w);

/* "singleton", "mpirun", "srun", "pmix" */
const char *ql_launcher_name(ql_launcher l);

#endif
