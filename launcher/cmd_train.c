/* qlora train CONFIG.yaml [--key=value ...]: LoRA fine-tuning of a 4-bit base
 * model on JSONL records (docs/training.md, docs/data.md, docs/config.md). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/fsutil.h"
#include "data/dataset.h"
#include "launcher/commands.h"
#include "launcher/config_cli.h"
#include "model/llama.h"
#include "model/peft.h"
#include "train/progress.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora train CONFIG.yaml [--key=value ...]\n"
               "\n"
               "Trains LoRA adapters on a 4-bit base model. CONFIG.yaml holds the model, LoRA,\n"
               "optimizer, schedule, data and output settings (docs/config.md lists every key);\n"
               "--section.key=value overrides one, e.g. --train.steps=50 --lora.r=8.\n"
               "\n"
               "Writes OUTPUT_DIR/config.resolved.yaml, OUTPUT_DIR/metrics.jsonl (one JSON line\n"
               "per step) and, at the end, the adapter in PEFT format to OUTPUT_DIR/adapter/.\n"
               "Ctrl-C stops at the end of the current step and saves the adapter.\n"
               "\n"
               "exit status: 0 done, 1 error or interrupted (the message says which), 2 bad\n"
               "command line\n");
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    stop_flag = 1;
    /* A second Ctrl-C ends the process at once. */
    signal(sig, SIG_DFL);
}

/* output_dir: created if missing; a previous run in it needs overwrite_output_dir. */
static ql_status prepare_output(const ql_config *c) {
    static const char *const marks[] = {"metrics.jsonl", "adapter"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        char *p = ql_fs_join(c->output_dir, marks[i]);
        if (!p) return QL_ENOMEM;
        int there = ql_fs_exists(p);
        free(p);
        if (there && !c->overwrite_output_dir)
            return ql_error(QL_EINVAL,
                            "output_dir %s already holds a run (%s); choose another output_dir or "
                            "set overwrite_output_dir: true (--overwrite_output_dir=true)",
                            c->output_dir, marks[i]);
    }
    QL_TRY(ql_fs_mkdirs(c->output_dir));
    char *yaml = ql_config_to_yaml(c);
    if (!yaml) return ql_error(QL_ENOMEM, "out of memory writing the resolved configuration");
    char *p = ql_fs_join(c->output_dir, "config.resolved.yaml");
    ql_status st = p ? ql_fs_write_atomic(p, yaml, strlen(yaml)) : QL_ENOMEM;
    free(p);
    free(yaml);
    return st;
}

static ql_status llama_fwd_bwd(void *ctx, const ql_batch *b, int backward, float grad_scale,
                               double *loss_sum, int64_t *n_targets) {
    return ql_llama_forward_backward(ctx, b, backward, grad_scale, loss_sum, n_targets);
}

static ql_llama_options model_options(const ql_config *c, const ql_backend *be,
                                      const ql_dataset *ds) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.quant_type = c->quant.type ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
    o.blocksize = (int)c->quant.blocksize;
    o.double_quant = c->quant.double_quant;
    o.lora = (ql_lora_config){.r = (int)c->lora.r,
                              .alpha = (float)c->lora.alpha,
                              .dropout = (float)c->lora.dropout,
                              .use_rslora = c->lora.use_rslora,
                              .targets = c->lora.targets};
    o.seed = (uint64_t)c->seed;
    o.checkpoint_activations = c->train.activation_checkpointing;
    o.max_batch = c->train.micro_batch;
    /* Buffers for the longest row that can occur, not more. */
    o.max_seq = c->data.pad_to == QL_PAD_MAX_SEQ_LEN ? c->data.max_seq_len : ql_dataset_max_row(ds);
    return o;
}

