/* Float sums in 8 independent lanes, combined in a fixed order: the compiler
 * may vectorize them without -ffast-math (no reassociation is needed), and
 * the result does not depend on threads. */
#ifndef QL_CPU_LANES_H
#define QL_CPU_LANES_H

#include <stdint.h>

#define QL_LANES 8

static inline float ql_lanes_total(const float acc[QL_LANES]) {
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* acc[i mod 8] += x[i]: a sum over several arrays keeps its lanes when each
 * array but the last has a multiple of QL_LANES elements. */
static inline void ql_lanes_add(float acc[QL_LANES], const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + QL_LANES <= n; i += QL_LANES)
        for (int l = 0; l < QL_LANES; l++) acc[l] += x[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += x[i];
}

/* Σ a[i]·b[i]. */
static inline float ql_dot_lanes(const float *a, const float *b, int64_t n) {
    float acc[QL_LANES] = {0};
    int64_t i = 0;
    for (; i + QL_LANES <= n; i += QL_LANES)
        for (int l = 0; l < QL_LANES; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += a[i] * b[i];
    return ql_lanes_total(acc);
}

#endif
