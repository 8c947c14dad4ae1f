/* qlora train CONFIG.yaml [--key=value ...]: LoRA fine-tuning of a 4-bit base
 * model on JSONL records (docs/training.md, docs/data.md, docs/config.md). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "dist/fault.h"
#include "launcher/commands.h"
#include "launcher/config_cli.h"
#include "launcher/job.h"
#include "model/llama.h"
#include "model/peft.h"
#include "model/source.h"
#include "train/init_adapter.h"
#include "train/mem_plan.h"
#include "train/progress.h"
#include "train/report.h"
#include "train/review.h"
#include "train/train_ckpt.h"
#include "train/train_eval_store.h"
#include "train/trainer.h"
#include "kernels/cuda_api.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora train CONFIG.yaml [--key=value ...] [--dry-run] [--memory-limit=GB]\n"
               "\n"
               "Trains LoRA adapters on a 4-bit base model. CONFIG.yaml holds the model, LoRA,\n"
               "optimizer, schedule, data and output settings (docs/config.md lists every key);\n"
               "--section.key=value overrides one, e.g. --train.steps=50 --lora.r=8.\n"
               "\n"
               "Writes OUTPUT_DIR/config.resolved.yaml, OUTPUT_DIR/metrics.jsonl (one JSON line\n"
               "per step) and, at the end, the adapter in PEFT format to OUTPUT_DIR/adapter/.\n"
               "Ctrl-C stops at the end of the current step and saves the adapter. Then\n"
               "OUTPUT_DIR/report.html and OUTPUT_DIR/loss.png (the loss plot) and, with a\n"
               "validation set, OUTPUT_DIR/eval.json (for qlora eval --baseline OUTPUT_DIR).\n"
               "\n"
               "lora.init_adapter: PATH (a PEFT adapter or run directory, or a llama.cpp\n"
               "adapter FILE.gguf) starts from that adapter: its r, alpha, rsLoRA and targets,\n"
               "its weights, fresh AdamW state; a checkpoint to resume from takes precedence\n"
               "(docs/training.md).\n"
               "\n"
               "Checkpoints (docs/checkpoint-format.md): OUTPUT_DIR/checkpoints/step-NNNNNNNN/\n"
               "every checkpoint.every_steps steps (and checkpoint.every_minutes minutes);\n"
               "resume: auto (the default) continues from the newest one that verifies.\n"
               "SIGUSR1 or SIGTERM: a checkpoint at the end of the current step, then exit 75\n"
               "(requeue me); a second one ends the process at once.\n"
               "\n"
               "Several ranks: mpirun -np N qlora train CONFIG.yaml, or srun qlora train\n"
               "CONFIG.yaml. The ranks split every global batch (train.global_batch must be a\n"
               "multiple of N) and give the same result as one rank; rank 0 prints and writes\n"
               "the files. dist.timeout_s (or QL_DIST_TIMEOUT_S) bounds how long a rank waits\n"
               "for the others (docs/distributed.md).\n"
               "\n"
               "Memory (docs/training.md): --dry-run prints the estimate for one rank (4-bit\n"
               "weights, adapters, gradients, AdamW, activations with and without checkpointing,\n"
               "logits, workspace) from the model's config alone and exits (0: it fits). Every\n"
               "run checks it first against --memory-limit=GB (train.memory_limit_gb), else the\n"
               "GPU's or the host's memory, and stops naming what to change when it does not fit.\n"
               "backend: auto picks cuda when a GPU is visible; each rank takes GPU local rank\n"
               "mod the visible GPUs.\n"
               "\n"
               "exit status: 0 done, 1 error or interrupted (the message says which), 2 bad\n"
               "command line, 75 checkpointed after SIGUSR1/SIGTERM (run it again to resume)\n");
}

static volatile sig_atomic_t stop_flag, preempt_flag, preempt_signal;
static void on_signal(int sig) {
    stop_flag = 1;
    /* A second Ctrl-C ends the process at once. */
    signal(sig, SIG_DFL);
}
/* SIGUSR1/SIGTERM (a scheduler's preemption): checkpoint at the next step
 * boundary and exit 75. A second one ends the process at once (the default
 * action), leaving the last committed checkpoint as it is. */
static void on_preempt(int sig) {
    preempt_flag = 1;
    preempt_signal = sig;
    signal(sig, SIG_DFL);
}

