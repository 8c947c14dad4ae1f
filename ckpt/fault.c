#include "ckpt/fault.h"

#include <stdlib.h>
#include <string.h>

/* This process's rank as the launcher tells it (0 for a singleton). */
static int env_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return atoi(getenv(vars[i]));
    return 0;
}

int ql_ckpt_fault(const char *point, int rank) {
    const char *spec = getenv("QL_CKPT_FAULT");
    if (!spec || !*spec) return 0;
    if (rank < 0) rank = env_rank();
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
