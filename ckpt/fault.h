/* Fault injection for the checkpoint tests (never set in production).
 *
 * QL_CKPT_FAULT is a comma-separated list of POINT or POINT@RANK; the code at
 * POINT behaves as if the operation failed there (on every rank, or only on
 * RANK). Points: lock-enolck, shard-write, shard-read, manifest-enospc,
 * latest-enospc, rename-dir (docs/checkpoint-format.md, "Testing"). */
#ifndef QL_CKPT_FAULT_H
#define QL_CKPT_FAULT_H

/* 1 if the fault `point` is set for `rank` (-1: this process's rank as the
 * launcher's environment says). */
int ql_ckpt_fault(const char *point, int rank);

#endif
