/* Starting a training run from an existing LoRA adapter (lora.init_adapter;
 * docs/training.md, "Starting from an adapter"): a PEFT adapter directory,
 * saved by PEFT or by qlora, a run directory holding adapter/, or a llama.cpp
 * LoRA adapter FILE.gguf (model/gguf_lora.h; its alpha is llama.cpp's, so
 * use_rslora is off).
 *
 * The adapter fixes the LoRA layout: its r, lora_alpha, use_rslora and
 * target_modules become lora.r, lora.alpha, lora.use_rslora and
 * lora.targets, before anything is built from them (the memory estimate, the
 * model, config.resolved.yaml and the checkpoints' stored configuration).
 * Its weights replace PEFT's initialisation once the model is built, on
 * every rank; AdamW starts from zero. A checkpoint that the run resumes from
 * holds later weights, so then the adapter's weights are not loaded. */
#ifndef QL_INIT_ADAPTER_H
#define QL_INIT_ADAPTER_H

#include <stdio.h>

#include "core/config.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "model/llama.h"

/* With lora.init_adapter set: reads its adapter_config.json and sets the four
 * lora.* keys from it. A key that the file or the command line set to
 * another value is an error naming both values (the same value is fine, as in
 * a config.resolved.yaml). Without lora.init_adapter: nothing. */
ql_status ql_init_adapter_resolve(ql_config *c);

/* With lora.init_adapter set: loads its adapter_model.safetensors into the
 * model's adapters (every tensor with its shape; nothing else in the file).
 * `log` (rank 0; may be NULL) gets one line saying what was loaded. */
ql_status ql_init_adapter_load(const ql_config *c, ql_llama *m, const ql_backend *be, FILE *log);

#endif