/* A metrics.jsonl marks a run once it holds a step's line: one left by a
 * start that stopped before its first step (a preemption while loading) does
 * not, so that the requeued job starts. */
static int metrics_has_steps(const char *path) {
    char *data = NULL;
    size_t len = 0;
    if (ql_fs_read_file(path, &data, &len) != QL_OK) {
        ql_error_clear();
        return 1; /* unreadable: be careful */
    }
    const int steps = strstr(data, "\"loss\"") != NULL;
    free(data);
    return steps;
}

/* output_dir: created if missing; a previous run in it needs
 * overwrite_output_dir, unless this run resumes from its checkpoints. A
 * resume whose configuration a checkpoint refuses is refused here, before
 * anything is loaded; *done is set when the run is over (its last step's
 * checkpoint, the adapter saved after it: ql_train_ckpt_prepare). */
static ql_status prepare_output(const ql_config *c, int *done) {
    static const char *const marks[] = {"metrics.jsonl", "adapter"};
    *done = 0;
    if (!ql_fs_exists(c->model))
        return ql_error(QL_ENOTFOUND, "model: %s: no such file or directory", c->model);
    if (ql_fs_exists(c->output_dir) && !ql_fs_is_dir(c->output_dir))
        return ql_error(QL_EINVAL, "output_dir %s exists and is not a directory", c->output_dir);
    int resuming = 0;
    int64_t step = -1;
    QL_TRY(ql_train_ckpt_prepare(c, &resuming, &step));
    *done = step >= 0;
    if (*done)
        printf("nothing to train: the checkpoint to resume from is of step %lld (train.steps: "
               "%lld) and %s/adapter was saved after it; raise train.steps to train further\n",
               (long long)step, (long long)c->train.steps, c->output_dir);
    for (size_t i = 0; i < sizeof marks / sizeof marks[0] && !resuming; i++) {
        char *p = ql_fs_join(c->output_dir, marks[i]);
        if (!p) return QL_ENOMEM;
        int there = ql_fs_exists(p) && (i > 0 || metrics_has_steps(p));
        free(p);
        if (there && !c->overwrite_output_dir)
            return ql_error(QL_EINVAL,
                            "output_dir %s already holds a run (%s) and no checkpoint to resume "
                            "from; choose another output_dir or set overwrite_output_dir: true "
                            "(--overwrite_output_dir=true)",
                            c->output_dir, marks[i]);
    }
    return ql_fs_mkdirs(c->output_dir);
}

/* OUTPUT_DIR/config.resolved.yaml, once the run is sure to start (its
 * resume accepted): a refused start leaves the run's own file as it was,
 * and eval and export read that file to learn how the run held its base. */
static ql_status write_resolved(const ql_config *c) {
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

static void llama_set_layer_done(void *ctx, ql_status (*fn)(void *fctx, int layer), void *fctx) {
    ql_llama_set_layer_done(ctx, fn, fctx);
}

static void llama_set_layer_start(void *ctx, ql_status (*fn)(void *fctx, int layer), void *fctx) {
    ql_llama_set_layer_start(ctx, fn, fctx);
}

static void llama_layer_grad_range(void *ctx, int layer, int64_t *lo, int64_t *hi) {
    ql_llama_layer_grad_range(ctx, layer, lo, hi);
}

static ql_llama_options model_options(const ql_config *c, const ql_job *j, const ql_backend *be,
                                      const ql_dataset *ds) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    ql_quant_options_from_config(c, &o);
    o.dequantized_layers = c->quant.dequantized_layers;
    o.lora = (ql_lora_config){.r = (int)c->lora.r,
                              .alpha = (float)c->lora.alpha,
                              .dropout = (float)c->lora.dropout,
                              .use_rslora = c->lora.use_rslora,
                              .targets = c->lora.targets};
    o.seed = (uint64_t)c->seed;
    o.checkpoint_activations = c->train.activation_checkpointing;
    /* Buffers for the most rows a rank runs at a time and the longest row
     * that can occur, not more. */
    o.max_batch = ql_train_rank_rows(c->train.global_batch, c->train.micro_batch, j->size);
    o.max_seq = c->data.pad_to == QL_PAD_MAX_SEQ_LEN ? c->data.max_seq_len : ql_dataset_max_row(ds);
    return o;
}

