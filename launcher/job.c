#include "launcher/job.h"

#include <cblas.h>
#include <fcntl.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/commands.h"

/* Ranks that share a node share its cores: with OMP_NUM_THREADS unset, each
 * takes cores / ranks-on-the-node (at least 1). When the launcher bound the
 * rank to fewer cores than the node has (mpirun's --bind-to core, srun's
 * --cpu-bind), those cores are the rank's alone and all of them are used. */
static int share_threads(const ql_world *w) {
    if (getenv("OMP_NUM_THREADS") || w->local_size <= 1) return 0;
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
    int t = mine < online ? mine : mine / w->local_size;
    return t < 1 ? 1 : t;
}

int ql_job_start(ql_job *j) {
    memset(j, 0, sizeof *j);
    j->quiet_fds[0] = j->quiet_fds[1] = -1;
    j->size = 1;
    ql_status st = ql_world_detect(NULL, NULL, &j->world);
    if (st == QL_OK) st = ql_comm_open(&j->world, &j->comm);
    if (st != QL_OK) {
        /* No communicator: this rank speaks for itself. */
        if (j->world.size > 1 || j->world.launcher != QL_LAUNCH_SINGLETON)
            fprintf(stderr, "qlora: error: rank %d (%s): %s\n", j->world.rank, j->world.host,
                    ql_error_message());
        else
            ql_report(st);
        return QL_EXIT_ERROR;
    }
    j->world = *ql_comm_world(j->comm);
    j->rank = ql_comm_rank(j->comm);
    j->size = ql_comm_size(j->comm);
    j->threads = share_threads(&j->world);
    if (j->threads > 0) {
        omp_set_num_threads(j->threads);
        openblas_set_num_threads(j->threads);
    }
    return QL_EXIT_OK;
}

void ql_job_quiet_begin(ql_job *j) {
    if (j->rank == 0) return;
    fflush(stdout);
    fflush(stderr);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null < 0) return;
    j->quiet_fds[0] = dup(STDOUT_FILENO);
    j->quiet_fds[1] = dup(STDERR_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    close(null);
}

void ql_job_quiet_end(ql_job *j) {
    if (j->quiet_fds[0] < 0) return;
    fflush(stdout);
    fflush(stderr);
    dup2(j->quiet_fds[0], STDOUT_FILENO);
    dup2(j->quiet_fds[1], STDERR_FILENO);
    close(j->quiet_fds[0]);
    close(j->quiet_fds[1]);
    j->quiet_fds[0] = j->quiet_fds[1] = -1;
}

ql_status ql_job_agree(ql_job *j, ql_status local) {
    return j->comm ? ql_comm_agree(j->comm, local) : local;
}

int ql_job_report(ql_job *j, ql_status agreed) {
    if (agreed == QL_OK) return QL_EXIT_OK;
    if (j->size <= 1 || !j->comm) return ql_report(agreed);
    if (ql_comm_broken(j->comm)) {
        /* The ranks may not know: say it here, then take the job down. */
        fprintf(stderr, "qlora: error: rank %d (%s): %s\n", j->rank, j->world.host,
                ql_error_message());
        ql_comm_abort(j->comm, QL_EXIT_ERROR);
    }
    int from = ql_comm_failed_rank(j->comm);
    if (from < 0) /* a failure the ranks did not agree on: this rank's own */
        fprintf(stderr, "qlora: error: rank %d (%s): %s\n", j->rank, j->world.host,
                ql_error_message());
    else if (j->rank == 0 || j->rank == from)
        fprintf(stderr, "qlora: error: %s\n", ql_comm_agreed_message(j->comm));
    return QL_EXIT_ERROR;
}

int ql_job_end(ql_job *j, int rc) {
    fflush(stdout);
    fflush(stderr);
    if (j->comm && ql_comm_broken(j->comm)) ql_comm_abort(j->comm, rc ? rc : QL_EXIT_ERROR);
    ql_comm_close(j->comm);
    j->comm = NULL;
    return rc;
}
