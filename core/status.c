#include "core/status.h"

#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static _Thread_local char ql_msg[QL_ERROR_MAX];

ql_status ql_error(ql_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ql_msg, sizeof ql_msg, fmt, ap);
    va_end(ap);
    return code;
}

ql_status ql_error_wrap(ql_status code, const char *fmt, ...) {
    char prefix[QL_ERROR_MAX];
    char old[QL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ql_msg, sizeof old);
    /* Truncation of an over-long message is acceptable; say so to gcc. */
    size_t n = strlen(prefix);
    memcpy(ql_msg, prefix, n + 1);
    if (n + 1 < sizeof ql_msg) {
        size_t room = sizeof ql_msg - n - 1;
        size_t m = strlen(old);
        if (m > room) m = room;
        memcpy(ql_msg + n, old, m);
        ql_msg[n + m] = '\0';
    }
    return code;
}

const char *ql_error_message(void) { return ql_msg; }

void ql_error_clear(void) { ql_msg[0] = '\0'; }

const char *ql_status_name(ql_status s) {
    switch (s) {
    case QL_OK: return "OK";
    case QL_EINVAL: return "EINVAL";
    case QL_EFORMAT: return "EFORMAT";
    case QL_EIO: return "EIO";
    case QL_ENOMEM: return "ENOMEM";
    case QL_ENOTFOUND: return "ENOTFOUND";
    case QL_EUNSUPPORTED: return "EUNSUPPORTED";
    case QL_EBACKEND: return "EBACKEND";
    case QL_EINTERNAL: return "EINTERNAL";
    }
    return "EUNKNOWN";
}

/* The rank as the launchers export it, before MPI is up (or without MPI). */
static const char *env_rank(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return v;
    }
    return "0";
}

void ql_assert_fail(const char *cond, const char *file, int line) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    fprintf(stderr, "qlora: rank %s on %s: internal error at %s:%d: assertion `%s` failed\n",
            env_rank(), host, file, line, cond);
    fflush(stderr);
    abort();
}

void *ql_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ql_error(QL_ENOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *ql_calloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ql_error(QL_ENOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}
