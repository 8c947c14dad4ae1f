/* HDF5 errors as ql_error messages: HDF5 never prints its error stack to
 * stderr; a failing call becomes one message naming the file, what was being
 * done, and HDF5's innermost reason ("truncated file", "bad object header
 * version number", "unable to lock file"). */
#ifndef QL_CKPT_H5ERR_H
#define QL_CKPT_H5ERR_H

#include "core/status.h"

/* Turns HDF5's automatic error printing off (idempotent; call before any
 * HDF5 call: the setting is per thread in thread-safe builds). */
void ql_h5_quiet(void);

/* Records "PATH: WHAT: <HDF5's reasons>" and returns code (QL_EFORMAT for a
 * file that exists but cannot be read as a shard, QL_EIO for writes). */
ql_status ql_h5_error(ql_status code, const char *path, const char *what);

#endif
