/* dist/world.h from fake environments: Open MPI's mpirun (alone and inside
 * a Slurm allocation), Slurm's srun (compressed tasks-per-node lists,
 * --ntasks-per-node), a bare sbatch shell, another PMIx launcher, none; and
 * malformed or inconsistent values, each an error naming its variable.
 * Also ql_dist_slice, the QL_FAULT_INJECT parser, the watchdog, and the
 * message for a global batch the ranks cannot split. The variable names and
 * formats are those the launchers document (Open MPI 4.1 mpirun(1) "Exported
 * environment variables"; Slurm srun(1) "OUTPUT ENVIRONMENT VARIABLES"). */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "dist/comm.h"
#include "dist/fault.h"
#include "dist/watchdog.h"
#include "dist/world.h"
#include "train/trainer.h"

/* A NULL-terminated list of "NAME=value" strings. */
static const char *lookup(const char *name, void *ctx) {
    const char *const *env = ctx;
    size_t n = strlen(name);
    for (; *env; env++)
        if (!strncmp(*env, name, n) && (*env)[n] == '=') return *env + n + 1;
    return NULL;
}

static ql_status detect(const char *const *env, ql_world *w) {
    return ql_world_detect(lookup, (void *)env, w);
}

static int message_has(const char *s) { return strstr(ql_error_message(), s) != NULL; }

