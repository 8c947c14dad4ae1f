#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json_float.h"
#include "dist/fault.h"

#include "train/batcher.h"
#include "train/mem_plan.h"
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
    ql_comm *comm; /* NULL: one process */
    int rank, world;
    double comm_s;   /* this step's seconds in collectives */
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

/* A layer's gradients are final (the step's last micro-batch). */
static ql_status on_layer_done(void *ctx, int layer) {
    loop *L = ctx;
    int64_t lo, hi;
    L->m->layer_grad_range(L->m->ctx, layer, &lo, &hi);
    return ql_optim_grads_ready(&L->o, L->m->grads, lo, hi);
}

/* A layer's adapters are about to be used (the forward pass). */
static ql_status on_layer_start(void *ctx, int layer) {
    loop *L = ctx;
    int64_t lo, hi;
    L->m->layer_grad_range(L->m->ctx, layer, &lo, &hi);
    return ql_optim_params_needed(&L->o, lo, hi);
}

/* Forward/backward over this rank's micro-batches of one step. */
static ql_status accumulate(loop *L, int64_t first, int64_t n_tg, double *loss_sum,
                            int64_t *tokens) {
    const ql_config *c = L->c;
    int64_t G = L->shard_n, M = c->train.micro_batch;
    float scale = 1.0f / (float)n_tg;
    first += L->shard_off;
    *loss_sum = 0;
    *tokens = 0;
    /* The previous step's all-gather: joined layer by layer by the first
     * forward pass, or whole here when the model cannot say. */
    const int start_hook = L->m->set_layer_start && L->m->layer_grad_range;
    if (!start_hook) QL_TRY(ql_optim_params_sync(&L->o));
    for (int64_t j = 0; j < G; j += M) {
        int64_t rows = G - j < M ? G - j : M, tok, got_tg = 0;
        double ls = 0;
        ql_batch batch;
        QL_TRY(ql_batcher_fill(&L->b, first + j, rows, &batch, &tok));
        const int hook = j + M >= G && L->m->set_layer_done && L->m->layer_grad_range &&
                         ql_optim_can_overlap(&L->o);
        if (hook) L->m->set_layer_done(L->m->ctx, on_layer_done, L);
        if (start_hook) L->m->set_layer_start(L->m->ctx, on_layer_start, L);
        ql_status st = L->m->fwd_bwd(L->m->ctx, &batch, 1, scale, &ls, &got_tg);
        if (hook) L->m->set_layer_done(L->m->ctx, NULL, NULL);
        if (start_hook) L->m->set_layer_start(L->m->ctx, NULL, NULL);
        QL_TRY(st);
        *loss_sum += ls;
        *tokens += tok;
    }
    return QL_OK;
}

/* One rank's failure, known to every rank (one process: unchanged). */
static ql_status agree(loop *L, ql_status local) {
    if (!L->comm) return local;
    double t0 = ql_now();
    ql_status st = ql_comm_agree(L->comm, local);
    L->comm_s += ql_now() - t0;
    return st;
}

/* Element-wise sums over the ranks, in rank order (exact for counts). */
static ql_status sum_over_ranks(loop *L, double *v, int64_t n) {
    if (!L->comm) return QL_OK;
    double t0 = ql_now();
    ql_status st = ql_comm_allreduce_sum(L->comm, v, n, QL_DT_F64);
    L->comm_s += ql_now() - t0;
    return st;
}

/* Whether to end the loop before this step: a stop request (SIGINT/SIGTERM)
 * on any rank ends every rank here, at the same step. */
static ql_status stop_requested(loop *L, const ql_train_opts *o, int *stop) {
    double flag = o->stop && *o->stop ? 1.0 : 0.0;
    QL_TRY(sum_over_ranks(L, &flag, 1));
    *stop = flag > 0;
    return QL_OK;
}

/* Mean loss over every target of the validation set, in its rows in file
 * order (each rank takes a contiguous share of the rows; the sums are
 * added in rank order); one JSON line in metrics.jsonl and a note on the
 * progress output. */
