#include "data/packing.h"

#include <stdlib.h>
#include <string.h>

void ql_packing_free(ql_packing *p) {
    free(p->row_off);
    free(p->rec);
    free(p->row_len);
    memset(p, 0, sizeof *p);
}

typedef struct by_len {
    int64_t len, i;
} by_len;

static int longest_first(const void *a, const void *b) {
    const by_len *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* A max tree over the rows' free space finds the first row with room in
 * O(log n), so first fit stays fast on millions of records. Rows that are
 * still empty sit after the used ones, which is what makes "the first row
 * with room" the same as first fit over the rows opened so far. */
typedef struct fit_tree {
    int64_t leaves, *v;
} fit_tree;

static int64_t first_fit(fit_tree *t, int64_t need) {
    if (t->v[1] < need) return -1;
    int64_t k = 1;
    while (k < t->leaves) k = t->v[2 * k] >= need ? 2 * k : 2 * k + 1;
    return k - t->leaves;
}

static void take(fit_tree *t, int64_t row, int64_t used) {
    int64_t k = row + t->leaves;
    t->v[k] -= used;
    for (k /= 2; k >= 1; k /= 2)
        t->v[k] = t->v[2 * k] > t->v[2 * k + 1] ? t->v[2 * k] : t->v[2 * k + 1];
}

static ql_status pack_ffd(const ql_token_data *d, ql_packing *p, int64_t *row_of) {
    int64_t n = d->n;
    by_len *order = ql_malloc((size_t)n * sizeof *order, "the packing order");
    fit_tree t = {1, NULL};
    while (t.leaves < n) t.leaves *= 2;
    t.v = order ? ql_malloc((size_t)(2 * t.leaves) * sizeof *t.v, "the packing tree") : NULL;
    if (!t.v) {
        free(order);
        return QL_ENOMEM;
    }
    for (int64_t i = 0; i < n; i++) order[i] = (by_len){d->off[i + 1] - d->off[i], i};
    qsort(order, (size_t)n, sizeof *order, longest_first);
    for (int64_t k = 0; k < t.leaves; k++) t.v[t.leaves + k] = k < n ? p->max_seq : -1;
    for (int64_t k = t.leaves - 1; k >= 1; k--)
        t.v[k] = t.v[2 * k] > t.v[2 * k + 1] ? t.v[2 * k] : t.v[2 * k + 1];
    p->n_rows = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t row = first_fit(&t, order[k].len);
        take(&t, row, order[k].len);
        row_of[k] = row;
        if (row + 1 > p->n_rows) p->n_rows = row + 1;
    }
    /* Rows list their documents in the order they were placed. */
    int64_t *fill = ql_calloc((size_t)p->n_rows + 1, sizeof *fill, "the packed rows");
    if (!fill) {
        free(order);
        free(t.v);
        return QL_ENOMEM;
    }
    for (int64_t k = 0; k < n; k++) p->row_off[row_of[k] + 1]++;
    for (int64_t r = 0; r < p->n_rows; r++) p->row_off[r + 1] += p->row_off[r];
    for (int64_t k = 0; k < n; k++) {
        int64_t r = row_of[k];
        p->rec[p->row_off[r] + fill[r]++] = order[k].i;
    }
    free(fill);
    free(order);
    free(t.v);
    return QL_OK;
}

ql_status ql_packing_build(const ql_token_data *d, int64_t max_seq, int pack, ql_packing *p) {
    memset(p, 0, sizeof *p);
    p->packed = pack;
    p->max_seq = max_seq;
    int64_t n = d->n;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = d->off[i + 1] - d->off[i];
        if (len > max_seq)
            return ql_error(QL_EINVAL,
                            "%s:%lld: a record of %lld tokens does not fit a row of %lld "
                            "(data.max_seq_len)",
                            d->path ? d->path : "data",
                            d->line ? (long long)d->line[i] : (long long)i + 1, (long long)len,
                            (long long)max_seq);
    }
    p->row_off = ql_calloc((size_t)n + 1, sizeof *p->row_off, "the packed rows");
    p->rec = p->row_off ? ql_malloc((size_t)(n ? n : 1) * sizeof *p->rec, "the packed rows") : NULL;
    int64_t *scratch =
        p->rec ? ql_malloc((size_t)(n ? n : 1) * sizeof *scratch, "the packed rows") : NULL;
    if (!scratch) {
        ql_packing_free(p);
        return QL_ENOMEM;
    }
    ql_status st = QL_OK;
    if (pack && n > 0) {
        st = pack_ffd(d, p, scratch);
    } else {
        p->n_rows = n;
        for (int64_t i = 0; i < n; i++) {
            p->rec[i] = i;
            p->row_off[i + 1] = i + 1;
        }
    }
    free(scratch);
    if (st == QL_OK) {
        p->row_len =
            ql_calloc((size_t)(p->n_rows ? p->n_rows : 1), sizeof *p->row_len, "the packed rows");
        if (!p->row_len) st = QL_ENOMEM;
    }
    if (st != QL_OK) {
        ql_packing_free(p);
        return st;
    }
    for (int64_t r = 0; r < p->n_rows; r++) {
        for (int64_t k = p->row_off[r]; k < p->row_off[r + 1]; k++)
            p->row_len[r] += d->off[p->rec[k] + 1] - d->off[p->rec[k]];
        if (p->row_len[r] > p->max_row) p->max_row = p->row_len[r];
        p->tokens += p->row_len[r];
    }
    return QL_OK;
}

double ql_packing_efficiency(const ql_packing *p) {
    double cells = (double)p->n_rows * (double)p->max_seq;
    return cells > 0 ? (double)p->tokens / cells : 0.0;
}

int64_t ql_packing_record_targets(const ql_token_data *d, int64_t i) {
    int64_t k = 0;
    for (int64_t t = d->off[i]; t < d->off[i + 1] - 1; t++) k += d->targets[t] >= 0;
    return k;
}

void ql_packing_row(const ql_token_data *d, const ql_packing *p, int64_t r, int32_t *ids,
                    int32_t *targets, int32_t *pos, int32_t *doc) {
    int64_t t = 0;
    for (int64_t k = p->row_off[r]; k < p->row_off[r + 1]; k++) {
        int64_t i = p->rec[k], len = d->off[i + 1] - d->off[i];
        memcpy(ids + t, d->ids + d->off[i], (size_t)len * sizeof *ids);
        memcpy(targets + t, d->targets + d->off[i], (size_t)len * sizeof *targets);
        if (len > 0) targets[t + len - 1] = -100;
        for (int64_t j = 0; j < len; j++) {
            if (pos) pos[t + j] = (int32_t)j;
            if (doc) doc[t + j] = (int32_t)(k - p->row_off[r]);
        }
        t += len;
    }
}
