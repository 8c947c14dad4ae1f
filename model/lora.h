/* The LoRA adapter table of a Llama-family model (FORMATS §3.3, §3.4): which
 * projections carry adapters, their shapes, PEFT's key names, the flat-vector
 * layout and PEFT's initialisation. Used by model/llama*.c and by anything that
 * needs the layout without loading a model (export, checkpoints). */
#ifndef QL_LORA_H
#define QL_LORA_H

#include <stdint.h>

#include "model/llama.h"

/* in_features and out_features of projection p under config c. */
void ql_proj_shape(const ql_hf_config *c, ql_proj p, int64_t *in, int64_t *out);

/* Checks r, alpha, dropout and targets; messages name the key ("lora.r"). */
ql_status ql_lora_config_check(const ql_lora_config *l);

/* Fills a->cfg, a->scale, a->n and the tensor table (malloc'd) for config c;
 * params and grads are left NULL. r = 0 gives an empty table (no adapters). */
ql_status ql_adapters_layout(const ql_hf_config *c, const ql_lora_config *l, ql_adapters *a);
void ql_adapters_layout_free(ql_adapters *a);

/* For the adapter file readers (PEFT safetensors, llama.cpp GGUF): the
 * error for a tensor of `path` this layout has no place for, and the host
 * values put into a->params (through be; be NULL: host memory, copied). */
ql_status ql_adapters_no_place(const ql_adapters *a, const char *path, const char *tensor);
ql_status ql_adapters_set_params(ql_adapters *a, const float *host, const ql_backend *be);

/* `given` holds exactly the tensors of layout `want` (names and shapes, in
 * any order), else an error naming the first difference and `model`. The
 * index of want's tensor i in given goes to at[i] (NULL: not wanted). */
ql_status ql_adapters_match(const ql_adapters *want, const ql_adapters *given, const char *model,
                            int *at);

/* PEFT's initialisation into a host vector [a->n]: every A ~ U(±1/sqrt(in))
 * from its own stream (seed, 1 + layer·QL_N_PROJ + proj), so values do not
 * depend on which other tensors exist; every B = 0. */
void ql_adapters_init(const ql_adapters *a, uint64_t seed, float *params);

/* The PEFT key of (layer, proj, A or B) into buf. */
void ql_adapter_peft_name(int layer, ql_proj p, int is_b, char *buf, size_t n);

#endif
