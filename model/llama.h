/* The Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2, SmolLM2) as
 * transformers defines it (shared FORMATS.md §4), with its linear layers
 * frozen in 4-bit and LoRA adapters trained on top, forward and backward over
 * the backend op table (kernels/backend.h).
 *
 * The trainable state is one flat float32 vector (ql_adapters.params) with a
 * tensor table naming each LoRA matrix as PEFT does; gradients live in a
 * second flat vector of the same layout. Everything a data-parallel reduction,
 * an optimizer or a checkpoint needs is in those two vectors. */
#ifndef QL_LLAMA_H
#define QL_LLAMA_H

#include <stdint.h>
#include <stdio.h>

#include "core/rng.h"
#include "core/status.h"
#include "kernels/backend.h"
#include "model/hf_config.h"

/* The seven linear projections of a decoder layer, in PEFT's usual order. */
typedef enum ql_proj {
    QL_PROJ_Q,
    QL_PROJ_K,
    QL_PROJ_V,
    QL_PROJ_O,
    QL_PROJ_GATE,
    QL_PROJ_UP,
    QL_PROJ_DOWN,
    QL_N_PROJ
} ql_proj;
#define QL_PROJ_ALL ((1u << QL_N_PROJ) - 1u)

/* "q_proj" ... "down_proj" */
const char *ql_proj_name(ql_proj p);
/* "self_attn" for q/k/v/o, "mlp" for gate/up/down */
const char *ql_proj_module(ql_proj p);
/* QL_N_PROJ if `name` is not one of the seven. */
ql_proj ql_proj_from_name(const char *name);

typedef struct ql_lora_config {
    int r; /* 0: no adapters (the base model alone) */
    float alpha;
    float dropout;    /* on the LoRA input, as PEFT's lora_dropout */
    int use_rslora;   /* scale alpha / sqrt(r) instead of alpha / r */
    unsigned targets; /* bit (1u << ql_proj) per targeted projection */
} ql_lora_config;

#define QL_ADAPTER_NAME_MAX 192

typedef struct ql_adapter_tensor {
    /* PEFT's saved key, e.g.
     * "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" */
    char name[QL_ADAPTER_NAME_MAX];
    int layer;
    ql_proj proj;
    int is_b; /* 0: lora_A [r, in]; 1: lora_B [out, r] */
    int64_t rows, cols;
    int64_t offset; /* first element in the flat vector */
} ql_adapter_tensor;

typedef struct ql_adapters {
    ql_lora_config cfg;
    float scale;                /* alpha / r or alpha / sqrt(r) */
    int64_t n;                  /* elements of the flat vector */
    float *params;              /* backend memory [n] */
    float *grads;               /* backend memory [n]; backward accumulates (+=) here */
    ql_adapter_tensor *tensors; /* ordered by layer, projection, A before B */
    int n_tensors;
    /* The base's attention heads (query, key/value) and model_type, for
     * formats that order q/k rows by head per architecture (llama.cpp's
     * GGUF adapters). */
    int64_t n_heads, n_kv_heads;
    char model_type[32];
} ql_adapters;

typedef struct ql_llama_options {
    const ql_backend *be;
    /* How HF (F32/F16/BF16) and GGUF weights are quantized on load;
     * a bitsandbytes 4-bit directory is used as stored. */
    ql_qtype quant_type;
    int blocksize;
    int double_quant;
    ql_lora_config lora;
    uint64_t seed;              /* LoRA initialisation and dropout */
    int checkpoint_activations; /* keep only layer inputs; recompute in backward */
    int64_t max_batch, max_seq; /* capacity of the activation buffers */
    int64_t logit_rows;         /* rows of logits per lm_head chunk; 0 = ql_llama_logit_rows */
    int quiet;                  /* no load summary on stderr */
    /* 1: quantize on the host even when the backend can quantize on its
     * device (q4_quantize_upload); the environment variable
     * QL_QUANTIZE_ON_HOST=1 does the same. Both give the same bytes. */
    int quantize_on_host;
    /* Layers 0 .. dequantized_layers - 1 also keep their linears dequantized
     * in backend memory (ql_backend.q4_keep_dequantized: on CUDA, bf16 that
     * the large-T calls read instead of dequantizing each time); more than
     * the model's layers means all. Ignored by backends without it. Changes
     * memory and speed, never the results. */
    int64_t dequantized_layers;
    /* 1 (the default): with checkpoint_activations on a backend that can
     * (ql_backend.q4_lend_dequantized), one layer's linears are dequantized
     * into buffers of the model's while the layer runs, so the recomputed
     * forward pass and the backward pass share one dequantize pass (CUDA:
     * calls on the dequant path). Memory for speed; never the results. */
    int lend_dequantized;
    /* 1: the linears are held as the source stores them, not quantized to
     * 4 bits on load: F32/F16/BF16 weights (and a GGUF's, dequantized) in
     * float32 through ql_backend.dense_upload, a bitsandbytes 4-bit
     * directory's as stored. For a model whose weights must not take the
     * 4-bit rounding (a merged model: the LoRA update is far smaller than
     * it), or to measure what that rounding costs. Backends without
     * dense_upload refuse it. */
    int base_original;
} ql_llama_options;

/* Sensible defaults: CPU backend, NF4 + double quant, block 64, r 16,
 * alpha 32, all seven projections, seed 1234, batch 1 x 512. */
void ql_llama_options_default(ql_llama_options *o);

/* A micro-batch of token rows. Host memory. `targets` are already shifted:
 * targets[t] is the token that should follow ids[t] (negative = no loss). */
