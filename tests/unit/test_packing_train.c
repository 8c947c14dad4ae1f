/* The training loop over packed rows with a toy model: every step runs
 * global_batch rows of at most max_seq_len tokens that carry positions and
 * document ids; the validation set is evaluated every train.eval_every steps
 * and at the end (once), into metrics.jsonl, with the loss a direct sum over
 * the validation records gives; a run resumed from a stored cursor sees the
 * same micro-batches as the uninterrupted run from there on; an interrupted
 * run is not evaluated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/config.h"
#include "core/sha256.h"
#include "train/trainer.h"

static char dir[] = "/tmp/ql_test_packing_train_XXXXXX";

static const char *in_dir(const char *name) {
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* n records of 2 + (i*7) % 9 tokens, ids (i + 3t) % 13. */
static void make_data(const char *path, int n, int salt) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"input_ids\": [");
        for (int t = 0; t < 2 + (i * 7 + salt) % 9; t++)
            fprintf(f, "%s%d", t ? ", " : "", (i + salt + 3 * t) % 13);
        fprintf(f, "]}\n");
    }
    fclose(f);
}

/* y = p0 * x + p1 on x = id / 16 against target / 16; 0.5 (y - t)^2 per target.
 * Keeps a digest of every batch it sees and checks the packed-row layout. */
typedef struct toy {
    float p[2], g[2];
    int calls, eval_calls, bad_layout;
    int64_t rows_seen;
    uint8_t digest[64][32];
    volatile sig_atomic_t *stop;
    int stop_after_calls;
} toy;

static ql_status toy_fwd_bwd(void *ctx, const ql_batch *b, int backward, float scale,
                             double *loss_sum, int64_t *n_targets) {
    toy *m = ctx;
    double ls = 0, g0 = 0, g1 = 0;
    int64_t nt = 0;
    for (int64_t i = 0; i < b->batch * b->seq; i++) {
        /* a target across a document boundary, or positions not restarting */
        if (!b->pos || !b->doc) m->bad_layout = 1;
        int64_t t = i % b->seq;
        if (b->pos && t > 0 && b->doc[i] == b->doc[i - 1] && b->pos[i] != b->pos[i - 1] + 1)
            m->bad_layout = 1;
        if (b->pos && t > 0 && b->doc[i] != b->doc[i - 1] &&
            (b->pos[i] != 0 || b->targets[i - 1] >= 0))
            m->bad_layout = 1;
        if (b->targets[i] < 0) continue;
        double x = b->ids[i] / 16.0, y = (double)m->p[0] * x + m->p[1],
               d = y - b->targets[i] / 16.0;
        ls += 0.5 * d * d;
        g0 += d * x;
        g1 += d;
        nt++;
    }
    if (backward) {
        if (m->calls < 64) {
            ql_sha256 s;
            ql_sha256_init(&s);
            size_t cells = (size_t)(b->batch * b->seq) * sizeof(int32_t);
            ql_sha256_update(&s, b->ids, cells);
            ql_sha256_update(&s, b->targets, cells);
            ql_sha256_update(&s, b->pos, cells);
            ql_sha256_update(&s, b->doc, cells);
            ql_sha256_final(&s, m->digest[m->calls]);
        }
        m->calls++;
        m->rows_seen += b->batch;
        m->g[0] += scale * (float)g0;
        m->g[1] += scale * (float)g1;
        if (m->stop && m->calls == m->stop_after_calls) *m->stop = 1;
    } else {
        m->eval_calls++;
    }
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

static void config(ql_config *c, const char *data, const char *steps) {
    ql_cfg_override ov[] = {{"model", "toy"},
                            {"output_dir", dir},
                            {"data.train", data},
                            {"train.steps", steps},
                            {"train.global_batch", "4"},
                            {"train.micro_batch", "3"},
                            {"train.lr", "0.05"},
                            {"train.schedule", "constant"},
                            {"data.max_seq_len", "16"},
                            {"train.eval_every", "10"}};
    ql_status st = ql_config_parse(NULL, 0, "test", ov, sizeof ov / sizeof ov[0], c);
    CHECKF(st == QL_OK, "%s", ql_error_message());
}

/* The toy's mean loss over every target of d, straight from the records. */
static double direct_loss(const toy *m, const ql_token_data *d) {
    double ls = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < d->n; i++)
        for (int64_t t = d->off[i]; t < d->off[i + 1] - 1; t++) {
            if (d->targets[t] < 0) continue;
            double x = d->ids[t] / 16.0, y = (double)m->p[0] * x + m->p[1],
                   e = y - d->targets[t] / 16.0;
            ls += 0.5 * e * e;
            n++;
        }
    return ls / (double)n;
}

