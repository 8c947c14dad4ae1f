/* The progress line of a long run: step/total, loss, lr, tokens/s, elapsed
 * and ETA. On a terminal it is one line redrawn in place; otherwise (a log
 * file, a pipe, Slurm's output) a plain line every `every` steps plus the
 * first and the last, so logs stay readable. */
#ifndef QL_PROGRESS_H
#define QL_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct ql_progress {
    FILE *f; /* NULL: silent */
    int tty;
    int64_t total, every;
    int live; /* a live line is on screen and needs a newline before other text */
} ql_progress;

/* tty < 0: ask isatty() about f. */
void ql_progress_init(ql_progress *p, FILE *f, int tty, int64_t total, int64_t every);

typedef struct ql_progress_info {
    int64_t step;
    double loss, lr, grad_norm;
    double tokens_per_s; /* over the run so far */
    double elapsed_s;
    int skipped;
} ql_progress_info;

void ql_progress_step(ql_progress *p, const ql_progress_info *i);
/* A message between progress lines (the live line is cleared first). */
void ql_progress_note(ql_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends a live line. */
void ql_progress_end(ql_progress *p);

/* "1:02:03" / "2:03" for seconds. */
void ql_format_duration(double s, char *buf, size_t n);

#endif
