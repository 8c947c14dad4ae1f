/* A Hugging Face Llama-family model directory: config.json plus
 * model.safetensors or model.safetensors.index.json and its shards, either in
 * the model dtype (F32/F16/BF16) or as transformers' bitsandbytes 4-bit
 * serialization (shared FORMATS.md §2, §4).
 *
 * Opening checks every tensor the config implies (name, shape, dtype) and
 * rejects tensors it does not know, so a mismatched checkpoint fails at load
 * with the tensor named instead of producing garbage later. */
#ifndef QL_HF_MODEL_H
#define QL_HF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/quant4.h"
#include "model/hf_config.h"
#include "model/safetensors.h"

#define QL_HF_NAME_MAX 256

/* One tensor a LlamaForCausalLM with a given config has. */
typedef struct ql_hf_expected {
    char name[QL_HF_NAME_MAX];
    int ndim;
    int64_t shape[2];
    int is_linear;    /* an nn.Linear weight that bitsandbytes quantizes */
    int optional;     /* lm_head.weight when the embeddings are tied */
    const char *dims; /* the shape in config terms, "[intermediate_size, hidden_size]" */
} ql_hf_expected;

/* The tensors of a Llama/Mistral/Qwen2 model, in name order (malloc'd). */
ql_status ql_hf_expected_tensors(const ql_hf_config *c, ql_hf_expected **out, size_t *n);

typedef struct ql_hf_ref {
    const char *name;
    size_t file; /* index into files */
    const ql_st_tensor *t;
} ql_hf_ref;

typedef struct ql_hf_model {
    char *dir;
    ql_hf_config cfg;
    ql_st_file *files;
    size_t n_files;
    ql_hf_ref *refs; /* every tensor, sorted by name */
    size_t n_refs;
    int sharded;
    ql_hf_expected *expected;
    size_t n_expected;
} ql_hf_model;

/* Loads config.json, maps the tensor files and checks names and shapes.
 * With a bitsandbytes quantization_config the linear layers must be in the
 * 4-bit layout. */
ql_status ql_hf_model_open(const char *dir, ql_hf_model *m);
void ql_hf_model_close(ql_hf_model *m);

/* What the config says about tensor `name` (NULL for a tensor it lacks). */
const ql_hf_expected *ql_hf_model_expected(const ql_hf_model *m, const char *name);

/* The tensor called `name` (NULL if absent); *file gets its file. */
const ql_st_tensor *ql_hf_model_find(const ql_hf_model *m, const char *name,
                                     const ql_st_file **file);

/* A floating tensor converted to float32; `out` holds numel floats. */
ql_status ql_hf_model_get_f32(const ql_hf_model *m, const char *name, float *out);

/* The 4-bit matrix stored under `weight` ("....q_proj.weight") and its
 * quant-state tensors; *dtype (may be NULL) gets the dtype the quant state
 * records for the original weight. The file's nested_quant_map is used, and
 * its quant_map must equal the NF4/FP4 table. */
ql_status ql_hf_model_get_q4(const ql_hf_model *m, const char *weight, ql_q4 *out, ql_dtype *dtype);

/* True for tensors transformers drops on load (rotary inv_freq buffers). */
int ql_hf_ignored_tensor(const char *name);

#endif
