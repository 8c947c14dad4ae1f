/* Warp-level bf16 tensor-core helpers (sm_80+, used on sm_90): ldmatrix and
 * mma.sync m16n8k16 with fp32 accumulators. Shared by the fused NF4 GEMM
 * (q4_gemm.cu) and flash attention (attn.cu).
 *
 * Fragment layout of mma.m16n8k16.row.col (PTX ISA, "Matrix fragments for
 * mma.m16n8k16"), with g = lane / 4 and c = lane % 4:
 *   A 16x16 (row-major), 4 registers of 2 bf16:
 *     a0 = A[g][2c..2c+1]    a1 = A[g+8][2c..2c+1]
 *     a2 = A[g][2c+8..+9]    a3 = A[g+8][2c+8..+9]
 *   B 16x8 (k x n), 2 registers: b0 = B[2c..2c+1][g], b1 = B[2c+8..+9][g]
 *   C 16x8 fp32, 4 registers: c0,c1 = C[g][2c..2c+1], c2,c3 = C[g+8][2c..2c+1]
 * ldmatrix.x4 loads four 8x8 bf16 matrices; lanes 8j..8j+7 give the row
 * addresses of matrix j, and register j of every lane receives matrix j's
 * row lane/4, columns 2(lane%4)..+1 (with .trans: the transposed matrix). */
#ifndef QL_MMA_CUH
#define QL_MMA_CUH

#include <stdint.h>

#ifdef QL_CUDA_EMU
/* The CPU emulator (kernels/cuda/emu/) implements the instructions. */
#define ql_ldmatrix_x4(r, p) ql_emu_ldmatrix_x4(__FILE__, __LINE__, (r), (p), 0)
#define ql_ldmatrix_x4_trans(r, p) ql_emu_ldmatrix_x4(__FILE__, __LINE__, (r), (p), 1)
#define ql_mma_bf16(d, a, b0, b1) ql_emu_mma_bf16_16816(__FILE__, __LINE__, (d), (a), (b0), (b1))
#else
static __device__ __forceinline__ uint32_t ql_smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void ql_ldmatrix_x4(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ql_smem_addr(p)));
}

static __device__ __forceinline__ void ql_ldmatrix_x4_trans(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ql_smem_addr(p)));
}

/* d += a·b (16x8x16, bf16 in, fp32 accumulate). */
static __device__ __forceinline__ void ql_mma_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                   uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

/* Two floats to a bf16 pair, lo in the low half (the lower address). */
static __device__ __forceinline__ uint32_t ql_pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

#endif