typedef struct ql_batch {
    int64_t batch, seq;
    const int32_t *ids;     /* [batch * seq] */
    const int32_t *targets; /* [batch * seq] */
    const int32_t *pos;     /* [batch * seq]; NULL = 0..seq-1 in every row */
    const int32_t *doc;     /* [batch * seq]; NULL = one document per row */
} ql_batch;

typedef struct ql_llama ql_llama;

/* Opens `path` through ql_model_source_open, checks the config against the
 * tensors before any large allocation, quantizes the linears, allocates the
 * adapters (A ~ U(±1/sqrt(in)), B = 0, as PEFT initialises them) and the
 * activation buffers. LoRA targets that match no module are an error. */
ql_status ql_llama_load(const char *path, const ql_llama_options *o, ql_llama **out);
/* The same from an open source (model/source.h; e.g. generated weights,
 * model/random_source.h), which stays open and the caller's. */
struct ql_model_source;
ql_status ql_llama_load_source(struct ql_model_source *src, const ql_llama_options *o,
                               ql_llama **out);
void ql_llama_free(ql_llama *m);

/* What loading took and holds: seconds in all, reading tensors, quantizing
 * on the host, uploading float32 weights and quantizing them on the device,
 * and copying host-quantized 4-bit weights to the backend; bytes of backend
 * memory the model holds (weights, adapters, gradients, activations). */
typedef struct ql_llama_load_info {
    double total_s, read_s, quantize_s, gpu_quantize_s, upload_s;
    size_t backend_bytes;
} ql_llama_load_info;
void ql_llama_load_stats(const ql_llama *m, ql_llama_load_info *i);

/* Rows of logits per lm_head chunk for these options (o->logit_rows, or
 * about 32 MB of float32 on the CPU and 128 MB of bf16 on a device backend). */
int64_t ql_llama_logit_rows(const ql_llama_options *o, ql_dtype act_dtype, int64_t vocab);

const ql_hf_config *ql_llama_config(const ql_llama *m);
ql_adapters *ql_llama_adapters(ql_llama *m);
/* The dropout stream; a checkpoint stores and restores it. Each training call
 * with dropout > 0 draws one key from it; the masks of (layer, projection)
 * derive from that key, so a recomputation reproduces them. */
ql_rng *ql_llama_rng(ql_llama *m);

/* Architecture, parameter counts (base, trainable), bytes in backend memory. */
void ql_llama_describe(const ql_llama *m, FILE *f);

/* Forward over one micro-batch; *loss_sum gets the sum of per-token
 * cross-entropies over target positions and *n_targets their number. With
 * backward != 0, adapter gradients scaled by grad_scale are accumulated into
 * adapters->grads (the trainer passes 1 / targets-in-the-global-batch, so
 * summed micro-batches give the gradient of the mean loss). LoRA dropout is
 * applied only with backward != 0 (training); backward = 0 is evaluation. */
ql_status ql_llama_forward_backward(ql_llama *m, const ql_batch *b, int backward, float grad_scale,
                                    double *loss_sum, int64_t *n_targets);

/* One training pass (forward and backward, dropout as configured) over a
 * micro-batch of batch x seq tokens (at most the capacity the model was
 * loaded with; every target ignored), then the adapter gradients zeroed:
 * the backend's buffers grow to what such a micro-batch needs now, so a
 * device that is too small says so at the start instead of at the first
 * long batch hours in. The adapters, the dropout stream and the layer hooks
 * are as before; what it leaves in the backend's buffers is never read
 * before being written, so later results are the same bits. On failure the
 * gradients may hold part of the pass (zero them before a step). */
ql_status ql_llama_reserve(ql_llama *m, int64_t batch, int64_t seq);

/* Called by ql_llama_forward_backward once the backward pass of a layer has
 * been queued (layers L-1 down to 0): that layer's adapter gradients, the
 * elements [lo, hi) of the flat vector (ql_llama_layer_grad_range), receive
 * nothing more in this call. The trainer sets it for a step's last
 * micro-batch to start reducing gradients while the lower layers' backward
 * runs. An error from it ends the call. NULL (the default): none. */
typedef ql_status (*ql_llama_layer_done_fn)(void *ctx, int layer);
void ql_llama_set_layer_done(ql_llama *m, ql_llama_layer_done_fn fn, void *ctx);
/* Called by the forward pass just before layer i (0 up to L-1) is queued
 * (not again for a checkpointed layer's recomputation): the trainer makes
 * the device wait there for that layer's adapters to arrive from the
 * previous step's all-gather (ql_optim_params_needed). An error from it
 * ends the call. NULL (the default): none. */
void ql_llama_set_layer_start(ql_llama *m, ql_llama_layer_done_fn fn, void *ctx);
/* Layer i's adapter elements: the flat vector's [lo, hi), lo == hi when the
 * layer has no adapter. Layers are in order: layer i + 1's range follows. */
void ql_llama_layer_grad_range(const ql_llama *m, int layer, int64_t *lo, int64_t *hi);

/* Runs the model's ops through `be` from now on: a wrapper of the backend
 * it was loaded with (same memory), such as a profiler. */
void ql_llama_set_backend(ql_llama *m, const ql_backend *be);

/* Seconds the last ql_llama_forward_backward spent waiting in its one
 * device wait (the per-token losses' copy): near 0 when the device had
 * finished before the host had queued everything — launch-bound, where CUDA
 * graphs would help — and most of the call when the host ran ahead. */
double ql_llama_last_wait_s(const ql_llama *m);

/* Logits of every position into host memory [batch * seq, vocab] (tests, eval). */
ql_status ql_llama_logits(ql_llama *m, const ql_batch *b, float *logits);

#endif
