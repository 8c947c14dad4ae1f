/* qlora: one binary, subcommands. */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "launcher/blas_tune.h"
#include "launcher/commands.h"

static const ql_command commands[] = {
    {"quantize", "quantize a Hugging Face model directory to bitsandbytes 4-bit", ql_cmd_quantize},
    {"train", "train LoRA adapters on a 4-bit model from a YAML configuration", ql_cmd_train},
    {"eval", "mean loss and perplexity of a model (and adapter) on a data file", ql_cmd_eval},
    {"generate", "text from a model (and adapter), streamed, with a KV cache", ql_cmd_generate},
    {"tokenize", "print the token ids and pieces of a text", ql_cmd_tokenize},
    {"data", "the data report of a training configuration (data stats CONFIG)", ql_cmd_data},
    {"ckpt", "verify or inspect a checkpoint (ckpt verify|inspect DIR)", ql_cmd_ckpt},
    {"export", "a run's adapter for PEFT/vLLM, or a merged model (--merge)", ql_cmd_export},
    {"report", "a run's loss plot and summary: RUN/report.html and RUN/loss.png", ql_cmd_report},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: qlora <command> [flags]   (qlora <command> --help for its flags)\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "version", "print the version");
}

int ql_report(ql_status s) {
    if (s == QL_OK) return QL_EXIT_OK;
    const char *m = ql_error_message();
    fprintf(stderr, "qlora: error: %s\n", *m ? m : ql_status_name(s));
    return QL_EXIT_ERROR;
}

int main(int argc, char **argv) {
    ql_blas_tune_or_reexec(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? QL_EXIT_USAGE : QL_EXIT_OK;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("qlora 0.1.0\n");
        return QL_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    /* The nearest command, when a typo away (edit distance at most 2). */
    const char *near = NULL;
    int best = 3;
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const int d = ql_config_edit_distance(argv[1], commands[i].name);
        if (d < best) best = d, near = commands[i].name;
    }
    if (near)
        fprintf(stderr, "qlora: unknown command '%s' (did you mean '%s'?)\n", argv[1], near);
    else
        fprintf(stderr, "qlora: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return QL_EXIT_USAGE;
}
