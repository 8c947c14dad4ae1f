#include "data/dataset.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "data/cache.h"
#include "data/order.h"
#include "data/tokenizer.h"

/* The model's tokenizer, loaded the first time a file has to be tokenized
 * (a cache hit needs none). */
typedef struct tok_state {
    const char *model;
    int tried;
    ql_tokenizer *tok;
    char err[QL_ERROR_MAX]; /* why it could not be loaded */
} tok_state;

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4] = {0};
    size_t got = fread(m, 1, 4, f);
    fclose(f);
    return got == 4 && !memcmp(m, "GGUF", 4);
}

/* Whether `model` has tokenizer files: a directory with tokenizer.json, or a
 * GGUF file (whose metadata may hold one). A model without (a test model,
 * pre-tokenized data) is keyed as "no tokenizer". */
static int has_tokenizer_files(const char *model) {
    if (ql_fs_is_dir(model)) {
        char *p = ql_fs_join(model, "tokenizer.json");
        int there = p && ql_fs_exists(p);
        free(p);
        return there;
    }
    return has_gguf_magic(model);
}

static ql_tokenizer *get_tokenizer(tok_state *t) {
    if (t->tried) return t->tok;
    t->tried = 1;
    if (ql_tokenizer_load(t->model, &t->tok) != QL_OK) {
        snprintf(t->err, sizeof t->err, "%s", ql_error_message());
        ql_error_clear();
        t->tok = NULL;
    }
    return t->tok;
}

static void options_text(const ql_config *c, char *buf, size_t n) {
    snprintf(buf, n,
             "max_seq_len=%lld on_overlength=%d on_bad_record=%d chat_template=%s "
             "report_bytes=%zu",
             (long long)c->data.max_seq_len, c->data.on_overlength, c->data.on_bad_record,
             ql_chat_format_name((ql_chat_format)c->data.chat_template), sizeof(ql_records_report));
}

static ql_status cache_file_for(const ql_config *c, const char *path, ql_data_part *p,
                                uint8_t key[QL_SHA256_LEN]) {
    ql_sha256 s;
    QL_TRY(ql_cache_key_begin(&s, path));
    if (has_tokenizer_files(c->model))
        QL_TRY(ql_cache_add_tokenizer(&s, c->model));
    else
        ql_cache_add_text(&s, "tokenizer", "(none)");
    char opts[256];
    options_text(c, opts, sizeof opts);
    ql_cache_add_text(&s, "options", opts);
    ql_sha256_final(&s, key);
    char *dir =
        c->data.cache_dir[0] ? strdup(c->data.cache_dir) : ql_fs_join(c->output_dir, "data_cache");
    p->cache_file = dir ? ql_cache_file(dir, key) : NULL;
    free(dir);
    return p->cache_file ? QL_OK : ql_error(QL_ENOMEM, "out of memory");
}

static ql_status load_part(const ql_config *c, const char *path, tok_state *ts, FILE *log,
                           ql_data_part *p) {
    uint8_t key[QL_SHA256_LEN] = {0};
    if (c->data.cache) {
        QL_TRY(cache_file_for(c, path, p, key));
        char why[256];
        if (ql_cache_read(p->cache_file, key, path, &p->d, &p->rep, sizeof p->rep, why,
                          sizeof why)) {
            p->cached = 1;
            if (log) fprintf(log, "data: %s: tokenized records from %s\n", path, p->cache_file);
            return QL_OK;
        }
        if (why[0]) {
            snprintf(p->cache_note, sizeof p->cache_note, "%s was not used (%s)", p->cache_file,
                     why);
            if (log) fprintf(log, "data: %s: cache %s; tokenizing again\n", path, p->cache_note);
        }
    }
    ql_records_options o = {.max_seq_len = c->data.max_seq_len,
                            .on_overlength = (ql_overlength)c->data.on_overlength,
                            .on_bad_record = (ql_on_bad)c->data.on_bad_record,
                            .chat_template = (ql_chat_format)c->data.chat_template};
    ql_tokenizer *tok = has_tokenizer_files(c->model) ? get_tokenizer(ts) : NULL;
    ql_status st = ql_records_load(path, tok, &o, &p->d, &p->rep);
    if (st != QL_OK) {
        if (!tok && strstr(ql_error_message(), "needs the model's tokenizer")) {
            char msg[QL_ERROR_MAX];
            snprintf(msg, sizeof msg, "%s", ql_error_message());
            const char *why = ts->err[0]                ? ts->err
                              : !ql_fs_exists(c->model) ? "no such file or directory"
                              : ql_fs_is_dir(c->model)
                                  ? "the directory has no tokenizer.json (a model merged from a "
                                    "GGUF run has none: copy the base model's tokenizer files "
                                    "into it)"
                                  : "not a GGUF file, and not a directory with tokenizer.json";
            return ql_error(st, "%s; the tokenizer of model %s: %s", msg, c->model, why);
        }
        return st;
    }
    if (c->data.cache) {
        if (ql_cache_write(p->cache_file, key, &p->d, &p->rep, sizeof p->rep) != QL_OK) {
            snprintf(p->cache_note, sizeof p->cache_note, "not written: %s", ql_error_message());
            ql_error_clear();
            if (log) fprintf(log, "data: %s: cache %s\n", path, p->cache_note);
        }
    }
    return QL_OK;
}

