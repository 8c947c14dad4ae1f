#include "ckpt/store.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/fault.h"
#include "core/fsutil.h"

void ql_ckpt_step_name(int64_t step, char *buf, size_t n) {
    snprintf(buf, n, "step-%08" PRId64, step);
}

int64_t ql_ckpt_parse_step(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5;
    size_t digits = strspn(p, "0123456789");
    if (digits < 8 || digits > 18 || p[digits] != 0) return -1;
    return strtoll(p, NULL, 10);
}

static int desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

ql_status ql_ckpt_list(const char *root, int64_t **steps, int *n) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d) {
        if (errno == ENOENT) return QL_OK;
        return ql_error(QL_EIO, "%s: cannot list: %s", root, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    ql_status st = QL_OK;
    while ((e = readdir(d))) {
        int64_t s = ql_ckpt_parse_step(e->d_name);
        if (s < 0) continue;
        char *p = ql_fs_join(root, e->d_name);
        int is_dir = p && ql_fs_is_dir(p);
        free(p);
        if (!is_dir) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *g = realloc(*steps, (size_t)cap * sizeof *g);
            if (!g) {
                st = ql_error(QL_ENOMEM, "out of memory listing %s", root);
                break;
            }
            *steps = g;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (st != QL_OK) {
        free(*steps);
        *steps = NULL;
        *n = 0;
        return st;
    }
    if (*n) qsort(*steps, (size_t)*n, sizeof **steps, desc);
    return QL_OK;
}

int64_t ql_ckpt_read_latest(const char *root, char *why, size_t why_n) {
    if (why_n) why[0] = 0;
    char *p = ql_fs_join(root, "LATEST");
    if (!p) return -2;
    if (!ql_fs_exists(p)) {
        free(p);
        return -1;
    }
    char *data = NULL;
    size_t len = 0;
    ql_status st = ql_fs_read_file(p, &data, &len);
    free(p);
    if (st != QL_OK) {
        snprintf(why, why_n, "%s", ql_error_message());
        return -2;
    }
    /* "step-00001000\n" */
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
        data[--len] = 0;
    int64_t step = ql_ckpt_parse_step(data);
    if (step < 0)
        snprintf(why, why_n, "%s/LATEST holds '%.40s', not a step directory name", root, data);
    free(data);
    return step < 0 ? -2 : step;
}

ql_status ql_ckpt_write_latest(const char *root, int64_t step) {
    char *p = ql_fs_join(root, "LATEST");
    if (!p) return QL_ENOMEM;
    ql_status st;
    if (ql_ckpt_fault("latest-enospc", -1)) {
        st = ql_error(QL_EIO, "%s: write failed: No space left on device (injected fault)", p);
    } else {
        char line[64];
        ql_ckpt_step_name(step, line, sizeof line - 1);
        strcat(line, "\n");
        st = ql_fs_write_atomic(p, line, strlen(line));
    }
    free(p);
    return st;
}

ql_status ql_ckpt_candidates(const char *root, char ***dirs, int *n, char *note, size_t note_n) {
    *dirs = NULL;
    *n = 0;
    if (note_n) note[0] = 0;
    int64_t *steps;
    int ns;
    QL_TRY(ql_ckpt_list(root, &steps, &ns));
    char why[512];
    int64_t latest = ql_ckpt_read_latest(root, why, sizeof why);
    int latest_found = 0;
    for (int i = 0; i < ns; i++) latest_found |= steps[i] == latest;
    if (latest == -2)
        snprintf(note, note_n, "%s; trying the newest step directories", why);
    else if (latest >= 0 && !latest_found)
        snprintf(note, note_n,
                 "%s/LATEST names step-%08" PRId64 ", which does not exist; trying the newest "
                 "step directories",
                 root, latest);
    else if (latest == -1 && ns > 0)
        snprintf(note, note_n, "%s has no LATEST; trying the newest step directories", root);
    char **out = calloc((size_t)(ns ? ns : 1), sizeof *out);
    if (!out) {
        free(steps);
        return ql_error(QL_ENOMEM, "out of memory");
    }
    int k = 0;
    for (int i = 0; i < ns; i++) {
        /* With a good LATEST: it first, then only older ones (newer ones are
         * either not committed or from an abandoned timeline). */
        if (latest >= 0 && latest_found && steps[i] > latest) continue;
        char name[40];
        ql_ckpt_step_name(steps[i], name, sizeof name);
        out[k] = ql_fs_join(root, name);
        if (!out[k]) {
            ql_ckpt_free_list(out, k);
            free(steps);
            return QL_ENOMEM;
        }
        k++;
    }
    free(steps);
    *dirs = out;
    *n = k;
    return QL_OK;
}

void ql_ckpt_free_list(char **dirs, int n) {
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
}

static int is_tmp_name(const char *name) {
    /* Saves in progress (.tmp-), checkpoints being pruned (.tmp-pruned) and
     * ones moved aside while being replaced (ql_fs_commit_dir's .old-). */
    if (strncmp(name, "step-", 5) != 0) return 0;
    return strstr(name, ".tmp-") || strstr(name, ".old-");
}

void ql_ckpt_remove_stale(const char *root) {
    DIR *d = opendir(root);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_tmp_name(e->d_name)) continue;
        char *p = ql_fs_join(root, e->d_name);
        if (p) ql_fs_remove_tree(p);
        free(p);
    }
    closedir(d);
}

void ql_ckpt_prune(const char *root, int64_t current, int64_t keep_last, char *warn,
                   size_t warn_n) {
    if (warn_n) warn[0] = 0;
    int64_t *steps;
    int n;
    if (ql_ckpt_list(root, &steps, &n) != QL_OK) {
        snprintf(warn, warn_n, "warning: not pruning old checkpoints: %s", ql_error_message());
        return;
    }
    int64_t kept = 0;
    for (int i = 0; i < n; i++) {
        if (steps[i] > current) continue;
        if (kept < (keep_last < 1 ? 1 : keep_last)) {
            kept++;
            continue;
        }
        char name[40];
        ql_ckpt_step_name(steps[i], name, sizeof name);
        /* Renamed out of the way first, so that a kill while removing never
         * leaves a half-deleted directory under a checkpoint's name. */
        char *p = ql_fs_join(root, name);
        size_t len = p ? strlen(p) + 16 : 0;
        char *gone = p ? malloc(len) : NULL;
        if (gone) {
            snprintf(gone, len, "%s.tmp-pruned", p);
            if (rename(p, gone) == 0)
                ql_fs_remove_tree(gone);
            else
                snprintf(warn, warn_n, "warning: could not remove the old checkpoint %s: %s", p,
                         strerror(errno));
        }
        free(gone);
        free(p);
    }
    free(steps);
}
