/* ckpt/ckpt.h on one rank: save -> LATEST -> load gives back every bit of
 * params, m, v and the RNG; keep_last prunes; a checkpoint written by 4
 * ranks loads into any other partition (elastic) bit-exactly; verify and
 * load name the damaged file for a flipped byte, a truncated or missing
 * shard, a damaged manifest and a manifest of another run; resume
 * candidates fall back past LATEST's checkpoint; injected faults in the
 * manifest and LATEST writes leave the previous checkpoint as it was and no
 * temporary directory behind; the directory lock. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt/ckpt.h"
#include "ckpt/store.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "dist/comm.h"

enum { N = 5003 };
static char root_buf[] = "/tmp/ql_test_ckpt_store_XXXXXX";
static char root[512];
static ql_comm *comm;
static float P[N], M[N], V[N];

static void fill(float *x, int64_t n, uint64_t seed) {
    ql_rng r;
    ql_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = ql_rng_normal(&r);
}

static void make_meta(ql_ckpt_meta *m, const char *run_id, int64_t step) {
    memset(m, 0, sizeof *m);
    m->format_version = QL_MANIFEST_FORMAT_VERSION;
    snprintf(m->run_id, sizeof m->run_id, "%s", run_id);
    m->step = step;
    m->tokens_seen = 100 * step;
    m->samples_seen = 8 * step;
    m->cursor.epoch = step / 10;
    m->cursor.index = step % 10;
    snprintf(m->schedule.kind, sizeof m->schedule.kind, "cosine");
    m->schedule.peak_lr = 2e-4;
    m->schedule.total_steps = 100;
    m->schedule.index = step;
    m->world.size = 1;
    m->world.dp = 1;
    m->world.pp = 1;
    m->world.n_nodes = 1;
    snprintf(m->world.launcher, sizeof m->world.launcher, "singleton");
    m->config_yaml = "model: m\noutput_dir: o\ndata:\n  train: t.jsonl\n";
    snprintf(m->base.fingerprint, sizeof m->base.fingerprint, "%064d", 7);
    m->n_params = N;
    static ql_ckpt_tensor t[2] = {{"a.lora_A.weight", 1, 3000, 0},
                                  {"a.lora_B.weight", 2001, 1, 3000}};
    m->tensors = t;
    m->n_tensors = 2;
    m->optim.t = step;
    m->data.rows = 48;
    snprintf(m->data.sha256, sizeof m->data.sha256, "%064d", 9);
    snprintf(m->version, sizeof m->version, "test");
}

static const char *RUN_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *RUN_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static ql_status save(const char *r, const char *run, int64_t step, int64_t keep) {
    ql_ckpt_meta m;
    make_meta(&m, run, step);
    ql_ckpt_io io = {.root = r, .keep_last = keep, .locking = QL_LOCK_BEST_EFFORT};
    ql_ckpt_slice s = {
        .offset = 0, .length = N, .params = P, .m = M, .v = V, .rng = {11, 22, 33, (uint64_t)step}};
    ql_ckpt_saved out;
    return ql_ckpt_save(comm, &io, &m, &s, &out);
}

static int count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, needle)) n++;
    if (d) closedir(d);
    return n;
}

static char *path2(const char *a, const char *b) {
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%.2000s/%.1000s", a, b);
    return buf[k];
}

static void test_save_load_prune(void) {
    fill(P, N, 1);
    fill(M, N, 2);
    fill(V, N, 3);
    for (int64_t s = 1; s <= 4; s++) CHECK(save(root, RUN_A, s, 2) == QL_OK);
    int64_t *steps;
    int n;
    CHECK(ql_ckpt_list(root, &steps, &n) == QL_OK);
    CHECKF(n == 2 && steps[0] == 4 && steps[1] == 3, "%d checkpoints kept", n);
    free(steps);
    char why[256];
    CHECK(ql_ckpt_read_latest(root, why, sizeof why) == 4);
    CHECK(count_entries(root, ".tmp-") == 0);

    char **dirs;
    char note[512];
    CHECK(ql_ckpt_candidates(root, &dirs, &n, note, sizeof note) == QL_OK);
    CHECK(n == 2 && strstr(dirs[0], "step-00000004") && strstr(dirs[1], "step-00000003"));
    CHECK(note[0] == 0);

    ql_ckpt_meta m;
    CHECK(ql_ckpt_read_meta(comm, dirs[0], &m) == QL_OK);
    CHECK(m.step == 4 && !strcmp(m.run_id, RUN_A) && m.n_shards == 1 && m.n_params == N);
    CHECK(m.cursor.index == 4 && m.tokens_seen == 400 && m.optim.t == 4);
    CHECK(m.n_tensors == 2 && !strcmp(m.tensors[1].name, "a.lora_B.weight") &&
          m.tensors[1].rows == 2001 && m.tensors[1].offset == 3000);
    static float p[N], mm[N], v[N];
    ql_ckpt_slice s = {.offset = 0, .length = N, .params = p, .m = mm, .v = v};
    int rng_ok = 0;
    CHECK(ql_ckpt_load_slice(comm, dirs[0], &m, QL_LOCK_BEST_EFFORT, &s, &rng_ok) == QL_OK);
    CHECK(!memcmp(p, P, sizeof p) && !memcmp(mm, M, sizeof mm) && !memcmp(v, V, sizeof v));
    CHECK(rng_ok && s.rng[0] == 11 && s.rng[3] == 4);
    /* A partial slice, as a rank of a larger world reads it. */
    memset(v, 0, sizeof v);
    ql_ckpt_slice part = {.offset = 1234, .length = 777, .params = p, .m = mm, .v = v};
    CHECK(ql_ckpt_load_slice(comm, dirs[0], &m, QL_LOCK_BEST_EFFORT, &part, &rng_ok) == QL_OK);
    CHECK(!memcmp(v, V + 1234, 777 * sizeof *v));
    int faults = -1;
    CHECK(ql_ckpt_verify(dirs[0], QL_LOCK_BEST_EFFORT, NULL, NULL, &faults) == QL_OK &&
          faults == 0);
    ql_ckpt_meta_free(&m);
    ql_ckpt_free_list(dirs, n);
}