static void test_singleton(void) {
    static const char *const env[] = {"HOME=/root", "PATH=/usr/bin", NULL};
    ql_world w;
    CHECK(detect(env, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_SINGLETON && w.rank == 0 && w.size == 1);
    CHECK(w.local_rank == 0 && w.local_size == 1 && w.node == 0 && w.n_nodes == 1);
    CHECK(w.host[0] != '\0');
    CHECK(!strcmp(ql_launcher_name(w.launcher), "singleton"));
}

static void test_mpirun(void) {
    /* As mpirun -np 4 exports them for rank 2 (OMPI_COMM_WORLD_NODE_RANK is
     * the rank among this node's processes of every job, not the node). */
    static const char *const one_node[] = {"OMPI_COMM_WORLD_RANK=2",
                                           "OMPI_COMM_WORLD_SIZE=4",
                                           "OMPI_COMM_WORLD_LOCAL_RANK=2",
                                           "OMPI_COMM_WORLD_LOCAL_SIZE=4",
                                           "OMPI_COMM_WORLD_NODE_RANK=2",
                                           "OMPI_MCA_orte_num_nodes=1",
                                           "PMIX_RANK=2",
                                           NULL};
    ql_world w;
    CHECK(detect(one_node, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_MPIRUN && !strcmp(ql_launcher_name(w.launcher), "mpirun"));
    CHECK(w.rank == 2 && w.size == 4 && w.local_rank == 2 && w.local_size == 4);
    CHECK(w.node == 0 && w.n_nodes == 1);

    /* Two nodes of 4: Open MPI does not say which node (the communicator
     * works it out from the host names). */
    static const char *const two_nodes[] = {
        "OMPI_COMM_WORLD_RANK=5",       "OMPI_COMM_WORLD_SIZE=8",    "OMPI_COMM_WORLD_LOCAL_RANK=1",
        "OMPI_COMM_WORLD_LOCAL_SIZE=4", "OMPI_MCA_orte_num_nodes=2", NULL};
    CHECK(detect(two_nodes, &w) == QL_OK);
    CHECK(w.rank == 5 && w.size == 8 && w.local_rank == 1 && w.local_size == 4);
    CHECK(w.node == -1 && w.n_nodes == 2);

    /* mpirun inside an sbatch allocation: the batch shell's SLURM_* (and even
     * a step id) reach every rank; Open MPI's variables win. */
    static const char *const in_sbatch[] = {"SLURM_JOB_ID=77",
                                            "SLURM_PROCID=0",
                                            "SLURM_NTASKS=8",
                                            "SLURM_LOCALID=0",
                                            "SLURM_NODEID=0",
                                            "SLURM_TASKS_PER_NODE=8",
                                            "SLURM_STEP_ID=0",
                                            "OMPI_COMM_WORLD_RANK=3",
                                            "OMPI_COMM_WORLD_SIZE=4",
                                            "OMPI_COMM_WORLD_LOCAL_RANK=3",
                                            "OMPI_COMM_WORLD_LOCAL_SIZE=4",
                                            NULL};
    CHECK(detect(in_sbatch, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_MPIRUN && w.rank == 3 && w.size == 4);
}

static void test_srun(void) {
    /* srun -N 3 -n 7 with tasks 3,2,2 ("3,2(x2)"): task 4 is on node 1. */
    static const char *const env[] = {"SLURM_JOB_ID=77",
                                      "SLURM_STEP_ID=0",
                                      "SLURM_PROCID=4",
                                      "SLURM_NTASKS=7",
                                      "SLURM_LOCALID=1",
                                      "SLURM_NODEID=1",
                                      "SLURM_NNODES=3",
                                      "SLURM_STEP_NUM_NODES=3",
                                      "SLURM_STEP_TASKS_PER_NODE=3,2(x2)",
                                      "SLURM_TASKS_PER_NODE=3,2(x2)",
                                      NULL};
    ql_world w;
    CHECK(detect(env, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_SRUN && !strcmp(ql_launcher_name(w.launcher), "srun"));
    CHECK(w.rank == 4 && w.size == 7 && w.local_rank == 1 && w.local_size == 2);
    CHECK(w.node == 1 && w.n_nodes == 3);

    /* Only --ntasks-per-node, the older SLURM_STEPID and SLURM_NPROCS. */
    static const char *const old[] = {
        "SLURM_STEPID=2", "SLURM_PROCID=3",        "SLURM_NPROCS=4",          "SLURM_LOCALID=1",
        "SLURM_NODEID=1", "SLURM_JOB_NUM_NODES=2", "SLURM_NTASKS_PER_NODE=2", NULL};
    CHECK(detect(old, &w) == QL_OK);
    CHECK(w.rank == 3 && w.size == 4 && w.local_rank == 1 && w.local_size == 2);
    CHECK(w.node == 1 && w.n_nodes == 2);

    /* A bare sbatch shell (no step): one process, whatever SLURM_NTASKS says. */
    static const char *const batch[] = {"SLURM_JOB_ID=77",       "SLURM_PROCID=0",
                                        "SLURM_NTASKS=8",        "SLURM_LOCALID=0",
                                        "SLURM_NODEID=0",        "SLURM_TASKS_PER_NODE=4(x2)",
                                        "SLURM_JOB_NUM_NODES=2", NULL};
    CHECK(detect(batch, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_SINGLETON && w.size == 1 && w.rank == 0);
}

static void test_pmix(void) {
    static const char *const env[] = {"PMIX_RANK=3", "PMIX_NAMESPACE=ns", NULL};
    ql_world w;
    CHECK(detect(env, &w) == QL_OK);
    CHECK(w.launcher == QL_LAUNCH_PMIX && !strcmp(ql_launcher_name(w.launcher), "pmix"));
    /* the size and the node layout come from MPI once it starts */
    CHECK(w.rank == 3 && w.size == 0 && w.local_rank == -1 && w.local_size == 0);
}

static void bad(const char *const *env, const char *want, int line) {
    ql_world w;
    ql_error_clear();
    ql_status st = detect(env, &w);
    CHECKF(st == QL_EINVAL && message_has(want), "line %d: status %s, message '%s', want '%s'",
           line, ql_status_name(st), ql_error_message(), want);
}
#define BAD(want, ...)                                                                             \
    do {                                                                                           \
        static const char *const env_[] = {__VA_ARGS__, NULL};                                     \
        bad(env_, want, __LINE__);                                                                 \
    } while (0)

static void test_malformed(void) {
    BAD("OMPI_COMM_WORLD_RANK = 'two'", "OMPI_COMM_WORLD_RANK=two", "OMPI_COMM_WORLD_SIZE=4",
        "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=4");
    BAD("OMPI_COMM_WORLD_SIZE = '0'", "OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=0",
        "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=1");
    BAD("OMPI_COMM_WORLD_RANK = 4 is not below OMPI_COMM_WORLD_SIZE = 4", "OMPI_COMM_WORLD_RANK=4",
        "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=4");
    BAD("OMPI_COMM_WORLD_LOCAL_RANK = 2 is not below OMPI_COMM_WORLD_LOCAL_SIZE = 2",
        "OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=2",
        "OMPI_COMM_WORLD_LOCAL_SIZE=2");
    BAD("OMPI_COMM_WORLD_LOCAL_SIZE is missing", "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=2",
        "OMPI_COMM_WORLD_LOCAL_RANK=1");
    BAD("OMPI_COMM_WORLD_RANK = '-1'", "OMPI_COMM_WORLD_RANK=-1", "OMPI_COMM_WORLD_SIZE=2",
        "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=2");
    BAD("OMPI_COMM_WORLD_RANK = '99999999999'", "OMPI_COMM_WORLD_RANK=99999999999",
        "OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=2");
    BAD("SLURM_PROCID = '1x'", "SLURM_STEP_ID=0", "SLURM_PROCID=1x", "SLURM_NTASKS=2",
        "SLURM_LOCALID=0", "SLURM_NODEID=0", "SLURM_TASKS_PER_NODE=2");
    BAD("SLURM_NODEID is missing", "SLURM_STEP_ID=0", "SLURM_PROCID=1", "SLURM_NTASKS=2",
        "SLURM_LOCALID=1", "SLURM_TASKS_PER_NODE=2");
    BAD("SLURM_STEP_TASKS_PER_NODE = '2(3)'", "SLURM_STEP_ID=0", "SLURM_PROCID=1", "SLURM_NTASKS=2",
        "SLURM_LOCALID=1", "SLURM_NODEID=0", "SLURM_STEP_TASKS_PER_NODE=2(3)");
    BAD("SLURM_TASKS_PER_NODE = '2(x2),1' lists 3 nodes, not node 3", "SLURM_STEP_ID=0",
        "SLURM_PROCID=6", "SLURM_NTASKS=7", "SLURM_LOCALID=0", "SLURM_NODEID=3",
        "SLURM_TASKS_PER_NODE=2(x2),1");
    BAD("SLURM_LOCALID = 2 is not below SLURM_TASKS_PER_NODE = 2", "SLURM_STEP_ID=0",
        "SLURM_PROCID=2", "SLURM_NTASKS=4", "SLURM_LOCALID=2", "SLURM_NODEID=0",
        "SLURM_TASKS_PER_NODE=2(x2)");
    BAD("says how many tasks run on this node", "SLURM_STEP_ID=0", "SLURM_PROCID=1",
        "SLURM_NTASKS=2", "SLURM_LOCALID=1", "SLURM_NODEID=0");
    BAD("PMIX_RANK = 'r'", "PMIX_RANK=r");
}

static void test_slice(void) {
    /* 10 over 4: 3 3 2 2, contiguous, in rank order. */
    int64_t off, len, want_off[] = {0, 3, 6, 8}, want_len[] = {3, 3, 2, 2};
    for (int r = 0; r < 4; r++) {
        ql_dist_slice(10, 4, r, &off, &len);
        CHECK(off == want_off[r] && len == want_len[r]);
    }
    /* fewer elements than ranks: empty slices at the end */
    ql_dist_slice(2, 3, 2, &off, &len);
    CHECK(off == 2 && len == 0);
    for (int size = 1; size <= 9; size++)
        for (int64_t n = 0; n <= 40; n++) {
            int64_t at = 0, ok = 1;
            for (int r = 0; r < size; r++) {
                ql_dist_slice(n, size, r, &off, &len);
                ok &= off == at && len >= n / size && len <= n / size + 1;
                at += len;
            }
            CHECK(ok && at == n);
        }
}

static void test_fault_spec(void) {
    ql_fault f;
    CHECK(ql_fault_parse(NULL, &f) == QL_OK && f.kind == QL_FAULT_NONE);
    CHECK(ql_fault_parse("", &f) == QL_OK && f.kind == QL_FAULT_NONE);
    CHECK(ql_fault_parse("rank=1,step=3,kind=error", &f) == QL_OK);
    CHECK(f.kind == QL_FAULT_ERROR && f.rank == 1 && f.step == 3 && !strcmp(f.where, "step"));
    CHECK(ql_fault_parse("kind=hang,rank=0,step=12", &f) == QL_OK && f.kind == QL_FAULT_HANG);
    CHECK(ql_fault_parse("rank=2,kind=kill,where=load", &f) == QL_OK);
    CHECK(f.kind == QL_FAULT_KILL && f.step == 0 && !strcmp(f.where, "load"));
    ql_error_clear();
    CHECK(ql_fault_parse("rank=1,step=3,kind=crash", &f) == QL_EINVAL);
    CHECK(message_has("QL_FAULT_INJECT = 'rank=1,step=3,kind=crash': kind must be"));
    CHECK(ql_fault_parse("rank=x,kind=error", &f) == QL_EINVAL);
    CHECK(ql_fault_parse("step=3,kind=error", &f) == QL_EINVAL);
    CHECK(ql_fault_parse("rank=1,kind=error,color=red", &f) == QL_EINVAL);
    CHECK(ql_fault_parse("rank=1;kind=error", &f) == QL_EINVAL);
    /* With QL_FAULT_INJECT unset, no point does anything. */
    CHECK(ql_fault_point("step", 1, 3) == QL_OK);
}

static int fired;
static char fired_msg[512];
static void on_fire(void *ctx, const char *m) {
    (void)ctx;
    snprintf(fired_msg, sizeof fired_msg, "%s", m);
    fired++;
}

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void test_watchdog(void) {
    ql_watchdog *w;
    CHECK(ql_watchdog_start(0.3, on_fire, NULL, &w) == QL_OK);
    ql_watchdog_set_phase(w, "step 7");
    /* collectives that finish in time: nothing */
    for (int i = 0; i < 5; i++) {
        ql_watchdog_enter(w, "agree");
        nap(0.02);
        ql_watchdog_leave(w);
    }
    nap(0.4); /* idle between collectives is not waiting */
    CHECK(fired == 0);
    ql_watchdog_enter(w, "reduce-scatter");
    ql_watchdog_enter(w, "all-gather"); /* nested: the outer one counts */
    for (int i = 0; i < 100 && !fired; i++) nap(0.02);
    ql_watchdog_leave(w);
    ql_watchdog_leave(w);
    CHECK(fired == 1);
    CHECKF(strstr(fired_msg, "in reduce-scatter during step 7") &&
               strstr(fired_msg, "the limit is 0.3 s: dist.timeout_s"),
           "%s", fired_msg);
    ql_watchdog_stop(w);
    /* no limit: never fires */
    fired = 0;
    CHECK(ql_watchdog_start(0, on_fire, NULL, &w) == QL_OK);
    ql_watchdog_enter(w, "agree");
    nap(0.2);
    ql_watchdog_leave(w);
    ql_watchdog_stop(w);
    CHECK(fired == 0);
}

static void test_batch_split(void) {
    CHECK(ql_train_check_batch(8, 4, 1) == QL_OK);
    CHECK(ql_train_check_batch(8, 4, 4) == QL_OK);
    CHECK(ql_train_check_batch(8, 16, 8) == QL_OK); /* micro-batch above the share: the share */
    ql_error_clear();
    CHECK(ql_train_check_batch(10, 2, 4) == QL_EINVAL);
    CHECKF(message_has("train.global_batch = 10 cannot be split over 4 ranks") &&
               message_has("--train.global_batch=8 or 12") &&
               message_has("number of ranks that divides 10 (1, 2, 5, 10)"),
           "%s", ql_error_message());
    CHECK(ql_train_check_batch(2, 1, 3) == QL_EINVAL);
    CHECKF(message_has("--train.global_batch=3)"), "%s", ql_error_message());
}

int main(void) {
    test_singleton();
    test_mpirun();
    test_srun();
    test_pmix();
    test_malformed();
    test_slice();
    test_fault_spec();
    test_watchdog();
    test_batch_split();
    return CHECK_DONE();
}