/* The records of `src` whose keep[i] == want, as a data set of their own. */
static ql_status subset(const ql_token_data *src, const unsigned char *keep, int want,
                        ql_token_data *out) {
    memset(out, 0, sizeof *out);
    int64_t n = 0, tok = 0;
    for (int64_t i = 0; i < src->n; i++)
        if (keep[i] == want) n++, tok += src->off[i + 1] - src->off[i];
    out->path = strdup(src->path);
    out->off = malloc((size_t)(n + 1) * sizeof *out->off);
    out->line = malloc((size_t)(n ? n : 1) * sizeof *out->line);
    out->ids = malloc((size_t)(tok ? tok : 1) * sizeof *out->ids);
    out->targets = malloc((size_t)(tok ? tok : 1) * sizeof *out->targets);
    if (!out->path || !out->off || !out->line || !out->ids || !out->targets) {
        ql_jsonl_tokens_free(out);
        return ql_error(QL_ENOMEM, "out of memory splitting off the validation set");
    }
    out->off[0] = 0;
    for (int64_t i = 0; i < src->n; i++) {
        if (keep[i] != want) continue;
        int64_t len = src->off[i + 1] - src->off[i], at = out->off[out->n];
        memcpy(out->ids + at, src->ids + src->off[i], (size_t)len * sizeof *out->ids);
        memcpy(out->targets + at, src->targets + src->off[i], (size_t)len * sizeof *out->targets);
        for (int64_t t = at; t < at + len; t++) {
            if (out->ids[t] > out->max_id) out->max_id = out->ids[t];
            if (out->targets[t] > out->max_id) out->max_id = out->targets[t];
            out->n_targets += out->targets[t] >= 0;
        }
        if (len > out->max_len) out->max_len = len;
        out->line[out->n] = src->line[i];
        out->off[++out->n] = at + len;
    }
    return QL_OK;
}

static ql_status hold_out(const ql_config *c, ql_dataset *ds) {
    ql_token_data *d = &ds->train.d;
    int64_t k = (int64_t)llround(c->data.valid_fraction * (double)d->n);
    if (k < 1) k = 1;
    if (k >= d->n)
        return ql_error(QL_EINVAL,
                        "data.valid_fraction = %g of %lld records leaves no record to train on",
                        c->data.valid_fraction, (long long)d->n);
    unsigned char *held = ql_malloc((size_t)d->n, "the validation split");
    if (!held) return QL_ENOMEM;
    ql_status st = ql_order_hold_out(d->n, k, (uint64_t)c->seed, held);
    ql_token_data train;
    if (st == QL_OK) st = subset(d, held, 1, &ds->valid.d);
    if (st == QL_OK) st = subset(d, held, 0, &train);
    free(held);
    QL_TRY(st);
    ql_jsonl_tokens_free(d);
    *d = train;
    ds->held_out = k;
    return QL_OK;
}

ql_status ql_dataset_load(const ql_config *c, FILE *log, ql_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    if (c->data.valid[0] && c->data.valid_fraction > 0)
        return ql_error(QL_EINVAL,
                        "data.valid (%s) and data.valid_fraction (%g) are both set: the "
                        "validation set comes from one of them",
                        c->data.valid, c->data.valid_fraction);
    tok_state ts = {.model = c->model};
    ql_status st = load_part(c, c->data.train, &ts, log, &ds->train);
    if (st == QL_OK && c->data.valid[0]) st = load_part(c, c->data.valid, &ts, log, &ds->valid);
    if (st == QL_OK && c->data.valid_fraction > 0) st = hold_out(c, ds);
    if (st == QL_OK)
        st = ql_packing_build(&ds->train.d, c->data.max_seq_len, c->data.packing, &ds->train.rows);
    if (st == QL_OK && ds->valid.d.n > 0)
        st = ql_packing_build(&ds->valid.d, c->data.max_seq_len, c->data.packing, &ds->valid.rows);
    ql_tokenizer_free(ts.tok);
    if (st != QL_OK) ql_dataset_free(ds);
    return st;
}

static void part_free(ql_data_part *p) {
    ql_jsonl_tokens_free(&p->d);
    ql_packing_free(&p->rows);
    free(p->cache_file);
    memset(p, 0, sizeof *p);
}

void ql_dataset_free(ql_dataset *ds) {
    part_free(&ds->train);
    part_free(&ds->valid);
    ds->held_out = 0;
}

int64_t ql_dataset_max_row(const ql_dataset *ds) {
    int64_t m = ds->train.rows.max_row;
    return ds->valid.rows.max_row > m ? ds->valid.rows.max_row : m;
}

/* Fraction of the first epoch's micro-batch cells that hold tokens: rows in
 * the epoch's order, global batches of G split into micro-batches of M,
 * each padded to its longest row (or to max_seq_len). */
