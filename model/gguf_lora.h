/* LoRA adapters as llama.cpp reads them (`llama-cli -m BASE.gguf --lora
 * ADAPTER.gguf`, llama_adapter_lora_init): the GGUF file llama.cpp's own
 * convert_lora_to_gguf.py writes from a PEFT adapter (docs/export.md).
 *
 * - metadata: general.architecture (the base model's, which llama.cpp checks),
 *   general.type "adapter", adapter.type "lora", adapter.lora.alpha (F32);
 * - per targeted projection, BASE.lora_a and BASE.lora_b where BASE is the
 *   base tensor's GGUF name (blk.N.attn_q.weight, ...): lora_a is PEFT's
 *   lora_A [r, in] (ggml ne {in, r}), lora_b is lora_B [out, r] (ne {r, out});
 * - for the architectures whose converter permutes the Q/K rows for its
 *   interleaved RoPE (llama, mistral), lora_b's rows of q_proj and k_proj are
 *   permuted the same way, so that B·A is the permuted update.
 *
 * llama.cpp scales by alpha / rank. rsLoRA's alpha / sqrt(r) is therefore
 * written as alpha·sqrt(r); the converter (which writes lora_alpha as it is)
 * gets rsLoRA adapters wrong. */
#ifndef QL_GGUF_LORA_H
#define QL_GGUF_LORA_H

#include "core/dtype.h"
#include "core/status.h"
#include "model/llama.h"

typedef struct ql_gguf_lora_base {
    char arch[32];  /* general.architecture of the base's GGUF */
    int permute_qk; /* 1: lora_b rows of q/k permuted (llama, mistral) */
    int64_t n_heads, n_kv_heads;
} ql_gguf_lora_base;

/* What the adapter file needs to know of its base model `model`: a GGUF file
 * (its general.architecture as it is) or a Hugging Face / bitsandbytes
 * directory (model_type llama and mistral become "llama", as the converter
 * makes them; qwen2 stays "qwen2"). */
ql_status ql_gguf_lora_base_of(const char *model, ql_gguf_lora_base *b);

/* Rows of a q/k weight (or of its lora_B) from Hugging Face's order into the
 * order llama.cpp's converter writes for the interleaved RoPE, in groups of
 * `heads` heads; `what` names it in errors. */
ql_status ql_gguf_permute_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads,
                                  const char *what);

/* The inverse: rows in the converter's order back into Hugging Face's (what
 * model/gguf_source.c does to a Llama GGUF's q/k weights). */
ql_status ql_gguf_unpermute_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads,
                                    const char *what);

/* A llama.cpp LoRA adapter as input (`--adapter FILE.gguf`, lora.init_adapter,
 * qlora export): `path` names a file ending in ".gguf". */
int ql_gguf_lora_is_file(const char *path);

/* Its configuration: r (every lora_a's rows, which must agree), alpha
 * (adapter.lora.alpha; llama.cpp scales by alpha / r, so use_rslora is 0 and
 * an alpha of 0 or none means a scale of 1, i.e. alpha = r), the targets
 * (the projections every layer has a lora_a and lora_b for: they must be the
 * same in every layer), dropout 0. general.type must be "adapter" and
 * adapter.type "lora". The architecture goes to arch (cap bytes; may be NULL). */
ql_status ql_gguf_lora_read_config(const char *path, ql_lora_config *lc, char *arch, size_t cap);

/* Loads the file's tensors into `a` (laid out for the configuration above
 * and the base model; be NULL: a->params is host memory): every tensor with
 * its shape, nothing else in the file; F32, F16, BF16 or any type qlora can
 * dequantize; q/k lora_b rows of a llama/mistral adapter back into Hugging
 * Face's order with a->n_heads / a->n_kv_heads. */
ql_status ql_gguf_lora_load(const char *path, ql_adapters *a, const ql_backend *be);

/* Writes the adapters `a` (parameters in host memory `host`) to `path` as a
 * llama.cpp LoRA GGUF with tensors in `dtype` (F32, F16 or BF16; rounded to
 * nearest even), atomically. */
ql_status ql_gguf_lora_save(const char *path, const ql_adapters *a, const float *host,
                            const ql_gguf_lora_base *b, ql_dtype dtype);

#endif
