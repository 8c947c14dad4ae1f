/* Running untrusted generated code: a Python program in its own process, its
 * own process group and a fresh temporary directory, with limits on CPU time
 * (RLIMIT_CPU), wall-clock time (the group is killed), address space
 * (RLIMIT_AS), output size (RLIMIT_FSIZE) and, where the kernel allows it,
 * no network (a new network namespace: unshare(CLONE_NEWNET) as root, or
 * inside a new user namespace otherwise). The group is killed when the
 * program ends, so nothing it started outlives it (docs/code-evaluation.md). */
#ifndef QL_SANDBOX_H
#define QL_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct ql_sandbox_limits {
    double cpu_s;      /* CPU seconds (RLIMIT_CPU, whole seconds, at least 1) */
    double wall_s;     /* wall-clock seconds before the group is killed */
    int64_t mem_bytes; /* address space (RLIMIT_AS); 0: no limit */
    int64_t out_bytes; /* largest file it may write, its output included */
    int no_network;    /* 1: run it in a network namespace of its own when possible */
} ql_sandbox_limits;

/* 10 s CPU, 20 s wall, 1 GiB, 1 MiB of output, no network. */
void ql_sandbox_limits_default(ql_sandbox_limits *l);

typedef enum ql_sandbox_verdict {
    QL_SB_PASS,    /* exit status 0 */
    QL_SB_FAIL,    /* another exit status, or a signal of its own */
    QL_SB_TIMEOUT, /* killed at the CPU or wall-clock limit */
    QL_SB_MEMORY,  /* MemoryError (or killed) at the address-space limit */
} ql_sandbox_verdict;
const char *ql_sandbox_verdict_name(ql_sandbox_verdict v); /* "pass", "fail", ... */

typedef enum ql_sandbox_net {
    QL_SB_NET_ISOLATED,      /* a network namespace of its own (no interfaces but lo, down) */
    QL_SB_NET_USER_ISOLATED, /* the same, inside an unprivileged user namespace */
    QL_SB_NET_SHARED,        /* the kernel refused both: the host's network */
    QL_SB_NET_NOT_ASKED,
} ql_sandbox_net;
const char *ql_sandbox_net_name(ql_sandbox_net n);

typedef struct ql_sandbox_result {
    ql_sandbox_verdict verdict;
    int exit_code; /* the exit status, or -signal */
    double wall_s;
    ql_sandbox_net net;
    char tail[1024]; /* the last bytes of its standard output and error */
} ql_sandbox_result;

/* Writes `program` (len bytes) to a fresh directory under $TMPDIR (or /tmp),
 * runs `python` (e.g. "python3", looked up in PATH; isolated mode -I) on it
 * there with stdin from /dev/null, and removes the directory. A failure to
 * set up (no python, no temporary directory) is an error; whatever the
 * program does is a verdict. */
ql_status ql_sandbox_run_python(const char *python, const char *program, size_t len,
                                const ql_sandbox_limits *lim, ql_sandbox_result *r);

#endif
