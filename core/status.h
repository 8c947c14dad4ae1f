/* Status codes and the error message that goes with them.
 *
 * Library code never exits: a function that can fail returns a ql_status and,
 * before returning a non-QL_OK code, records one message with ql_error() that
 * names the file, line, key or tensor and says what was expected. The launcher
 * prints that message and chooses the exit code. The message is thread-local so
 * OpenMP workers cannot clobber each other's. */
#ifndef QL_STATUS_H
#define QL_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum ql_status {
    QL_OK = 0,
    QL_EINVAL = 1,       /* bad argument, flag or config value */
    QL_EFORMAT = 2,      /* a file exists but its contents are malformed */
    QL_EIO = 3,          /* open/read/write/fsync/rename failed */
    QL_ENOMEM = 4,       /* allocation failed */
    QL_ENOTFOUND = 5,    /* a named file, key or tensor is missing */
    QL_EUNSUPPORTED = 6, /* valid input this build cannot handle */
    QL_EBACKEND = 7,     /* CUDA, NCCL, MPI, HDF5, BLAS reported a failure */
    QL_EINTERNAL = 8,    /* a bug: an invariant did not hold */
} ql_status;

#define QL_ERROR_MAX 1024

/* Records a printf-style message for `code` and returns `code`, so callers can
 * write `return ql_error(QL_EFORMAT, "%s: ...", path);`. */
ql_status ql_error(ql_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with more context ("loading model: " + old). */
ql_status ql_error_wrap(ql_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last recorded message of this thread ("" when none). */
const char *ql_error_message(void);
void ql_error_clear(void);

/* Short stable name ("EFORMAT") for logs and tests. */
const char *ql_status_name(ql_status s);

/* Propagate a failure unchanged. */
#define QL_TRY(expr)                                                                               \
    do {                                                                                           \
        ql_status ql_try_s_ = (expr);                                                              \
        if (ql_try_s_ != QL_OK) return ql_try_s_;                                                  \
    } while (0)

/* Like QL_TRY but jumps to a cleanup label with the status stored in `st`. */
#define QL_TRY_GOTO(st, expr, label)                                                               \
    do {                                                                                           \
        (st) = (expr);                                                                             \
        if ((st) != QL_OK) goto label;                                                             \
    } while (0)

/* Programmer errors. On in release builds: reports rank, host and file:line,
 * then aborts the whole job (an MPI job is torn down by the launcher). */
void ql_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));
#define QL_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) ql_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)

/* Allocation helpers that record an error naming what was being allocated. */
void *ql_malloc(size_t bytes, const char *what);
void *ql_calloc(size_t n, size_t size, const char *what);

#endif
