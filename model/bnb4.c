#include "model/bnb4.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_float.h"
#include "model/hf_config.h"

ql_status ql_bnb4_quant_state_json(const ql_q4 *q, ql_dtype dtype, char **json, size_t *len) {
    char off[QL_FLOAT_REPR_MAX];
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "{\"quant_type\": \"%s\", \"blocksize\": %d, \"dtype\": \"%s\", "
                     "\"shape\": [%" PRId64 ", %" PRId64 "]",
                     q->type == QL_QTYPE_NF4 ? "nf4" : "fp4", q->blocksize,
                     ql_hf_torch_dtype_name(dtype), q->rows, q->cols);
    if (q->double_quant) {
        /* offset.item() is the float32 widened to double; repr prints that. */
        ql_json_float_repr((double)q->nested_offset, off);
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", "
                      "\"nested_offset\": %s",
                      QL_NESTED_BLOCKSIZE, off);
    }
    n += snprintf(buf + n, sizeof buf - (size_t)n, "}");
    *json = strdup(buf);
    if (!*json) return ql_error(QL_ENOMEM, "out of memory for a quant state");
    *len = (size_t)n;
    return QL_OK;
}

void ql_bnb4_entries_free(ql_bnb4_entries *b) {
    for (size_t i = 0; i < QL_BNB4_MAX_ENTRIES; i++) free(b->names[i]);
    free(b->blob);
    memset(b, 0, sizeof *b);
}

static ql_status add(ql_bnb4_entries *b, const char *weight, const char *suffix, ql_dtype dt,
                     int ndim, int64_t d0, int64_t d1, const void *data) {
    size_t k = b->n;
    size_t len = strlen(weight) + strlen(suffix) + 2;
    b->names[k] = malloc(len);
    if (!b->names[k]) return ql_error(QL_ENOMEM, "out of memory for tensor names");
    snprintf(b->names[k], len, "%s%s%s", weight, *suffix ? "." : "", suffix);
    ql_st_entry *e = &b->e[k];
    memset(e, 0, sizeof *e);
    e->name = b->names[k];
    e->dtype = dt;
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->data = data;
    e->nbytes = (uint64_t)d0 * (ndim == 2 ? (uint64_t)d1 : 1u) * ql_dtype_size(dt);
    b->n++;
    return QL_OK;
}

ql_status ql_bnb4_make_entries(const char *weight, const ql_q4 *q, ql_dtype dtype,
                               ql_bnb4_entries *b) {
    memset(b, 0, sizeof *b);
    /* bitsandbytes' get_4bit_type("fp4") lists `-0`, a Python integer, so the
     * stored quant_map has +0.0 where the decode table has -0.0. */
    for (unsigned c = 0; c < 16; c++) {
        float v = ql_q4_value(q->type, c);
        b->quant_map[c] = v == 0.0f ? 0.0f : v;
    }
    ql_status st = ql_bnb4_quant_state_json(q, dtype, &b->blob, &b->blob_len);
    int64_t nb = q->n_blocks;
    if (st == QL_OK) st = add(b, weight, "", QL_DT_U8, 2, ql_q4_packed_bytes(q), 1, q->packed);
    if (st == QL_OK)
        st = q->double_quant ? add(b, weight, "absmax", QL_DT_U8, 1, nb, 0, q->absmax_q)
                             : add(b, weight, "absmax", QL_DT_F32, 1, nb, 0, q->absmax);
    if (st == QL_OK) st = add(b, weight, "quant_map", QL_DT_F32, 1, 16, 0, b->quant_map);
    if (st == QL_OK && q->double_quant) {
        st = add(b, weight, "nested_absmax", QL_DT_F32, 1, ql_q4_nested_blocks(q), 0,
                 q->nested_absmax);
        if (st == QL_OK)
            st = add(b, weight, "nested_quant_map", QL_DT_F32, 1, 256, 0, q->nested_map);
    }
    if (st == QL_OK)
        st = add(b, weight,
                 q->type == QL_QTYPE_NF4 ? "quant_state.bitsandbytes__nf4"
                                         : "quant_state.bitsandbytes__fp4",
                 QL_DT_U8, 1, (int64_t)b->blob_len, 0, b->blob);
    if (st != QL_OK) ql_bnb4_entries_free(b);
    return st;
}

json_t *ql_bnb4_quantization_config(ql_qtype type, int double_quant, ql_dtype compute_dtype) {
    return json_pack("{s:b, s:b, s:s, s:s, s:s, s:b, s:b, s:b, s:n, s:f, s:b, s:b, s:s}",
                     "_load_in_4bit", 1, "_load_in_8bit", 0, "bnb_4bit_compute_dtype",
                     ql_hf_torch_dtype_name(compute_dtype), "bnb_4bit_quant_storage", "uint8",
                     "bnb_4bit_quant_type", type == QL_QTYPE_NF4 ? "nf4" : "fp4",
                     "bnb_4bit_use_double_quant", double_quant, "llm_int8_enable_fp32_cpu_offload",
                     0, "llm_int8_has_fp16_weight", 0, "llm_int8_skip_modules",
                     "llm_int8_threshold", 6.0, "load_in_4bit", 1, "load_in_8bit", 0,
                     "quant_method", "bitsandbytes");
}
