#include "train/train_eval_store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "train/eval_store.h"

ql_status ql_train_eval_store(const ql_config *c, const ql_dataset *ds, const ql_train_result *r,
                              const char *adapter, char *path, size_t cap) {
    if (cap) path[0] = 0;
    /* An interrupted run's last evaluation (if any) is not of the adapter it saved. */
    if (r->interrupted || r->evals == 0 || !ds->valid.d.n) return QL_OK;
    ql_eval_summary *s = ql_calloc(1, sizeof *s, "the evaluation summary");
    char *p = ql_fs_join(c->output_dir, QL_EVAL_FILE);
    ql_status st = s && p ? QL_OK : QL_ENOMEM;
    if (st == QL_OK) {
        s->records = ds->valid.d.n;
        s->tokens = r->eval_targets;
        s->loss = r->eval_loss;
        s->perplexity = exp(r->eval_loss);
        snprintf(s->model, sizeof s->model, "%s", c->model);
        snprintf(s->adapter, sizeof s->adapter, "%s", adapter);
        s->base_original = c->quant.type == QL_QUANT_NONE; /* as the run held the base */
        if (c->data.valid[0]) {
            snprintf(s->data, sizeof s->data, "%s", c->data.valid);
            st = ql_eval_file_sha256(c->data.valid, s->data_sha256);
        } else {
            snprintf(s->data, sizeof s->data, "%s", c->data.train);
        }
    }
    if (st == QL_OK) st = ql_eval_summary_write(p, s);
    if (st == QL_OK) snprintf(path, cap, "%s", p);
    free(s);
    free(p);
    return st;
}