/* A checkpoint of W shards made the way W ranks make it (their partition,
 * one file each), without a communicator of W. */
static void write_world(const char *r, int W, int64_t step) {
    char name[64], dir[1024];
    ql_ckpt_step_name(step, name, sizeof name);
    snprintf(dir, sizeof dir, "%s/%s", r, name);
    CHECK(ql_fs_mkdirs(dir) == QL_OK);
    ql_ckpt_meta m;
    make_meta(&m, RUN_A, step);
    m.world.size = W;
    ql_ckpt_shard sh[8];
    m.shards = sh;
    m.n_shards = W;
    for (int rk = 0; rk < W; rk++) {
        int64_t off, len;
        ql_dist_slice(N, W, rk, &off, &len);
        ql_shard_desc d = {.rank = rk,
                           .world = W,
                           .n_total = N,
                           .offset = off,
                           .length = len,
                           .step = step,
                           .rng = {(uint64_t)rk, 0, 0, 1}};
        snprintf(d.run_id, sizeof d.run_id, "%s", RUN_A);
        ql_shard_name(rk, W, sh[rk].file, sizeof sh[rk].file);
        uint8_t sha[QL_SHA256_LEN];
        CHECK(ql_shard_write(path2(dir, sh[rk].file), &d, P + off, M + off, V + off,
                             QL_LOCK_BEST_EFFORT, &sh[rk].bytes, sha) == QL_OK);
        ql_sha256_hex(sha, sh[rk].checksum);
        sh[rk].rank = rk;
        sh[rk].offset = off;
        sh[rk].length = len;
        memcpy(sh[rk].rng, d.rng, sizeof d.rng);
    }
    uint8_t *buf;
    size_t len;
    CHECK(ql_manifest_encode(&m, &buf, &len) == QL_OK);
    CHECK(ql_fs_write_atomic(path2(dir, "manifest.pb"), buf, len) == QL_OK);
    free(buf);
    CHECK(ql_ckpt_write_latest(r, step) == QL_OK);
}

