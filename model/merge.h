/* A merged model: the base model's weights with a LoRA adapter folded in,
 * W' = W + s·B·A (FORMATS §3.4), written as a Hugging Face directory
 * (safetensors in BF16, F16 or F32, config.json without quantization_config,
 * the tokenizer files) that transformers' AutoModelForCausalLM loads.
 *
 * With gguf, the output is instead one GGUF file for llama.cpp, from a GGUF
 * base: its metadata (tokenizer included) and every tensor the merge does not
 * change copied as stored, the linears written in gguf_type with their Q/K
 * rows in the file's order (model/merge_gguf.c).
 *
 * Which W: by default the base as qlora held it while training, i.e. each
 * linear after the 4-bit round trip (quantized with the run's NF4/FP4, block
 * size and double-quantization settings, then dequantized; a bitsandbytes
 * 4-bit directory as stored). That is the model the adapter was trained
 * against, so the merged model reproduces qlora's forward with the adapter
 * up to the output dtype's rounding. `base_original` merges into the source's
 * own weights instead (its F32/F16/BF16 values, or a GGUF's dequantized
 * ones), closer to the original model but not what the adapter saw. */
#ifndef QL_MERGE_H
#define QL_MERGE_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/nf4.h"
#include "model/llama.h"

typedef struct ql_merge_opts {
    const char *model;       /* HF directory, bitsandbytes 4-bit directory or .gguf */
    const char *adapter_dir; /* PEFT adapter directory; NULL: see `adapters` */
    /* Or adapters in host memory (a checkpoint's): every tensor of the
     * model's layout for adapters->cfg must be there with its shape, under
     * its PEFT name. Both NULL: the base alone. */
    const ql_adapters *adapters;
    const char *out_dir;           /* the directory; with gguf, the file */
    ql_dtype dtype;                /* QL_DT_BF16, QL_DT_F16 or QL_DT_F32 */
    int gguf;                      /* 1: one GGUF file (the model must be a GGUF file) */
    uint32_t gguf_type;            /* with gguf: the merged linears' ggml type, F32 F16 BF16 Q8_0 */
    ql_qtype qtype;                /* the 4-bit round trip: as the run trained */
    int blocksize;                 /* 64 ... 4096 */
    int double_quant;              /* 1: absmax stored in 8 bits, as bitsandbytes' double quant */
    int base_original;             /* 1: skip the round trip (see above) */
    int force;                     /* replace an existing out_dir */
    uint64_t max_shard_bytes;      /* 0: transformers' 5 GB */
    FILE *progress;                /* a line per shard; NULL: quiet */
    volatile sig_atomic_t *cancel; /* set by a signal handler: stop, write nothing */
} ql_merge_opts;

typedef struct ql_merge_stats {
    int n_tensors, n_merged, n_shards;
    int64_t params;
    uint64_t bytes;
    int tokenizer_files;   /* side files copied */
    int tokenizer_missing; /* no tokenizer.json written: 1 a GGUF source, 2 a directory without one
                            */
    int n_copied;          /* gguf: tensors copied as stored */
} ql_merge_stats;

/* Writes the merged model to o->out_dir atomically (built beside it, renamed
 * in). Errors name the model, the adapter, the tensor. */
ql_status ql_merge_write(const ql_merge_opts *o, ql_merge_stats *s);

#endif
