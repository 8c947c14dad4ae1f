/* A monotonic clock in seconds, for durations (never for dates). */
#ifndef QL_CORE_CLOCK_H
#define QL_CORE_CLOCK_H

#include <time.h>

static inline double ql_clock_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