/* A different dropout stream on every rank (rank 0 keeps the one a single
 * process uses), so that ranks do not draw the same masks for their
 * micro-batches. */
#define QL_DROPOUT_RANK_STREAM (UINT64_C(1) << 62)

static int64_t rank_rows(const ql_config *c, const ql_job *j) {
    return ql_train_rank_rows(c->train.global_batch, c->train.micro_batch, j->size);
}

static void print_plan(const ql_config *c, const ql_job *j, const ql_backend *be,
                       const ql_dataset *ds) {
    int64_t G = c->train.global_batch, per = G / j->size;
    int64_t mb = rank_rows(c, j), accum = (per + mb - 1) / mb;
    double epochs = (double)(c->train.steps * G) / (double)ds->train.rows.n_rows;
    fprintf(stderr, "training: %lld steps of %lld %s", (long long)c->train.steps, (long long)G,
            c->data.packing ? "packed rows" : "sequences");
    if (j->size > 1)
        fprintf(stderr, " on %d ranks (%lld per rank:", j->size, (long long)per);
    else
        fprintf(stderr, " (");
    fprintf(stderr,
            "%s%lld micro-batch%s of up to %lld), %.2f epochs; lr %g %s, warmup %lld; "
            "backend %s",
            j->size > 1 ? " " : "", (long long)accum, accum == 1 ? "" : "es", (long long)mb, epochs,
            c->train.lr,
            c->train.schedule == QL_SCHED_COSINE   ? "cosine"
            : c->train.schedule == QL_SCHED_LINEAR ? "linear"
                                                   : "constant",
            (long long)c->train.warmup_steps, be->name);
    if (j->size > 1)
        fprintf(stderr, "; %d node%s, %s", j->world.n_nodes, j->world.n_nodes == 1 ? "" : "s",
                ql_launcher_name(j->world.launcher));
    if (j->threads)
        fprintf(stderr, "; %d thread%s per rank", j->threads, j->threads == 1 ? "" : "s");
    fputc('\n', stderr);
}

/* The bound GPU's memory and name ("GPU 0 (NVIDIA H200)"), or 0 when the
 * run is not on a GPU. */
static size_t gpu_memory(int device, char *name, size_t n) {
    *name = 0;
#ifdef QL_HAVE_CUDA
    ql_cuda_device_info info;
    if (device >= 0 && ql_cuda_get_device_info(device, &info) == QL_OK) {
        snprintf(name, n, "GPU %d (%s)", device, info.name);
        return info.total_mem;
    }
#else
    (void)device;
    (void)n;
#endif
    return 0;
}

/* The memory estimate of this run against its limit: printed in full with
 * `print` (rank 0 of --dry-run), and an error naming what to change when
 * it does not fit. The model's config only; nothing large is allocated. */
static ql_status memory_plan(const ql_config *c, const ql_job *j, int cuda, int device,
                             int64_t max_seq, FILE *print) {
    /* The estimate follows the 4-bit path rule: a mistyped variable is an
     * error here, not a silent default. */
    if (cuda) QL_TRY(ql_cuda_q4_check_env());
    ql_hf_config hc;
    QL_TRY(ql_model_config_load(c->model, &hc));
    ql_mem_estimate e;
    ql_status st = ql_mem_plan_estimate(c, &hc, max_seq, cuda, j->size, &e);
    char gpu[300], what[400];
    size_t limit = 0;
    if (st == QL_OK) {
        size_t total = gpu_memory(device, gpu, sizeof gpu);
        if (cuda && !total && c->train.memory_limit_gb <= 0) {
            snprintf(what, sizeof what, "no GPU visible here: --memory-limit=GB checks a size");
        } else {
            int local = j->world.local_size > 0 ? j->world.local_size : 1;
            limit = ql_mem_plan_limit(c, total, gpu, local, what, sizeof what);
        }
        if (print) ql_mem_plan_print(print, c, &e, limit, what);
        st = ql_mem_plan_check(c, &hc, max_seq, cuda, j->size, &e, limit, what);
        if (print && cuda && st == QL_OK)
            ql_mem_plan_print_dense_hint(print, c, &hc, max_seq, j->size, limit);
    }
    ql_hf_config_free(&hc);
    return st;
}

