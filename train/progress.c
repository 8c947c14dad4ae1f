#include "train/progress.h"

#include <math.h>
#include <stdarg.h>
#include <unistd.h>

void ql_progress_init(ql_progress *p, FILE *f, int tty, int64_t total, int64_t every) {
    p->f = f;
    p->tty = tty >= 0 ? tty : (f && isatty(fileno(f)));
    p->total = total;
    p->every = every > 0 ? every : 1;
    p->live = 0;
}

void ql_format_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) s = 0;
    long long t = (long long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%lld:%02lld", t / 60, t % 60);
}

void ql_progress_step(ql_progress *p, const ql_progress_info *i) {
    if (!p->f) return;
    int due = i->step == 1 || i->step == p->total || i->step % p->every == 0 || i->skipped;
    if (!p->tty && !due) return;
    char el[32], eta[32];
    ql_format_duration(i->elapsed_s, el, sizeof el);
    double per = i->step > 0 ? i->elapsed_s / (double)i->step : 0;
    ql_format_duration(per * (double)(p->total - i->step), eta, sizeof eta);
    char loss[48];
    if (isfinite(i->loss))
        snprintf(loss, sizeof loss, "%.4f", i->loss);
    else
        snprintf(loss, sizeof loss, "%s", isnan(i->loss) ? "nan" : "inf");
    if (p->tty) fputs("\r\033[K", p->f);
    fprintf(p->f, "step %lld/%lld  loss %s%s  lr %.3e  grad %.3g  %.0f tok/s  %s elapsed  ETA %s",
            (long long)i->step, (long long)p->total, loss, i->skipped ? " (skipped)" : "", i->lr,
            i->grad_norm, i->tokens_per_s, el, eta);
    if (p->tty) {
        p->live = 1;
    } else {
        fputc('\n', p->f);
    }
    fflush(p->f);
}

void ql_progress_note(ql_progress *p, const char *fmt, ...) {
    if (!p->f) return;
    if (p->live) fputs("\r\033[K", p->f);
    p->live = 0;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->f, fmt, ap);
    va_end(ap);
    fputc('\n', p->f);
    fflush(p->f);
}

void ql_progress_end(ql_progress *p) {
    if (p->f && p->live) {
        fputc('\n', p->f);
        fflush(p->f);
    }
    p->live = 0;
}
