/* Code evaluation: records {"prompt", "completion", "test"} whose test is
 * Python run after the function (prompt + a body + "\n" + test, exit 0 =
 * pass), a greedy completion of each prompt, and the test run on it in the
 * sandbox (train/sandbox.h). pass@1 is the fraction that pass
 * (docs/code-evaluation.md). */
#ifndef QL_CODE_EVAL_H
#define QL_CODE_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "train/generate.h"
#include "train/sandbox.h"

typedef struct ql_code_record {
    char *prompt, *completion; /* completion may be "" when the file has none */
    char *test;                /* NULL: the record has no test */
    char *source;              /* "source" field, or "FILE:LINE" */
    int64_t line;              /* 1-based line in the file */
} ql_code_record;

typedef struct ql_code_set {
    ql_code_record *r;
    int64_t n;
    int64_t n_tests; /* records with a test */
} ql_code_set;

/* Every record of a JSONL file with a string "prompt" (records in other
 * formats are an error naming FILE:LINE; blank lines are skipped). */
ql_status ql_code_set_load(const char *path, ql_code_set *s);
void ql_code_set_free(ql_code_set *s);

/* The part of a prompt that generation starts from: without its trailing
 * whitespace. A prompt ending in "\n" would otherwise end in a lone newline
 * token where the training text has "\n" and the next line's indentation
 * merged into one token (byte-level BPE), a context the model has never
 * seen; HumanEval harnesses strip prompts for the same reason. The
 * completion then starts with that newline. */
size_t ql_code_prompt_len(const char *prompt);

/* The first plen bytes of prompt + completion (a newline added if it has
 * none) + "\n" + test; malloc'd, NUL-terminated; NULL when out of memory. */
char *ql_code_program(const char *prompt, size_t plen, const char *completion, size_t clen,
                      const char *test, size_t *len);

/* Runs a record's test on a completion of its ql_code_prompt_len prompt. */
ql_status ql_code_run_test(const char *python, const ql_code_record *rec, const char *completion,
                           size_t clen, const ql_sandbox_limits *lim, ql_sandbox_result *res);

/* The generation settings of code evaluation: greedy, the prompt as qlora
 * train feeds it (no chat template), ending at eos, max_new_tokens or the
 * first line at column 0. */
void ql_code_gen_config(ql_gen_config *c, int64_t max_new_tokens, int batch);

#endif