/* qlora train --dry-run: the estimate for rows of data.max_seq_len (the
 * data are not read), on every rank; rank 0 prints. */
static int dry_run(const ql_config *c, ql_job *j) {
    const char *backend = ql_backend_resolve_name(c->backend);
    int cuda = !strcmp(backend, "cuda"), device = -1;
    ql_status st = QL_OK;
    if (cuda) st = ql_comm_bind_device(j->comm, &device);
    if (st == QL_OK)
        st = memory_plan(c, j, cuda, device, c->data.max_seq_len, j->rank == 0 ? stdout : NULL);
    fflush(stdout);
    if ((st = ql_job_agree(j, st)) != QL_OK) return ql_job_report(j, st);
    if (j->rank == 0)
        printf("dry run: backend %s, %d rank%s; nothing was loaded or trained\n", backend, j->size,
               j->size == 1 ? "" : "s");
    return QL_EXIT_OK;
}

/* Rank 0 at the end: OUTPUT_DIR/eval.json, report.html and loss.png, and
 * their paths; a failure is a warning (the adapter is saved). */
static void run_files(const ql_config *c, const ql_dataset *ds, const ql_train_result *r,
                      const char *adapter) {
    char ev[QL_CFG_PATH_MAX + 16];
    if (ql_train_eval_store(c, ds, r, adapter, ev, sizeof ev) != QL_OK)
        fprintf(stderr, "warning: eval.json not written: %s\n", ql_error_message());
    else if (*ev)
        printf("eval file: %s\n", ev);
    if (ql_report_write(c->output_dir, NULL) != QL_OK) {
        fprintf(stderr, "warning: the report was not written: %s\n", ql_error_message());
    } else {
        printf("report: %s/%s\nloss plot: %s/%s\n", c->output_dir, QL_REPORT_HTML, c->output_dir,
               QL_REPORT_PNG);
    }
    ql_error_clear();
}

/* After an agreed failure that was the device running out of memory, rank 0
 * adds the settings that lower what a step needs, as a line of its own (the
 * agreed message stays as the failing rank wrote it). */
static void memory_advice(ql_job *j, const ql_config *c, int64_t max_seq, ql_status st) {
    if (st != QL_ENOMEM || j->rank != 0) return;
    const char *msg = j->size > 1 && j->comm && ql_comm_failed_rank(j->comm) >= 0
                          ? ql_comm_agreed_message(j->comm)
                          : ql_error_message();
    if (!msg || !strstr(msg, "out of GPU memory")) return;
    char dense[96] = "";
    if (c->quant.dequantized_layers > 0)
        snprintf(dense, sizeof dense, ", fewer quant.dequantized_layers (now %lld)",
                 (long long)c->quant.dequantized_layers);
    fprintf(stderr,
            "hint: a step needs less GPU memory with a smaller train.micro_batch (a rank runs "
            "%lld rows at a time now) or data.max_seq_len (the longest row now: %lld "
            "tokens)%s%s; `qlora train CONFIG --dry-run` prints the estimate; "
            "train.memory_limit_gb (--memory-limit) makes the start-up check stricter\n",
            (long long)rank_rows(c, j), (long long)max_seq,
            c->train.activation_checkpointing ? "" : ", train.activation_checkpointing: true",
            dense);
}

/* On a GPU: one pass at the largest micro-batch a rank runs, before the first
 * step (ql_llama_reserve), so that the kernels' buffers run out of memory
 * now, not at the first long batch hours in; rank 0 says what the device then
 * holds (the optimizer's state comes after). */
static ql_status reserve_memory(const ql_config *c, const ql_job *j, ql_llama *m,
                                const ql_backend *be, int64_t max_seq) {
    const double t0 = ql_clock_s();
    const int64_t rows = rank_rows(c, j);
    be->mem_reset_peak();
    ql_status st = ql_llama_reserve(m, rows, max_seq);
    if (st != QL_OK)
        return ql_error_wrap(st, "a pass at the largest micro-batch (%lld x %lld tokens): ",
                             (long long)rows, (long long)max_seq);
    ql_mem_stats ms;
    be->mem_stats(&ms);
    if (j->rank == 0)
        fprintf(stderr,
                "memory: a pass at the largest micro-batch (%lld x %lld tokens) took %.1f s; "
                "qlora holds %.2f GiB of the device (at most %.2f GiB in the pass), %.2f of "
                "%.2f GiB are in use\n",
                (long long)rows, (long long)max_seq, ql_clock_s() - t0, ms.in_use / 1073741824.0,
                ms.peak / 1073741824.0, ms.device_used / 1073741824.0,
                ms.device_total / 1073741824.0);
    return QL_OK;
}

