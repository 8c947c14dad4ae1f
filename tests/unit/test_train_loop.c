/* The data order, micro-batches and the training loop over a small synthetic
 * model (a two-parameter regression on token ids): accumulation, the 1/targets
 * scale, metrics.jsonl, NaN steps, the stop flag, and bit-for-bit repeats. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/config.h"
#include "train/batcher.h"
#include "train/trainer.h"

static char dir[] = "/tmp/ql_test_train_loop_XXXXXX";

static const char *path_in(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* n records; record i has 2 + i % 5 tokens, ids (i + t) % 13, targets from labels = ids. */
static void make_data(const char *path, int n) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"input_ids\": [");
        for (int t = 0; t < 2 + i % 5; t++) fprintf(f, "%s%d", t ? ", " : "", (i + t) % 13);
        fprintf(f, "]}\n");
    }
    fclose(f);
}

static void test_order(const ql_token_data *d) {
    ql_batcher a, b, c;
    CHECK(ql_batcher_init(&a, d, 7, 1, 0, 16, 4) == QL_OK);
    CHECK(ql_batcher_init(&b, d, 7, 1, 0, 16, 4) == QL_OK);
    CHECK(ql_batcher_init(&c, d, 8, 1, 0, 16, 4) == QL_OK);
    int64_t n = d->n;
    int same_seed = 1, other_seed_differs = 0, epochs_differ = 0;
    for (int64_t e = 0; e < 3; e++) {
        char *seen = calloc((size_t)n, 1);
        for (int64_t k = 0; k < n; k++) {
            int64_t r = ql_batcher_row(&a, e * n + k);
            seen[r]++;
            same_seed &= r == ql_batcher_row(&b, e * n + k);
            other_seed_differs |= r != ql_batcher_row(&c, e * n + k);
            if (e == 1) epochs_differ |= r != ql_batcher_row(&b, k);
        }
        int perm = 1;
        for (int64_t k = 0; k < n; k++) perm &= seen[k] == 1;
        CHECKF(perm, "epoch %lld is not a permutation", (long long)e);
        free(seen);
    }
    CHECK(same_seed);
    CHECK(other_seed_differs);
    CHECK(epochs_differ);
    /* random access agrees with sequential access */
    CHECK(ql_batcher_row(&a, 2 * n + 3) == ql_batcher_row(&b, 2 * n + 3));
    ql_batcher_free(&a);
    ql_batcher_free(&b);
    ql_batcher_free(&c);

    /* no shuffling: file order, every epoch */
    CHECK(ql_batcher_init(&a, d, 7, 0, 0, 16, 4) == QL_OK);
    int file_order = 1;
    for (int64_t g = 0; g < 2 * n; g++) file_order &= ql_batcher_row(&a, g) == g % n;
    CHECK(file_order);

    /* a micro-batch of records 0..2 (lengths 2, 3, 4) padded to 4 */
    ql_batch mb;
    int64_t tok;
    CHECK(ql_batcher_fill(&a, 0, 3, &mb, &tok) == QL_OK);
    CHECK(mb.batch == 3 && mb.seq == 4 && tok == 9 && !mb.pos && !mb.doc);
    static const int32_t ids[12] = {0, 1, 0, 0, 1, 2, 3, 0, 2, 3, 4, 5};
    static const int32_t tg[12] = {1, -100, -100, -100, 2, 3, -100, -100, 3, 4, 5, -100};
    CHECK(!memcmp(mb.ids, ids, sizeof ids) && !memcmp(mb.targets, tg, sizeof tg));
    CHECK(ql_batcher_count_targets(&a, 0, 3) == 1 + 2 + 3);
    CHECK(ql_batcher_fill(&a, 0, 5, &mb, &tok) == QL_EINTERNAL); /* more rows than capacity */
    ql_batcher_free(&a);
    /* pad_to max_seq_len */
    CHECK(ql_batcher_init(&a, d, 7, 0, 1, 16, 4) == QL_OK);
    CHECK(ql_batcher_fill(&a, 0, 2, &mb, &tok) == QL_OK && mb.seq == 16 && tok == 5);
    CHECK(mb.ids[16 + 15] == 0 && mb.targets[15] == -100);
    ql_batcher_free(&a);
}

/* y = p0 * x + p1 on x = id / 16, target y = target / 16; loss 0.5 (y - t)^2 per target. */
typedef struct toy {
    float p[2], g[2];
    int calls, nan_from, nan_to; /* fwd_bwd calls in [nan_from, nan_to) return a NaN loss */
    int64_t stop_after_calls;
    volatile sig_atomic_t *stop;
    int64_t rows_seen, max_rows;
} toy;

