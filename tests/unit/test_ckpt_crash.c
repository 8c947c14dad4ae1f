/* Crash consistency of the commit protocol: a writer saves checkpoints of
 * steps 1, 2, 3, ... (keep_last 2, so pruning and replacing run too) and is
 * killed with SIGKILL at random instants, many times; after every kill:
 *
 *   - every committed step directory verifies (no half-written directory
 *     is ever promoted, none is half-deleted);
 *   - LATEST, when present, names one of them;
 *   - the next start resumes from the first resume candidate without
 *     falling back, and reads back exactly the values of its step.
 *
 *   test_ckpt_crash [KILLS]        forks the writer itself (one process);
 *                                  60 kills by default, at random instants
 *   test_ckpt_crash --writer ROOT  the writer alone, any world size (under
 *                                  mpirun; tests/e2e/test_ckpt_crash_mpi.sh
 *                                  kills one rank or all of them)
 *   test_ckpt_crash --check ROOT   the checks alone (exit 0 when they hold)
 *
 * scripts/ckpt_crash_soak.sh runs 500+ kills. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ckpt/ckpt.h"
#include "ckpt/store.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "dist/comm.h"

enum { N = 300007 };
static const char *RUN = "c0ffee00c0ffee00c0ffee00c0ffee00";

/* The value element i of vector k holds at `step`: every checkpoint's
 * contents are known without storing them. */
static float value(int64_t step, int k, int64_t i) {
    return (float)((step * 1000003 + (int64_t)k * 7919 + i) % 65521) * 0.25f;
}

static void make_meta(ql_ckpt_meta *m, int64_t step, int world) {
    memset(m, 0, sizeof *m);
    m->format_version = QL_MANIFEST_FORMAT_VERSION;
    snprintf(m->run_id, sizeof m->run_id, "%s", RUN);
    m->step = step;
    m->cursor.index = step;
    snprintf(m->schedule.kind, sizeof m->schedule.kind, "constant");
    m->world.size = world;
    m->world.dp = world;
    m->world.pp = 1;
    m->config_yaml = "model: m\noutput_dir: o\ndata:\n  train: t.jsonl\n";
    m->n_params = N;
    m->optim.t = step;
}

static int writer(const char *root) {
    ql_world w;
    ql_comm *c;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK || ql_comm_open(&w, &c) != QL_OK) {
        fprintf(stderr, "writer: %s\n", ql_error_message());
        return 1;
    }
    int rank = ql_comm_rank(c), size = ql_comm_size(c);
    int64_t off, len;
    ql_dist_slice(N, size, rank, &off, &len);
    float *v = malloc((size_t)(3 * len + 1) * sizeof *v);
    /* Continue after the newest committed step (every rank reads the same). */
    int64_t *steps;
    int n;
    int64_t step = 1;
    if (ql_ckpt_list(root, &steps, &n) == QL_OK && n > 0) step = steps[0] + 1;
    free(steps);
    ql_comm_bcast(c, &step, sizeof step, 0);
    ql_ckpt_io io = {.root = root, .keep_last = 2, .locking = QL_LOCK_BEST_EFFORT};
    for (;; step++) {
        for (int k = 0; k < 3; k++)
            for (int64_t i = 0; i < len; i++) v[k * len + i] = value(step, k, off + i);
        ql_ckpt_meta m;
        make_meta(&m, step, size);
        ql_ckpt_slice s = {.offset = off,
                           .length = len,
                           .params = v,
                           .m = v + len,
                           .v = v + 2 * len,
                           .rng = {(uint64_t)step, 1, 2, 3}};
        ql_ckpt_saved out;
        if (ql_ckpt_save(c, &io, &m, &s, &out) != QL_OK) {
            fprintf(stderr, "writer: %s\n", ql_error_message());
            return 1;
        }
    }
}

