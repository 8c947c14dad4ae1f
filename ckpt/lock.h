/* File locking for checkpoints (checkpoint.file_locking).
 *
 * Two locks: HDF5's own lock on each shard while it is open, and an flock on
 * OUT/checkpoints/.lock that rank 0 holds while a run writes checkpoints, so
 * two jobs pointed at one output_dir do not commit over each other. Some
 * NFS and Lustre mounts do not support locks at all (ENOLCK, "No locks
 * available"); there `best-effort` goes on without them after a warning,
 * `strict` stops with a message that names the switch, `off` never locks. */
#ifndef QL_CKPT_LOCK_H
#define QL_CKPT_LOCK_H

#include <stddef.h>

#include "core/status.h"

/* In the order of the config key's choices. */
typedef enum ql_file_locking { QL_LOCK_BEST_EFFORT, QL_LOCK_STRICT, QL_LOCK_OFF } ql_file_locking;

typedef struct ql_dir_lock {
    int fd; /* -1: not held */
    char *path;
} ql_dir_lock;

/* Takes DIR/.lock (DIR must exist). A lock held by another process is
 * always an error naming it; a file system without locks is an error under
 * strict and, under best-effort, a warning written to `warn` (empty when
 * none) with the lock left unheld. */
ql_status ql_dir_lock_acquire(const char *dir, ql_file_locking mode, ql_dir_lock *l, char *warn,
                              size_t warn_n);
void ql_dir_lock_release(ql_dir_lock *l);

/* The advice appended to lock failures. */
#define QL_LOCK_ADVICE                                                                             \
    "this file system does not support file locks (NFS without lockd, some Lustre mounts); set "   \
    "checkpoint.file_locking: best-effort (or off) to run without them"

#endif
