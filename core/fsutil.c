#include "core/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *ql_fs_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = ql_malloc(la + lb + 2, "a path");
    if (!p) return NULL;
    memcpy(p, a, la);
    size_t o = la;
    if (la && a[la - 1] != '/') p[o++] = '/';
    memcpy(p + o, b, lb + 1);
    return p;
}

int ql_fs_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int ql_fs_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

ql_status ql_fs_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ql_error(errno == ENOENT ? QL_ENOTFOUND : QL_EIO, "%s: cannot open: %s", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ql_error(QL_EIO, "%s: not a regular file", path);
    }
    char *buf = ql_malloc((size_t)st.st_size + 1, path);
    if (!buf) {
        close(fd);
        return QL_ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return ql_error(QL_EIO, "%s: read failed: %s", path,
                            r < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *data = buf;
    if (len) *len = got;
    return QL_OK;
}

/* dirname() may modify its argument and return static storage. */
static char *dir_of(const char *path) {
    char *copy = strdup(path);
    if (!copy) {
        ql_error(QL_ENOMEM, "out of memory copying a path");
        return NULL;
    }
    char *d = strdup(dirname(copy));
    free(copy);
    if (!d) ql_error(QL_ENOMEM, "out of memory copying a path");
    return d;
}

ql_status ql_fs_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ql_error(QL_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems do not support fsync on directories; that is not a
     * reason to fail an otherwise complete write. */
    if (r != 0 && e != EINVAL && e != ENOTSUP)
        return ql_error(QL_EIO, "%s: fsync failed: %s", dir, strerror(e));
    return QL_OK;
}

ql_status ql_fs_tmpfile_open(const char *path, ql_fs_tmpfile *f) {
    f->fd = -1;
    f->final_path = strdup(path);
    size_t n = strlen(path) + 16;
    f->tmp_path = malloc(n);
    if (!f->final_path || !f->tmp_path) {
        free(f->final_path);
        free(f->tmp_path);
        f->final_path = f->tmp_path = NULL;
        return ql_error(QL_ENOMEM, "out of memory opening %s", path);
    }
    snprintf(f->tmp_path, n, "%s.tmp-XXXXXX", path);
    f->fd = mkostemp(f->tmp_path, O_CLOEXEC);
    if (f->fd < 0) {
        ql_status st = ql_error(QL_EIO, "%s: cannot create a temporary file beside it: %s", path,
                                strerror(errno));
        free(f->final_path);
        free(f->tmp_path);
        f->final_path = f->tmp_path = NULL;
        return st;
    }
    /* mkostemp creates 0600; outputs are ordinary files for whoever runs them. */
    mode_t um = umask(0);
    umask(um);
    fchmod(f->fd, 0666 & ~um);
    return QL_OK;
}

ql_status ql_fs_tmpfile_write(ql_fs_tmpfile *f, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t w = write(f->fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return ql_error(QL_EIO, "%s: write failed: %s", f->final_path, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return QL_OK;
}

ql_status ql_fs_tmpfile_commit(ql_fs_tmpfile *f) {
    if (fsync(f->fd) != 0) {
        ql_status st = ql_error(QL_EIO, "%s: fsync failed: %s", f->final_path, strerror(errno));
        ql_fs_tmpfile_abort(f);
        return st;
    }
    int r = close(f->fd);
    f->fd = -1;
    if (r != 0) {
        ql_status st = ql_error(QL_EIO, "%s: close failed: %s", f->final_path, strerror(errno));
        ql_fs_tmpfile_abort(f);
        return st;
    }
    if (rename(f->tmp_path, f->final_path) != 0) {
        ql_status st = ql_error(QL_EIO, "%s: rename from %s failed: %s", f->final_path, f->tmp_path,
                                strerror(errno));
        ql_fs_tmpfile_abort(f);
        return st;
    }
    char *dir = dir_of(f->final_path);
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
    if (!dir) return QL_ENOMEM;
    ql_status st = ql_fs_fsync_dir(dir);
    free(dir);
    return st;
}

void ql_fs_tmpfile_abort(ql_fs_tmpfile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->final_path);
    f->tmp_path = f->final_path = NULL;
}

ql_status ql_fs_write_atomic(const char *path, const void *data, size_t len) {
    ql_fs_tmpfile f;
    QL_TRY(ql_fs_tmpfile_open(path, &f));
    ql_status st = ql_fs_tmpfile_write(&f, data, len);
    if (st != QL_OK) {
        ql_fs_tmpfile_abort(&f);
        return st;
    }
    return ql_fs_tmpfile_commit(&f);
}

ql_status ql_fs_copy_file(const char *src, const char *dst) {
    char *data;
    size_t len;
    QL_TRY(ql_fs_read_file(src, &data, &len));
    ql_status st = ql_fs_write_atomic(dst, data, len);
    free(data);
    return st;
}

ql_status ql_fs_mkdtemp_beside(const char *final, char **tmp) {
    size_t n = strlen(final);
    while (n > 1 && final[n - 1] == '/') n--;
    char *t = malloc(n + 16);
    if (!t) return ql_error(QL_ENOMEM, "out of memory for a directory name");
    memcpy(t, final, n);
    memcpy(t + n, ".tmp-XXXXXX", 12);
    if (!mkdtemp(t)) {
        ql_status st = ql_error(QL_EIO, "%.*s: cannot create a temporary directory beside it: %s",
                                (int)n, final, strerror(errno));
        free(t);
        return st;
    }
    /* mkdtemp creates 0700; the result is an ordinary output directory. */
    mode_t um = umask(0);
    umask(um);
    chmod(t, 0777 & ~um);
    *tmp = t;
    return QL_OK;
}

ql_status ql_fs_commit_dir(const char *tmp, const char *final, int replace) {
    QL_TRY(ql_fs_fsync_dir(tmp));
    char *parent = dir_of(final);
    if (!parent) return QL_ENOMEM;
    char *old = NULL;
    ql_status st = QL_OK;
    if (ql_fs_exists(final)) {
        if (!replace) {
            st = ql_error(QL_EINVAL, "%s: already exists (use --force to replace it)", final);
            goto out;
        }
        size_t n = strlen(final) + 16;
        old = malloc(n);
        if (!old) {
            st = ql_error(QL_ENOMEM, "out of memory for a directory name");
            goto out;
        }
        snprintf(old, n, "%s.old-XXXXXX", final);
        /* A directory renames onto the empty one mkdtemp made; a plain
         * file needs the name free. */
        if (!mkdtemp(old) || (!ql_fs_is_dir(final) && rmdir(old) != 0) || rename(final, old) != 0) {
            st = ql_error(QL_EIO, "%s: cannot move the existing output aside: %s", final,
                          strerror(errno));
            rmdir(old);
            goto out;
        }
    }
    if (rename(tmp, final) != 0) {
        st = ql_error(QL_EIO, "%s: rename from %s failed: %s", final, tmp, strerror(errno));
        if (old) rename(old, final);
        goto out;
    }
    st = ql_fs_fsync_dir(parent);
    if (old) ql_fs_remove_tree(old);
out:
    free(old);
    free(parent);
    return st;
}

void ql_fs_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *child = ql_fs_join(path, de->d_name);
            if (!child) break;
            ql_fs_remove_tree(child);
            free(child);
        }
        closedir(d);
    }
    rmdir(path);
}

ql_status ql_fs_mkdirs(const char *path) {
    char *p = strdup(path);
    if (!p) return ql_error(QL_ENOMEM, "out of memory");
    ql_status st = QL_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = ql_error(QL_EIO, "%s: cannot create the directory: %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    if (st == QL_OK && !ql_fs_is_dir(path))
        st = ql_error(QL_EIO, "%s: exists and is not a directory", path);
    return st;
}