static void test_elastic(void) {
    char r[600];
    snprintf(r, sizeof r, "%s/elastic", root);
    write_world(r, 4, 10);
    ql_ckpt_meta m;
    CHECK(ql_ckpt_read_meta(comm, path2(r, "step-00000010"), &m) == QL_OK);
    CHECK(m.world.size == 4 && m.n_shards == 4);
    /* Every partition of 1, 2, 3 and 5 ranks reassembles the same bits. */
    static float p[N], mm[N], v[N];
    int worlds[4] = {1, 2, 3, 5};
    for (int w = 0; w < 4; w++) {
        memset(p, 0, sizeof p);
        memset(mm, 0, sizeof mm);
        memset(v, 0, sizeof v);
        for (int rk = 0; rk < worlds[w]; rk++) {
            int64_t off, len;
            ql_dist_slice(N, worlds[w], rk, &off, &len);
            ql_ckpt_slice s = {
                .offset = off, .length = len, .params = p + off, .m = mm + off, .v = v + off};
            int rng_ok = 1;
            CHECK(ql_ckpt_load_slice(comm, path2(r, "step-00000010"), &m, QL_LOCK_BEST_EFFORT, &s,
                                     &rng_ok) == QL_OK);
            CHECK(rng_ok == 0); /* written by 4, read by 1: streams are not continued */
        }
        CHECKF(!memcmp(p, P, sizeof p) && !memcmp(mm, M, sizeof mm) && !memcmp(v, V, sizeof v),
               "world %d does not reassemble", worlds[w]);
    }
    ql_ckpt_meta_free(&m);
    /* More ranks than elements: empty shards are still files the manifest
     * lists and verify checks. */
    snprintf(r, sizeof r, "%s/tiny", root);
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void truncate_file(const char *path, long keep) {
    char *d;
    size_t len;
    if (ql_fs_read_file(path, &d, &len) != QL_OK) return;
    FILE *f = fopen(path, "wb");
    fwrite(d, 1, (size_t)keep < len ? (size_t)keep : len, f);
    fclose(f);
    free(d);
}

/* verify fails naming `want`; load fails too; the candidates still list the
 * directory (a resume decides by loading). */
static void expect_fault(const char *dir, const char *want, const char *what) {
    int faults = 0;
    ql_status st = ql_ckpt_verify(dir, QL_LOCK_BEST_EFFORT, NULL, NULL, &faults);
    CHECKF(st != QL_OK && faults >= 1, "%s: verify passed", what);
    CHECKF(strstr(ql_error_message(), want) != NULL, "%s: message does not name %s: %s", what, want,
           ql_error_message());
    printf("%s: %s\n", what, ql_error_message());
    ql_ckpt_meta m;
    st = ql_ckpt_read_meta(comm, dir, &m);
    if (st == QL_OK) {
        static float p[N], mm[N], v[N];
        ql_ckpt_slice s = {.offset = 0, .length = N, .params = p, .m = mm, .v = v};
        int rng_ok;
        st = ql_ckpt_load_slice(comm, dir, &m, QL_LOCK_BEST_EFFORT, &s, &rng_ok);
        ql_ckpt_meta_free(&m);
    }
    CHECKF(st != QL_OK, "%s: load passed", what);
    CHECKF(strstr(ql_error_message(), want) != NULL, "%s: load message: %s", what,
           ql_error_message());
}

static void copy_tree(const char *from, const char *to) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    CHECK(system(cmd) == 0);
}

