/* qlora data stats CONFIG.yaml [--key=value ...]: the data report of a
 * training configuration without loading the model (docs/data.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "data/dataset.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora data stats CONFIG.yaml [--key=value ...]\n"
               "\n"
               "Reads data.train (and data.valid, or the data.valid_fraction held out of it) as\n"
               "`qlora train CONFIG.yaml` would: tokenized with the model's tokenizer, or taken\n"
               "from the tokenized-data cache, which it fills (data.cache, data.cache_dir), then\n"
               "packed. Prints the report (records read and kept, tokens, length percentiles,\n"
               "what was truncated, dropped or skipped, packed rows and how full they are) and\n"
               "then one JSON line with the same numbers. The model itself is not loaded.\n"
               "\n"
               "exit status: 0 done, 1 error (the message says which), 2 bad command line\n");
}

static int stats(const char *path, const ql_cfg_override *ov, size_t n_ov) {
    ql_config *c = malloc(sizeof *c);
    if (!c) return ql_report(ql_error(QL_ENOMEM, "out of memory"));
    ql_status st = ql_config_load(path, ov, n_ov, c);
    if (st != QL_OK) {
        free(c);
        return ql_report(st);
    }
    fputs(c->warnings, stderr);
    ql_dataset ds;
    st = ql_dataset_load(c, stderr, &ds);
    if (st == QL_OK) {
        ql_dataset_print(&ds, c, stdout);
        ql_dataset_print_json(&ds, c, stdout);
        fflush(stdout);
        ql_dataset_free(&ds);
    }
    free(c);
    return ql_report(st);
}

int ql_cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? QL_EXIT_USAGE : QL_EXIT_OK;
    }
    if (strcmp(argv[1], "stats") != 0) {
        fprintf(stderr, "qlora data: unknown subcommand '%s' (there is: stats)\n", argv[1]);
        return QL_EXIT_USAGE;
    }
    const char *path = NULL;
    ql_cfg_override *ov = calloc((size_t)argc, sizeof *ov);
    char **bufs = calloc((size_t)argc, sizeof *bufs);
    size_t n_ov = 0;
    int rc = -1;
    if (!ov || !bufs) {
        fprintf(stderr, "qlora data: out of memory\n");
        rc = QL_EXIT_ERROR;
    }
    for (int i = 2; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = QL_EXIT_OK;
        } else if (!strncmp(a, "--", 2)) {
            bufs[n_ov] = malloc(strlen(a) + 1);
            if (!bufs[n_ov] || ql_config_split_override(a, bufs[n_ov], &ov[n_ov]) != 0) {
                fprintf(stderr,
                        "qlora data: '%s' is not an override of the form --section.key=value\n", a);
                free(bufs[n_ov]);
                rc = QL_EXIT_USAGE;
            } else {
                n_ov++;
            }
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "qlora data: one configuration file, not '%s' as well as '%s'\n", path,
                    a);
            rc = QL_EXIT_USAGE;
        }
    }
    if (rc < 0 && !path) {
        usage(stderr);
        rc = QL_EXIT_USAGE;
    }
    if (rc < 0) rc = stats(path, ov, n_ov);
    for (size_t i = 0; i < n_ov; i++) free(bufs[i]);
    free(bufs);
    free(ov);
    return rc;
}
