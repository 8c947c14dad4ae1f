/* Incremental forward for generation: a key/value cache per sequence, so a
 * prompt is run once (prefill) and each new token costs one token's forward
 * instead of the whole sequence's.
 *
 * The cache keeps each layer's keys (after RoPE) and values in the backend's
 * memory and activation type (float32 on the CPU, bf16 on a GPU), per
 * sequence slot. New tokens run through the same backend ops as training
 * (4-bit linears with LoRA, RMSNorm, RoPE, SwiGLU); attention of a prompt
 * into an empty slot is the backend's causal attention, and attention of
 * later tokens against the cache is the backend's attn_cached_fwd, so a
 * step waits for the device twice (its ids and positions up, its logits
 * down), not per layer. Grouped-query heads read kv
 * head h / (H / KV) as in training. The logits equal ql_llama_logits over
 * the whole sequence up to float rounding (tests/unit/test_generate.c). */
#ifndef QL_LLAMA_GENERATE_H
#define QL_LLAMA_GENERATE_H

#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"

typedef struct ql_llama_kv ql_llama_kv;

/* A cache of n_slots sequences over m (which must outlive it). `chunk` is the
 * most tokens one forward call takes (longer prompts are fed in chunks); 0
 * picks 256. Allocates the step buffers on m's backend. */
ql_status ql_llama_kv_create(ql_llama *m, int n_slots, int64_t chunk, ql_llama_kv **out);
void ql_llama_kv_free(ql_llama_kv *kv);

/* Empties `slot` and makes room for `ctx` tokens (prompt + new tokens). */
ql_status ql_llama_kv_reset(ql_llama_kv *kv, int slot, int64_t ctx);
/* Tokens in `slot` (the position the next token gets). */
int64_t ql_llama_kv_length(const ql_llama_kv *kv, int slot);
int ql_llama_kv_slots(const ql_llama_kv *kv);

/* 1 (the default): linear layers apply the model's LoRA adapters; 0: the base
 * model alone (adapters loaded but skipped), so one loaded model gives both
 * answers. Changing it does not invalidate what is cached, but a sequence
 * should be generated with one setting throughout. */
void ql_llama_kv_use_adapters(ql_llama_kv *kv, int on);

/* Appends n tokens to `slot` at positions length..length+n-1; logits (host,
 * [vocab], may be NULL) get the next-token logits after the last one. */
ql_status ql_llama_kv_prefill(ql_llama_kv *kv, int slot, const int32_t *ids, int64_t n,
                              float *logits);

/* One token for each of n distinct slots (a batched decode step); logits
 * (host, [n, vocab]) get each slot's next-token logits in the same order. */
ql_status ql_llama_kv_step(ql_llama_kv *kv, int n, const int *slots, const int32_t *ids,
                           float *logits);

#endif