/* Every rank runs this; each fallible part ends in an agreement, so a
 * failure on any rank leaves every rank at the same point with its
 * message. Rank 0 alone writes files and prints. */
static int run(const ql_config *c, ql_job *j) {
    const int r0 = j->rank == 0;
    ql_comm *comm = j->comm, *dcomm = NULL;
    /* A preemption while the data and model load is answered at the first
     * step boundary. */
    signal(SIGTERM, on_preempt);
    signal(SIGUSR1, on_preempt);
    /* Past a file-size limit (ulimit -f), a write fails with EFBIG and ends
     * the run with a message, instead of the signal killing it. */
    signal(SIGXFSZ, SIG_IGN);
    int done = 0;
    ql_status st = r0 ? prepare_output(c, &done) : QL_OK;
    if ((st = ql_job_agree(j, st)) != QL_OK) return ql_job_report(j, st);
    if (j->size > 1 && (st = ql_comm_bcast(comm, &done, sizeof done, 0)) != QL_OK)
        return ql_job_report(j, st);
    if (done) return QL_EXIT_OK;

    /* A GPU per rank before CUDA is touched (local rank mod visible devices). */
    int device = -1;
    const char *backend = ql_backend_resolve_name(c->backend); /* auto: cuda when a GPU is seen */
    int cuda = !strcmp(backend, "cuda");
    if (cuda) st = ql_comm_bind_device(comm, &device);
    const ql_backend *be = st == QL_OK ? ql_backend_by_name(backend) : NULL;
    if (st == QL_OK && !be) st = ql_error_wrap(QL_EUNSUPPORTED, "backend: ");
    if ((st = ql_job_agree(j, st)) != QL_OK) return ql_job_report(j, st);
    if (cuda && j->size > 1) {
        st = ql_comm_open_device(comm, &dcomm);
        if (st == QL_EUNSUPPORTED) {
            if (r0)
                fprintf(stderr, "note: %s; gradients go through MPI in host memory\n",
                        ql_error_message());
            st = QL_OK;
        }
        if ((st = ql_job_agree(j, st)) != QL_OK) return ql_job_report(j, st);
        if (r0 && dcomm)
            fprintf(stderr, "gradients: NCCL over %d ranks (device memory)\n", j->size);
    }
    if (cuda && (st = ql_job_agree(j, ql_cuda_q4_check_env())) != QL_OK)
        return ql_job_report(j, st);
    if (cuda && r0) {
        /* Which way the 4-bit layers run (kernels/cuda_q4_path.c). */
        const ql_cuda_q4_path p = ql_cuda_q4_get_path();
        if (p == QL_CUDA_Q4_AUTO)
            fprintf(stderr,
                    "4-bit layers: fused kernel below %lld tokens a call, dequantize + cuBLASLt "
                    "from there (QL_CUDA_Q4_FUSED_MAX_T)\n",
                    (long long)ql_cuda_q4_fused_max_tokens());
        else
            fprintf(stderr, "4-bit layers: %s (QL_CUDA_Q4_PATH)\n",
                    p == QL_CUDA_Q4_FUSED ? "fused kernel" : "dequantize + cuBLASLt");
    }

    /* The data first: a bad line should not wait for the model to load. */
    ql_comm_set_phase(comm, "loading the data");
    ql_dataset ds;
    memset(&ds, 0, sizeof ds);
    st = ql_dataset_load(c, r0 ? stderr : NULL, &ds);
    if ((st = ql_job_agree(j, st)) != QL_OK) {
        ql_dataset_free(&ds);
        ql_comm_close(dcomm);
        return ql_job_report(j, st);
    }
    if (r0) ql_dataset_print(&ds, c, stderr);
    const ql_token_data *d = &ds.train.d;

    ql_comm_set_phase(comm, "loading the model");
    ql_llama_options o = model_options(c, j, be, &ds);
    o.quiet = !r0; /* rank 0 describes the model */
    if (r0 && o.dequantized_layers > 0 && !be->q4_keep_dequantized)
        fprintf(stderr,
                "note: quant.dequantized_layers is for the cuda backend; backend %s keeps only "
                "the 4-bit weights\n",
                be->name);
    ql_llama *m = NULL;
    /* Before anything large is allocated: will it fit? */
    st = memory_plan(c, j, be->act_dtype != QL_DT_F32, device, o.max_seq, NULL);
    if (st == QL_OK) st = ql_llama_load(c->model, &o, &m);
    if (st == QL_OK) st = ql_jsonl_tokens_check_vocab(d, ql_llama_config(m)->vocab_size);
    if (st == QL_OK && ds.valid.d.n)
        st = ql_jsonl_tokens_check_vocab(&ds.valid.d, ql_llama_config(m)->vocab_size);
    if (st == QL_OK && be->act_dtype != QL_DT_F32) st = reserve_memory(c, j, m, be, o.max_seq);
    if (st == QL_OK && j->rank > 0)
        ql_rng_seed_stream(ql_llama_rng(m), (uint64_t)c->seed,
                           QL_DROPOUT_RANK_STREAM + (uint64_t)j->rank);
    if (st == QL_OK) st = ql_fault_point("load", j->rank, 0);
    if ((st = ql_job_agree(j, st)) != QL_OK) {
        ql_llama_free(m);
        ql_dataset_free(&ds);
        ql_comm_close(dcomm);
        const int rc = ql_job_report(j, st);
        memory_advice(j, c, o.max_seq, st);
        return rc;
    }
    const ql_hf_config *hc = ql_llama_config(m);
    if (r0 && hc->max_position_embeddings > 0 && d->max_len > hc->max_position_embeddings)
        fprintf(stderr,
                "warning: records of up to %lld tokens are longer than the model's "
                "max_position_embeddings (%lld); consider data.max_seq_len <= %lld\n",
                (long long)d->max_len, (long long)hc->max_position_embeddings,
                (long long)hc->max_position_embeddings);
    ql_adapters *a = ql_llama_adapters(m);
    if (r0) print_plan(c, j, be, &ds);
    ql_review *rv = NULL;

    ql_train_model tm = {.ctx = m,
                         .be = be,
                         .params = a->params,
                         .grads = a->grads,
                         .n = a->n,
                         .fwd_bwd = llama_fwd_bwd,
                         .set_layer_done = llama_set_layer_done,
                         .set_layer_start = llama_set_layer_start,
                         .layer_grad_range = llama_layer_grad_range};
    char *metrics = ql_fs_join(c->output_dir, "metrics.jsonl");
    char *adapter = ql_fs_join(c->output_dir, "adapter");
    if (!metrics || !adapter) st = ql_error(QL_ENOMEM, "out of memory");
    ql_train_result r = {0};
    signal(SIGINT, on_signal);
    ql_train_ckpt *ck = NULL;
    if (st == QL_OK) {
        ql_comm_set_phase(comm, "resuming");
        ql_train_ckpt_opts co = {.cfg = c,
                                 .comm = comm,
                                 .model = m,
                                 .be = be,
                                 .data = d,
                                 .rows = &ds.train.rows,
                                 .preempt = &preempt_flag,
                                 .log = r0 ? stderr : NULL};
        st = ql_job_agree(j, ql_train_ckpt_open(&co, &ck));
    }
    /* lora.init_adapter after the resume: a checkpoint's weights are later. */
    if (st == QL_OK && ql_train_ckpt_resumed(ck) == 0)
        st = ql_job_agree(j, ql_init_adapter_load(c, m, be, r0 ? stderr : NULL));
    /* The run starts: its resolved configuration, and rank 0's base-model
     * answers to held-out prompts (train/review.h) unless no step is left. */
    if (st == QL_OK) st = ql_job_agree(j, r0 ? write_resolved(c) : QL_OK);
    if (st == QL_OK && r0 && ql_train_ckpt_resumed(ck) < c->train.steps)
        rv = ql_review_start(c, m, &ds.valid.d, stderr);
    if (st == QL_OK) {
        ql_train_opts to = {.cfg = c,
                            .metrics_path = r0 ? metrics : NULL,
                            .progress = r0 ? stderr : NULL,
                            .progress_tty = -1,
                            .stop = &stop_flag,
                            .rows = &ds.train.rows,
                            .valid = ds.valid.d.n ? &ds.valid.d : NULL,
                            .comm = j->size > 1 ? comm : NULL,
                            .dcomm = dcomm,
                            .hooks = ql_train_ckpt_hooks(ck)};
        st = ql_train_run(&tm, d, &to, &r);
    }
    signal(SIGINT, SIG_DFL);
    st = ql_job_agree(j, st);
    if (st == QL_OK && r.halted) {
        /* Preempted and checkpointed: no adapter (the run is not over). */
        const char *dir = NULL;
        int64_t last = ql_train_ckpt_last(ck, &dir);
        if (r0) {
            if (last >= 0)
                fprintf(stderr,
                        "qlora: %s: checkpoint of step %lld in %s; exit %d (requeue to "
                        "continue)\n",
                        preempt_signal == SIGTERM ? "SIGTERM" : "SIGUSR1", (long long)last, dir,
                        QL_EXIT_REQUEUE);
            else
                fprintf(stderr, "qlora: %s before the first step; exit %d (requeue to start)\n",
                        preempt_signal == SIGTERM ? "SIGTERM" : "SIGUSR1", QL_EXIT_REQUEUE);
        }
        ql_train_ckpt_close(ck);
        ql_review_free(rv);
        free(metrics);
        free(adapter);
        ql_comm_close(dcomm); /* before the buffers its collectives use */
        ql_llama_free(m);
        ql_dataset_free(&ds);
        return QL_EXIT_REQUEUE;
    }
    ql_train_ckpt_close(ck);
    /* A run that failed (non-finite steps, I/O) keeps no adapter: its last
     * state is not one anybody asked for. An interrupted one does. Every
     * rank holds the same parameters; rank 0 writes them. */
    if (st == QL_OK) {
        ql_comm_set_phase(comm, "saving the adapter");
        st = r0 ? ql_peft_save(adapter, a, be, c->model) : QL_OK;
        st = ql_job_agree(j, st);
    }
    int rc = QL_EXIT_OK;
    if (st != QL_OK) {
        rc = ql_job_report(j, st);
        memory_advice(j, c, o.max_seq, st);
    } else if (r0) {
        char el[32];
        ql_format_duration(r.elapsed_s, el, sizeof el);
        if (r.steps == r.start_step && !r.interrupted) {
            printf("nothing to train: resumed at step %lld of %lld; the adapter is saved again\n",
                   (long long)r.steps, (long long)c->train.steps);
        } else {
            printf("%s %lld of %lld steps in %s", r.interrupted ? "interrupted after" : "trained",
                   (long long)r.steps, (long long)c->train.steps, el);
            if (r.skipped) printf(" (%lld skipped)", (long long)r.skipped);
            printf(": %lld tokens, %.0f tokens/s; loss %.4f -> %.4f\n", (long long)r.tokens,
                   r.elapsed_s > 0 ? (double)r.tokens / r.elapsed_s : 0.0, r.first_loss,
                   r.last_loss);
        }
        if (j->size > 1)
            printf("ranks: %d; rank 0 spent %.3f s of %.3f s (%.1f %%) in collectives\n", j->size,
                   r.comm_s, r.elapsed_s, r.elapsed_s > 0 ? 100.0 * r.comm_s / r.elapsed_s : 0.0);
        if (r.evals)
            printf("eval: loss %.4f, perplexity %.4f over %lld validation targets\n", r.eval_loss,
                   exp(r.eval_loss), (long long)r.eval_targets);
        printf("adapter: %s\nmetrics: %s\n", adapter, metrics);
#ifdef QL_HAVE_CUDA
        char first[192];
        const int64_t fb = cuda ? ql_cuda_gemm_fallbacks(first, sizeof first) : 0;
        if (fb > 0)
            fprintf(stderr,
                    "note: %lld matrix products ran on qlora's plain tiled kernel, many times "
                    "slower than cuBLASLt, which had no algorithm for them (the first: %s). "
                    "Operands aligned below 16 bytes are the usual cause: a LoRA rank that is "
                    "a multiple of 8 keeps the adapters' aligned\n",
                    (long long)fb, first);
#endif
        run_files(c, &ds, &r, adapter);
        fflush(stdout);
        /* The adapter's answers, samples and OUTPUT_DIR/review.md. */
        if (!r.interrupted)
            ql_review_finish(rv, m, c, r.steps, stderr);
        else
            ql_review_free(rv);
        rv = NULL;
    }
    ql_review_free(rv);
    if (st == QL_OK && r.interrupted) {
        if (r0)
            fprintf(stderr,
                    "qlora: interrupted at step %lld of %lld; the adapter of that step is "
                    "saved in %s\n",
                    (long long)r.steps, (long long)c->train.steps, adapter);
        rc = QL_EXIT_ERROR;
    }
    free(metrics);
    free(adapter);
    /* The device communicator first: closing it finishes (or, past the
     * time limit, aborts) any collective on the model's buffers. */
    ql_comm_close(dcomm);
    ql_llama_free(m);
    ql_dataset_free(&ds);
    return rc;
}