static ql_status toy_fwd_bwd(void *ctx, const ql_batch *b, int backward, float scale,
                             double *loss_sum, int64_t *n_targets) {
    toy *m = ctx;
    double ls = 0, g0 = 0, g1 = 0;
    int64_t nt = 0;
    for (int64_t i = 0; i < b->batch * b->seq; i++) {
        if (b->targets[i] < 0) continue;
        double x = b->ids[i] / 16.0, y = (double)m->p[0] * x + m->p[1],
               d = y - b->targets[i] / 16.0;
        ls += 0.5 * d * d;
        g0 += d * x;
        g1 += d;
        nt++;
    }
    m->calls++;
    m->rows_seen += b->batch;
    if (b->batch > m->max_rows) m->max_rows = b->batch;
    if (m->calls > m->nan_from && m->calls <= m->nan_to) ls = NAN;
    if (backward) {
        m->g[0] += scale * (float)g0;
        m->g[1] += scale * (float)g1;
    }
    if (m->stop && m->calls == m->stop_after_calls) *m->stop = 1;
    *loss_sum = ls;
    *n_targets = nt;
    return QL_OK;
}

static ql_train_model toy_model(toy *t) {
    return (ql_train_model){.ctx = t,
                            .be = ql_backend_cpu(),
                            .params = t->p,
                            .grads = t->g,
                            .n = 2,
                            .fwd_bwd = toy_fwd_bwd};
}

static void base_config(ql_config *c, const char *data) {
    ql_cfg_override ov[] = {
        {"model", "toy"},         {"output_dir", dir},         {"data.train", data},
        {"train.steps", "40"},    {"train.global_batch", "6"}, {"train.micro_batch", "4"},
        {"train.lr", "0.05"},     {"train.warmup_steps", "2"}, {"data.max_seq_len", "16"},
        {"data.packing", "false"}}; /* packed runs: test_packing_train.c */
    ql_status st = ql_config_parse(NULL, 0, "test", ov, sizeof ov / sizeof ov[0], c);
    CHECKF(st == QL_OK, "%s", ql_error_message());
}

static int read_lines(const char *path, char lines[][512], int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    while (n < max && fgets(lines[n], 512, f)) n++;
    fclose(f);
    return n;
}

static double field(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(line, k);
    if (!p) return -999;
    p += strlen(k);
    if (!strncmp(p, "null", 4)) return NAN;
    return strtod(p, NULL);
}

static void test_loop(const ql_token_data *d, const char *data) {
    ql_config c;
    base_config(&c, data);
    toy t = {.p = {0.1f, 0.2f}};
    ql_train_model m = toy_model(&t);
    ql_train_opts o = {.cfg = &c, .metrics_path = path_in("metrics.jsonl"), .progress_tty = 0};
    ql_train_result r;
    CHECKF(ql_train_run(&m, d, &o, &r) == QL_OK, "%s", ql_error_message());
    CHECK(r.steps == 40 && r.skipped == 0 && !r.interrupted);
    /* 6 rows per step as micro-batches of 4 and 2 */
    CHECK(t.calls == 80 && t.rows_seen == 240 && t.max_rows == 4);
    CHECKF(r.last_loss < 0.5 * r.first_loss, "loss %g -> %g", r.first_loss, r.last_loss);
    static char lines[64][512];
    int n = read_lines(o.metrics_path, lines, 64);
    CHECK(n == 40);
    int fields_ok = 1;
    for (int i = 0; i < n; i++) {
        fields_ok &= field(lines[i], "step") == i + 1;
        fields_ok &= field(lines[i], "skipped") == 0;
        fields_ok &= field(lines[i], "tokens") > 0 && field(lines[i], "targets") > 0;
        fields_ok &= field(lines[i], "tokens_per_s") >= 0 && field(lines[i], "elapsed_s") >= 0;
        fields_ok &= field(lines[i], "grad_norm") >= 0;
    }
    CHECK(fields_ok);
    /* lr follows the schedule: 0 at step 1 (warmup), peak at step 3 */
    CHECK(field(lines[0], "lr") == 0.0 && field(lines[1], "lr") == 0.025 &&
          field(lines[2], "lr") == 0.05);
    /* the logged loss is the mean over the step's targets, printed to round-trip */
    CHECK(fabs(field(lines[39], "loss") - r.last_loss) == 0.0);

    /* the same seed again: the same parameters, bit for bit */
    toy t2 = {.p = {0.1f, 0.2f}};
    ql_train_model m2 = toy_model(&t2);
    ql_train_opts o2 = {.cfg = &c, .metrics_path = path_in("metrics2.jsonl"), .progress_tty = 0};
    CHECK(ql_train_run(&m2, d, &o2, &r) == QL_OK);
    CHECK(!memcmp(t.p, t2.p, sizeof t.p));
    static char lines2[64][512];
    CHECK(read_lines(o2.metrics_path, lines2, 64) == 40);
    int same_loss = 1;
    for (int i = 0; i < 40; i++) same_loss &= field(lines[i], "loss") == field(lines2[i], "loss");
    CHECK(same_loss);

    /* micro-batch 1 or 6 instead of 4: the same data per step and the same mean-loss
     * gradient up to float rounding */
    for (int mb = 1; mb <= 6; mb += 5) {
        ql_config c3 = c;
        c3.train.micro_batch = mb;
        toy t3 = {.p = {0.1f, 0.2f}};
        ql_train_model m3 = toy_model(&t3);
        ql_train_opts o3 = {.cfg = &c3};
        CHECK(ql_train_run(&m3, d, &o3, &r) == QL_OK);
        CHECK(t3.max_rows == mb && t3.rows_seen == 240);
        CHECKF(fabsf(t3.p[0] - t.p[0]) < 1e-5f && fabsf(t3.p[1] - t.p[1]) < 1e-5f,
               "micro_batch %d: %g %g vs %g %g", mb, t3.p[0], t3.p[1], t.p[0], t.p[1]);
    }
    /* another seed visits the data in another order */
    ql_config c4 = c;
    c4.seed = 99;
    toy t4 = {.p = {0.1f, 0.2f}};
    ql_train_model m4 = toy_model(&t4);
    ql_train_opts o4 = {.cfg = &c4};
    CHECK(ql_train_run(&m4, d, &o4, &r) == QL_OK);
    CHECK(memcmp(t.p, t4.p, sizeof t.p) != 0);
}

