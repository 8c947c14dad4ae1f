#include "launcher/config_cli.h"

#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"

int ql_cli_load_config(int argc, char **argv, int first, const char *cmd, void (*usage)(FILE *),
                       ql_config **out) {
    *out = NULL;
    const char *path = NULL;
    ql_cfg_override *ov = calloc((size_t)argc, sizeof *ov);
    char **bufs = calloc((size_t)argc, sizeof *bufs);
    size_t n_ov = 0;
    int rc = -1;
    if (!ov || !bufs) {
        fprintf(stderr, "qlora %s: out of memory\n", cmd);
        rc = QL_EXIT_ERROR;
    }
    for (int i = first; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = QL_EXIT_OK;
        } else if (!strncmp(a, "--", 2)) {
            bufs[n_ov] = malloc(strlen(a) + 1);
            if (!bufs[n_ov] || ql_config_split_override(a, bufs[n_ov], &ov[n_ov]) != 0) {
                /* "--lora.r 4": the value given as the next word. */
                const char *next = i + 1 < argc ? argv[i + 1] : NULL;
                const size_t nl = next ? strlen(next) : 0;
                const int next_is_cfg =
                    nl > 5 && (!strcmp(next + nl - 5, ".yaml") || !strcmp(next + nl - 4, ".yml"));
                if (!strchr(a, '=') && strlen(a) > 2 && next && strncmp(next, "--", 2) != 0 &&
                    !next_is_cfg)
                    fprintf(stderr,
                            "qlora %s: '%s' is not an override of the form --section.key=value "
                            "(did you mean '%s=%s'?)\n(qlora %s --help lists the flags)\n",
                            cmd, a, a, next, cmd);
                else
                    fprintf(stderr,
                            "qlora %s: '%s' is not an override of the form --section.key=value\n"
                            "(qlora %s --help lists the flags)\n",
                            cmd, a, cmd);
                free(bufs[n_ov]);
                rc = QL_EXIT_USAGE;
            } else {
                n_ov++;
            }
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "qlora %s: one configuration file, not '%s' as well as '%s'\n", cmd,
                    path, a);
            rc = QL_EXIT_USAGE;
        }
    }
    if (rc < 0 && !path) {
        usage(stderr);
        rc = QL_EXIT_USAGE;
    }
    if (rc < 0) {
        ql_config *c = malloc(sizeof *c);
        ql_status st = c ? ql_config_load(path, ov, n_ov, c) : ql_error(QL_ENOMEM, "out of memory");
        if (st != QL_OK) {
            free(c);
            rc = ql_report(st);
        } else {
            fputs(c->warnings, stderr);
            *out = c;
        }
    }
    if (bufs)
        for (size_t i = 0; i < n_ov; i++) free(bufs[i]);
    free(bufs);
    free(ov);
    return rc;
}
