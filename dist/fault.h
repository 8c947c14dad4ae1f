/* Fault injection, a test hook (docs/distributed.md, "Fault injection"):
 *
 *   QL_FAULT_INJECT="rank=1,step=3,kind=error"
 *
 * makes rank 1 fail at step 3: `error` returns an error there (which the ranks
 * then agree on), `kill` sends the process SIGKILL (a crash: no message, no
 * cleanup), `hang` sleeps forever (a stuck rank, for the watchdog to catch).
 * An optional `where=NAME` picks the point in the program (default `step`:
 * after the step's forward/backward, before its gradients are reduced;
 * `load`: after the model and data are loaded, step 0). Unset or empty: no
 * fault. A malformed value is an error naming the variable. */
#ifndef QL_DIST_FAULT_H
#define QL_DIST_FAULT_H

#include <stdint.h>

#include "core/status.h"

typedef enum ql_fault_kind {
    QL_FAULT_NONE,
    QL_FAULT_ERROR,
    QL_FAULT_KILL,
    QL_FAULT_HANG
} ql_fault_kind;

typedef struct ql_fault {
    ql_fault_kind kind;
    int rank;
    int64_t step;
    char where[32];
} ql_fault;

/* Parses a specification (NULL or "" = no fault). */
ql_status ql_fault_parse(const char *spec, ql_fault *f);

/* The point `where` of step `step` on rank `rank` is reached: nothing unless
 * QL_FAULT_INJECT (read once) names it; then the fault happens. */
ql_status ql_fault_point(const char *where, int rank, int64_t step);

#endif