/* 0 when every invariant holds; messages on stderr otherwise. */
static int check(ql_comm *c, const char *root, int64_t *resumed) {
    int bad = 0;
    *resumed = 0;
    int64_t *steps;
    int n;
    if (ql_ckpt_list(root, &steps, &n) != QL_OK) return 1;
    for (int i = 0; i < n; i++) {
        char name[40], dir[4200];
        ql_ckpt_step_name(steps[i], name, sizeof name);
        snprintf(dir, sizeof dir, "%s/%s", root, name);
        if (ql_ckpt_verify(dir, QL_LOCK_BEST_EFFORT, NULL, NULL, NULL) != QL_OK) {
            fprintf(stderr, "committed but damaged: %s\n", ql_error_message());
            bad++;
        }
    }
    char why[256];
    int64_t latest = ql_ckpt_read_latest(root, why, sizeof why);
    int found = latest < 0;
    for (int i = 0; i < n; i++) found |= steps[i] == latest;
    if (latest == -2 || !found) {
        fprintf(stderr, "LATEST (%lld) names no committed checkpoint %s\n", (long long)latest, why);
        bad++;
    }
    free(steps);
    char **dirs, note[512];
    if (ql_ckpt_candidates(root, &dirs, &n, note, sizeof note) != QL_OK) return 1;
    if (n > 0) {
        ql_ckpt_meta m;
        static float p[N], mm[N], v[N];
        ql_ckpt_slice s = {.offset = 0, .length = N, .params = p, .m = mm, .v = v};
        int rng_ok;
        if (ql_ckpt_read_meta(c, dirs[0], &m) != QL_OK ||
            ql_ckpt_load_slice(c, dirs[0], &m, QL_LOCK_BEST_EFFORT, &s, &rng_ok) != QL_OK) {
            fprintf(stderr, "the first resume candidate does not load: %s\n", ql_error_message());
            bad++;
        } else {
            *resumed = m.step;
            if (latest >= 0 && m.step != latest) {
                fprintf(stderr, "resumed step %lld, LATEST is %lld\n", (long long)m.step,
                        (long long)latest);
                bad++;
            }
            const float *vec[3] = {p, mm, v};
            for (int k = 0; k < 3; k++)
                for (int64_t i = 0; i < N; i++)
                    if (vec[k][i] != value(m.step, k, i)) {
                        fprintf(stderr, "step %lld: vector %d element %lld is wrong\n",
                                (long long)m.step, k, (long long)i);
                        bad++;
                        k = 3;
                        break;
                    }
            ql_ckpt_meta_free(&m);
        }
    }
    ql_ckpt_free_list(dirs, n);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--writer")) return writer(argv[2]);
    ql_world w;
    ql_comm *c;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK || ql_comm_open(&w, &c) != QL_OK) return 1;
    int64_t resumed;
    if (argc == 3 && !strcmp(argv[1], "--check")) {
        int bad = check(c, argv[2], &resumed);
        printf("%s: resumes from step %lld\n", bad ? "FAIL" : "ok", (long long)resumed);
        return bad ? 1 : 0;
    }
    int kills = argc == 2 ? atoi(argv[1]) : 60;
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return 1;
    self[sl] = 0;
    char tmpl[] = "/tmp/ql_test_ckpt_crash_XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    char root[600];
    snprintf(root, sizeof root, "%s/checkpoints", tmpl);
    ql_rng r;
    ql_rng_seed(&r, (uint64_t)time(NULL));
    int64_t last = 0, progressed = 0;
    for (int k = 0; k < kills; k++) {
        pid_t pid = fork();
        if (pid == 0) { /* a fresh process: OpenMP's threads do not survive fork */
            execl(self, self, "--writer", root, (char *)NULL);
            _exit(127);
        }
        /* A save takes tens of milliseconds (mostly fsyncs), the writer
         * starts in about one: kills land in every phase of saves. */
        usleep((useconds_t)ql_rng_below(&r, 200000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECKF(WIFSIGNALED(status), "kill %d: the writer ended by itself (status %d)", k, status);
        int bad = check(c, root, &resumed);
        CHECKF(bad == 0, "kill %d: %d invariant(s) broken", k, bad);
        CHECK(resumed >= last); /* committed work is never lost */
        progressed += resumed > last;
        last = resumed;
    }
    printf("%d kills; the writer reached step %lld; %lld kills after progress\n", kills,
           (long long)last, (long long)progressed);
    CHECK(last > 0);
    ql_comm_close(c);
    ql_fs_remove_tree(tmpl);
    return CHECK_DONE();
}
