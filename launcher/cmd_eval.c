/* qlora eval --model PATH [--adapter DIR] --data FILE: mean loss and
 * perplexity over every target token of a JSONL file of any record format
 * (text, prompt/completion, messages, pre-tokenized), tokenized with the
 * model's own tokenizer as qlora train does; with an adapter, the base model
 * and the adapter side by side. The result can be stored (OUT/eval.json) and
 * compared with an earlier one to flag drift (docs/evaluation.md). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/jsonl_tokens.h"
#include "data/packing.h"
#include "data/records.h"
#include "core/fsutil.h"
#include "data/tokenizer.h"
#include "launcher/cli_flags.h"
#include "launcher/infer_model.h"
#include "launcher/commands.h"
#include "model/llama.h"
#include "model/peft.h"
#include "train/batcher.h"
#include "train/eval_store.h"
#include "train/progress.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: qlora eval --model PATH --data FILE [--adapter DIR] [flags]\n"
            "       qlora eval --code FILE --model PATH [--adapter DIR] [flags]   (pass@1 of\n"
            "       generated code on records with unit tests; qlora eval --code --help)\n"
            "\n"
            "Mean cross-entropy over every target token of FILE (JSONL records of any format,\n"
            "with the loss masks of qlora train) and its perplexity: for the base model, or\n"
            "with a LoRA adapter and the base model side by side. Prints a table and, last,\n"
            "one JSON line:\n"
            "  {\"loss\": ..., \"perplexity\": ..., \"tokens\": ...}   (tokens = target tokens)\n"
            "loss and perplexity are the adapter's when there is one; base_loss,\n"
            "base_perplexity and loss_change (adapter - base) follow, and with --baseline\n"
            "baseline_loss, relative_change and drifted.\n"
            "\n"
            "flags:\n"
            "  --model PATH         Hugging Face directory, bitsandbytes 4-bit directory or .gguf\n"
            "  --data FILE          JSONL: text, prompt/completion, messages or pre-tokenized\n"
            "                       records, as for qlora train (data.md)\n"
            "  --adapter DIR        a PEFT adapter directory, a run directory holding adapter/,\n"
            "                       or a llama.cpp LoRA adapter FILE.gguf\n"
            "  --no-base            with --adapter: skip the base model's pass\n"
            "  --base-weights quantized|original\n"
            "                       quantized: the linears rounded to 4 bits as qlora train\n"
            "                       holds them; original: as the file stores them (float32 on\n"
            "                       the CPU), for a merged model (qlora export --merge) or to\n"
            "                       see what the rounding costs. Default: as the run behind\n"
            "                       --adapter RUN held them (its quant.* settings), else\n"
            "                       quantized (NF4, block 64, double quantization)\n"
            "  --out DIR            store the result as DIR/eval.json (created if needed);\n"
            "                       with --adapter RUN (a run directory) it is stored in\n"
            "                       RUN/eval.json unless --no-save (or RUN is the baseline)\n"
            "  --no-save            store nothing\n"
            "  --baseline RUN       compare with RUN/eval.json (or an eval.json file): a loss\n"
            "                       more than --drift-threshold above it is drift, exit 3\n"
            "  --drift-threshold X  relative loss increase that is drift (default 0.05 = 5%%)\n"
            "  --max-seq-len N      truncate longer records to N tokens (default: no limit)\n"
            "  --batch N            rows per forward pass (default 4): records are packed\n"
            "                       into rows as long as the longest one, each attending\n"
            "                       only to itself\n"
            "  --backend NAME       cpu (default), cpu-ref, cuda, or auto (cuda\n"
            "                       when a GPU is seen)\n"
            "  --quiet              no model summary or progress on stderr\n"
            "  --help               this text\n"
            "\n"
            "exit status: 0 done, 1 error (the message says which), 2 bad command line,\n"
            "3 drift: the loss rose above the baseline by more than the threshold\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ql_cli_usage_error("eval", fmt, arg);
}

typedef struct eval_args {
    const char *model, *data, *adapter, *backend, *out, *baseline;
    int64_t max_seq_len, batch;
    double drift_threshold;
    int quiet, no_base, no_save, base_original;
} eval_args;

static int parse_count(const char *s, int64_t lo, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){.backend = "cpu",
                     .base_original = -1,
                     .max_seq_len = (int64_t)1 << 20,
                     .batch = 4,
                     .drift_threshold = QL_DRIFT_THRESHOLD_DEFAULT};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
        if (!strcmp(s, "--quiet") || !strcmp(s, "--no-base") || !strcmp(s, "--no-save")) {
            *(s[2] == 'q' ? &a->quiet : s[5] == 'b' ? &a->no_base : &a->no_save) = 1;
            continue;
        }
        static const char *const valued[] = {
            "--model",   "--data", "--adapter",  "--max-seq-len",     "--batch",
            "--backend", "--out",  "--baseline", "--drift-threshold", "--base-weights"};
        const char *val = NULL;
        int which =
            ql_cli_valued_flag(argc, argv, &i, valued, sizeof valued / sizeof *valued, &val);
        if (which == QL_CLI_NO_VALUE) return bad_usage("%s needs a value", s);
        if (which < 0) return bad_usage("unknown flag '%s'", s);
        switch (which) {
        case 0: a->model = val; break;
        case 1: a->data = val; break;
        case 2: a->adapter = val; break;
        case 3:
            if (parse_count(val, 2, &a->max_seq_len))
                return bad_usage("--max-seq-len must be an integer >= 2, not '%s'", val);
            break;
        case 4:
            if (parse_count(val, 1, &a->batch))
                return bad_usage("--batch must be an integer >= 1, not '%s'", val);
            break;
        case 5: a->backend = val; break;
        case 6: a->out = val; break;
        case 7: a->baseline = val; break;
        case 8: {
            char *end;
            errno = 0;
            a->drift_threshold = strtod(val, &end);
            if (errno || end == val || *end || !(a->drift_threshold >= 0) ||
                !isfinite(a->drift_threshold))
                return bad_usage("--drift-threshold must be a number >= 0, not '%s'", val);
            break;
        }
        case 9:
            if (ql_cli_base_weights(val, &a->base_original))
                return bad_usage(QL_CLI_BASE_WEIGHTS_BAD, val);
            break;
        }
    }
    if (!a->model) return bad_usage("%s is required", "--model");
    if (!a->data) return bad_usage("%s is required", "--data");
    return -1;
}

/* Forward passes over every record in file order; sums in double. */
/* The model's tokenizer is needed only for records that are not
 * pre-tokenized; when it cannot be loaded, the records loader says which
 * record needed it. Over-length records are truncated, as by default in
 * qlora train. */
