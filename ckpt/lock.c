#include "ckpt/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ckpt/fault.h"
#include "core/fsutil.h"

/* errno values that mean "this file system has no locks", not "someone
 * else holds it" (ENOLCK on NFS without lockd, EOPNOTSUPP/ENOSYS on FUSE and
 * some Lustre mounts). */
static int no_locks(int e) { return e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS || e == EINVAL; }

ql_status ql_dir_lock_acquire(const char *dir, ql_file_locking mode, ql_dir_lock *l, char *warn,
                              size_t warn_n) {
    l->fd = -1;
    l->path = NULL;
    if (warn_n) warn[0] = 0;
    if (mode == QL_LOCK_OFF) return QL_OK;
    l->path = ql_fs_join(dir, ".lock");
    if (!l->path) return QL_ENOMEM;
    int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ql_status st =
            ql_error(QL_EIO, "%s: cannot open the lock file: %s", l->path, strerror(errno));
        ql_dir_lock_release(l);
        return st;
    }
    int rc = ql_ckpt_fault("lock-enolck", -1) ? (errno = ENOLCK, -1) : flock(fd, LOCK_EX | LOCK_NB);
    if (rc != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char holder[256] = "";
            ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
            holder[got > 0 ? got : 0] = 0;
            holder[strcspn(holder, "\n")] = 0;
            close(fd);
            ql_status st = ql_error(QL_EINVAL,
                                    "%s is locked by another process (%s): another qlora run is "
                                    "writing checkpoints to this output_dir",
                                    l->path, *holder ? holder : "holder unknown");
            ql_dir_lock_release(l);
            return st;
        }
        close(fd);
        if (no_locks(e) && mode == QL_LOCK_BEST_EFFORT) {
            snprintf(warn, warn_n, "warning: cannot lock %s: %s; going on without a lock", l->path,
                     strerror(e));
            free(l->path);
            l->path = NULL;
            return QL_OK;
        }
        ql_status st = ql_error(QL_EIO, "cannot lock %s: %s (errno %d)%s%s", l->path, strerror(e),
                                e, no_locks(e) ? "; " : "", no_locks(e) ? QL_LOCK_ADVICE : "");
        ql_dir_lock_release(l);
        return st;
    }
    /* Who holds it, for the message another run would print. */
    char who[300], host[256] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    int n = snprintf(who, sizeof who, "pid %ld on %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) == 0 && n > 0) {
        ssize_t w = pwrite(fd, who, (size_t)n, 0);
        (void)w; /* informational only */
    }
    l->fd = fd;
    return QL_OK;
}

void ql_dir_lock_release(ql_dir_lock *l) {
    if (l->fd >= 0) {
        flock(l->fd, LOCK_UN);
        close(l->fd);
    }
    l->fd = -1;
    free(l->path);
    l->path = NULL;
}
