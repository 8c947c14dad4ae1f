/* The training configuration: one YAML file plus `--a.b=value` overrides,
 * resolved against a schema that names every key with its type, default,
 * allowed range and a one-line meaning (docs/config.md lists the same table).
 *
 * Every problem ends with one message that names where the value was written
 * (file:line:column, or "command line") and the key: YAML syntax errors,
 * unknown keys (with the nearest valid key when there is a plausible one),
 * wrong types, values out of range, missing required keys. Values that are
 * legal but unusual (a learning rate far outside 1e-6..1e-2) are warnings. */
#ifndef QL_CONFIG_H
#define QL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define QL_CFG_PATH_MAX 4096
#define QL_CFG_WARN_MAX 2048
#define QL_CFG_KEYS_MAX 128 /* schema keys at most (ql_config.given) */

/* Learning-rate schedules after warmup (transformers' get_*_schedule_with_warmup). */
typedef enum ql_schedule { QL_SCHED_COSINE, QL_SCHED_LINEAR, QL_SCHED_CONSTANT } ql_schedule;

/* What a step whose loss or gradient is NaN/Inf does. */
typedef enum ql_nonfinite { QL_NONFINITE_SKIP, QL_NONFINITE_STOP } ql_nonfinite;

/* How a micro-batch's rows are padded. */
typedef enum ql_pad_to { QL_PAD_LONGEST, QL_PAD_MAX_SEQ_LEN } ql_pad_to;

/* quant.type none: the linears held as the model file stores them (float32
 * on the CPU backends), not quantized: LoRA rather than QLoRA. */
#define QL_QUANT_NONE 2

typedef struct ql_config {
    char model[QL_CFG_PATH_MAX];
    char output_dir[QL_CFG_PATH_MAX];
    int64_t seed;
    char backend[32];
    int overwrite_output_dir;
    char resume[QL_CFG_PATH_MAX]; /* "auto", "never" or a checkpoint path */
    struct {
        char train[QL_CFG_PATH_MAX];
        int64_t max_seq_len;
        int shuffle;
        int pad_to; /* ql_pad_to */
        int packing;
        char valid[QL_CFG_PATH_MAX];
        double valid_fraction;
        int cache;
        char cache_dir[QL_CFG_PATH_MAX];
        int chat_template; /* ql_chat_format (data/chat_template.h) */
        int on_overlength; /* ql_overlength (data/records.h) */
        int on_bad_record; /* ql_on_bad (data/records.h) */
    } data;
    struct {
        int64_t r;
        double alpha;
        double dropout;
        unsigned targets; /* bit i = projection i of ql_config_target_name */
        int use_rslora;
        char init_adapter[QL_CFG_PATH_MAX]; /* "" or a PEFT adapter (or run) to start from */
    } lora;
    struct {
        int64_t steps;
        int64_t global_batch;
        int64_t micro_batch;
        double lr;
        int schedule; /* ql_schedule */
        int64_t warmup_steps;
        double weight_decay;
        double max_grad_norm;
        double adam_beta1, adam_beta2, adam_epsilon;
        int on_nonfinite; /* ql_nonfinite */
        int64_t max_nonfinite_in_a_row;
        int activation_checkpointing;
        double memory_limit_gb; /* 0: the device's (or the host's) memory */
        int64_t log_every;
        int64_t eval_every;
    } train;
    struct {
        double timeout_s;  /* the collective watchdog's limit (0: none) */
        int64_t bucket_mb; /* reduce-scatter bucket */
    } dist;
    struct {
        int type; /* ql_qtype: 0 nf4, 1 fp4; or QL_QUANT_NONE */
        int64_t blocksize;
        int double_quant;
        int64_t dequantized_layers; /* layers whose linears cuda also keeps in bf16 */
    } quant;
    struct {
        int64_t every_steps;  /* 0: none */
        double every_minutes; /* 0: none */
        int64_t keep_last;
        int file_locking; /* ql_file_locking (ckpt/lock.h) */
    } checkpoint;
    struct {
        int64_t prompts;        /* held-out records in OUTPUT_DIR/review.md (0: none) */
        int64_t samples;        /* of those, logged to metrics.jsonl at start and end */
        int64_t max_new_tokens; /* per answer */
        int tests;              /* run the records' unit tests */
    } review;
    /* Warnings found while resolving, one per line (printed by the launcher). */
    char warnings[QL_CFG_WARN_MAX];
    /* The keys the file or the command line set (the others took their
     * defaults): bit i % 64 of given[i / 64] for schema index i. Settings
     * that another source can supply (lora.init_adapter) tell a value
     * someone wrote from a default with it (ql_config_given). */
    uint64_t given[QL_CFG_KEYS_MAX / 64];
} ql_config;

typedef enum ql_cfg_type {
    QL_CFG_STR,
    QL_CFG_INT,
    QL_CFG_FLOAT,
    QL_CFG_BOOL,
    QL_CFG_CHOICE, /* int index into `choices` ("a|b|c") */
    QL_CFG_TARGETS /* unsigned bit set from a list of projection names */
} ql_cfg_type;

/* One key of the schema. */
typedef struct ql_cfg_key {
    const char *path; /* "train.lr" */
    ql_cfg_type type;
    size_t offset;   /* into ql_config */
    size_t size;     /* buffer size for QL_CFG_STR */
    const char *def; /* default, as YAML text; NULL = required */
    /* Allowed range (QL_CFG_INT, QL_CFG_FLOAT); open ends exclude the bound. */
    double min, max;
    int min_open, max_open;
    /* Usual range: outside it, a warning (both 0 = none). */
    double warn_min, warn_max;
    const char *choices; /* QL_CFG_CHOICE: "cosine|linear|constant" */
    const char *doc;
} ql_cfg_key;

/* The schema, in the order the resolved file lists the keys. */
const ql_cfg_key *ql_config_schema(size_t *n);

/* Whether `key` was set by the file or the command line (0: its default, or
 * no such key). */
int ql_config_given(const ql_config *c, const char *key);

/* The seven LoRA target names in ql_proj order ("q_proj" ... "down_proj"). */
#define QL_CFG_N_TARGETS 7
const char *ql_config_target_name(int i);

/* One command-line override: key "train.steps", value "50" (YAML text). */
typedef struct ql_cfg_override {
    const char *key;
    const char *value;
} ql_cfg_override;

/* Splits "--train.steps=50" into key and value (pointers into a copy kept
 * in `buf`, of at least strlen(arg)+1 bytes). Returns 0, or -1 if `arg` is not
 * of the form --KEY=VALUE. */
int ql_config_split_override(const char *arg, char *buf, ql_cfg_override *o);

/* Resolves YAML text (`name` is used in messages; text may be NULL for "no
 * file") with overrides applied after it. */
ql_status ql_config_parse(const char *text, size_t len, const char *name, const ql_cfg_override *ov,
                          size_t n_ov, ql_config *c);
/* The same from a file. */
ql_status ql_config_load(const char *path, const ql_cfg_override *ov, size_t n_ov, ql_config *c);

/* The resolved configuration as YAML (every key, defaults included), which
 * ql_config_parse reads back to the same values. Malloc'd; NULL on ENOMEM. */
char *ql_config_to_yaml(const ql_config *c);

/* The nearest valid key to an unknown one, or NULL when none is close. */
const char *ql_config_suggest(const char *key);
/* Optimal-string-alignment distance (insert, delete, substitute, swap two
 * adjacent characters: one edit each). */
int ql_config_edit_distance(const char *a, const char *b);

#endif
