/* Training records from JSONL, one per line, in any of four formats
 * (docs/data.md, "Records"):
 *
 *   {"input_ids": [...], "labels": [...]}   pre-tokenized (labels optional, -100 = no loss)
 *   {"text": "..."}                         loss on every token
 *   {"prompt": "...", "completion": "..."}  loss on the completion (and the EOS after it)
 *   {"messages": [{"role", "content"}...]}  loss on the assistant turns, laid out by the
 *                                           model's chat template (data/chat_template.h)
 *
 * tokenized with the model's tokenizer into the ql_token_data the trainer
 * consumes (ids and targets already shifted: targets[t] = label of t+1).
 * The ids and loss positions are those of the Hugging Face stack (TRL's
 * SFTTrainer conventions, apply_chat_template with assistant masks):
 * tests/unit/test_records_reference.c compares them with transformers.
 *
 * Nothing is dropped or cut silently: records longer than max_seq_len follow
 * on_overlength, malformed records follow on_bad_record, and the report
 * counts both. */
#ifndef QL_RECORDS_H
#define QL_RECORDS_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "data/chat_template.h"
#include "data/jsonl_tokens.h"
#include "data/tokenizer.h"

/* What a record longer than max_seq_len tokens does (data.on_overlength). */
typedef enum ql_overlength {
    QL_OVERLENGTH_TRUNCATE, /* keep the first max_seq_len tokens; count it and the tokens lost */
    QL_OVERLENGTH_DROP,     /* leave the record out; count it */
    QL_OVERLENGTH_ERROR,    /* stop with file:line */
} ql_overlength;

/* What a malformed record does (data.on_bad_record). */
typedef enum ql_on_bad {
    QL_ON_BAD_ERROR, /* stop with file:line and what is wrong */
    QL_ON_BAD_SKIP,  /* leave it out; count it by reason */
} ql_on_bad;

typedef enum ql_record_format {
    QL_REC_TOKENS,
    QL_REC_TEXT,
    QL_REC_PROMPT,
    QL_REC_MESSAGES,
    QL_REC__N
} ql_record_format;

/* Why a record was bad. */
typedef enum ql_bad_reason {
    QL_BAD_JSON,         /* not valid JSON (or not one JSON value) */
    QL_BAD_UTF8,         /* a string is not valid UTF-8 */
    QL_BAD_FIELDS,       /* not an object, no known fields, a field missing or two formats mixed */
    QL_BAD_TYPE,         /* a field of the wrong type */
    QL_BAD_ROLE,         /* a message role other than system, user, assistant */
    QL_BAD_CONVERSATION, /* an order of roles the chat format cannot lay out */
    QL_BAD_TOKENS,       /* pre-tokenized: an id out of range, labels of the wrong length */
    QL_BAD__N
} ql_bad_reason;

const char *ql_bad_reason_name(ql_bad_reason r);
const char *ql_record_format_name(ql_record_format f);

typedef struct ql_records_options {
    int64_t max_seq_len;          /* >= 2 */
    ql_overlength on_overlength;  /* default truncate */
    ql_on_bad on_bad_record;      /* default error */
    ql_chat_format chat_template; /* QL_CHAT_AUTO: recognise the tokenizer's */
} ql_records_options;

typedef struct ql_records_report {
    int64_t read;                  /* non-blank lines */
    int64_t kept;                  /* records in the output */
    int64_t skipped;               /* bad records left out (on_bad_record: skip) */
    int64_t skipped_by[QL_BAD__N]; /* ... by reason */
    int64_t dropped;               /* over max_seq_len, left out (on_overlength: drop) */
    int64_t no_loss;               /* left out: no token with loss (e.g. no assistant turn,
                                      or truncation cut every such token) */
    int64_t truncated;             /* kept, cut to max_seq_len */
    int64_t kept_by[QL_REC__N];    /* kept records by format */
    int64_t tokens;                /* tokens kept */
    int64_t tokens_lost;           /* tokens cut off by truncation */
    int64_t tokens_dropped;        /* tokens of records dropped for length */
    int64_t loss_tokens;           /* positions with a target in the output */
    int64_t prompt_merged;         /* prompt/completion records whose first completion token
                                      merged with the prompt's end (TRL warns about these) */
    /* Record lengths in tokens before any cut, over every record that got
     * that far (kept, dropped, no_loss): nearest-rank percentiles. */
    int64_t len_p50, len_p90, len_p99, len_max;
    int64_t max_seq_len;
    char chat_template[24]; /* the chat format used, "" when no record had messages */
    char first_skip[320];   /* the message of the first skipped record */
} ql_records_report;

/* Reads `path`. `tok` may be NULL when every record is pre-tokenized. On
 * success *out holds the kept records (free with ql_jsonl_tokens_free) and
 * *rep (may be NULL) what happened. Errors: a bad record under
 * on_bad_record: error, an over-length record under on_overlength: error, an
 * empty file, a file with no usable record, a chat template that cannot be
 * recognised — each naming the file (and line). */
ql_status ql_records_load(const char *path, ql_tokenizer *tok, const ql_records_options *o,
                          ql_token_data *out, ql_records_report *rep);

/* The report as a small table (records, tokens, lengths, what was cut). */
void ql_records_report_print(const ql_records_report *r, const char *path, FILE *f);

#endif