static void test_corruption(void) {
    char r[600], good[700], bad[700];
    snprintf(r, sizeof r, "%s/corrupt", root);
    write_world(r, 2, 20);
    snprintf(good, sizeof good, "%s/step-00000020", r);
    snprintf(bad, sizeof bad, "%s/bad/step-00000020", root);
    CHECK(ql_fs_mkdirs(path2(root, "bad")) == QL_OK);
    const char *shard1 = "shard-00001-of-00002.h5";

    copy_tree(good, bad);
    flip_byte(path2(bad, shard1), 4000); /* in the data */
    expect_fault(bad, shard1, "flipped byte in a shard");

    copy_tree(good, bad);
    truncate_file(path2(bad, shard1), 3000);
    expect_fault(bad, shard1, "truncated shard");

    copy_tree(good, bad);
    remove(path2(bad, shard1));
    expect_fault(bad, shard1, "missing shard");

    copy_tree(good, bad);
    flip_byte(path2(bad, "manifest.pb"), 40);
    expect_fault(bad, "manifest.pb", "flipped byte in the manifest");

    copy_tree(good, bad);
    truncate_file(path2(bad, "manifest.pb"), 100);
    expect_fault(bad, "manifest.pb", "truncated manifest");

    /* The manifest of another run at the same step and layout. */
    char other[700];
    snprintf(other, sizeof other, "%s/other", root);
    ql_ckpt_meta m;
    make_meta(&m, RUN_B, 20);
    m.world.size = 2;
    ql_ckpt_meta g;
    CHECK(ql_manifest_read(path2(good, "manifest.pb"), &g) == QL_OK);
    m.shards = g.shards;
    m.n_shards = g.n_shards;
    uint8_t *buf;
    size_t len;
    CHECK(ql_manifest_encode(&m, &buf, &len) == QL_OK);
    copy_tree(good, bad);
    CHECK(ql_fs_write_atomic(path2(bad, "manifest.pb"), buf, len) == QL_OK);
    free(buf);
    ql_ckpt_meta_free(&g);
    expect_fault(bad, "manifest.pb", "manifest of another run");
    (void)other;

    copy_tree(good, bad);
    remove(path2(bad, "manifest.pb"));
    expect_fault(bad, "manifest.pb", "missing manifest");
}

static void test_candidates(void) {
    char r[600];
    snprintf(r, sizeof r, "%s/cand", root);
    write_world(r, 1, 5);
    write_world(r, 1, 6);
    write_world(r, 1, 7); /* LATEST = 7 */
    char **dirs, note[512];
    int n;
    CHECK(ql_ckpt_write_latest(r, 6) == QL_OK);
    CHECK(ql_ckpt_candidates(r, &dirs, &n, note, sizeof note) == QL_OK);
    /* step 7 is newer than LATEST: not committed as far as LATEST says. */
    CHECK(n == 2 && strstr(dirs[0], "step-00000006") && strstr(dirs[1], "step-00000005"));
    ql_ckpt_free_list(dirs, n);

    FILE *f = fopen(path2(r, "LATEST"), "w");
    fputs("garbage\n", f);
    fclose(f);
    CHECK(ql_ckpt_candidates(r, &dirs, &n, note, sizeof note) == QL_OK);
    CHECK(n == 3 && strstr(dirs[0], "step-00000007"));
    CHECKF(strstr(note, "LATEST holds 'garbage'") != NULL, "note: %s", note);
    ql_ckpt_free_list(dirs, n);

    CHECK(ql_ckpt_write_latest(r, 9) == QL_OK);
    CHECK(ql_ckpt_candidates(r, &dirs, &n, note, sizeof note) == QL_OK);
    CHECK(n == 3 && strstr(note, "step-00000009, which does not exist"));
    ql_ckpt_free_list(dirs, n);
}

