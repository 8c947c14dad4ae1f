/* qlora eval --code FILE --model PATH [--adapter DIR]: pass@1 of greedy
 * completions on records with unit tests, for the base model and (with an
 * adapter) the adapter, side by side (docs/code-evaluation.md). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "data/tokenizer.h"
#include "launcher/cli_flags.h"
#include "launcher/commands.h"
#include "launcher/infer_model.h"
#include "train/code_eval.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: qlora eval --code FILE --model PATH [--adapter DIR] [flags]\n"
           "\n"
           "pass@1 on code records {\"prompt\", \"completion\", \"test\"}: a greedy completion of\n"
           "each prompt (as qlora train feeds prompts: no chat template; it ends at eos or at\n"
           "the first line at column 0), then prompt + completion + test run by Python in a\n"
           "separate process with a time and memory limit and no network; exit status 0 is a\n"
           "pass. With --adapter the base model and the adapter are evaluated side by side.\n"
           "Prints a table and, last, one JSON line:\n"
           "  {\"pass@1\": {\"base\": ..., \"adapter\": ...}, \"passed\": {...}, \"records\": N}\n"
           "\n"
           "flags:\n"
           "  --code FILE           JSONL records with \"prompt\" and \"test\" (records without a\n"
           "                        test are skipped); data/code/valid.jsonl has 8\n"
           "  --model PATH          Hugging Face directory, bitsandbytes 4-bit directory or .gguf\n"
           "  --adapter DIR         a PEFT adapter directory, a run directory holding adapter/,\n"
           "                        or a llama.cpp LoRA adapter FILE.gguf\n"
           "  --no-base             with --adapter: evaluate only the "
           "adapter\n" QL_CLI_BASE_WEIGHTS_HELP
           "  --max-new-tokens N    at most N tokens per completion (default 256)\n"
           "  --batch N             completions decoded together (default 8)\n"
           "  --limit N             only the first N records with tests\n"
           "  --python PATH         the interpreter that runs the tests (default python3)\n"
           "  --timeout S           CPU seconds per test (default 10); killed after 2 x S of\n"
           "                        wall-clock time\n"
           "  --memory MB           address-space limit per test (default 1024)\n"
           "  --allow-network       do not put tests in a network namespace of their own\n"
           "  --output FILE         one JSON line per record and model: source, model,\n"
           "                        completion, verdict, exit_code, new_tokens, stop, output\n"
           "  --backend NAME        cpu (default), cpu-ref, cuda, or auto (cuda\n"
           "                        when a GPU is seen)\n"
           "  --quiet               no model summary or progress on stderr\n"
           "  --help                this text\n"
           "\n"
           "Verdicts: pass, fail (another exit status or a Python error), timeout (killed at\n"
           "the CPU or wall-clock limit), memory (MemoryError at the memory limit); all but\n"
           "pass count as failures.\n"
           "\n"
           "exit status: 0 done (whatever pass@1 is), 1 error, 2 bad command line\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ql_cli_usage_error("eval --code", fmt, arg);
}

typedef struct code_args {
    const char *code, *model, *adapter, *python, *output, *backend;
    int64_t max_new, limit;
    int batch, quiet, no_base, allow_network, base_original;
    double timeout, memory_mb;
} code_args;

static int parse_args(int argc, char **argv, code_args *a) {
    *a = (code_args){.python = "python3",
                     .base_original = -1,
                     .backend = "cpu",
                     .max_new = 256,
                     .batch = 8,
                     .timeout = 10,
                     .memory_mb = 1024};
    /* Looked for first: "qlora eval --code --help", as the usage hints spell
     * it, would otherwise give --code the value "--help". */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--quiet")) {
            a->quiet = 1;
            continue;
        }
        if (!strcmp(s, "--no-base")) {
            a->no_base = 1;
            continue;
        }
        if (!strcmp(s, "--allow-network")) {
            a->allow_network = 1;
            continue;
        }
        static const char *const valued[] = {"--code",           "--model",   "--adapter",
                                             "--max-new-tokens", "--batch",   "--limit",
                                             "--python",         "--timeout", "--memory",
                                             "--output",         "--backend", "--base-weights"};
        const char *val = NULL;
        int which =
            ql_cli_valued_flag(argc, argv, &i, valued, sizeof valued / sizeof *valued, &val);
        if (which == QL_CLI_NO_VALUE) return bad_usage("%s needs a value", s);
        if (which < 0) return bad_usage("unknown flag '%s'", s);
        double v;
        switch (which) {
        case 0: a->code = val; break;
        case 1: a->model = val; break;
        case 2: a->adapter = val; break;
        case 3:
            if (ql_cli_number(val, 1, 1e6, 1, &v))
                return bad_usage("--max-new-tokens must be an integer >= 1, not '%s'", val);
            a->max_new = (int64_t)v;
            break;
        case 4:
            if (ql_cli_number(val, 1, 64, 1, &v))
                return bad_usage("--batch must be an integer from 1 to 64, not '%s'", val);
            a->batch = (int)v;
            break;
        case 5:
            if (ql_cli_number(val, 1, 1e12, 1, &v))
                return bad_usage("--limit must be an integer >= 1, not '%s'", val);
            a->limit = (int64_t)v;
            break;
        case 6: a->python = val; break;
        case 7:
            if (ql_cli_number(val, 0.1, 86400, 0, &v))
                return bad_usage("--timeout must be a number of seconds in [0.1, 86400], not '%s'",
                                 val);
            a->timeout = v;
            break;
        case 8:
            if (ql_cli_number(val, 16, 1 << 20, 0, &v))
                return bad_usage("--memory must be a number of MB >= 16, not '%s'", val);
            a->memory_mb = v;
            break;
        case 9: a->output = val; break;
        case 10: a->backend = val; break;
        case 11:
            if (ql_cli_base_weights(val, &a->base_original))
                return bad_usage(QL_CLI_BASE_WEIGHTS_BAD, val);
            break;
        }
    }
    if (!a->code) return bad_usage("%s is required", "--code");
    if (!a->model) return bad_usage("%s is required", "--model");
    if (a->no_base && !a->adapter) return bad_usage("%s needs --adapter", "--no-base");
    return -1;
}

