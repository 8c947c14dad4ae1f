/* qlora report RUN: RUN/report.html (inline SVG plot of training and eval
 * loss, a table) and RUN/loss.png from RUN/metrics.jsonl (docs/evaluation.md). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "launcher/commands.h"
#include "train/report.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora report RUN [--quiet]\n"
               "\n"
               "Writes RUN/report.html (a plot of training and eval loss by step as inline SVG,\n"
               "and a table: steps, first/last/lowest losses, tokens, tokens/s, time, the stored\n"
               "evaluation RUN/eval.json) and RUN/loss.png (the same plot), from\n"
               "RUN/metrics.jsonl. Both are replaced atomically; a run still training can be\n"
               "reported on at any time.\n"
               "\n"
               "flags:\n"
               "  --quiet   print nothing on success\n"
               "  --help    this text\n"
               "\n"
               "exit status: 0 written, 1 error (the message says which), 2 bad command line\n");
}

int ql_cmd_report(int argc, char **argv) {
    const char *run = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
        if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (argv[i][0] == '-' || run) {
            fprintf(stderr, "qlora report: %s '%s'\n(qlora report --help lists the flags)\n",
                    argv[i][0] == '-' ? "unknown flag" : "one run only, got a second:", argv[i]);
            return QL_EXIT_USAGE;
        } else {
            run = argv[i];
        }
    }
    if (!run) {
        fprintf(stderr, "qlora report: a run directory is required\n");
        usage(stderr);
        return QL_EXIT_USAGE;
    }
    ql_report_info info;
    ql_status st = ql_report_write(run, &info);
    if (st != QL_OK) return ql_report(st);
    if (!quiet) {
        printf("steps   %lld to %lld: training loss %.4f -> %.4f", (long long)info.first_step,
               (long long)info.last_step, info.first_loss, info.last_loss);
        if (info.eval_points)
            printf("; eval loss %.4f (%lld evaluation%s)", info.last_eval_loss,
                   (long long)info.eval_points, info.eval_points == 1 ? "" : "s");
        printf("\nreport  %s/%s\nplot    %s/%s\n", run, QL_REPORT_HTML, run, QL_REPORT_PNG);
        if (info.skipped_lines)
            printf("note    %lld line(s) of metrics.jsonl not understood, left out\n",
                   (long long)info.skipped_lines);
    }
    return QL_EXIT_OK;
}
