/* Pre-tokenized training data in the Hugging Face convention: JSONL, one
 * record per line, {"input_ids": [...], "labels": [...]}. A label of -100
 * means "no loss on this token"; without "labels" every token after the first
 * is a target (labels = input_ids, as a causal-LM collator does).
 *
 * Records are stored already shifted for next-token prediction:
 * targets[t] = labels[t + 1], and the last position has no target (-1).
 * Records longer than max_seq_len are truncated (input_ids and labels alike,
 * then shifted) and counted. Blank lines are skipped. Any other problem (bad
 * JSON, a field of the wrong type, an id out of range, labels of the wrong
 * length, no records at all) is an error naming file:line. */
#ifndef QL_JSONL_TOKENS_H
#define QL_JSONL_TOKENS_H

#include <stdint.h>

#include <jansson.h>

#include "core/status.h"

typedef struct ql_token_data {
    char *path;
    int64_t n;           /* records */
    int64_t *off;        /* [n + 1]: record i is tokens off[i] .. off[i+1]-1 */
    int32_t *ids;        /* [off[n]] */
    int32_t *targets;    /* [off[n]]; negative = no loss */
    int64_t *line;       /* [n] 1-based source line of each record */
    int64_t n_truncated; /* records cut to max_seq_len */
    int64_t n_targets;   /* target positions over all records */
    int64_t max_len;     /* longest record after truncation */
    int32_t max_id;      /* largest input id (checked against a vocabulary later) */
} ql_token_data;

ql_status ql_jsonl_tokens_load(const char *path, int64_t max_seq_len, ql_token_data *d);
void ql_jsonl_tokens_free(ql_token_data *d);

/* "an integer", "a list"...: a JSON value's type for error messages. */
const char *ql_json_kind(const json_t *v);

/* Room for one more record of n_tok tokens in a ql_token_data being built;
 * *cap_rec and *cap_tok hold the capacities (0 before the first call). */
ql_status ql_token_data_reserve(ql_token_data *d, int64_t *cap_rec, int64_t *cap_tok,
                                int64_t n_tok);

/* Refuses ids >= vocab (or labels >= vocab), naming the file, line and index. */
ql_status ql_jsonl_tokens_check_vocab(const ql_token_data *d, int64_t vocab);

/* jansson's message for one JSONL line, which it parsed as a whole input:
 * its "end of file" is the end of the line. The result is `text` or a
 * thread-local buffer valid until the next call. */
const char *ql_jsonl_error_text(const char *text);

#endif