static double cell_efficiency(const ql_packing *p, const ql_config *c) {
    ql_order o;
    if (p->n_rows < 1 ||
        ql_order_init(&o, p->n_rows, (uint64_t)c->seed, c->data.shuffle) != QL_OK) {
        ql_error_clear();
        return 0;
    }
    int64_t G = c->train.global_batch, M = c->train.micro_batch;
    double cells = 0;
    for (int64_t s = 0; s < p->n_rows; s += G)
        for (int64_t j = s; j < s + G && j < p->n_rows; j += M) {
            int64_t rows = 0, longest = 0;
            for (int64_t g = j; g < j + M && g < s + G && g < p->n_rows; g++, rows++) {
                int64_t len = p->row_len[ql_order_unit(&o, g)];
                if (len > longest) longest = len;
            }
            cells += (double)rows *
                     (double)(c->data.pad_to == QL_PAD_MAX_SEQ_LEN ? p->max_seq : longest);
        }
    ql_order_free(&o);
    return cells > 0 ? (double)p->tokens / cells : 0;
}

static void print_rows(const ql_data_part *p, const ql_config *c, FILE *f) {
    const ql_packing *r = &p->rows;
    double eff = cell_efficiency(r, c);
    if (r->packed)
        fprintf(f,
                "  %-10s %" PRId64 " records in %" PRId64 " row%s of up to %" PRId64
                " tokens (%.1f%% full); %.1f%% of micro-batch cells are tokens\n",
                "packing", p->d.n, r->n_rows, r->n_rows == 1 ? "" : "s", r->max_seq,
                100 * ql_packing_efficiency(r), 100 * eff);
    else
        fprintf(f,
                "  %-10s off: %" PRId64 " rows of one record; %.1f%% of micro-batch cells are "
                "tokens (padded to %s)\n",
                "packing", r->n_rows, 100 * eff,
                c->data.pad_to == QL_PAD_MAX_SEQ_LEN ? "data.max_seq_len"
                                                     : "the longest row of each micro-batch");
}

static void print_cache(const ql_data_part *p, FILE *f) {
    if (!p->cache_file)
        fprintf(f, "  %-10s off\n", "cache");
    else if (p->cached)
        fprintf(f, "  %-10s read from %s\n", "cache", p->cache_file);
    else if (strncmp(p->cache_note, "not written", 11) == 0)
        fprintf(f, "  %-10s %s\n", "cache", p->cache_note);
    else
        fprintf(f, "  %-10s written to %s\n", "cache", p->cache_file);
}

void ql_dataset_print(const ql_dataset *ds, const ql_config *c, FILE *f) {
    ql_records_report_print(&ds->train.rep, ds->train.d.path, f);
    if (ds->held_out)
        fprintf(f,
                "  %-10s %" PRId64 " records held out for validation (data.valid_fraction %g, "
                "chosen by the seed), %" PRId64 " left to train on\n",
                "valid", ds->held_out, c->data.valid_fraction, ds->train.d.n);
    print_rows(&ds->train, c, f);
    print_cache(&ds->train, f);
    if (ds->valid.d.n == 0) return;
    if (ds->held_out)
        fprintf(f,
                "valid: %" PRId64 " records held out of %s, %" PRId64 " tokens, %" PRId64
                " with loss\n",
                ds->valid.d.n, ds->train.d.path, ds->valid.d.off[ds->valid.d.n],
                ds->valid.d.n_targets);
    else
        ql_records_report_print(&ds->valid.rep, ds->valid.d.path, f);
    print_rows(&ds->valid, c, f);
    if (!ds->held_out) print_cache(&ds->valid, f);
}

void ql_dataset_print_json(const ql_dataset *ds, const ql_config *c, FILE *f) {
    const ql_records_report *r = &ds->train.rep;
    const ql_packing *p = &ds->train.rows;
    fprintf(f,
            "{\"records_read\": %" PRId64 ", \"records_kept\": %" PRId64 ", \"skipped\": %" PRId64
            ", \"truncated\": %" PRId64 ", \"tokens_lost\": %" PRId64 ", \"dropped\": %" PRId64
            ", \"tokens_dropped\": %" PRId64 ", \"no_loss\": %" PRId64 ", \"tokens\": %" PRId64
            ", \"loss_tokens\": %" PRId64 ", \"len_p50\": %" PRId64 ", \"len_p90\": %" PRId64
            ", \"len_p99\": %" PRId64 ", \"len_max\": %" PRId64 ", \"train_records\": %" PRId64
            ", \"rows\": %" PRId64 ", \"packing\": %s, \"row_fill\": %.6f"
            ", \"packing_efficiency\": %.6f, \"valid_records\": %" PRId64
            ", \"valid_rows\": %" PRId64 ", \"cached\": %s}\n",
            r->read, r->kept, r->skipped, r->truncated, r->tokens_lost, r->dropped,
            r->tokens_dropped, r->no_loss, r->tokens, r->loss_tokens, r->len_p50, r->len_p90,
            r->len_p99, r->len_max, ds->train.d.n, p->n_rows, p->packed ? "true" : "false",
            ql_packing_efficiency(p), cell_efficiency(p, c), ds->valid.d.n, ds->valid.rows.n_rows,
            ds->train.cached ? "true" : "false");
}
