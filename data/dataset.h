/* The training and validation data of a configuration, as `qlora train` and
 * `qlora data stats` see them (docs/data.md, "Packing and order"): records
 * read through data/records.h with the model's tokenizer, or from the
 * tokenized-data cache (data/cache.h) when the same file, tokenizer and
 * options were tokenized before; the validation set from data.valid or held
 * out of data.train (data.valid_fraction, chosen from the seed); both packed
 * into rows (data/packing.h); and the report of all of it. */
#ifndef QL_DATASET_H
#define QL_DATASET_H

#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "data/packing.h"
#include "data/records.h"

typedef struct ql_data_part {
    ql_token_data d;
    ql_records_report rep; /* of the whole file (before a validation split) */
    ql_packing rows;
    int cached;           /* 1: read from the cache; 0: tokenized now */
    char *cache_file;     /* NULL: data.cache is off */
    char cache_note[512]; /* why the cache was not read or not written ("" when fine) */
} ql_data_part;

typedef struct ql_dataset {
    ql_data_part train;
    ql_data_part valid; /* valid.d.n == 0: no validation set */
    int64_t held_out;   /* records of data.train moved to the validation set */
} ql_dataset;

/* Reads, tokenizes (or takes from the cache), splits and packs. Progress
 * notes (the cache) go to `log` (may be NULL). */
ql_status ql_dataset_load(const ql_config *c, FILE *log, ql_dataset *ds);
void ql_dataset_free(ql_dataset *ds);

/* The report: the loader's table for each file, then packing and cache. */
void ql_dataset_print(const ql_dataset *ds, const ql_config *c, FILE *f);
/* The same numbers as one JSON object on one line. packing_efficiency is the
 * fraction of the first epoch's micro-batch cells that hold tokens (not
 * padding); row_fill the fraction of rows x data.max_seq_len that does. */
void ql_dataset_print_json(const ql_dataset *ds, const ql_config *c, FILE *f);

/* The longest row the model will be given (train or validation). */
int64_t ql_dataset_max_row(const ql_dataset *ds);

#endif
