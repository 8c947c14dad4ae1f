#include "launcher/cli_flags.h"

#include <string.h>

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