static int run(const ql_config *c) {
    ql_status st = prepare_output(c);
    if (st != QL_OK) return ql_report(st);
    const ql_backend *be = ql_backend_by_name(c->backend);
    if (!be) return ql_report(ql_error_wrap(QL_EUNSUPPORTED, "backend: "));

    /* The data first: a bad line should not wait for the model to load. */
    ql_dataset ds;
    st = ql_dataset_load(c, stderr, &ds);
    if (st != QL_OK) return ql_report(st);
    ql_dataset_print(&ds, c, stderr);
    const ql_token_data *d = &ds.train.d;

    ql_llama_options o = model_options(c, be, &ds);
    ql_llama *m = NULL;
    st = ql_llama_load(c->model, &o, &m);
    if (st == QL_OK) st = ql_jsonl_tokens_check_vocab(d, ql_llama_config(m)->vocab_size);
    if (st == QL_OK && ds.valid.d.n)
        st = ql_jsonl_tokens_check_vocab(&ds.valid.d, ql_llama_config(m)->vocab_size);
    if (st != QL_OK) {
        ql_llama_free(m);
        ql_dataset_free(&ds);
        return ql_report(st);
    }
    const ql_hf_config *hc = ql_llama_config(m);
    if (hc->max_position_embeddings > 0 && d->max_len > hc->max_position_embeddings)
        fprintf(stderr,
                "warning: records of up to %lld tokens are longer than the model's "
                "max_position_embeddings (%lld); consider data.max_seq_len <= %lld\n",
                (long long)d->max_len, (long long)hc->max_position_embeddings,
                (long long)hc->max_position_embeddings);
    ql_adapters *a = ql_llama_adapters(m);
    int64_t accum = (c->train.global_batch + c->train.micro_batch - 1) / c->train.micro_batch;
    double epochs = (double)(c->train.steps * c->train.global_batch) / (double)ds.train.rows.n_rows;
    fprintf(stderr,
            "training: %lld steps of %lld %s (%lld micro-batch%s of up to %lld), %.2f "
            "epochs; lr %g %s, warmup %lld; backend %s\n",
            (long long)c->train.steps, (long long)c->train.global_batch,
            c->data.packing ? "packed rows" : "sequences", (long long)accum, accum == 1 ? "" : "es",
            (long long)c->train.micro_batch, epochs, c->train.lr,
            c->train.schedule == QL_SCHED_COSINE   ? "cosine"
            : c->train.schedule == QL_SCHED_LINEAR ? "linear"
                                                   : "constant",
            (long long)c->train.warmup_steps, be->name);

    ql_train_model tm = {.ctx = m,
                         .be = be,
                         .params = a->params,
                         .grads = a->grads,
                         .n = a->n,
                         .fwd_bwd = llama_fwd_bwd};
    char *metrics = ql_fs_join(c->output_dir, "metrics.jsonl");
    char *adapter = ql_fs_join(c->output_dir, "adapter");
    if (!metrics || !adapter) st = ql_error(QL_ENOMEM, "out of memory");
    ql_train_result r = {0};
    if (st == QL_OK) {
        ql_train_opts to = {.cfg = c,
                            .metrics_path = metrics,
                            .progress = stderr,
                            .progress_tty = -1,
                            .stop = &stop_flag,
                            .rows = &ds.train.rows,
                            .valid = ds.valid.d.n ? &ds.valid.d : NULL};
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        st = ql_train_run(&tm, d, &to, &r);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    }
    /* A run that failed (non-finite steps, I/O) keeps no adapter: its last
     * state is not one anybody asked for. An interrupted one does. */
    if (st == QL_OK) st = ql_peft_save(adapter, a, be, c->model);
    int rc = QL_EXIT_OK;
    if (st != QL_OK) {
        rc = ql_report(st);
    } else {
        char el[32];
        ql_format_duration(r.elapsed_s, el, sizeof el);
        printf("%s %lld of %lld steps in %s", r.interrupted ? "interrupted after" : "trained",
               (long long)r.steps, (long long)c->train.steps, el);
        if (r.skipped) printf(" (%lld skipped)", (long long)r.skipped);
        printf(": %lld tokens, %.0f tokens/s; loss %.4f -> %.4f\n", (long long)r.tokens,
               r.elapsed_s > 0 ? (double)r.tokens / r.elapsed_s : 0.0, r.first_loss, r.last_loss);
        if (r.evals)
            printf("eval: loss %.4f, perplexity %.4f over %lld validation targets\n", r.eval_loss,
                   exp(r.eval_loss), (long long)r.eval_targets);
        printf("adapter: %s\nmetrics: %s\n", adapter, metrics);
        fflush(stdout);
        if (r.interrupted) {
            fprintf(stderr,
                    "qlora: interrupted at step %lld of %lld; the adapter of that step is "
                    "saved in %s\n",
                    (long long)r.steps, (long long)c->train.steps, adapter);
            rc = QL_EXIT_ERROR;
        }
    }
    free(metrics);
    free(adapter);
    ql_llama_free(m);
    ql_dataset_free(&ds);
    return rc;
}

int ql_cmd_train(int argc, char **argv) {
    ql_config *c = NULL;
    int rc = ql_cli_load_config(argc, argv, 1, "train", usage, &c);
    if (rc >= 0) return rc;
    rc = run(c);
    free(c);
    return rc;
}
