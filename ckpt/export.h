/* `qlora export`: what a finished (or interrupted) run hands to the tools
 * people deploy with (docs/export.md).
 *
 * The source is a run directory (its adapter/), an adapter directory, or a
 * checkpoint (OUT/checkpoints/step-N/; not readable for export yet: the
 * checkpoint reader is still being built, and such a source is refused with
 * a message saying so). The output is either a PEFT adapter directory
 * (adapter_model.safetensors + adapter_config.json, FORMATS §3) that PEFT's
 * PeftModel.from_pretrained and vLLM's LoRA loader read, or, with merge, a
 * merged Hugging Face model directory (model/merge.h). Outputs appear
 * atomically; an existing one is replaced only with force. */
#ifndef QL_EXPORT_H
#define QL_EXPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "core/dtype.h"
#include "core/status.h"
#include "model/llama.h"
#include "model/merge.h"

#define QL_EXPORT_PATH_MAX 4096

typedef struct ql_export_opts {
    const char *src;       /* run, adapter or checkpoint directory */
    const char *out_dir;   /* the directory to create */
    int merge;             /* 0: a PEFT adapter; 1: a merged model */
    int dtype;             /* a ql_dtype, or -1: F32 for an adapter, BF16 merged */
    const char *model;     /* the base model; NULL: the run's, else the adapter's */
    const char *base_name; /* base_model_name_or_path to write; NULL: keep */
    int base_original;     /* merge into the source weights, not the 4-bit round trip */
    int force;             /* replace an existing out_dir */
    FILE *progress;        /* NULL: quiet */
    volatile sig_atomic_t *cancel;
} ql_export_opts;

typedef struct ql_export_result {
    char adapter_dir[QL_EXPORT_PATH_MAX]; /* where the adapter was read */
    char run_dir[QL_EXPORT_PATH_MAX];     /* the run holding it, or "" */
    char model[QL_EXPORT_PATH_MAX];       /* the base model merged into ("" without merge) */
    char base_name[QL_EXPORT_PATH_MAX];   /* base_model_name_or_path written */
    ql_lora_config lora;
    int n_tensors;
    ql_dtype dtype;
    /* The 4-bit round trip of a merge and where its settings came from. */
    ql_qtype qtype;
    int blocksize, double_quant;
    int quant_from_run; /* 1: the run's config.resolved.yaml; 0: qlora's defaults */
    ql_merge_stats merge;
} ql_export_result;

/* What SRC names: the adapter directory and, when SRC is (or is inside) a
 * run, the run directory ("" otherwise). A checkpoint is QL_EUNSUPPORTED. */
ql_status ql_export_resolve(const char *src, char *adapter_dir, size_t cap, char *run_dir,
                            size_t run_cap);

ql_status ql_export(const ql_export_opts *o, ql_export_result *r);

#endif