typedef struct progress {
    int show;
    const char *label;
    int64_t done, n;
} progress;

static void on_done(void *ctx, int64_t prompt, const ql_gen_output *o) {
    progress *p = ctx;
    p->done++;
    if (p->show)
        fprintf(stderr, "%s: completion %lld/%lld: %lld tokens (%s)\n", p->label,
                (long long)p->done, (long long)p->n, (long long)o->new_tokens,
                ql_gen_stop_name(o->stop));
    (void)prompt;
}

/* One model (base or adapter) over every tested record. */
static ql_status run_model(const code_args *a, ql_llama *m, ql_tokenizer *tok, int adapters,
                           const ql_code_record *const *recs, const ql_ids *prompts, int64_t n,
                           const ql_sandbox_limits *lim, ql_gen_output *out,
                           ql_sandbox_result *res) {
    ql_gen_config gc;
    ql_code_gen_config(&gc, a->max_new, a->batch);
    gc.use_adapters = adapters;
    progress pr = {.show = !a->quiet, .label = adapters ? "adapter" : "base", .n = n};
    gc.on_done = on_done;
    gc.done_ctx = &pr;
    double t0 = ql_now();
    QL_TRY(ql_generate(m, tok, prompts, n, &gc, NULL, NULL, out));
    double t1 = ql_now();
    int64_t pass = 0;
    for (int64_t i = 0; i < n; i++) {
        QL_TRY(ql_code_run_test(a->python, recs[i], out[i].text, out[i].len, lim, &res[i]));
        pass += res[i].verdict == QL_SB_PASS;
        if (!a->quiet)
            fprintf(stderr, "%s: test %lld/%lld %s: %s\n", pr.label, (long long)i + 1, (long long)n,
                    recs[i]->source, ql_sandbox_verdict_name(res[i].verdict));
    }
    if (!a->quiet)
        fprintf(stderr, "%s: %lld/%lld passed (generation %.1f s, tests %.1f s)\n", pr.label,
                (long long)pass, (long long)n, t1 - t0, ql_now() - t1);
    return QL_OK;
}