static ql_status evaluate(loop *L, int64_t step, ql_train_result *r) {
    double t0 = ql_now(), loss_sum = 0;
    const ql_config *c = L->c;
    int64_t n_tg = 0, tokens = 0, first, n;
    /* At most the rows training runs at a time, which the buffers hold. */
    const int64_t M = ql_train_rank_rows(c->train.global_batch, c->train.micro_batch, L->world);
    ql_dist_slice(L->v_rows.n_rows, L->world, L->rank, &first, &n);
    ql_status st = ql_optim_params_sync(&L->o);
    for (int64_t g = first; g < first + n && st == QL_OK; g += M) {
        ql_batch batch;
        int64_t tok, got = 0;
        double ls = 0;
        int64_t rows = first + n - g < M ? first + n - g : M;
        st = ql_batcher_fill(&L->vb, g, rows, &batch, &tok);
        if (st == QL_OK) st = L->m->fwd_bwd(L->m->ctx, &batch, 0, 0.0f, &ls, &got);
        loss_sum += ls;
        n_tg += got;
        tokens += tok;
    }
    QL_TRY(agree(L, st));
    double sums[3] = {loss_sum, (double)n_tg, (double)tokens};
    QL_TRY(sum_over_ranks(L, sums, 3));
    loss_sum = sums[0];
    n_tg = (int64_t)sums[1];
    tokens = (int64_t)sums[2];
    double loss = n_tg ? loss_sum / (double)n_tg : NAN, secs = ql_now() - t0;
    r->evals++;
    r->eval_loss = loss;
    r->eval_targets = n_tg;
    ql_progress_note(&L->p, "eval at step %lld: loss %.4f, perplexity %.4g over %lld targets",
                     (long long)step, loss, exp(loss), (long long)n_tg);
    st = QL_OK;
    if (L->mx.f) {
        char ls_txt[QL_FLOAT_REPR_MAX] = "null", ppl[QL_FLOAT_REPR_MAX] = "null";
        if (isfinite(loss)) ql_json_float_repr(loss, ls_txt);
        if (isfinite(exp(loss))) ql_json_float_repr(exp(loss), ppl);
        if (fprintf(L->mx.f,
                    "{\"step\": %" PRId64 ", \"eval_loss\": %s, \"eval_perplexity\": %s, "
                    "\"eval_targets\": %" PRId64 ", \"eval_tokens\": %" PRId64
                    ", \"eval_s\": %.3f}\n",
                    step, ls_txt, ppl, n_tg, tokens, secs) < 0 ||
            fflush(L->mx.f) != 0)
            st = ql_error(QL_EIO, "%s: write failed: %s", L->mx.path, strerror(errno));
    }
    return agree(L, st);
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
    QL_TRY(ql_train_check_batch(c->train.global_batch, c->train.micro_batch, L->world));
    QL_TRY(ql_order_shard(c->train.global_batch, L->world, L->rank, &L->shard_off, &L->shard_n));
    if (o->valid && o->valid->n > 0) {
        QL_TRY(ql_packing_build(o->valid, c->data.max_seq_len, c->data.packing, &L->v_rows));
        QL_TRY(ql_batcher_init_rows(&L->vb, o->valid, &L->v_rows, 0, 0, pad_to_max,
                                    c->train.micro_batch));
    }
    return QL_OK;
}

/* Only the token count of this rank's share (a global batch without
 * targets is skipped, but its tokens were seen). */
static ql_status count_tokens(loop *L, int64_t first, int64_t *tokens) {
    int64_t M = L->c->train.micro_batch, tok;
    ql_batch batch;
    *tokens = 0;
    for (int64_t j = 0; j < L->shard_n; j += M) {
        int64_t rows = L->shard_n - j < M ? L->shard_n - j : M;
        QL_TRY(ql_batcher_fill(&L->b, first + L->shard_off + j, rows, &batch, &tok));
        *tokens += tok;
    }
    return QL_OK;
}

/* The checkpoint hook at a step boundary (every rank). */
static ql_status boundary(loop *L, const ql_train_opts *o, const ql_train_result *r, int64_t step,
                          double elapsed, int *halt) {
    *halt = 0;
    if (!o->hooks || !o->hooks->boundary) return QL_OK;
    /* No ql_optim_params_sync: a checkpoint reads this rank's own slice,
     * which AdamW wrote on the compute stream; the all-gather only reads it. */
    ql_train_state s = {.step = step,
                        .cursor = ql_batcher_cursor(&L->b),
                        .samples_seen = L->b.next,
                        .tokens_seen = r->tokens,
                        .targets_seen = r->targets,
                        .skipped = r->skipped,
                        .elapsed_s = elapsed,
                        .optim = &L->o};
    if (L->comm) ql_comm_set_phase(L->comm, "checkpoint at step %lld", (long long)step);
    return o->hooks->boundary(o->hooks->ctx, &s, halt);
}

/* QL_TRACE_SAMPLES=1: rank 0 prints which global samples (and rows) each
 * step takes, "samples step S: g=row g=row ...", for the exactly-once tests. */
