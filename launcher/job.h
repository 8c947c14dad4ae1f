/* The job around a multi-rank command (docs/distributed.md): where this
 * process sits (dist/world.h), the communicator (dist/comm.h), threads per
 * rank, and how errors end the job.
 *
 * Every rank runs the command. Work that can fail is followed by an agree
 * (ql_comm_agree), so one rank's failure ends every rank with exit status 1
 * and the same message, "rank R (HOST): ...", printed by rank 0 and by the
 * failing rank (a singleton prints it as before, without the prefix). A
 * transport failure (MPI/NCCL) or a stuck collective ends the job through
 * ql_comm_abort instead. */
#ifndef QL_LAUNCHER_JOB_H
#define QL_LAUNCHER_JOB_H

#include "core/status.h"
#include "dist/comm.h"

typedef struct ql_job {
    ql_world world;
    ql_comm *comm;
    int rank, size;
    int threads; /* OpenMP threads per rank (0: left to the environment) */
    int quiet_fds[2];
} ql_job;

/* Detects the world, opens the communicator, and (when OMP_NUM_THREADS is
 * unset and several ranks share a node) gives each rank its share of the
 * node's cores. On failure prints the message (with rank and host) and
 * returns the exit code; QL_EXIT_OK (0) on success. */
int ql_job_start(ql_job *j);

/* Ranks other than 0 send stdout/stderr to /dev/null between quiet_begin
 * and quiet_end (for output every rank would print the same, such as the
 * configuration's warnings and errors). */
void ql_job_quiet_begin(ql_job *j);
void ql_job_quiet_end(ql_job *j);

/* All ranks: the agreed status of `local` (one process: local). */
ql_status ql_job_agree(ql_job *j, ql_status local);

/* The exit code for an agreed status, printing its message on rank 0 and on
 * the rank it came from. */
int ql_job_report(ql_job *j, ql_status agreed);

/* Closes the communicator and returns rc, or, after a transport failure,
 * ends every rank (ql_comm_abort) with rc. */
int ql_job_end(ql_job *j, int rc);

#endif
