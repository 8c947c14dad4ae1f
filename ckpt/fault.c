#include "ckpt/fault.h"

#include <stdlib.h>
#include <string.h>

int ql_ckpt_fault(const char *point, int rank) {
    const char *spec = getenv("QL_CKPT_FAULT");
    if (!spec || !*spec) return 0;
    size_t n = strlen(point);
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        if (len >= n && !strncmp(p, point, n)) {
            if (len == n) return 1;
            if (p[n] == '@' && rank >= 0 && atoi(p + n + 1) == rank) return 1;
        }
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}