static ql_status write_output(const char *path, const ql_code_record *const *recs, int64_t n,
                              int n_runs, const char *const *labels, ql_gen_output *const *outs,
                              ql_sandbox_result *const *res) {
    json_t *lines = json_array();
    if (!lines) return ql_error(QL_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < n_runs; k++) {
            json_t *o = json_pack(
                "{s:s, s:I, s:s, s:s%, s:s, s:i, s:I, s:s, s:s}", "source", recs[i]->source, "line",
                (json_int_t)recs[i]->line, "model", labels[k], "completion", outs[k][i].text,
                outs[k][i].len, "verdict", ql_sandbox_verdict_name(res[k][i].verdict), "exit_code",
                res[k][i].exit_code, "new_tokens", (json_int_t)outs[k][i].new_tokens, "stop",
                ql_gen_stop_name(outs[k][i].stop), "output", res[k][i].tail);
            if (!o) {
                json_decref(lines);
                return ql_error(QL_ENOMEM, "%s: cannot encode record %lld (invalid UTF-8?)", path,
                                (long long)recs[i]->line);
            }
            json_array_append_new(lines, o);
        }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ql_status st = buf ? QL_OK : ql_error(QL_ENOMEM, "out of memory");
    for (size_t i = 0; st == QL_OK && i < json_array_size(lines); i++) {
        char *s = json_dumps(json_array_get(lines, i), JSON_COMPACT | JSON_ENSURE_ASCII);
        size_t k = s ? strlen(s) : 0;
        while (s && len + k + 2 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(s);
                s = NULL;
                break;
            }
            buf = nb;
        }
        if (!s) {
            st = ql_error(QL_ENOMEM, "out of memory writing %s", path);
            break;
        }
        memcpy(buf + len, s, k);
        len += k;
        buf[len++] = '\n';
        free(s);
    }
    if (st == QL_OK) st = ql_fs_write_atomic(path, buf, len);
    free(buf);
    json_decref(lines);
    return st;
}

