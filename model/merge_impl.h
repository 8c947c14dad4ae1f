/* What model/merge.c shares with model/merge_gguf.c: the merge in float32,
 * one tensor at a time, whatever the output format. */
#ifndef QL_MERGE_IMPL_H
#define QL_MERGE_IMPL_H

#include "model/hf_model.h"
#include "model/merge.h"
#include "model/source.h"

typedef struct merge_ctx {
    const ql_merge_opts *o;
    ql_model_source src;
    int src_open;
    ql_adapters ad; /* cfg.r == 0: no adapter */
    float *params;  /* host copy of the adapter's flat vector */
    int *a_of;      /* [layers * QL_N_PROJ]: index of the lora_A tensor, -1 when none */
    ql_hf_expected *exp;
    size_t n_exp;
    float *buf; /* float32 staging for the largest tensor */
} merge_ctx;

void ql_merge_ctx_free(merge_ctx *c);
int64_t ql_merge_numel(const ql_hf_expected *e);
/* The adapter, read against the base model's config (every tensor present
 * with its shape, nothing else); none when the options give none. */
ql_status ql_merge_load_adapter(merge_ctx *c);
/* 1 if e is a linear the adapter changes, with its layer and projection. */
int ql_merge_targeted(const merge_ctx *c, const ql_hf_expected *e, int *layer, ql_proj *p);
/* Tensor e as merged, in float32 (numel floats into w): a linear as qlora held
 * it (or the source's own with base_original) plus s·B·A where targeted;
 * anything else as the source has it. */
ql_status ql_merge_tensor_f32(merge_ctx *c, const ql_hf_expected *e, float *w, int *merged);

/* The merged model as one GGUF file (model/merge_gguf.c). */
ql_status ql_merge_write_gguf(merge_ctx *c, ql_merge_stats *s);

#endif
