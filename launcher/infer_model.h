/* Loading a model for inference (qlora generate, qlora eval --code): the
 * base model alone, or with a PEFT adapter whose configuration decides the
 * LoRA layout. Dropout is off, as PEFT's eval() turns it off. */
#ifndef QL_INFER_MODEL_H
#define QL_INFER_MODEL_H

#include <stddef.h>

#include "core/status.h"
#include "kernels/backend.h"
#include "model/llama.h"

/* base_original: the linears as the file stores them, not rounded to 4 bits
 * (--base-weights original; ql_llama_options.base_original).
 * `adapter` (may be NULL) is an adapter directory or a run directory holding
 * adapter/; its directory goes into adir ("" without one) and its LoRA
 * configuration into *lc (r 0 without one). */
ql_status ql_infer_load(const char *model, const char *adapter, const ql_backend *be, int quiet,
                        int base_original, ql_llama **m, char *adir, size_t cap,
                        ql_lora_config *lc);

#endif