/* --dry-run and --memory-limit=GB (or --memory-limit GB) out of argv: the
 * rest is CONFIG and --key=value overrides; the limit becomes the override
 * --train.memory_limit_gb=GB. av holds argc + 1 pointers, buf the new text. */
static int train_flags(int argc, char **argv, char **av, char *buf, size_t n, int *dry) {
    int k = 0;
    *dry = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (i > 0 && !strcmp(a, "--dry-run")) {
            *dry = 1;
            continue;
        }
        if (i > 0 && !strncmp(a, "--memory-limit=", 15)) val = a + 15;
        if (i > 0 && !strcmp(a, "--memory-limit")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "qlora train: --memory-limit needs a value in GiB\n");
                return -1;
            }
            val = argv[++i];
        }
        if (val) {
            snprintf(buf, n, "--train.memory_limit_gb=%s", val);
            av[k++] = buf;
            continue;
        }
        av[k++] = argv[i];
    }
    av[k] = NULL;
    return k;
}

int ql_cmd_train(int argc, char **argv) {
    ql_job j;
    int rc = ql_job_start(&j);
    if (rc != QL_EXIT_OK) return rc;
    char **av = calloc((size_t)argc + 1, sizeof *av), limit_arg[128];
    int dry = 0, ac = av ? train_flags(argc, argv, av, limit_arg, sizeof limit_arg, &dry) : -1;
    if (ac < 0) {
        int bad_usage = av != NULL;
        free(av);
        return ql_job_end(&j, bad_usage ? QL_EXIT_USAGE : QL_EXIT_ERROR);
    }
    /* Every rank reads the configuration; rank 0 alone says what it found. */
    ql_config *c = NULL;
    ql_error_clear();
    ql_job_quiet_begin(&j);
    rc = ql_cli_load_config(ac, av, 1, "train", usage, &c);
    ql_job_quiet_end(&j);
    free(av);
    ql_status st = ql_job_agree(&j, rc > 0 ? QL_EINVAL : QL_OK);
    if (st != QL_OK) {
        /* Rank 0 printed its own failure; another rank's is printed here. */
        if (ql_comm_failed_rank(j.comm) != 0) ql_job_report(&j, st);
        free(c);
        return ql_job_end(&j, rc > 0 ? rc : QL_EXIT_ERROR);
    }
    if (rc >= 0) return ql_job_end(&j, rc); /* --help */
    /* lora.init_adapter sets lora.* before anything is sized from them. */
    st = ql_job_agree(&j, ql_init_adapter_resolve(c));
    if (st != QL_OK) {
        rc = ql_job_report(&j, st);
        free(c);
        return ql_job_end(&j, rc);
    }
    if (!getenv("QL_DIST_TIMEOUT_S")) ql_comm_set_timeout(j.comm, c->dist.timeout_s);
    ql_comm_set_bucket(j.comm, c->dist.bucket_mb * (1 << 20) / (int64_t)sizeof(float));
    /* An impossible split ends the run before anything is loaded. */
    st = ql_train_check_batch(c->train.global_batch, c->train.micro_batch, j.size);
    if ((st = ql_job_agree(&j, st)) != QL_OK)
        rc = ql_job_report(&j, st);
    else if (dry)
        rc = dry_run(c, &j);
    else
        rc = run(c, &j);
    free(c);
    return ql_job_end(&j, rc);
}
