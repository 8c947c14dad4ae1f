/* ql_world_detect: who launched this process and where it sits, from the
 * environment alone (docs/distributed.md, "World detection").
 *
 * Order of precedence, first match wins:
 *  1. Open MPI's mpirun/mpiexec: OMPI_COMM_WORLD_RANK and _SIZE, _LOCAL_RANK,
 *     _LOCAL_SIZE; OMPI_MCA_orte_num_nodes (Open MPI 4) for the node count.
 *     Checked first because mpirun inside a Slurm allocation passes the batch
 *     shell's SLURM_* variables on to every rank.
 *  2. Slurm's srun: SLURM_PROCID, SLURM_NTASKS (or SLURM_NPROCS),
 *     SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NUM_NODES (or SLURM_NNODES) and
 *     the tasks per node from SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE
 *     ("2(x3),1") or SLURM_NTASKS_PER_NODE. Only inside a job step
 *     (SLURM_STEP_ID or SLURM_STEPID set): a bare sbatch shell is one process.
 *  3. Another PMIx launcher: PMIX_RANK alone; the size and the local layout
 *     come from MPI once it starts (size and local_size 0 until then).
 *  4. Otherwise a singleton: rank 0 of 1. */
#include "dist/world.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_get(ql_getenv_fn get, void *ctx, const char *name) {
    const char *v = get ? get(name, ctx) : getenv(name);
    return v && *v ? v : NULL;
}

/* A decimal integer in [lo, INT_MAX], the whole string. */
static ql_status parse_int(const char *name, const char *v, int lo, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0' || x < lo || x > INT_MAX)
        return ql_error(QL_EINVAL, "environment variable %s = '%s': expected an integer >= %d",
                        name, v, lo);
    *out = (int)x;
    return QL_OK;
}

/* The first of `names` that is set, parsed; QL_ENOTFOUND (no message) if none. */
static ql_status get_int(ql_getenv_fn get, void *ctx, const char *const *names, int lo, int *out,
                         const char **which) {
    for (; *names; names++) {
        const char *v = env_get(get, ctx, *names);
        if (!v) continue;
        if (which) *which = *names;
        return parse_int(*names, v, lo, out);
    }
    return QL_ENOTFOUND;
}

static ql_status need_int(ql_getenv_fn get, void *ctx, const char *const *names, int lo, int *out,
                          const char *launcher) {
    ql_status st = get_int(get, ctx, names, lo, out, NULL);
    if (st == QL_ENOTFOUND)
        return ql_error(QL_EINVAL, "%s set, but %s is missing from the environment", launcher,
                        names[0]);
    return st;
}

/* Slurm's compressed tasks-per-node list, "2(x3),1,4": the count of node
 * `node`. */
static ql_status tasks_on_node(const char *name, const char *v, int node, int *out) {
    const char *p = v;
    int at = 0;
    while (*p) {
        char *end;
        errno = 0;
        long count = strtol(p, &end, 10), reps = 1;
        if (errno || end == p || count < 1 || count > INT_MAX) goto bad;
        p = end;
        if (*p == '(') {
            if (p[1] != 'x') goto bad;
            reps = strtol(p + 2, &end, 10);
            if (end == p + 2 || reps < 1 || reps > INT_MAX - at || *end != ')') goto bad;
            p = end + 1;
        }
        if (node < at + reps) {
            *out = (int)count;
            return QL_OK;
        }
        at += (int)reps;
        if (*p == ',')
            p++;
        else if (*p)
            goto bad;
    }
    return ql_error(QL_EINVAL, "environment variable %s = '%s' lists %d nodes, not node %d", name,
                    v, at, node);
bad:
    return ql_error(QL_EINVAL,
                    "environment variable %s = '%s': expected Slurm's tasks-per-node list "
                    "such as '2(x3),1'",
                    name, v);
}

static ql_status check_ranks(const ql_world *w, const char *rank_var, const char *size_var,
                             const char *lrank_var, const char *lsize_var) {
    if (w->size > 0 && w->rank >= w->size)
        return ql_error(QL_EINVAL, "environment: %s = %d is not below %s = %d", rank_var, w->rank,
                        size_var, w->size);
    if (w->local_size > 0 && w->local_rank >= w->local_size)
        return ql_error(QL_EINVAL, "environment: %s = %d is not below %s = %d", lrank_var,
                        w->local_rank, lsize_var, w->local_size);
    if (w->size > 0 && w->local_size > w->size)
        return ql_error(QL_EINVAL, "environment: %s = %d is more than %s = %d", lsize_var,
                        w->local_size, size_var, w->size);
    if (w->n_nodes > 0 && w->node >= w->n_nodes)
        return ql_error(QL_EINVAL, "environment: node %d is not below the node count %d", w->node,
                        w->n_nodes);
    return QL_OK;
}

