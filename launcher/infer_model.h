/* Loading a model for inference (qlora generate, qlora eval, qlora eval
 * --code): the base model alone, or with a PEFT adapter whose configuration
 * decides the LoRA layout. Dropout is off, as PEFT's eval() turns it off.
 *
 * The base is held as the run behind the adapter held it while training:
 * an adapter directory RUN/adapter whose RUN has config.resolved.yaml gives
 * its quant.* settings (code book, block size, double quantization, or
 * quant.type none: the linears as stored); otherwise qlora's defaults (NF4,
 * block 64, double quantization). --base-weights, when given, decides
 * whether the linears are rounded to 4 bits at all. */
#ifndef QL_INFER_MODEL_H
#define QL_INFER_MODEL_H

#include <stddef.h>

#include "core/status.h"
#include "kernels/backend.h"
#include "model/llama.h"

/* How the base weights are held, for the summary line. */
typedef struct ql_infer_base {
    int base_original; /* the linears as stored */
    int run_none;      /* the run's config.resolved.yaml says quant.type none */
} ql_infer_base;

/* base_weights: the --base-weights flag, -1 not given, 0 quantized, 1
 * original. adir: the adapter directory ("" or NULL: none). Sets o's quant
 * fields and base_original; errors name the run's configuration file. */
ql_status ql_infer_run_quant(const char *adir, int base_weights, ql_llama_options *o,
                             ql_infer_base *how);

/* `adapter` (may be NULL) is an adapter directory or a run directory holding
 * adapter/; its directory goes into adir ("" without one) and its LoRA
 * configuration into *lc (r 0 without one). */
ql_status ql_infer_load(const char *model, const char *adapter, const ql_backend *be, int quiet,
                        int base_weights, ql_llama **m, char *adir, size_t cap, ql_lora_config *lc,
                        ql_infer_base *how);

/* " (base weights as stored, ...)" for the model line, or "". */
const char *ql_infer_base_words(const ql_infer_base *how);

#endif
