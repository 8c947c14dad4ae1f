/* The checkpoints directory OUT/checkpoints: step directories
 * step-NNNNNNNN/, the LATEST pointer, temporary directories of saves in
 * progress (step-NNNNNNNN.tmp-XXXXXX), pruning, and the order in which a
 * resume tries checkpoints. Rank 0 alone changes this directory. */
#ifndef QL_CKPT_STORE_H
#define QL_CKPT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* "step-00001000" (at least 8 digits) into buf. */
void ql_ckpt_step_name(int64_t step, char *buf, size_t n);
/* The step a directory name ("step-00001000", not a .tmp one) stands for,
 * or -1. */
int64_t ql_ckpt_parse_step(const char *name);

/* The steps of the committed step directories under root, newest first
 * (malloc'd; *n = 0 and NULL when root does not exist). */
ql_status ql_ckpt_list(const char *root, int64_t **steps, int *n);

/* The step LATEST names: -1 when LATEST is absent; -2 (and a reason in
 * `why`) when it cannot be read or is malformed. */
int64_t ql_ckpt_read_latest(const char *root, char *why, size_t why_n);
/* Replaces LATEST atomically (temporary file, fsync, rename, fsync dir). */
ql_status ql_ckpt_write_latest(const char *root, int64_t step);

/* The directories a resume tries, in order: LATEST's, then every committed
 * one below it, newest first (all of them newest first when LATEST is
 * missing or broken; a note in `note` says so). Malloc'd paths. */
ql_status ql_ckpt_candidates(const char *root, char ***dirs, int *n, char *note, size_t note_n);
void ql_ckpt_free_list(char **dirs, int n);

/* Removes committed checkpoints at or below `current` beyond the keep_last
 * newest (never `current` itself; directories above it, from a timeline
 * that was abandoned by resuming an older checkpoint, are left alone), and
 * temporary directories of saves that died. Failures are written to `warn`
 * (never an error: the new checkpoint is already committed). */
void ql_ckpt_prune(const char *root, int64_t current, int64_t keep_last, char *warn, size_t warn_n);
/* Removes the step-*.tmp-* directories of saves that did not finish. */
void ql_ckpt_remove_stale(const char *root);

#endif
