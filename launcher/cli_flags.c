#include "launcher/cli_flags.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"

int ql_cli_valued_flag(int argc, char **argv, int *i, const char *const *names, size_t n,
                       const char **val) {
    const char *s = argv[*i];
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(names[k]);
        if (strncmp(s, names[k], len) != 0 || (s[len] != '\0' && s[len] != '=')) continue;
        if (s[len] == '=') {
            *val = s + len + 1;
        } else {
            if (*i + 1 >= argc) return QL_CLI_NO_VALUE;
            *val = argv[++*i];
        }
        return (int)k;
    }
    return QL_CLI_NOT_VALUED;
}

int ql_cli_number(const char *s, double lo, double hi, int integer, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    if (integer && v != (double)(int64_t)v) return -1;
    *out = v;
    return 0;
}

int ql_cli_base_weights(const char *val, int *original) {
    if (strcmp(val, "quantized") && strcmp(val, "original")) return -1;
    *original = !strcmp(val, "original");
    return 0;
}

int ql_cli_usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "qlora %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(qlora %s --help lists the flags)\n", cmd);
    return QL_EXIT_USAGE;
}