static ql_status load_records(const eval_args *a, ql_token_data *d, ql_records_report *rep) {
    if (!ql_fs_exists(a->model))
        return ql_error(QL_ENOTFOUND, "--model %s: no such file or directory", a->model);
    ql_tokenizer *tok = NULL;
    char why[QL_ERROR_MAX] = "";
    if (ql_tokenizer_load(a->model, &tok) != QL_OK) {
        tok = NULL;
        snprintf(why, sizeof why, "%s", ql_error_message());
        ql_error_clear();
    }
    ql_records_options ro = {.max_seq_len = a->max_seq_len,
                             .on_overlength = QL_OVERLENGTH_TRUNCATE,
                             .on_bad_record = QL_ON_BAD_ERROR,
                             .chat_template = QL_CHAT_AUTO};
    ql_status st = ql_records_load(a->data, tok, &ro, d, rep);
    ql_tokenizer_free(tok);
    if (st != QL_OK && why[0] && strstr(ql_error_message(), "needs the model's tokenizer")) {
        char msg[QL_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", ql_error_message());
        return ql_error(st, "%s; the tokenizer of --model %s: %s", msg, a->model, why);
    }
    return st;
}

/* Records packed into rows of d->max_len tokens (first-fit decreasing,
 * data/packing.h): each keeps its own positions and attends only to itself,
 * so its loss is what it would be alone, and a forward pass computes far
 * fewer padding tokens than one record per row would. */
static ql_status evaluate(ql_llama *m, const ql_token_data *d, const ql_packing *p, int64_t batch,
                          int show, const char *what, double *loss_sum, int64_t *n_targets) {
    ql_batcher b;
    QL_TRY(ql_batcher_init_rows(&b, d, p, 0, 0, 0, batch));
    ql_status st = QL_OK;
    *loss_sum = 0;
    *n_targets = 0;
    int64_t n_batches = (p->n_rows + batch - 1) / batch;
    for (int64_t i = 0; i < n_batches && st == QL_OK; i++) {
        int64_t first = i * batch, rows = p->n_rows - first < batch ? p->n_rows - first : batch;
        int64_t tok, nt = 0;
        ql_batch mb;
        double ls = 0;
        st = ql_batcher_fill(&b, first, rows, &mb, &tok);
        if (st == QL_OK) st = ql_llama_forward_backward(m, &mb, 0, 1.0f, &ls, &nt);
        *loss_sum += ls;
        *n_targets += nt;
        if (show)
            fprintf(stderr, "\r\033[Keval (%s): batch %lld/%lld", what, (long long)i + 1,
                    (long long)n_batches);
    }
    if (show) fputs("\r\033[K", stderr);
    ql_batcher_free(&b);
    return st;
}

/* The base model's loss through the same model: the adapter's values are
 * set aside, zeros uploaded (B = 0 makes every LoRA term exactly 0), the pass
 * run, and the values put back. */
static ql_status base_pass(ql_llama *m, const ql_backend *be, const ql_token_data *d,
                           const ql_packing *p, int64_t batch, int show, double *loss_sum,
                           int64_t *n_targets) {
    ql_adapters *ad = ql_llama_adapters(m);
    size_t bytes = (size_t)ad->n * sizeof(float);
    float *keep = ql_malloc(bytes ? bytes : 1, "a copy of the adapter"),
          *zero = ql_calloc(ad->n ? (size_t)ad->n : 1, sizeof(float), "zeros");
    ql_status st = keep && zero ? be->download(keep, ad->params, bytes) : QL_ENOMEM;
    if (st == QL_OK) st = be->upload(ad->params, zero, bytes);
    if (st == QL_OK) st = evaluate(m, d, p, batch, show, "base model", loss_sum, n_targets);
    ql_status st2 = keep ? be->upload(ad->params, keep, bytes) : QL_OK;
    free(keep);
    free(zero);
    return st != QL_OK ? st : st2;
}

static int same_file(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) && realpath(b, rb)) return !strcmp(ra, rb);
    return !strcmp(a, b);
}

