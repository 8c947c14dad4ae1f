#include "dist/fault.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VAR "QL_FAULT_INJECT"

static ql_status bad(const char *spec, const char *why) {
    return ql_error(QL_EINVAL,
                    VAR
                    " = '%s': %s (expected rank=R,step=S,kind=error|kill|hang[,where=step|load])",
                    spec, why);
}

ql_status ql_fault_parse(const char *spec, ql_fault *f) {
    memset(f, 0, sizeof *f);
    f->kind = QL_FAULT_NONE;
    snprintf(f->where, sizeof f->where, "step");
    if (!spec || !*spec) return QL_OK;
    char buf[256];
    if (strlen(spec) >= sizeof buf) return bad(spec, "too long");
    memcpy(buf, spec, strlen(spec) + 1);
    int have_rank = 0, have_step = 0, have_kind = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) return bad(spec, "an item without '='");
        *eq = '\0';
        const char *k = item, *v = eq + 1;
        char *end;
        errno = 0;
        if (!strcmp(k, "rank") || !strcmp(k, "step")) {
            long long x = strtoll(v, &end, 10);
            if (errno || end == v || *end || x < 0 || (!strcmp(k, "rank") && x > 1 << 30))
                return bad(spec, "rank and step must be integers >= 0");
            if (k[0] == 'r') {
                f->rank = (int)x;
                have_rank = 1;
            } else {
                f->step = x;
                have_step = 1;
            }
        } else if (!strcmp(k, "kind")) {
            have_kind = 1;
            if (!strcmp(v, "error"))
                f->kind = QL_FAULT_ERROR;
            else if (!strcmp(v, "kill"))
                f->kind = QL_FAULT_KILL;
            else if (!strcmp(v, "hang"))
                f->kind = QL_FAULT_HANG;
            else
                return bad(spec, "kind must be error, kill or hang");
        } else if (!strcmp(k, "where")) {
            if (!*v || strlen(v) >= sizeof f->where) return bad(spec, "where must be a short name");
            snprintf(f->where, sizeof f->where, "%s", v);
        } else {
            return bad(spec, "unknown item");
        }
    }
    if (!have_rank || !have_kind) return bad(spec, "rank and kind are required");
    if (!have_step) f->step = !strcmp(f->where, "step") ? 1 : 0;
    return QL_OK;
}

ql_status ql_fault_point(const char *where, int rank, int64_t step) {
    static int parsed;
    static ql_fault f;
    static ql_status parse_st;
    if (!parsed) {
        parsed = 1;
        parse_st = ql_fault_parse(getenv(VAR), &f);
    }
    if (parse_st != QL_OK) return ql_fault_parse(getenv(VAR), &f); /* the message again */
    if (f.kind == QL_FAULT_NONE || f.rank != rank || f.step != step || strcmp(f.where, where))
        return QL_OK;
    switch (f.kind) {
    case QL_FAULT_ERROR:
        if (step == 0) return ql_error(QL_EIO, "injected fault (" VAR "): error at %s", where);
        return ql_error(QL_EIO, "injected fault (" VAR "): error at %s %lld", where,
                        (long long)step);
    case QL_FAULT_KILL:
        fflush(NULL);
        raise(SIGKILL);
        break;
    case QL_FAULT_HANG:
        for (;;) pause();
    case QL_FAULT_NONE: break;
    }
    return QL_OK;
}
