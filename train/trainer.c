#include "train/trainer.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "train/batcher.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/schedule.h"

double ql_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct loop {
    const ql_train_model *m;
    const ql_config *c;
    ql_batcher b;
    ql_optim o;
    ql_optim_config oc;
    ql_metrics mx;
    ql_progress p;
} loop;

/* Forward/backward over the micro-batches of one step. */
static ql_status accumulate(loop *L, int64_t first, int64_t n_tg, double *loss_sum,
                            int64_t *tokens) {
    const ql_config *c = L->c;
    int64_t G = c->train.global_batch, M = c->train.micro_batch;
    float scale = 1.0f / (float)n_tg;
    *loss_sum = 0;
    *tokens = 0;
    for (int64_t j = 0; j < G; j += M) {
        int64_t rows = G - j < M ? G - j : M, tok, got_tg = 0;
        double ls = 0;
        ql_batch batch;
        QL_TRY(ql_batcher_fill(&L->b, first + j, rows, &batch, &tok));
        QL_TRY(L->m->fwd_bwd(L->m->ctx, &batch, 1, scale, &ls, &got_tg));
        *loss_sum += ls;
        *tokens += tok;
    }
    return QL_OK;
}

ql_status ql_train_run(const ql_train_model *m, const ql_token_data *d, const ql_train_opts *o,
                       ql_train_result *r) {
    memset(r, 0, sizeof *r);
    r->first_loss = r->last_loss = NAN;
    const ql_config *c = o->cfg;
    loop L = {.m = m, .c = c, .oc = ql_optim_config_from(c)};
    double t0 = ql_now();
    ql_status st = ql_batcher_init(&L.b, d, (uint64_t)c->seed, c->data.shuffle,
                                   c->data.pad_to == QL_PAD_MAX_SEQ_LEN, c->data.max_seq_len,
                                   c->train.micro_batch);
    if (st != QL_OK) return st;
    QL_TRY_GOTO(st, ql_optim_init(&L.o, m->be, m->n), out);
    if (o->metrics_path) QL_TRY_GOTO(st, ql_metrics_open(&L.mx, o->metrics_path), out);
    ql_progress_init(&L.p, o->progress, o->progress_tty, c->train.steps, c->train.log_every);

    t0 = ql_now();
    int64_t G = c->train.global_batch;
    for (int64_t step = 1; step <= c->train.steps; step++) {
        if (o->stop && *o->stop) {
            r->interrupted = 1;
            break;
        }
        double ts = ql_now();
        int64_t first = (step - 1) * G;
        int64_t n_tg = ql_batcher_count_targets(&L.b, first, G);
        double lr = ql_schedule_lr((ql_schedule)c->train.schedule, c->train.lr, step - 1,
                                   c->train.warmup_steps, c->train.steps);
        ql_step_log log = {.step = step, .lr = lr, .targets = n_tg, .loss = NAN, .grad_norm = NAN};
        if (n_tg == 0) {
            /* Every label of the global batch is -100: nothing to learn from. */
            int64_t tok;
            ql_batch batch;
            log.tokens = 0;
            for (int64_t j = 0; j < G; j += c->train.micro_batch) {
                int64_t rows = G - j < c->train.micro_batch ? G - j : c->train.micro_batch;
                QL_TRY_GOTO(st, ql_batcher_fill(&L.b, first + j, rows, &batch, &tok), out);
                log.tokens += tok;
            }
            log.skipped = 1;
            r->skipped++;
            ql_progress_note(&L.p, "step %lld: no target tokens in the global batch; skipped",
                             (long long)step);
        } else {
            double loss_sum;
            QL_TRY_GOTO(st, ql_optim_zero_grads(&L.o, m->grads), out);
            QL_TRY_GOTO(st, accumulate(&L, first, n_tg, &loss_sum, &log.tokens), out);
            log.loss = loss_sum / (double)n_tg;
            ql_step_result sr;
            st = ql_optim_step(&L.o, &L.oc, step, log.loss, lr, m->params, m->grads, &sr);
            log.grad_norm = sr.grad_norm;
            log.skipped = sr.skipped;
            if (sr.skipped) r->skipped++;
            if (st != QL_OK) {
                r->steps = step;
                goto out;
            }
            if (sr.skipped)
                ql_progress_note(&L.p,
                                 "step %lld: loss %g, gradient norm %g: not finite, update "
                                 "skipped (%lld in a row)",
                                 (long long)step, log.loss, log.grad_norm,
                                 (long long)L.o.nonfinite_in_a_row);
            if (!sr.skipped) {
                if (isnan(r->first_loss)) r->first_loss = log.loss;
                r->last_loss = log.loss;
            }
        }
        double now = ql_now();
        log.elapsed_s = now - t0;
        log.tokens_per_s = now > ts ? (double)log.tokens / (now - ts) : 0;
        r->steps = step;
        r->tokens += log.tokens;
        r->targets += n_tg;
        r->elapsed_s = log.elapsed_s;
        QL_TRY_GOTO(st, ql_metrics_write(&L.mx, &log), out);
        ql_progress_info pi = {.step = step,
                               .loss = log.loss,
                               .lr = lr,
                               .grad_norm = log.grad_norm,
                               .tokens_per_s =
                                   log.elapsed_s > 0 ? (double)r->tokens / log.elapsed_s : 0,
                               .elapsed_s = log.elapsed_s,
                               .skipped = log.skipped};
        ql_progress_step(&L.p, &pi);
    }
out:
    ql_progress_end(&L.p);
    r->elapsed_s = ql_now() - t0;
    {
        ql_status cs = ql_metrics_close(&L.mx);
        if (st == QL_OK) st = cs;
    }
    ql_optim_free(&L.o);
    ql_batcher_free(&L.b);
    return st;
}
