/* qlora data stats CONFIG.yaml [--key=value ...]: the data report of a
 * training configuration without loading the model (docs/data.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "data/dataset.h"
#include "launcher/commands.h"
#include "launcher/config_cli.h"

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

static int stats(const ql_config *c) {
    ql_dataset ds;
    ql_status st = ql_dataset_load(c, stderr, &ds);
    if (st == QL_OK) {
        ql_dataset_print(&ds, c, stdout);
        ql_dataset_print_json(&ds, c, stdout);
        fflush(stdout);
        ql_dataset_free(&ds);
    }
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
    ql_config *c = NULL;
    int rc = ql_cli_load_config(argc, argv, 2, "data", usage, &c);
    if (rc >= 0) return rc;
    rc = stats(c);
    free(c);
    return rc;
}
