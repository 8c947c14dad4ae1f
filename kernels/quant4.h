/* A 4-bit quantized matrix in bitsandbytes' layout, and the whole-tensor
 * quantize / dequantize that `qlora quantize` and the loaders use.
 *
 * The layout is the one transformers serializes (FORMATS §2): `packed` holds
 * ceil(n/2) bytes of nibbles over the row-major flattened [rows, cols] matrix;
 * blocks of `blocksize` consecutive elements share one absmax. With double
 * quantization the absmax values are stored as 8-bit dynamic-map codes of
 * (absmax - offset), with one float32 scale per 256 blocks. */
#ifndef QL_QUANT4_H
#define QL_QUANT4_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/nf4.h"

typedef struct ql_q4 {
    ql_qtype type;
    int64_t rows, cols; /* logical shape [out_features, in_features] */
    int64_t n;          /* rows * cols */
    int blocksize;
    int64_t n_blocks; /* ceil(n / blocksize) */
    uint8_t *packed;  /* ceil(n / 2) bytes */

    int double_quant;
    float *absmax;         /* without double quant: f32[n_blocks] */
    uint8_t *absmax_q;     /* with double quant: u8[n_blocks] */
    float *nested_absmax;  /* with double quant: f32[ceil(n_blocks / 256)] */
    float nested_offset;   /* with double quant: mean of the float32 absmax */
    float nested_map[256]; /* with double quant: the dynamic map (the file's, on load) */
    int owns;              /* 1 when the buffers were allocated by ql_q4_* */

    /* Backend memory only: W kept dequantized beside the 4-bit data
     * (ql_backend.q4_keep_dequantized: the weight's own, freed with it), or
     * lent for a while (q4_lend_dequantized: the model's buffer, given back
     * before anything frees the weight), or NULL. dense_pad is the LoRA
     * padding its layout has room for (CUDA: the rank rounded up to 16, 0
     * without LoRA; kernels/cuda/q4_lora.cu), used only by calls that need
     * exactly that layout; the 4-bit buffers above stay the weight's
     * definition. On the CPU backends, a weight made by dense_upload
     * (--base-weights original, quant.type none) has packed NULL and dense
     * its float32 [rows, cols]: that is then its definition. */
    void *dense;
    int64_t dense_pad;
} ql_q4;

static inline int64_t ql_q4_packed_bytes(const ql_q4 *q) { return (q->n + 1) / 2; }

/* Elements of a dequantized copy (dense) of a [rows, cols] weight laid out
 * for LoRA rank r: W with rpad = r rounded up to 16 rows and columns beside
 * it (CUDA's layout, kernels/cuda/q4_lora.cu; bf16). */
static inline int64_t ql_q4_dense_elems(int64_t rows, int64_t cols, int64_t r) {
    const int64_t rpad = r > 0 ? (r + 15) / 16 * 16 : 0;
    return (rows + rpad) * (cols + rpad);
}
static inline int64_t ql_q4_nested_blocks(const ql_q4 *q) {
    return (q->n_blocks + QL_NESTED_BLOCKSIZE - 1) / QL_NESTED_BLOCKSIZE;
}

/* Quantizes a float32 row-major [rows, cols] matrix. Bad arguments (block size
 * bitsandbytes does not allow, empty matrix) return QL_EINVAL. */
ql_status ql_q4_quantize(const float *w, int64_t rows, int64_t cols, ql_qtype type, int blocksize,
                         int double_quant, ql_q4 *out);

/* Allocates the buffers of a ql_q4 whose shape and options are already set
 * (used by loaders before they fill the buffers from a file). */
ql_status ql_q4_alloc(ql_q4 *q);
void ql_q4_free(ql_q4 *q);

/* The float32 absmax of every block (undoing double quantization). */
void ql_q4_absmax_f32(const ql_q4 *q, float *absmax);

/* Reference dequantization to float32, element by element. */
void ql_q4_dequantize(const ql_q4 *q, float *w);

/* The mean that bitsandbytes subtracts before quantizing absmax: accumulated
 * in double and rounded once (torch's float32 reduction order is not
 * reproducible; FORMATS §7). */
float ql_q4_absmax_mean(const float *absmax, int64_t n_blocks);

#endif
