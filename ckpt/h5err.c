#include "ckpt/h5err.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/lock.h"

typedef struct walk {
    char outer[256], inner[256];
    int n;
} walk;

/* The reasons of the last failing HDF5 call of this thread. Captured when
 * the call fails (HDF5 calls its "auto" handler then), because the next
 * HDF5 call, a cleanup H5Sclose say, clears the error stack. */
static _Thread_local walk last;

/* Walked from the API call down to where it went wrong: the first entry says
 * what failed, the last one why. */
/* HDF5's I/O failures read "file write failed: time = ..., filename = ...,
 * errno = 28, error message = 'No space left on device', buf = ...": keep
 * what failed and the system's reason. */
static void shorten(const char *desc, char *out, size_t n) {
    const char *em = strstr(desc, "error message = '");
    const char *colon = strchr(desc, ':');
    if (!em || !colon) {
        snprintf(out, n, "%s", desc);
        return;
    }
    em += strlen("error message = '");
    const char *end = strchr(em, '\'');
    const char *en = strstr(desc, "errno = ");
    int err = en ? atoi(en + strlen("errno = ")) : 0;
    snprintf(out, n, "%.*s: %.*s (errno %d)", (int)(colon - desc), desc, end ? (int)(end - em) : 80,
             em, err);
}

static herr_t on_entry(unsigned n, const H5E_error2_t *e, void *ctx) {
    walk *w = ctx;
    const char *desc = e->desc && *e->desc ? e->desc : e->func_name ? e->func_name : "?";
    if (w->n == 0) shorten(desc, w->outer, sizeof w->outer);
    shorten(desc, w->inner, sizeof w->inner);
    w->n++;
    (void)n;
    return 0;
}

static herr_t on_failure(hid_t stack, void *ctx) {
    (void)ctx;
    walk w = {.n = 0};
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, on_entry, &w);
    /* Keep the first failure's reasons: later failures are its echoes. */
    if (last.n == 0) last = w;
    return 0;
}

void ql_h5_quiet(void) {
    /* HDF5's exit handler closes the files still open, and crashes on one
     * whose close already failed (a full disk, in 1.10.8). The shards are
     * in a temporary directory that is removed anyway: no exit handler.
     * (Only effective before HDF5 initialises; a no-op afterwards.) */
    static int once;
    if (!once) {
        once = 1;
        H5dont_atexit();
    }
    last.n = 0;
    H5Eset_auto2(H5E_DEFAULT, on_failure, NULL);
}

ql_status ql_h5_error(ql_status code, const char *path, const char *what) {
    walk w = last;
    last.n = 0;
    int lock_failed = strstr(w.inner, "unable to lock") || strstr(w.outer, "unable to lock") ||
                      strstr(w.inner, "No locks available");
    const char *lock = lock_failed ? "; " QL_LOCK_ADVICE : "";
    if (w.n == 0) return ql_error(code, "%s: %s failed (HDF5 gave no reason)%s", path, what, lock);
    if (w.n == 1 || !strcmp(w.outer, w.inner))
        return ql_error(code, "%s: %s failed: HDF5: %s%s", path, what, w.inner, lock);
    return ql_error(code, "%s: %s failed: HDF5: %s: %s%s", path, what, w.outer, w.inner, lock);
}
