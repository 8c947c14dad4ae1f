/* How kernels/cuda/lora_skinny.cu splits its reductions (cuda_api.h).
 *
 * Plain C with no CUDA in it, so that the memory estimate (model/llama_mem.c)
 * sizes the partial sums by the same rule in every build. The splits depend
 * on the shapes alone, never on the device, so a run and its resumption add
 * the same partial sums in the same order. */
#include "kernels/cuda_api.h"

/* Enough blocks to fill an H200 several times over: 132 SMs hold 1 to 4
 * blocks of 256 threads each at these kernels' register counts. */
#define BLOCKS_WANTED 1024

int64_t ql_cuda_lora_split(int64_t tiles, int64_t len, int64_t step, int64_t *splits) {
    int64_t s = (BLOCKS_WANTED + tiles - 1) / tiles;
    const int64_t per_warp = step * QL_LORA_SKINNY_WARPS;
    const int64_t most = (len + per_warp - 1) / per_warp; /* a step for every warp */
    if (s > most) s = most;
    if (s < 1) s = 1;
    int64_t per = (len + s - 1) / s;
    per = (per + step - 1) / step * step;
    *splits = per > 0 ? (len + per - 1) / per : 1;
    return per;
}

int ql_cuda_lora_skinny_ok(int64_t in, int64_t rpad) {
    return in > 0 && in % 8 == 0 && rpad >= 16 && rpad <= 64 && rpad % 16 == 0;
}

/* Not the exact need of a call but a bound on it that grows with T, so that
 * the scratch a run holds is this at its largest micro-batch (the estimate's
 * figure) whatever order the calls come in. The forward's splits s are at
 * most ceil(in / 256) and ceil(BLOCKS_WANTED / tiles) with tiles =
 * ceil(T / XA_ROWS), so s·T ≤ BLOCKS_WANTED·XA_ROWS + T; the backward's at
 * most ceil(T / 128) and ceil(BLOCKS_WANTED / column tiles), both growing
 * with T. */
size_t ql_cuda_lora_skinny_scratch(int64_t T, int64_t in, int64_t rpad) {
    if (T <= 0 || !ql_cuda_lora_skinny_ok(in, rpad)) return 0;
    const int64_t w = QL_LORA_SKINNY_WARPS, col_tiles = (in + 31) / 32;
    const int64_t fwd_most = BLOCKS_WANTED * QL_LORA_SKINNY_XA_ROWS + T + QL_LORA_SKINNY_XA_ROWS;
    int64_t fwd = (in + 32 * w - 1) / (32 * w) * T;
    if (fwd > fwd_most) fwd = fwd_most;
    int64_t bwd = (BLOCKS_WANTED + col_tiles - 1) / col_tiles;
    if (bwd > (T + 16 * w - 1) / (16 * w)) bwd = (T + 16 * w - 1) / (16 * w);
    if (bwd < 1) bwd = 1;
    fwd *= rpad;
    bwd *= rpad * in;
    return (size_t)(fwd > bwd ? fwd : bwd) * sizeof(float);
}
