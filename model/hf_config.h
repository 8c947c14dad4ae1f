/* config.json of a Hugging Face Llama-family model (shared FORMATS.md §4.1).
 *
 * Required fields are the ones that fix tensor shapes; the rest take
 * LlamaConfig's defaults. The parsed JSON is kept so a writer can add
 * `quantization_config` and preserve every other key. */
#ifndef QL_HF_CONFIG_H
#define QL_HF_CONFIG_H

#include <jansson.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/backend.h" /* ql_rope_type */
#include "kernels/nf4.h"

typedef struct ql_hf_quant_config {
    int present; /* config.json has a bitsandbytes 4-bit quantization_config */
    ql_qtype type;
    int double_quant;
    ql_dtype compute_dtype;
} ql_hf_quant_config;

typedef struct ql_hf_config {
    char model_type[32];
    char architecture[64]; /* architectures[0], or "" */
    int64_t hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads, num_key_value_heads, head_dim;
    int64_t vocab_size, max_position_embeddings;
    double rms_norm_eps, rope_theta;
    ql_rope_type rope_type;
    char rope_type_name[32];
    double rope_factor;                                 /* linear, llama3 */
    double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int64_t rope_original_max_position_embeddings;      /* llama3 */
    int tie_word_embeddings;
    int attention_bias; /* q/k/v/o biases (Llama attention_bias) */
    int qkv_bias;       /* q/k/v biases only (Qwen2) */
    int mlp_bias;
    int dtype_known; /* torch_dtype (or v5 `dtype`) was given */
    ql_dtype torch_dtype;
    ql_hf_quant_config quant;
    json_t *json; /* the whole file, owned */
} ql_hf_config;

/* Parses DIR/config.json. Errors name config.json and the field. */
ql_status ql_hf_config_load(const char *dir, ql_hf_config *c);
/* The same from text; `path` is used in messages. */
ql_status ql_hf_config_parse(const char *text, size_t len, const char *path, ql_hf_config *c);
void ql_hf_config_free(ql_hf_config *c);

/* "bfloat16" / "float16" / "float32" (torch's names without "torch."). */
const char *ql_hf_torch_dtype_name(ql_dtype dt);

#endif
