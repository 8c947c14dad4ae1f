/* transformers' bitsandbytes 4-bit serialization of one quantized Linear
 * (shared FORMATS.md §2): the safetensors entries `P.weight`,
 * `P.weight.absmax`, `P.weight.quant_map`, `P.weight.nested_absmax`,
 * `P.weight.nested_quant_map` and the JSON blob
 * `P.weight.quant_state.bitsandbytes__nf4|fp4`, byte for byte as
 * Linear4bit._save_to_state_dict writes them. */
#ifndef QL_BNB4_H
#define QL_BNB4_H

#include <jansson.h>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/quant4.h"
#include "model/safetensors.h"

#define QL_BNB4_MAX_ENTRIES 6

typedef struct ql_bnb4_entries {
    ql_st_entry e[QL_BNB4_MAX_ENTRIES]; /* data borrowed from the ql_q4 or owned below */
    size_t n;
    char *names[QL_BNB4_MAX_ENTRIES];
    char *blob;
    size_t blob_len;
    float quant_map[16];
} ql_bnb4_entries;

/* The quant-state JSON (json.dumps of QuantState.as_dict's non-tensor part):
 * {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [o, i],
 *  "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": ...}.
 * `dtype` is the dtype of the weight before quantization. */
ql_status ql_bnb4_quant_state_json(const ql_q4 *q, ql_dtype dtype, char **json, size_t *len);

/* Entries for the weight `weight` (e.g. "model.layers.0.mlp.up_proj.weight").
 * They point into `q`, which must outlive them. */
ql_status ql_bnb4_make_entries(const char *weight, const ql_q4 *q, ql_dtype dtype,
                               ql_bnb4_entries *out);
void ql_bnb4_entries_free(ql_bnb4_entries *b);

/* BitsAndBytesConfig(load_in_4bit=True, ...).to_dict() as transformers puts
 * it in config.json under "quantization_config". New reference. */
json_t *ql_bnb4_quantization_config(ql_qtype type, int double_quant, ql_dtype compute_dtype);

#endif
