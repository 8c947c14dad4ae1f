/* Tile dequantization for the fast CPU backend: any run of flat elements of a
 * 4-bit matrix to float32, bit-identical to ql_q4_dequantize (one float32
 * multiply of code value by block absmax), plus the tile-size choices the
 * fast kernels share. */
#ifndef QL_CPU_DEQUANT_H
#define QL_CPU_DEQUANT_H

#include <stdint.h>

#include "kernels/quant4.h"

/* out[0 .. e1-e0) = W.flat[e0 .. e1). The absmax of each block is decoded
 * (double quant undone) once per block the range touches. */
void ql_q4_dequant_range_cpu(const ql_q4 *w, int64_t e0, int64_t e1, float *out);

/* The float32 absmax of block b (double quantization undone). */
float ql_q4_block_absmax_cpu(const ql_q4 *w, int64_t b);

/* A thread-local scratch buffer of at least `floats` floats, 64-byte aligned,
 * kept between calls so that tiles do not page-fault fresh memory every time.
 * NULL (with a message) when out of memory. */
float *ql_cpu_scratch(size_t floats);

/* Rows of W per forward tile for y[T,out] = x[T,in]·Wᵀ; depends only on the
 * shape, never on the thread count, so the result does not either. */
int64_t ql_cpu_fwd_tile_rows(int64_t T, int64_t in, int64_t out);

#endif