int ql_cmd_eval_code(int argc, char **argv) {
    code_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    const ql_backend *be = ql_backend_by_name(a.backend);
    if (!be) return ql_report(ql_error_wrap(QL_EUNSUPPORTED, "--backend: "));
    ql_code_set set;
    ql_status st = ql_code_set_load(a.code, &set);
    if (st != QL_OK) return ql_report(st);
    int64_t n = set.n_tests;
    if (a.limit && n > a.limit) n = a.limit;
    if (n == 0) {
        ql_code_set_free(&set);
        return ql_report(ql_error(QL_EINVAL,
                                  "%s: no record has a \"test\" (Python code run after the "
                                  "function; docs/code-evaluation.md)",
                                  a.code));
    }
    const ql_code_record **recs = ql_calloc((size_t)n, sizeof *recs, "records");
    ql_ids *prompts = ql_calloc((size_t)n, sizeof *prompts, "prompts");
    ql_tokenizer *tok = NULL;
    ql_llama *m = NULL;
    char adir[4096] = "";
    ql_infer_base how = {0};
    ql_lora_config lc;
    if (!recs || !prompts) st = QL_ENOMEM;
    for (int64_t i = 0, k = 0; st == QL_OK && k < n; i++)
        if (set.r[i].test) recs[k++] = &set.r[i];
    if (st == QL_OK) st = ql_tokenizer_load(a.model, &tok);
    if (st != QL_OK) ql_error_wrap(st, "the model's tokenizer: ");
    for (int64_t i = 0; st == QL_OK && i < n; i++)
        st = ql_gen_prompt_text(tok, recs[i]->prompt, ql_code_prompt_len(recs[i]->prompt), 0,
                                QL_CHAT_AUTO, &prompts[i]);
    if (st == QL_OK)
        st = ql_infer_load(a.model, a.adapter, be, a.quiet, a.base_original, &m, adir, sizeof adir,
                           &lc, &how);

    const char *labels[2];
    int use[2], n_runs = 0;
    if (!a.no_base) {
        labels[n_runs] = "base";
        use[n_runs++] = 0;
    }
    if (a.adapter) {
        labels[n_runs] = "adapter";
        use[n_runs++] = 1;
    }
    ql_gen_output *outs[2] = {NULL, NULL};
    ql_sandbox_result *res[2] = {NULL, NULL};
    int64_t passed[2] = {0, 0};
    ql_sandbox_limits lim;
    ql_sandbox_limits_default(&lim);
    lim.cpu_s = a.timeout;
    lim.wall_s = 2 * a.timeout;
    lim.mem_bytes = (int64_t)(a.memory_mb * 1048576.0);
    lim.no_network = !a.allow_network;
    if (st == QL_OK && !a.quiet)
        fprintf(stderr,
                "code eval: %s: %lld records with tests (of %lld); greedy, at most %lld "
                "new tokens; tests: %g s CPU, %g MB\n",
                a.code, (long long)n, (long long)set.n, (long long)a.max_new, a.timeout,
                a.memory_mb);
    for (int k = 0; k < n_runs && st == QL_OK; k++) {
        outs[k] = ql_calloc((size_t)n, sizeof *outs[k], "completions");
        res[k] = ql_calloc((size_t)n, sizeof *res[k], "test results");
        if (!outs[k] || !res[k]) {
            st = QL_ENOMEM;
            break;
        }
        st = run_model(&a, m, tok, use[k], recs, prompts, n, &lim, outs[k], res[k]);
        for (int64_t i = 0; st == QL_OK && i < n; i++) passed[k] += res[k][i].verdict == QL_SB_PASS;
    }
    if (st == QL_OK && a.output)
        st = write_output(a.output, recs, n, n_runs, labels, outs, (ql_sandbox_result *const *)res);
    if (st == QL_OK) {
        printf("model       %s%s\n", a.model, ql_infer_base_words(&how));
        if (a.adapter) printf("adapter     %s (r %d, alpha %g)\n", adir, lc.r, (double)lc.alpha);
        printf("data        %s: %lld records with tests (of %lld)\n", a.code, (long long)n,
               (long long)set.n);
        printf("network     %s\n", ql_sandbox_net_name(res[0][0].net));
        printf("\n%-40s", "record");
        for (int k = 0; k < n_runs; k++) printf(" %-9s", labels[k]);
        printf("\n");
        for (int64_t i = 0; i < n; i++) {
            printf("%-40s", recs[i]->source);
            for (int k = 0; k < n_runs; k++)
                printf(" %-9s", ql_sandbox_verdict_name(res[k][i].verdict));
            printf("\n");
        }
        printf("%-40s", "pass@1");
        for (int k = 0; k < n_runs; k++)
            printf(" %lld/%lld (%.1f%%)", (long long)passed[k], (long long)n,
                   100.0 * (double)passed[k] / (double)n);
        printf("\n{\"pass@1\": {");
        for (int k = 0; k < n_runs; k++)
            printf("%s\"%s\": %.6g", k ? ", " : "", labels[k], (double)passed[k] / (double)n);
        printf("}, \"passed\": {");
        for (int k = 0; k < n_runs; k++)
            printf("%s\"%s\": %lld", k ? ", " : "", labels[k], (long long)passed[k]);
        printf("}, \"records\": %lld}\n", (long long)n);
        fflush(stdout);
    }
    for (int k = 0; k < n_runs; k++) {
        if (outs[k]) ql_gen_outputs_free(outs[k], n);
        free(outs[k]);
        free(res[k]);
    }
    for (int64_t i = 0; prompts && i < n; i++) ql_ids_free(&prompts[i]);
    free(prompts);
    free(recs);
    ql_llama_free(m);
    ql_tokenizer_free(tok);
    ql_code_set_free(&set);
    return st == QL_OK ? QL_EXIT_OK : ql_report(st);
}
