#include "dist/watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct ql_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double timeout_s;
    int depth;        /* nesting of enter/leave */
    double since;     /* when the outermost collective began */
    const char *what; /* its name */
    char phase[160];
    int stop;
    ql_watchdog_fire_fn fire;
    void *ctx;
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static struct timespec mono_at(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

static void *run(void *arg) {
    ql_watchdog *w = arg;
    char msg[512];
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->depth == 0 || !(w->timeout_s > 0)) {
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        double now = mono_now(), deadline = w->since + w->timeout_s;
        if (now < deadline) {
            struct timespec ts = mono_at(deadline);
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            continue;
        }
        snprintf(msg, sizeof msg,
                 "waited %.1f s in %s%s%s for the other ranks (the limit is %g s: dist.timeout_s "
                 "or QL_DIST_TIMEOUT_S); a rank is stuck or has died; aborting the job",
                 now - w->since, w->what, w->phase[0] ? " during " : "", w->phase, w->timeout_s);
        pthread_mutex_unlock(&w->mu);
        w->fire(w->ctx, msg);
        /* fire does not return; if it ever did, fire no more. */
        pthread_mutex_lock(&w->mu);
        w->timeout_s = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

ql_status ql_watchdog_start(double timeout_s, ql_watchdog_fire_fn fire, void *ctx,
                            ql_watchdog **out) {
    *out = NULL;
    ql_watchdog *w = ql_calloc(1, sizeof *w, "the collective watchdog");
    if (!w) return QL_ENOMEM;
    w->timeout_s = timeout_s;
    w->fire = fire;
    w->ctx = ctx;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_mutex_init(&w->mu, NULL);
    if (!e) e = pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!e) e = pthread_create(&w->thread, NULL, run, w);
    if (e) {
        free(w);
        return ql_error(QL_EBACKEND, "starting the collective watchdog thread: %s", strerror(e));
    }
    *out = w;
    return QL_OK;
}

void ql_watchdog_stop(ql_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void ql_watchdog_set_timeout(ql_watchdog *w, double timeout_s) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->timeout_s = timeout_s;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

double ql_watchdog_timeout(const ql_watchdog *w) { return w ? w->timeout_s : 0; }

void ql_watchdog_set_phase(ql_watchdog *w, const char *phase) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    snprintf(w->phase, sizeof w->phase, "%s", phase ? phase : "");
    pthread_mutex_unlock(&w->mu);
}

void ql_watchdog_enter(ql_watchdog *w, const char *what) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    if (w->depth++ == 0) {
        w->since = mono_now();
        w->what = what;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

void ql_watchdog_leave(ql_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    if (w->depth > 0) w->depth--;
    pthread_mutex_unlock(&w->mu);
}
