/* LoRA adapters in Hugging Face PEFT's format (shared FORMATS.md §3), so that
 * PeftModel.from_pretrained, transformers and vLLM load what qlora trains:
 * DIR/adapter_model.safetensors (F32 lora_A/lora_B under PEFT's keys,
 * metadata {"format": "pt"}) and DIR/adapter_config.json (json.dumps with
 * indent 2 and sorted keys, inference_mode true). */
#ifndef QL_PEFT_H
#define QL_PEFT_H

#include <stddef.h>

#include "core/status.h"
#include "kernels/backend.h"
#include "model/llama.h"

#define QL_PEFT_WEIGHTS "adapter_model.safetensors"
#define QL_PEFT_CONFIG "adapter_config.json"

/* Writes the adapters to `dir` atomically: built in a temporary directory
 * beside it and renamed into place, replacing an existing `dir`. `be` is the
 * backend whose memory holds a->params (NULL: host memory).
 * `base_model` fills base_model_name_or_path. */
ql_status ql_peft_save(const char *dir, const ql_adapters *a, const ql_backend *be,
                       const char *base_model);
/* The same with the tensors in `dtype` (QL_DT_F32 as above, QL_DT_BF16 or
 * QL_DT_F16: rounded to nearest even; PEFT and vLLM load either). */
ql_status ql_peft_save_as(const char *dir, const ql_adapters *a, const ql_backend *be,
                          const char *base_model, ql_dtype dtype);

/* `path` is an adapter directory (it holds adapter_config.json) or a run
 * directory holding one in adapter/. The adapter directory into out.
 *
 * A file ending in ".gguf" is a llama.cpp LoRA adapter instead
 * (model/gguf_lora.h): find gives it back as it is, and read_config and
 * load below read it (its configuration from the tensors and
 * adapter.lora.alpha, base_model ""). */
ql_status ql_peft_find(const char *path, char *out, size_t cap);

/* Reads DIR/adapter_config.json into a LoRA configuration (r, alpha,
 * dropout, rsLoRA, targets) to build a model with; base_model (may be NULL)
 * gets base_model_name_or_path or "". Settings qlora cannot honour (DoRA,
 * trained biases, modules_to_save, per-layer patterns) are refused. */
ql_status ql_peft_read_config(const char *dir, ql_lora_config *lc, char *base_model, size_t cap);

/* Loads DIR/adapter_model.safetensors into a->params (F32, BF16 or F16 in the
 * file): every tensor of the table must be present with its shape, and the
 * file may hold nothing else. Errors name the file and the key. */
ql_status ql_peft_load(const char *dir, ql_adapters *a, const ql_backend *be);

#endif