static void trace_samples(loop *L, const ql_train_opts *o, int64_t step, int64_t first) {
    static int on = -1;
    if (on < 0) on = getenv("QL_TRACE_SAMPLES") && atoi(getenv("QL_TRACE_SAMPLES")) > 0;
    if (!on || L->rank != 0) return;
    (void)o;
    /* One write for the line: under mpirun other ranks' output shares the
     * stream, and a line written piece by piece can be split by theirs. */
    char *line = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&line, &n);
    if (!f) return;
    fprintf(f, "samples step %lld:", (long long)step);
    for (int64_t g = first; g < first + L->c->train.global_batch; g++)
        fprintf(f, " %lld=%lld", (long long)g, (long long)ql_batcher_row(&L->b, g));
    fputc('\n', f);
    if (fclose(f) == 0) fwrite(line, 1, n, stderr);
    free(line);
}

int64_t ql_train_rank_rows(int64_t global_batch, int64_t micro_batch, int world) {
    const int64_t share = global_batch / (world > 0 ? world : 1);
    return share > 0 && share < micro_batch ? share : micro_batch;
}

ql_status ql_train_check_batch(int64_t global_batch, int64_t micro_batch, int world) {
    (void)micro_batch; /* a micro-batch above the rank's share is simply the share */
    if (world < 1) return ql_error(QL_EINTERNAL, "a world of %d ranks", world);
    if (global_batch % world == 0) return QL_OK;
    int64_t lo = global_batch / world * world, hi = lo + world;
    char ranks[128] = "";
    size_t used = 0;
    int listed = 0;
    for (int64_t d = 1; d <= global_batch && listed < 8; d++) {
        if (global_batch % d) continue;
        used += (size_t)snprintf(ranks + used, sizeof ranks - used, "%s%lld", listed ? ", " : "",
                                 (long long)d);
        listed++;
        if (used >= sizeof ranks - 24) break;
    }
    char multiples[64];
    if (lo > 0)
        snprintf(multiples, sizeof multiples, "%lld or %lld", (long long)lo, (long long)hi);
    else
        snprintf(multiples, sizeof multiples, "%lld", (long long)hi);
    return ql_error(QL_EINVAL,
                    "train.global_batch = %lld cannot be split over %d ranks: every rank takes an "
                    "equal share of each global batch, so it must be a multiple of %d (e.g. "
                    "--train.global_batch=%s), or run on a number of ranks that divides %lld "
                    "(%s%s)",
                    (long long)global_batch, world, world, multiples, (long long)global_batch,
                    ranks, listed == 8 ? ", ..." : "");
}