static void test_nonfinite(const ql_token_data *d, const char *data) {
    ql_config c;
    base_config(&c, data);
    c.train.steps = 10;
    /* calls 5..8 are steps 3 and 4 (two micro-batches per step): both skipped */
    toy t = {.p = {0.1f, 0.2f}, .nan_from = 4, .nan_to = 8};
    ql_train_model m = toy_model(&t);
    ql_train_opts o = {.cfg = &c, .metrics_path = path_in("nan.jsonl")};
    ql_train_result r;
    CHECKF(ql_train_run(&m, d, &o, &r) == QL_OK, "%s", ql_error_message());
    CHECK(r.steps == 10 && r.skipped == 2);
    static char lines[16][512];
    CHECK(read_lines(o.metrics_path, lines, 16) == 10);
    CHECK(field(lines[1], "skipped") == 0 && field(lines[2], "skipped") == 1 &&
          field(lines[3], "skipped") == 1 && field(lines[4], "skipped") == 0);
    CHECK(isnan(field(lines[2], "loss")) && strstr(lines[2], "\"loss\": null"));

    /* five in a row (the default limit) stop the run with an error at step 7 */
    toy t2 = {.p = {0.1f, 0.2f}, .nan_from = 4, .nan_to = 100};
    ql_train_model m2 = toy_model(&t2);
    ql_train_opts o2 = {.cfg = &c, .metrics_path = path_in("nan2.jsonl")};
    ql_status st = ql_train_run(&m2, d, &o2, &r);
    CHECK(st == QL_EINVAL && r.steps == 7 && r.skipped == 5);
    CHECKF(strstr(ql_error_message(), "step 7: the loss or the gradient was NaN/Inf in 5 steps "
                                      "in a row (train.max_nonfinite_in_a_row = 5"),
           "%s", ql_error_message());
    CHECK(read_lines(o2.metrics_path, lines, 16) == 6); /* the failing step has no line */
}

static void test_stop(const ql_token_data *d, const char *data) {
    ql_config c;
    base_config(&c, data);
    volatile sig_atomic_t stop = 0;
    /* the flag is raised in the middle of step 3: step 3 completes, step 4 never starts */
    toy t = {.p = {0.1f, 0.2f}, .stop = &stop, .stop_after_calls = 5};
    ql_train_model m = toy_model(&t);
    ql_train_opts o = {.cfg = &c, .metrics_path = path_in("stop.jsonl"), .stop = &stop};
    ql_train_result r;
    CHECK(ql_train_run(&m, d, &o, &r) == QL_OK);
    CHECK(r.interrupted && r.steps == 3 && t.calls == 6);
    static char lines[8][512];
    CHECK(read_lines(o.metrics_path, lines, 8) == 3);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    const char *data = path_in("data.jsonl");
    char data_copy[512];
    snprintf(data_copy, sizeof data_copy, "%s", data);
    make_data(data_copy, 23);
    ql_token_data d;
    CHECK(ql_jsonl_tokens_load(data_copy, 16, &d) == QL_OK);
    test_order(&d);
    test_loop(&d, data_copy);
    test_nonfinite(&d, data_copy);
    test_stop(&d, data_copy);
    ql_jsonl_tokens_free(&d);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE();
}