static void test_faults(void) {
    char r[600];
    snprintf(r, sizeof r, "%s/faults", root);
    CHECK(save(r, RUN_A, 1, 3) == QL_OK);
    const char *points[3] = {"manifest-enospc", "shard-write", "rename-dir"};
    for (int i = 0; i < 3; i++) {
        setenv("QL_CKPT_FAULT", points[i], 1);
        ql_status st = save(r, RUN_A, 2, 3);
        unsetenv("QL_CKPT_FAULT");
        CHECKF(st != QL_OK, "%s: save succeeded", points[i]);
        printf("%s: %s\n", points[i], ql_error_message());
        char why[128];
        CHECK(ql_ckpt_read_latest(r, why, sizeof why) == 1);
        CHECKF(!ql_fs_exists(path2(r, "step-00000002")), "%s: step 2 promoted", points[i]);
        CHECK(count_entries(r, ".tmp-") == 0);
        CHECK(ql_ckpt_verify(path2(r, "step-00000001"), QL_LOCK_BEST_EFFORT, NULL, NULL, NULL) ==
              QL_OK);
    }
    /* LATEST cannot be replaced: the new directory is complete, LATEST still
     * names the previous one, which is intact. */
    setenv("QL_CKPT_FAULT", "latest-enospc", 1);
    CHECK(save(r, RUN_A, 2, 3) != QL_OK);
    unsetenv("QL_CKPT_FAULT");
    char why[128];
    CHECK(ql_ckpt_read_latest(r, why, sizeof why) == 1);
    CHECK(ql_ckpt_verify(path2(r, "step-00000001"), QL_LOCK_BEST_EFFORT, NULL, NULL, NULL) ==
          QL_OK);
    char **dirs, note[256];
    int n;
    CHECK(ql_ckpt_candidates(r, &dirs, &n, note, sizeof note) == QL_OK);
    CHECK(n == 1 && strstr(dirs[0], "step-00000001"));
    ql_ckpt_free_list(dirs, n);
    /* A later save at the same step replaces it. */
    CHECK(save(r, RUN_A, 2, 3) == QL_OK);
    CHECK(ql_ckpt_read_latest(r, why, sizeof why) == 2);
}

static void test_lock(void) {
    ql_dir_lock a, b;
    char warn[512];
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_BEST_EFFORT, &a, warn, sizeof warn) == QL_OK);
    CHECK(a.fd >= 0 && warn[0] == 0);
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_STRICT, &b, warn, sizeof warn) == QL_EINVAL);
    CHECKF(strstr(ql_error_message(), "locked by another process (pid ") != NULL, "%s",
           ql_error_message());
    ql_dir_lock_release(&a);
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_STRICT, &b, warn, sizeof warn) == QL_OK);
    ql_dir_lock_release(&b);
    /* A file system without locks (as NFS without lockd answers). */
    setenv("QL_CKPT_FAULT", "lock-enolck", 1);
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_STRICT, &b, warn, sizeof warn) == QL_EIO);
    CHECKF(strstr(ql_error_message(), "No locks available") &&
               strstr(ql_error_message(), "checkpoint.file_locking: best-effort"),
           "%s", ql_error_message());
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_BEST_EFFORT, &b, warn, sizeof warn) == QL_OK);
    CHECKF(strstr(warn, "going on without a lock") != NULL, "%s", warn);
    ql_dir_lock_release(&b);
    CHECK(ql_dir_lock_acquire(root, QL_LOCK_OFF, &b, warn, sizeof warn) == QL_OK && b.fd < 0);
    unsetenv("QL_CKPT_FAULT");
}

int main(void) {
    if (!mkdtemp(root_buf)) return 1;
    snprintf(root, sizeof root, "%s/checkpoints", root_buf);
    ql_world w;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK || ql_comm_open(&w, &comm) != QL_OK) {
        fprintf(stderr, "no communicator: %s\n", ql_error_message());
        return 1;
    }
    test_save_load_prune();
    test_elastic();
    test_corruption();
    test_candidates();
    test_faults();
    CHECK(ql_fs_mkdirs(root) == QL_OK);
    test_lock();
    ql_comm_close(comm);
    ql_fs_remove_tree(root_buf);
    return CHECK_DONE();
}
