#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/json_float.h"

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
    ql_packing rows; /* when the caller gave none */
    ql_batcher b;
    int64_t shard_off, shard_n; /* this rank's slice of each global batch */
    ql_optim o;
    ql_optim_config oc;
    ql_metrics mx;
    ql_progress p;
    ql_packing v_rows; /* the validation set, in rows as training has them */
    ql_batcher vb;
} loop;

/* Forward/backward over this rank's micro-batches of one step. */
static ql_status accumulate(loop *L, int64_t first, int64_t n_tg, double *loss_sum,
                            int64_t *tokens) {
    const ql_config *c = L->c;
    int64_t G = L->shard_n, M = c->train.micro_batch;
    float scale = 1.0f / (float)n_tg;
    first += L->shard_off;
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

/* Mean loss over every target of the validation set, in its rows in file
 * order; one JSON line in metrics.jsonl and a note on the progress output. */
static ql_status evaluate(loop *L, int64_t step, ql_train_result *r) {
    double t0 = ql_now(), loss_sum = 0;
    int64_t n_tg = 0, tokens = 0, M = L->c->train.micro_batch, n = L->v_rows.n_rows;
    for (int64_t g = 0; g < n; g += M) {
        ql_batch batch;
        int64_t tok, got = 0;
        double ls = 0;
        QL_TRY(ql_batcher_fill(&L->vb, g, n - g < M ? n - g : M, &batch, &tok));
        QL_TRY(L->m->fwd_bwd(L->m->ctx, &batch, 0, 0.0f, &ls, &got));
        loss_sum += ls;
        n_tg += got;
        tokens += tok;
    }
    double loss = n_tg ? loss_sum / (double)n_tg : NAN, secs = ql_now() - t0;
    r->evals++;
    r->eval_loss = loss;
    r->eval_targets = n_tg;
    ql_progress_note(&L->p, "eval at step %lld: loss %.4f, perplexity %.4g over %lld targets",
                     (long long)step, loss, exp(loss), (long long)n_tg);
    if (!L->mx.f) return QL_OK;
    char ls_txt[QL_FLOAT_REPR_MAX] = "null", ppl[QL_FLOAT_REPR_MAX] = "null";
    if (isfinite(loss)) ql_json_float_repr(loss, ls_txt);
    if (isfinite(exp(loss))) ql_json_float_repr(exp(loss), ppl);
    if (fprintf(L->mx.f,
                "{\"step\": %" PRId64 ", \"eval_loss\": %s, \"eval_perplexity\": %s, "
                "\"eval_targets\": %" PRId64 ", \"eval_tokens\": %" PRId64 ", \"eval_s\": %.3f}\n",
                step, ls_txt, ppl, n_tg, tokens, secs) < 0 ||
        fflush(L->mx.f) != 0)
        return ql_error(QL_EIO, "%s: write failed: %s", L->mx.path, strerror(errno));
    return QL_OK;
}

static ql_status setup(loop *L, const ql_token_data *d, const ql_train_opts *o) {
    const ql_config *c = L->c;
    int pad_to_max = c->data.pad_to == QL_PAD_MAX_SEQ_LEN;
    const ql_packing *rows = o->rows;
    if (!rows) {
        QL_TRY(ql_packing_build(d, c->data.max_seq_len, c->data.packing, &L->rows));
        rows = &L->rows;
    }
    QL_TRY(ql_batcher_init_rows(&L->b, d, rows, (uint64_t)c->seed, c->data.shuffle, pad_to_max,
                                c->train.micro_batch));
    if (o->resume) QL_TRY(ql_batcher_set_cursor(&L->b, *o->resume));
    /* One rank today; the multi-rank loop passes its world and rank here. */
    QL_TRY(ql_order_shard(c->train.global_batch, 1, 0, &L->shard_off, &L->shard_n));
    if (o->valid && o->valid->n > 0) {
        QL_TRY(ql_packing_build(o->valid, c->data.max_seq_len, c->data.packing, &L->v_rows));
        QL_TRY(ql_batcher_init_rows(&L->vb, o->valid, &L->v_rows, 0, 0, pad_to_max,
                                    c->train.micro_batch));
    }
    return QL_OK;
}

ql_status ql_train_run(const ql_train_model *m, const ql_token_data *d, const ql_train_opts *o,
                       ql_train_result *r) {
    memset(r, 0, sizeof *r);
    r->first_loss = r->last_loss = r->eval_loss = NAN;
    const ql_config *c = o->cfg;
    loop L = {.m = m, .c = c, .oc = ql_optim_config_from(c)};
    double t0 = ql_now();
    ql_status st = setup(&L, d, o);
    if (st != QL_OK) goto out;
    r->cursor = ql_batcher_cursor(&L.b);
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
        int64_t first = L.b.next;
        /* The denominator is the whole global batch's, on every rank. */
        int64_t n_tg = ql_batcher_count_targets(&L.b, first, G);
        double lr = ql_schedule_lr((ql_schedule)c->train.schedule, c->train.lr, step - 1,
                                   c->train.warmup_steps, c->train.steps);
        ql_step_log log = {.step = step, .lr = lr, .targets = n_tg, .loss = NAN, .grad_norm = NAN};
        if (n_tg == 0) {
            /* Every label of the global batch is -100: nothing to learn from. */
            int64_t tok;
            ql_batch batch;
            log.tokens = 0;
            for (int64_t j = 0; j < L.shard_n; j += c->train.micro_batch) {
                int64_t rows =
                    L.shard_n - j < c->train.micro_batch ? L.shard_n - j : c->train.micro_batch;
                QL_TRY_GOTO(st, ql_batcher_fill(&L.b, first + L.shard_off + j, rows, &batch, &tok),
                            out);
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
        L.b.next = first + G;
        r->cursor = ql_batcher_cursor(&L.b);
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
        if (L.vb.d && c->train.eval_every > 0 && step % c->train.eval_every == 0)
            QL_TRY_GOTO(st, evaluate(&L, step, r), out);
    }
    /* The end of a run that went the distance is evaluated (once). */
    if (L.vb.d && !r->interrupted && r->steps > 0 &&
        !(c->train.eval_every > 0 && r->steps % c->train.eval_every == 0))
        st = evaluate(&L, r->steps, r);
out:
    ql_progress_end(&L.p);
    r->elapsed_s = ql_now() - t0;
    {
        ql_status cs = ql_metrics_close(&L.mx);
        if (st == QL_OK) st = cs;
    }
    ql_optim_free(&L.o);
    ql_batcher_free(&L.b);
    ql_packing_free(&L.rows);
    ql_batcher_free(&L.vb);
    ql_packing_free(&L.v_rows);
    return st;
}
