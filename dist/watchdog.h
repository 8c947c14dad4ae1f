/* A watchdog for collectives: a thread that ends the job when this rank has
 * waited longer than a limit inside one collective (dist/comm.c wraps every
 * collective in ql_watchdog_enter/leave). A peer that died or hangs would
 * otherwise keep every other rank waiting forever (docs/distributed.md,
 * "Failures and hangs").
 *
 * The thread sleeps on a condition variable and wakes at the deadline of the
 * collective in progress, so it costs nothing while collectives finish in
 * time. When one does not, it builds a message naming the collective, what
 * the job was doing (the phase) and how long it waited, and calls `fire`,
 * which is expected not to return (the communicator prints and aborts). */
#ifndef QL_DIST_WATCHDOG_H
#define QL_DIST_WATCHDOG_H

#include "core/status.h"

typedef struct ql_watchdog ql_watchdog;

typedef void (*ql_watchdog_fire_fn)(void *ctx, const char *message);

/* timeout_s <= 0: never fires (the thread still runs, idle). */
ql_status ql_watchdog_start(double timeout_s, ql_watchdog_fire_fn fire, void *ctx,
                            ql_watchdog **out);
/* Stops and joins the thread. NULL is a no-op. */
void ql_watchdog_stop(ql_watchdog *w);

void ql_watchdog_set_timeout(ql_watchdog *w, double timeout_s);
double ql_watchdog_timeout(const ql_watchdog *w);

/* What the job is doing ("step 12", "loading the model"), for the message. */
void ql_watchdog_set_phase(ql_watchdog *w, const char *phase);

/* A collective named `what` (a string literal) starts / ends. Nested calls
 * count as the outermost one. */
void ql_watchdog_enter(ql_watchdog *w, const char *what);
void ql_watchdog_leave(ql_watchdog *w);

#endif