ql_status ql_train_run(const ql_train_model *m, const ql_token_data *d, const ql_train_opts *o,
                       ql_train_result *r) {
    memset(r, 0, sizeof *r);
    r->first_loss = r->last_loss = r->eval_loss = NAN;
    const ql_config *c = o->cfg;
    loop L = {.m = m,
              .c = c,
              .comm = o->comm,
              .rank = o->comm ? ql_comm_rank(o->comm) : 0,
              .world = o->comm ? ql_comm_size(o->comm) : 1,
              .oc = ql_optim_config_from(c)};
    double t0 = ql_now(), before = 0; /* before: training seconds of earlier runs */
    ql_status st = setup(&L, d, o);
    if (st == QL_OK) st = ql_optim_init_dist(&L.o, m->be, m->n, o->comm, o->dcomm);
    int64_t start = 0;
    if (st == QL_OK && o->hooks && o->hooks->restore) {
        ql_train_state s = {.optim = &L.o, .cursor = ql_batcher_cursor(&L.b)};
        st = o->hooks->restore(o->hooks->ctx, &s);
        if (st == QL_OK && s.step > 0) {
            start = s.step;
            st = ql_batcher_set_cursor(&L.b, s.cursor);
            r->tokens = s.tokens_seen;
            r->targets = s.targets_seen;
            r->skipped = s.skipped;
            before = s.elapsed_s;
        }
    }
    r->start_step = r->steps = start;
    /* A resumed run appends to its metrics, less the lines of steps after
     * the checkpoint (they are run again). */
    if (st == QL_OK && o->metrics_path)
        st = start > 0 ? ql_metrics_open_at(&L.mx, o->metrics_path, start)
                       : ql_metrics_open(&L.mx, o->metrics_path);
    QL_TRY_GOTO(st, agree(&L, st), out);
    r->cursor = ql_batcher_cursor(&L.b);
    ql_progress_init(&L.p, o->progress, o->progress_tty, c->train.steps, c->train.log_every);

    t0 = ql_now();
    int64_t G = c->train.global_batch;
    int halt = 0;
    QL_TRY_GOTO(st, boundary(&L, o, r, start, ql_now() - t0 + before, &halt), out);
    for (int64_t step = start + 1; step <= c->train.steps && !halt; step++) {
        int stop;
        QL_TRY_GOTO(st, stop_requested(&L, o, &stop), out);
        if (stop) {
            r->interrupted = 1;
            break;
        }
        if (L.comm) ql_comm_set_phase(L.comm, "step %lld", (long long)step);
        L.comm_s = 0;
        if (m->be->mem_reset_peak) m->be->mem_reset_peak(); /* this step's peak */
        double ts = ql_now();
        int64_t first = L.b.next;
        trace_samples(&L, o, step, first);
        /* The denominator is the whole global batch's, on every rank. */
        int64_t n_tg = ql_batcher_count_targets(&L.b, first, G);
        double lr = ql_schedule_lr((ql_schedule)c->train.schedule, c->train.lr, step - 1,
                                   c->train.warmup_steps, c->train.steps);
        ql_step_log log = {.step = step,
                           .lr = lr,
                           .targets = n_tg,
                           .loss = NAN,
                           .grad_norm = NAN,
                           .world = L.world};

        /* This rank's share of the global batch, then the ranks agree: a
         * failure anywhere ends every rank here, with its message. */
        double sums[2] = {0, 0}; /* loss sum, tokens */
        int64_t tokens = 0;
        if (n_tg == 0) {
            st = count_tokens(&L, first, &tokens);
        } else {
            st = ql_optim_zero_grads(&L.o, m->grads);
            if (st == QL_OK) st = accumulate(&L, first, n_tg, &sums[0], &tokens);
        }
        if (st == QL_OK) st = ql_fault_point("step", L.rank, step);
        QL_TRY_GOTO(st, agree(&L, st), out);
        sums[1] = (double)tokens;
        QL_TRY_GOTO(st, sum_over_ranks(&L, sums, 2), out);
        log.tokens = (int64_t)sums[1];

        if (n_tg == 0) {
            /* Every label of the global batch is -100: nothing to learn from. */
            log.skipped = 1;
            r->skipped++;
            ql_progress_note(&L.p, "step %lld: no target tokens in the global batch; skipped",
                             (long long)step);
        } else {
            log.loss = sums[0] / (double)n_tg;
            ql_step_result sr;
            st = ql_optim_step(&L.o, &L.oc, step, log.loss, lr, m->params, m->grads, &sr);
            L.comm_s += sr.comm_s;
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
        log.elapsed_s = now - t0 + before;
        log.tokens_per_s = now > ts ? (double)log.tokens / (now - ts) : 0;
        log.comm_s = L.comm_s;
        if (m->be->mem_stats) {
            ql_mem_stats ms;
            m->be->mem_stats(&ms);
            log.mem_peak = ms.peak;
            log.mem_device_used = ms.device_used;
        }
        log.mem_rss_peak = ql_mem_rss_peak();
        r->steps = step;
        r->tokens += log.tokens;
        r->targets += n_tg;
        r->elapsed_s = log.elapsed_s;
        r->comm_s += L.comm_s;
        /* Rank 0 writes the metrics line; its failure is every rank's. */
        st = ql_metrics_write(&L.mx, &log);
        ql_progress_info pi = {.step = step,
                               .loss = log.loss,
                               .lr = lr,
                               .grad_norm = log.grad_norm,
                               .tokens_per_s =
                                   log.elapsed_s > 0 ? (double)r->tokens / log.elapsed_s : 0,
                               .elapsed_s = log.elapsed_s,
                               .skipped = log.skipped};
        ql_progress_step(&L.p, &pi);
        QL_TRY_GOTO(st, agree(&L, st), out);
        if (L.vb.d && c->train.eval_every > 0 && step % c->train.eval_every == 0)
            QL_TRY_GOTO(st, evaluate(&L, step, r), out);
        QL_TRY_GOTO(st, boundary(&L, o, r, step, ql_now() - t0 + before, &halt), out);
    }
    if (halt) r->interrupted = r->halted = 1;
    /* The end of a run that went the distance is evaluated (once). */
    if (L.vb.d && !r->interrupted && r->steps > start &&
        !(c->train.eval_every > 0 && r->steps % c->train.eval_every == 0))
        st = evaluate(&L, r->steps, r);
out:
    /* The caller exports the parameters next; after a failure the buffers
     * are freed next: no overlapped collective may still be running. */
    {
        ql_status ds = st == QL_OK ? ql_optim_params_sync(&L.o) : QL_OK;
        if (ds == QL_OK) ds = ql_optim_drain(&L.o);
        if (st == QL_OK) st = ds;
    }
    ql_progress_end(&L.p);
    r->elapsed_s = ql_now() - t0 + before;
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