/* %.10g, or null for what JSON cannot hold. */
static void json_num(double x, char *buf, size_t n) {
    if (isfinite(x))
        snprintf(buf, n, "%.10g", x);
    else
        snprintf(buf, n, "null");
}

int ql_cmd_eval(int argc, char **argv) {
    /* qlora eval --code: code evaluation, its own flags (cmd_eval_code.c). */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--code", 6) && (argv[i][6] == '\0' || argv[i][6] == '='))
            return ql_cmd_eval_code(argc, argv);
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    const ql_backend *be = ql_backend_by_name(a.backend);
    if (!be) return ql_report(ql_error_wrap(QL_EUNSUPPORTED, "--backend: "));

    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.quiet = a.quiet;
    o.lora = (ql_lora_config){.r = 0, .targets = 0}; /* r 0: the base model alone */
    char adir[4096] = "";
    ql_status st = QL_OK;
    if (a.adapter) {
        st = ql_peft_find(a.adapter, adir, sizeof adir);
        if (st == QL_OK) st = ql_peft_read_config(adir, &o.lora, NULL, 0);
        o.lora.dropout = 0.0f; /* evaluation: PEFT's eval() turns dropout off */
    }
    ql_infer_base how = {0};
    if (st == QL_OK) st = ql_infer_run_quant(adir, a.base_original, &o, &how);
    ql_token_data d = {0};
    ql_records_report rep = {0};
    ql_packing rows = {0};
    if (st == QL_OK) st = load_records(&a, &d, &rep);
    if (st == QL_OK) st = ql_packing_build(&d, d.max_len, 1, &rows);
    if (st != QL_OK) {
        ql_jsonl_tokens_free(&d);
        return ql_report(st);
    }
    o.max_batch = a.batch < rows.n_rows ? a.batch : rows.n_rows;
    o.max_seq = d.max_len;
    ql_llama *m = NULL;
    st = ql_llama_load(a.model, &o, &m);
    if (st == QL_OK) st = ql_jsonl_tokens_check_vocab(&d, ql_llama_config(m)->vocab_size);
    if (st == QL_OK && a.adapter) st = ql_peft_load(adir, ql_llama_adapters(m), be);
    if (st == QL_OK && ql_llama_config(m)->max_position_embeddings > 0 &&
        d.max_len > ql_llama_config(m)->max_position_embeddings)
        fprintf(stderr,
                "warning: records of up to %lld tokens are longer than the model's "
                "max_position_embeddings (%lld); consider --max-seq-len\n",
                (long long)d.max_len, (long long)ql_llama_config(m)->max_position_embeddings);
    /* The base model's pass first, with the adapter's values set aside (B = 0
     * adds exactly nothing), then the adapter's. */
    int side_by_side = a.adapter && !a.no_base;
    double base_sum = 0, loss_sum = 0, t0 = ql_now();
    int64_t n_base = 0, n_tg = 0;
    int show = !a.quiet && isatty(fileno(stderr));
    if (st == QL_OK && side_by_side)
        st = base_pass(m, be, &d, &rows, o.max_batch, show, &base_sum, &n_base);
    if (st == QL_OK)
        st = evaluate(m, &d, &rows, o.max_batch, show, a.adapter ? "adapter" : "base", &loss_sum,
                      &n_tg);
    if (st == QL_OK && n_tg == 0)
        st = ql_error(QL_EINVAL, "%s: no target tokens (every label is -100)", a.data);
    ql_eval_summary sum;
    memset(&sum, 0, sizeof sum);
    if (st == QL_OK) {
        double loss = loss_sum / (double)n_tg;
        sum = (ql_eval_summary){.records = d.n,
                                .tokens = n_tg,
                                .loss = loss,
                                .perplexity = exp(loss),
                                .has_base = side_by_side};
        if (side_by_side) {
            sum.base_loss = base_sum / (double)n_base;
            sum.base_perplexity = exp(sum.base_loss);
        }
        snprintf(sum.model, sizeof sum.model, "%s", a.model);
        sum.base_original = how.base_original;
        snprintf(sum.adapter, sizeof sum.adapter, "%s", a.adapter ? adir : "");
        snprintf(sum.data, sizeof sum.data, "%s", a.data);
        st = ql_eval_file_sha256(a.data, sum.data_sha256);
    }
    char base_path[QL_EVAL_PATH_MAX] = "";
    if (st == QL_OK && a.baseline) {
        ql_eval_summary bs;
        st = ql_eval_find(a.baseline, base_path, sizeof base_path);
        if (st == QL_OK) st = ql_eval_summary_read(base_path, &bs);
        if (st == QL_OK) {
            ql_eval_drift_check(&bs, base_path, &sum, a.drift_threshold, &sum.drift);
            sum.has_drift = 1;
        }
    }
    if (st != QL_OK) {
        ql_llama_free(m);
        ql_jsonl_tokens_free(&d);
        ql_packing_free(&rows);
        return ql_report(st);
    }
    double secs = ql_now() - t0, loss = sum.loss, ppl = sum.perplexity;
    printf("model       %s%s\n", a.model, ql_infer_base_words(&how));
    if (a.adapter)
        printf("adapter     %s (r %d, alpha %g%s)\n", adir, o.lora.r, (double)o.lora.alpha,
               o.lora.use_rslora ? ", rsLoRA" : "");
    else
        printf("adapter     none (base model)\n");
    printf("data        %s: %lld records", a.data, (long long)d.n);
    if (rep.read != d.n) printf(" of %lld read", (long long)rep.read);
    if (rep.truncated)
        printf(", %lld truncated to %lld tokens", (long long)rep.truncated,
               (long long)a.max_seq_len);
    if (rep.no_loss) printf(", %lld left out with no target token", (long long)rep.no_loss);
    printf("\n");
    printf("tokens      %lld targets of %lld (%.0f tokens/s)\n", (long long)n_tg,
           (long long)d.off[d.n], secs > 0 ? (double)d.off[d.n] * (1 + side_by_side) / secs : 0.0);
    if (side_by_side) {
        printf("            %-16s %-16s %s\n", "base model", "with adapter", "change");
        printf("loss        %-16.10g %-16.10g %+.6g (%+.2f%%)\n", sum.base_loss, loss,
               loss - sum.base_loss, 100.0 * (loss - sum.base_loss) / sum.base_loss);
        printf("perplexity  %-16.10g %-16.10g %+.6g\n", sum.base_perplexity, ppl,
               ppl - sum.base_perplexity);
    } else {
        printf("loss        %.10g\n", loss);
        printf("perplexity  %.10g\n", ppl);
    }
    int drifted = 0;
    if (sum.has_drift) {
        const ql_eval_drift *dr = &sum.drift;
        drifted = dr->drifted;
        printf("baseline    %s: loss %.10g; now %+.6g (%+.2f%%), threshold %+.2f%%: %s%s%s\n",
               dr->path, dr->baseline_loss, dr->change, 100.0 * dr->relative_change,
               100.0 * dr->threshold, drifted ? "DRIFT" : "ok",
               dr->same_data ? "" : " (other data than the baseline's)",
               dr->same_base_weights ? ""
               : sum.base_original   ? " (base weights as stored; the baseline's were quantized)"
                                     : " (base weights quantized; the baseline's were as stored)");
    }
    /* Where the result is kept: --out, else the run the adapter came from. */
    char save[QL_EVAL_PATH_MAX] = "";
    if (a.out && !a.no_save) {
        st = ql_fs_mkdirs(a.out);
        snprintf(save, sizeof save, "%s/%s", a.out, QL_EVAL_FILE);
    } else if (a.adapter && !a.no_save && strcmp(adir, a.adapter) != 0) {
        snprintf(save, sizeof save, "%s/%s", a.adapter, QL_EVAL_FILE);
    }
    if (save[0] && base_path[0] && same_file(save, base_path)) {
        fprintf(stderr,
                "qlora eval: note: not storing the result in %s: it is the baseline compared "
                "with\n",
                save);
        save[0] = '\0';
    }
    if (st == QL_OK && save[0]) st = ql_eval_summary_write(save, &sum);
    if (st == QL_OK && save[0]) printf("stored      %s\n", save);
    char jl[40], jp[40];
    json_num(loss, jl, sizeof jl);
    json_num(ppl, jp, sizeof jp);
    printf("{\"loss\": %s, \"perplexity\": %s, \"tokens\": %lld", jl, jp, (long long)n_tg);
    if (side_by_side) {
        char bl[40], bp[40], ch[40];
        json_num(sum.base_loss, bl, sizeof bl);
        json_num(sum.base_perplexity, bp, sizeof bp);
        json_num(loss - sum.base_loss, ch, sizeof ch);
        printf(", \"base_loss\": %s, \"base_perplexity\": %s, \"loss_change\": %s", bl, bp, ch);
    }
    if (sum.has_drift) {
        char bl[40], rel[40];
        json_num(sum.drift.baseline_loss, bl, sizeof bl);
        json_num(sum.drift.relative_change, rel, sizeof rel);
        printf(", \"baseline_loss\": %s, \"relative_change\": %s, \"drifted\": %s", bl, rel,
               drifted ? "true" : "false");
    }
    printf("}\n");
    fflush(stdout);
    ql_llama_free(m);
    ql_jsonl_tokens_free(&d);
    ql_packing_free(&rows);
    if (st != QL_OK) return ql_report(st);
    if (drifted) {
        fprintf(stderr,
                "qlora eval: drift: loss %.6g is %.2f%% above the baseline %.6g (%s), more than "
                "the threshold of %.2f%%\n",
                sum.drift.loss, 100.0 * sum.drift.relative_change, sum.drift.baseline_loss,
                sum.drift.path, 100.0 * sum.drift.threshold);
        return QL_EXIT_DRIFT;
    }
    return QL_EXIT_OK;
}
