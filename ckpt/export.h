/* `qlora export`: what a finished (or interrupted) run hands to the tools
 * people deploy with (docs/export.md).
 *
 * The source is an adapter directory; a run directory (its adapter/, written
 * when training ends or is interrupted; without one, its newest checkpoint
 * that verifies); RUN/checkpoints (the newest checkpoint that verifies, LATEST
 * first); or one checkpoint RUN/checkpoints/step-N/ (verified: manifest,
 * shard sizes, attributes, SHA-256). The output is either a PEFT adapter directory
 * (adapter_model.safetensors + adapter_config.json, FORMATS §3) that PEFT's
 * PeftModel.from_pretrained and vLLM's LoRA loader read, or, with merge, a
 * merged Hugging Face model directory (model/merge.h), or, with gguf, the
 * LoRA adapter file llama.cpp loads (model/gguf_lora.h). Outputs appear
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
    const char *out_dir;   /* the directory to create (the file, with gguf) */
    int merge;             /* 0: a PEFT adapter; 1: a merged model */
    int gguf;              /* 1: a llama.cpp LoRA adapter file (model/gguf_lora.h), or
                              with merge one merged GGUF model file (model/merge.h) */
    int q8_0;              /* merge + gguf: the linears in Q8_0 (else per dtype) */
    int dtype;             /* a ql_dtype, or -1: F32 for an adapter, BF16 merged */
    const char *model;     /* the base model; NULL: the run's, else the adapter's */
    const char *base_name; /* base_model_name_or_path to write; NULL: keep */
    int base_original;     /* merge into the source weights, not the 4-bit round trip */
    int force;             /* replace an existing out_dir */
    FILE *progress;        /* NULL: quiet */
    volatile sig_atomic_t *cancel;
} ql_export_opts;

typedef enum ql_export_from {
    QL_EXPORT_FROM_ADAPTER,     /* an adapter directory (a run's adapter/) */
    QL_EXPORT_FROM_CHECKPOINT,  /* one step directory */
    QL_EXPORT_FROM_CHECKPOINTS, /* a checkpoints directory: its newest good one */
} ql_export_from;

typedef struct ql_export_source {
    ql_export_from kind;
    char path[QL_EXPORT_PATH_MAX];    /* the adapter, step or checkpoints directory */
    char run_dir[QL_EXPORT_PATH_MAX]; /* the run holding it, or "" */
} ql_export_source;

typedef struct ql_export_result {
    ql_export_from from;
    int64_t step;                         /* the checkpoint's step (checkpoints only) */
    char adapter_dir[QL_EXPORT_PATH_MAX]; /* where the adapter was read (adapter or step dir) */
    char run_dir[QL_EXPORT_PATH_MAX];     /* the run holding it, or "" */
    char model[QL_EXPORT_PATH_MAX];     /* the base model merged into or read for gguf ("" else) */
    char gguf_arch[32];                 /* gguf: general.architecture written */
    char base_name[QL_EXPORT_PATH_MAX]; /* base_model_name_or_path written */
    ql_lora_config lora;
    int n_tensors;
    ql_dtype dtype;
    /* The 4-bit round trip of a merge and where its settings came from. */
    ql_qtype qtype;
    int blocksize, double_quant;
    int quant_from_run; /* 1: the run's config.resolved.yaml; 0: qlora's defaults */
    int quant_none; /* the run trained on the weights as stored (quant.type none): no round trip */
    ql_merge_stats merge;
} ql_export_result;

/* What SRC names (see above). */
ql_status ql_export_resolve(const char *src, ql_export_source *out);

ql_status ql_export(const ql_export_opts *o, ql_export_result *r);

#endif
