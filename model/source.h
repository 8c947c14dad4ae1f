/* Where a model's weights come from, behind one interface: a Hugging Face
 * directory (F32/F16/BF16), a bitsandbytes 4-bit directory as transformers
 * writes it, or a GGUF file. Every source speaks in Hugging Face terms: its
 * config is a ql_hf_config and its tensors have transformers' names and
 * layouts ([out, in] linears, half-split RoPE order for q/k — a GGUF's Q/K
 * permutation is undone by the GGUF source).
 *
 * Opening a source checks names and shapes against the config and allocates
 * nothing large; tensors are produced one at a time on request. */
#ifndef QL_MODEL_SOURCE_H
#define QL_MODEL_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/quant4.h"
#include "model/hf_config.h"

typedef enum ql_source_kind {
    QL_SOURCE_HF,
    QL_SOURCE_BNB4,
    QL_SOURCE_GGUF,
    QL_SOURCE_RANDOM /* model/random_source.h: generated weights */
} ql_source_kind;

typedef struct ql_model_source ql_model_source;

struct ql_model_source {
    ql_source_kind kind;
    char path[4096];
    ql_hf_config cfg;   /* the model's config in transformers' terms */
    char tokenizer[64]; /* "gpt2" etc. when the source carries a tokenizer, else "" */

    /* 1 if the tensor exists (lm_head.weight is absent with tied embeddings). */
    int (*has)(const ql_model_source *s, const char *name);
    /* The tensor as float32 (numel floats in `out`). For a 4-bit stored
     * linear this dequantizes it. */
    ql_status (*get_f32)(const ql_model_source *s, const char *name, float *out);
    /* 1 if `name` (a linear "....q_proj.weight") is stored in bitsandbytes
     * 4-bit; then get_q4 returns it as stored, without requantizing. */
    int (*is_q4)(const ql_model_source *s, const char *name);
    ql_status (*get_q4)(const ql_model_source *s, const char *name, ql_q4 *out);
    void (*close)(ql_model_source *s);
    void *impl;
};

/* Opens PATH: a directory (config.json; bnb-4bit if its quantization_config
 * says so) or a file ending in .gguf. Errors name the path and what is wrong.
 * On success the caller owns *s and ends it with ql_model_source_close. */
ql_status ql_model_source_open(const char *path, ql_model_source *s);
void ql_model_source_close(ql_model_source *s);

/* The configuration alone (a HF or bnb-4bit directory's config.json; a
 * GGUF's header), without the weights being present or read: what the memory
 * estimate of `qlora train --dry-run` needs. Free with ql_hf_config_free. */
ql_status ql_model_config_load(const char *path, ql_hf_config *c);

/* The GGUF and HF implementations (used by ql_model_source_open). */
ql_status ql_gguf_source_open(const char *path, ql_model_source *s);
ql_status ql_hf_source_open(const char *dir, ql_model_source *s);

/* The GGUF name of Hugging Face tensor `hf` ("model.layers.3.self_attn.q_proj.weight"
 * -> "blk.3.attn_q.weight", as llama.cpp's converter names it) into buf; 0 if it
 * has none. */
int ql_gguf_name_of(const char *hf, char *buf, size_t n);

#endif
