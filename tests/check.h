/* A small test harness: CHECK records a failure and keeps going, so one run
 * reports every broken case. A test program ends with `return CHECK_DONE();`,
 * which prints "N passed, N failed" and returns non-zero if anything failed. */
#ifndef QL_TESTS_CHECK_H
#define QL_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_passed_, check_failed_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed_++;                                                                       \
        } else {                                                                                   \
            check_failed_++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed_++;                                                                       \
        } else {                                                                                   \
            check_failed_++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* |a - b| <= atol + rtol * |b|, elementwise over n floats; reports the worst. */
static inline int check_close_(const float *a, const float *b, long n, double atol, double rtol,
                               const char *what, const char *file, int line) {
    long worst = -1;
    double worst_excess = 0.0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double lim = atol + rtol * fabs((double)b[i]);
        if (!(d <= lim) && (worst < 0 || d - lim > worst_excess)) {
            worst = i;
            worst_excess = d - lim;
            if (isnan(d)) break;
        }
    }
    if (worst < 0) {
        check_passed_++;
        return 1;
    }
    check_failed_++;
    fprintf(stderr, "%s:%d: %s: element %ld: got %.9g, want %.9g (atol %g, rtol %g)\n", file, line,
            what, worst, (double)a[worst], (double)b[worst], atol, rtol);
    return 0;
}
#define CHECK_CLOSE(a, b, n, atol, rtol, what)                                                     \
    check_close_((a), (b), (n), (atol), (rtol), (what), __FILE__, __LINE__)

#define CHECK_DONE()                                                                               \
    (printf("%d passed, %d failed\n", check_passed_, check_failed_), check_failed_ ? 1 : 0)

#endif
