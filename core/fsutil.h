/* Files and directories that appear whole or not at all.
 *
 * Outputs are written under a temporary name in the same directory, fsynced,
 * and renamed into place, so a crash or an error never leaves a half-written
 * file or directory under the final name. */
#ifndef QL_FSUTIL_H
#define QL_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* a + "/" + b into a malloc'd string (NULL and an ENOMEM message on failure). */
char *ql_fs_join(const char *a, const char *b);

int ql_fs_exists(const char *path);
int ql_fs_is_dir(const char *path);
/* mkdir -p: creates `path` and its missing parents; an existing non-directory
 * is an error naming it. */
ql_status ql_fs_mkdirs(const char *path);

/* Reads a whole file into a malloc'd buffer with a NUL after the last byte. */
ql_status ql_fs_read_file(const char *path, char **data, size_t *len);

/* Writes `len` bytes to a temporary file beside `path`, fsyncs it, renames it
 * to `path` and fsyncs the directory. */
ql_status ql_fs_write_atomic(const char *path, const void *data, size_t len);

/* An open temporary file beside `path`; commit renames it into place. */
typedef struct ql_fs_tmpfile {
    int fd;
    char *tmp_path;
    char *final_path;
} ql_fs_tmpfile;

ql_status ql_fs_tmpfile_open(const char *path, ql_fs_tmpfile *f);
/* write(2) in a loop; on error records a message naming the final path. */
ql_status ql_fs_tmpfile_write(ql_fs_tmpfile *f, const void *data, size_t len);
ql_status ql_fs_tmpfile_commit(ql_fs_tmpfile *f);
/* Removes the temporary file if it was not committed. Safe to call twice. */
void ql_fs_tmpfile_abort(ql_fs_tmpfile *f);

/* Copies src to dst (atomically, as above). */
ql_status ql_fs_copy_file(const char *src, const char *dst);

/* fsync of a directory, so renames inside it survive a crash. */
ql_status ql_fs_fsync_dir(const char *dir);

/* Creates an empty directory "<final>.tmp-XXXXXX" beside `final`; *tmp is
 * malloc'd. */
ql_status ql_fs_mkdtemp_beside(const char *final, char **tmp);

/* Renames the finished directory `tmp` to `final`. An existing `final` is
 * refused unless `replace`, in which case it is moved aside, the new one
 * renamed in, and the old one removed. The parent directory is fsynced. */
ql_status ql_fs_commit_dir(const char *tmp, const char *final, int replace);

/* rm -r. Does not follow symbolic links. Errors are ignored: this is used to
 * clean up after another failure, whose message must survive. */
void ql_fs_remove_tree(const char *path);

#endif