static int count_lines(const char *path, const char *needle, char *last, size_t last_len) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) {
            n++;
            snprintf(last, last_len, "%s", line);
        }
    fclose(f);
    return n;
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    char train_path[512], valid_path[512];
    snprintf(train_path, sizeof train_path, "%s", in_dir("train.jsonl"));
    snprintf(valid_path, sizeof valid_path, "%s", in_dir("valid.jsonl"));
    make_data(train_path, 37, 0);
    make_data(valid_path, 11, 5);
    ql_token_data d, v;
    CHECK(ql_jsonl_tokens_load(train_path, 16, &d) == QL_OK);
    CHECK(ql_jsonl_tokens_load(valid_path, 16, &v) == QL_OK);

    /* 40 steps, evaluated at 10, 20, 30, 40 */
    ql_config c;
    config(&c, train_path, "40");
    toy a = {.p = {0.1f, 0.2f}};
    ql_train_model ma = toy_model(&a);
    ql_train_opts oa = {.cfg = &c, .metrics_path = in_dir("a.jsonl"), .valid = &v};
    ql_train_result ra;
    CHECKF(ql_train_run(&ma, &d, &oa, &ra) == QL_OK, "%s", ql_error_message());
    CHECK(ra.steps == 40 && !a.bad_layout && a.rows_seen == 160 && a.calls == 80);
    CHECKF(ra.last_loss < 0.8 * ra.first_loss, "loss %g -> %g", ra.first_loss, ra.last_loss);
    ql_packing p;
    CHECK(ql_packing_build(&d, 16, 1, &p) == QL_OK);
    CHECK(ra.cursor.epoch * p.n_rows + ra.cursor.index == 160);
    CHECK(ra.evals == 4);
    CHECKF(fabs(ra.eval_loss - direct_loss(&a, &v)) < 1e-12, "eval %.17g, direct %.17g",
           ra.eval_loss, direct_loss(&a, &v));
    char last[512] = "";
    CHECK(count_lines(oa.metrics_path, "\"eval_loss\"", last, sizeof last) == 4);
    CHECKF(strstr(last, "{\"step\": 40, \"eval_loss\": ") != NULL, "%s", last);
    CHECK(strtod(strstr(last, "\"eval_loss\": ") + 13, NULL) == ra.eval_loss);
    int64_t v_targets = 0;
    for (int64_t i = 0; i < v.n; i++) v_targets += ql_packing_record_targets(&v, i);
    CHECK(ra.eval_targets == v_targets);
    CHECK(count_lines(oa.metrics_path, "\"loss\"", last, sizeof last) == 40);

    /* eval_every 0: once at the end; 7: at 7, 14 and the end (15) */
    c.train.eval_every = 0;
    c.train.steps = 15;
    toy b = {.p = {0.1f, 0.2f}};
    ql_train_model mb = toy_model(&b);
    ql_train_opts ob = {.cfg = &c, .metrics_path = in_dir("b.jsonl"), .valid = &v};
    ql_train_result rb;
    CHECK(ql_train_run(&mb, &d, &ob, &rb) == QL_OK);
    CHECK(rb.evals == 1 && count_lines(ob.metrics_path, "\"eval_loss\"", last, sizeof last) == 1);
    CHECK(strstr(last, "{\"step\": 15, ") != NULL);
    c.train.eval_every = 7;
    toy b2 = {.p = {0.1f, 0.2f}};
    ql_train_model mb2 = toy_model(&b2);
    ob.metrics_path = in_dir("b2.jsonl");
    CHECK(ql_train_run(&mb2, &d, &ob, &rb) == QL_OK && rb.evals == 3);

    /* resumed at the cursor after step 15: the same micro-batches as run a
     * from step 16 */
    c.train.steps = 25;
    toy r = {.p = {0.1f, 0.2f}};
    ql_train_model mr = toy_model(&r);
    ql_data_cursor at = rb.cursor;
    ql_train_opts orr = {.cfg = &c, .resume = &at};
    ql_train_result rr;
    CHECK(ql_train_run(&mr, &d, &orr, &rr) == QL_OK);
    int same = r.calls == 50;
    for (int k = 0; k < 50 && 30 + k < 64; k++) same &= !memcmp(r.digest[k], a.digest[30 + k], 32);
    CHECK(same);
    CHECK(memcmp(r.digest[0], a.digest[0], 32) != 0);
    CHECK(rr.cursor.epoch == ra.cursor.epoch && rr.cursor.index == ra.cursor.index);
    ql_data_cursor bad = {0, p.n_rows};
    orr.resume = &bad;
    CHECK(ql_train_run(&mr, &d, &orr, &rr) == QL_EINVAL);

    /* interrupted: no evaluation at the end */
    volatile sig_atomic_t stop = 0;
    c.train.steps = 40;
    c.train.eval_every = 0;
    toy s = {.p = {0.1f, 0.2f}, .stop = &stop, .stop_after_calls = 5};
    ql_train_model ms = toy_model(&s);
    ql_train_opts os = {.cfg = &c, .valid = &v, .stop = &stop};
    ql_train_result rs;
    CHECK(ql_train_run(&ms, &d, &os, &rs) == QL_OK);
    CHECK(rs.interrupted && rs.steps == 3 && rs.evals == 0 && s.eval_calls == 0);

    ql_packing_free(&p);
    ql_jsonl_tokens_free(&d);
    ql_jsonl_tokens_free(&v);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE();
}