static ql_status detect_ompi(ql_getenv_fn get, void *ctx, ql_world *w) {
    static const char *const rank[] = {"OMPI_COMM_WORLD_RANK", NULL};
    static const char *const size[] = {"OMPI_COMM_WORLD_SIZE", NULL};
    static const char *const lrank[] = {"OMPI_COMM_WORLD_LOCAL_RANK", NULL};
    static const char *const lsize[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", NULL};
    static const char *const nodes[] = {"OMPI_MCA_orte_num_nodes", NULL};
    const char *who = "OMPI_COMM_WORLD_RANK (Open MPI's mpirun)";
    w->launcher = QL_LAUNCH_MPIRUN;
    QL_TRY(need_int(get, ctx, rank, 0, &w->rank, who));
    QL_TRY(need_int(get, ctx, size, 1, &w->size, who));
    QL_TRY(need_int(get, ctx, lrank, 0, &w->local_rank, who));
    QL_TRY(need_int(get, ctx, lsize, 1, &w->local_size, who));
    ql_status st = get_int(get, ctx, nodes, 1, &w->n_nodes, NULL);
    if (st == QL_ENOTFOUND)
        w->n_nodes = -1;
    else if (st != QL_OK)
        return st;
    /* Open MPI does not export the node's index; one node is node 0, and the
     * communicator works the rest out from the host names (dist/comm.h). */
    if (w->local_size == w->size) w->n_nodes = 1; /* every rank is on this node */
    if (w->n_nodes == 1) w->node = 0;
    return check_ranks(w, rank[0], size[0], lrank[0], lsize[0]);
}

static ql_status detect_slurm(ql_getenv_fn get, void *ctx, ql_world *w) {
    static const char *const rank[] = {"SLURM_PROCID", NULL};
    static const char *const size[] = {"SLURM_NTASKS", "SLURM_NPROCS", NULL};
    static const char *const lrank[] = {"SLURM_LOCALID", NULL};
    static const char *const node[] = {"SLURM_NODEID", NULL};
    static const char *const nodes[] = {"SLURM_STEP_NUM_NODES", "SLURM_NNODES",
                                        "SLURM_JOB_NUM_NODES", NULL};
    static const char *const per_node[] = {"SLURM_NTASKS_PER_NODE", NULL};
    const char *who = "SLURM_STEP_ID (a Slurm job step, srun)";
    w->launcher = QL_LAUNCH_SRUN;
    QL_TRY(need_int(get, ctx, rank, 0, &w->rank, who));
    QL_TRY(need_int(get, ctx, size, 1, &w->size, who));
    QL_TRY(need_int(get, ctx, lrank, 0, &w->local_rank, who));
    QL_TRY(need_int(get, ctx, node, 0, &w->node, who));
    ql_status st = get_int(get, ctx, nodes, 1, &w->n_nodes, NULL);
    if (st == QL_ENOTFOUND)
        w->n_nodes = -1;
    else if (st != QL_OK)
        return st;
    /* The tasks on this node: the step's own list first (an srun inside a
     * bigger allocation), then the job's, then --ntasks-per-node. */
    static const char *const lists[] = {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"};
    const char *lsize_var = NULL;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0] && !lsize_var; i++) {
        const char *v = env_get(get, ctx, lists[i]);
        if (!v) continue;
        lsize_var = lists[i];
        QL_TRY(tasks_on_node(lists[i], v, w->node, &w->local_size));
    }
    if (!lsize_var) {
        st = get_int(get, ctx, per_node, 1, &w->local_size, &lsize_var);
        if (st == QL_ENOTFOUND)
            return ql_error(QL_EINVAL,
                            "%s set, but none of SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE, "
                            "SLURM_NTASKS_PER_NODE says how many tasks run on this node",
                            who);
        if (st != QL_OK) return st;
    }
    return check_ranks(w, rank[0], size[0], lrank[0], lsize_var);
}

ql_status ql_world_detect(ql_getenv_fn get, void *ctx, ql_world *w) {
    memset(w, 0, sizeof *w);
    w->launcher = QL_LAUNCH_SINGLETON;
    w->size = w->local_size = w->n_nodes = 1;
    w->node = 0;
    if (gethostname(w->host, sizeof w->host - 1) != 0 || !w->host[0])
        snprintf(w->host, sizeof w->host, "unknown-host");
    ql_world found = *w;
    found.node = found.n_nodes = -1;
    ql_status st = QL_OK;
    if (env_get(get, ctx, "OMPI_COMM_WORLD_RANK") || env_get(get, ctx, "OMPI_COMM_WORLD_SIZE")) {
        st = detect_ompi(get, ctx, &found);
    } else if (env_get(get, ctx, "SLURM_STEP_ID") || env_get(get, ctx, "SLURM_STEPID")) {
        st = detect_slurm(get, ctx, &found);
    } else if (env_get(get, ctx, "PMIX_RANK")) {
        static const char *const rank[] = {"PMIX_RANK", NULL};
        found.launcher = QL_LAUNCH_PMIX;
        st = get_int(get, ctx, rank, 0, &found.rank, NULL);
        /* Size and layout unknown until MPI starts (dist/comm.h fills them). */
        found.size = found.local_size = 0;
        found.local_rank = -1;
    } else {
        return QL_OK;
    }
    if (st != QL_OK) return st;
    *w = found;
    return QL_OK;
}

const char *ql_launcher_name(ql_launcher l) {
    switch (l) {
    case QL_LAUNCH_SINGLETON: return "singleton";
    case QL_LAUNCH_MPIRUN: return "mpirun";
    case QL_LAUNCH_SRUN: return "srun";
    case QL_LAUNCH_PMIX: return "pmix";
    }
    return "unknown";
}
