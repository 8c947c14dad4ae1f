/* Dense bf16 GEMM through cuBLASLt, and the dense frozen matmul ops
 * (lm_head, tied embeddings) of the op table.
 *
 * Row-major to column-major: a row-major [R, C] matrix with row stride ld is
 * the column-major [C, R] matrix with leading dimension ld, so the row-major
 * C[M,N] = op(A)·op(B) is the column-major Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ: cuBLASLt's
 * first operand is our B, its second our A, m = N, n = M.
 *
 * Determinism: cuBLASLt returns the same bits for the same algorithm, shape
 * and device (its split-K reductions are ordered, see cublasLt.h on
 * CUBLASLT_REDUCTION_SCHEME_*). The heuristic's choice is made once per
 * (shape, strides, transposes, output type, pointer alignment) and kept in a
 * small table, so later calls cannot switch algorithms. Where cuBLASLt has no
 * algorithm (odd strides or alignment), k_gemm_simt computes the product:
 * one thread per output, the k sum in order, 16x16 shared-memory tiles. */
#include <cublasLt.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_ops.h"

#define WORKSPACE_BYTES ((size_t)32 << 20)
#define ALGO_CACHE 64

#define QL_CUBLAS_TRY(call)                                                                        \
    do {                                                                                           \
        cublasStatus_t ql_cb_s_ = (call);                                                          \
        if (ql_cb_s_ != CUBLAS_STATUS_SUCCESS)                                                     \
            return ql_error(QL_EBACKEND, "cuBLASLt: %s failed at %s:%d: %s: %s", #call, __FILE__,  \
                            __LINE__, cublasLtGetStatusName(ql_cb_s_),                             \
                            cublasLtGetStatusString(ql_cb_s_));                                    \
    } while (0)

typedef struct algo_key {
    int64_t M, N, K, lda, ldb, ldc;
    int ta, tb, ctype, align;
} algo_key;

typedef struct algo_entry {
    algo_key key;
    int used;
    int none; /* cuBLASLt has no algorithm: use the tiled kernel */
    cublasLtMatmulAlgo_t algo;
} algo_entry;

static cublasLtHandle_t g_lt;
static void *g_workspace;
static algo_entry g_cache[ALGO_CACHE];
static int g_cache_next;
static int g_force_fallback;
/* Products that took the tiled kernel because cuBLASLt had no algorithm for
 * them: on a GPU that kernel is many times slower, so the trainer and the
 * benchmarks report them rather than leaving a slow step unexplained. */
static int64_t g_fallbacks;
static char g_first_fallback[192];

extern "C" void ql_cuda_gemm_force_fallback(int on) { g_force_fallback = on; }

void ql_cuda_blas_release(void) {
    if (g_lt) cublasLtDestroy(g_lt);
    g_lt = NULL;
    ql_cuda_free(g_workspace);
    g_workspace = NULL;
    memset(g_cache, 0, sizeof g_cache);
    g_cache_next = 0;
}

static ql_status lt_init(void) {
    if (g_lt) return QL_OK;
    QL_CUBLAS_TRY(cublasLtCreate(&g_lt));
    ql_status st = ql_cuda_malloc(WORKSPACE_BYTES, &g_workspace);
    if (st != QL_OK) {
        cublasLtDestroy(g_lt);
        g_lt = NULL;
    }
    return st;
}

static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 1 && u % (uintptr_t)a) a >>= 1;
    return a;
}

/* --- the fallback kernel ---------------------------------------------------------------- */

#define SIMT_TILE 16

template <bool F32OUT>
__global__ void k_gemm_simt(int64_t M, int64_t N, int64_t K, float alpha, const ql_bf16 *A,
                            int64_t lda, int ta, const ql_bf16 *B, int64_t ldb, int tb, float beta,
                            void *C, int64_t ldc) {
    __shared__ float As[SIMT_TILE][SIMT_TILE + 1];
    __shared__ float Bs[SIMT_TILE][SIMT_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t m = (int64_t)blockIdx.y * SIMT_TILE + ty;
    const int64_t n = (int64_t)blockIdx.x * SIMT_TILE + tx;
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += SIMT_TILE) {
        /* As[ty][tx] = A(m0 + ty, k0 + tx); Bs[ty][tx] = B(k0 + ty, n0 + tx). */
        const int64_t am = (int64_t)blockIdx.y * SIMT_TILE + ty, ak = k0 + tx;
        const int64_t bk = k0 + ty, bn = (int64_t)blockIdx.x * SIMT_TILE + tx;
        As[ty][tx] =
            (am < M && ak < K) ? ql_ld_bf16(ta ? A + ak * lda + am : A + am * lda + ak) : 0.0f;
        Bs[ty][tx] =
            (bk < K && bn < N) ? ql_ld_bf16(tb ? B + bn * ldb + bk : B + bk * ldb + bn) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SIMT_TILE; kk++) acc = __fmaf_rn(As[ty][kk], Bs[kk][tx], acc);
        __syncthreads();
    }
    if (m >= M || n >= N) return;
    if (F32OUT) {
        float *c = (float *)C + m * ldc + n;
        *c = beta != 0.0f ? alpha * acc + beta * *c : alpha * acc;
    } else {
        ql_bf16 *c = (ql_bf16 *)C + m * ldc + n;
        *c = ql_bf16_bits(beta != 0.0f ? alpha * acc + beta * ql_ld_bf16(c) : alpha * acc);
    }
}

static ql_status gemm_simt(int64_t M, int64_t N, int64_t K, float alpha, const ql_bf16 *A,
                           int64_t lda, int ta, const ql_bf16 *B, int64_t ldb, int tb, float beta,
                           void *C, ql_dtype ct, int64_t ldc) {
    const int64_t gx = (N + SIMT_TILE - 1) / SIMT_TILE, gy = (M + SIMT_TILE - 1) / SIMT_TILE;
    if (gx > 0x7fffffff || gy > 65535)
        return ql_error(QL_EUNSUPPORTED, "CUDA GEMM fallback: [%lld x %lld] is too large",
                        (long long)M, (long long)N);
    dim3 grid((unsigned)gx, (unsigned)gy), block(SIMT_TILE, SIMT_TILE);
    if (ct == QL_DT_F32) QL_LAUNCH((grid, block, 0, ql_cuda_stream()), k_gemm_simt<true>)
    (M, N, K, alpha, A, lda, ta, B, ldb, tb, beta, C, ldc);
    else QL_LAUNCH((grid, block, 0, ql_cuda_stream()),
                   k_gemm_simt<false>)(M, N, K, alpha, A, lda, ta, B, ldb, tb, beta, C, ldc);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}

/* --- cuBLASLt ------------------------------------------------------------------------------ */

typedef struct lt_descs {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
} lt_descs;

static void descs_destroy(lt_descs *d) {
    if (d->op) cublasLtMatmulDescDestroy(d->op);
    if (d->a) cublasLtMatrixLayoutDestroy(d->a);
    if (d->b) cublasLtMatrixLayoutDestroy(d->b);
    if (d->c) cublasLtMatrixLayoutDestroy(d->c);
}

/* Describes the column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ (see the top). */
static ql_status descs_make(const algo_key *k, lt_descs *d) {
    memset(d, 0, sizeof *d);
    cudaDataType_t ct = k->ctype == QL_DT_F32 ? CUDA_R_32F : CUDA_R_16BF;
    QL_CUBLAS_TRY(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N; /* Lt's A is our B */
    cublasOperation_t opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N; /* Lt's B is our A */
    QL_CUBLAS_TRY(
        cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    QL_CUBLAS_TRY(
        cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    /* Lt A: [N, K] (op N) stored as rows N, or [K, N] stored (op T). */
    QL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->a, CUDA_R_16BF, k->tb ? k->K : k->N,
                                             k->tb ? k->N : k->K, k->ldb));
    /* Lt B: [K, M] (op N), or [M, K] stored (op T). */
    QL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->b, CUDA_R_16BF, k->ta ? k->M : k->K,
                                             k->ta ? k->K : k->M, k->lda));
    QL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->c, ct, k->N, k->M, k->ldc));
    return QL_OK;
}

static ql_status algo_find(const algo_key *k, const lt_descs *d, algo_entry **out) {
    for (int i = 0; i < ALGO_CACHE; i++)
        if (g_cache[i].used && !memcmp(&g_cache[i].key, k, sizeof *k)) {
            *out = &g_cache[i];
            return QL_OK;
        }
    algo_entry *e = &g_cache[g_cache_next];
    g_cache_next = (g_cache_next + 1) % ALGO_CACHE;
    memset(e, 0, sizeof *e);
    e->key = *k;

    cublasLtMatmulPreference_t pref;
    QL_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WORKSPACE_BYTES;
    uint32_t al = (uint32_t)k->align;
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &al, sizeof al);
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(g_lt, d->op, d->a, d->b, d->c, d->c, pref, 1, &res,
                                           &n_res);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && n_res > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
        e->algo = res.algo;
    } else if (s == CUBLAS_STATUS_SUCCESS || s == CUBLAS_STATUS_NOT_SUPPORTED) {
        e->none = 1;
    } else {
        return ql_error(QL_EBACKEND, "cuBLASLt: no algorithm for [%lld x %lld x %lld]: %s: %s",
                        (long long)k->M, (long long)k->N, (long long)k->K, cublasLtGetStatusName(s),
                        cublasLtGetStatusString(s));
    }
    e->used = 1;
    *out = e;
    return QL_OK;
}

static void note_fallback(const algo_key *k) {
    if (g_fallbacks++ > 0) return;
    snprintf(g_first_fallback, sizeof g_first_fallback,
             "[%lld x %lld x %lld]%s%s, lda %lld, ldb %lld, ldc %lld, %s out, %d-byte aligned",
             (long long)k->M, (long long)k->N, (long long)k->K, k->ta ? " A^T" : "",
             k->tb ? " B^T" : "", (long long)k->lda, (long long)k->ldb, (long long)k->ldc,
             k->ctype == (int)QL_DT_F32 ? "fp32" : "bf16", k->align);
}

extern "C" int64_t ql_cuda_gemm_fallbacks(char *first, size_t n) {
    if (first && n) snprintf(first, n, "%s", g_fallbacks ? g_first_fallback : "");
    return g_fallbacks;
}

extern "C" ql_status ql_cuda_gemm_bf16(int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                                       int64_t lda, int trans_a, const void *B, int64_t ldb,
                                       int trans_b, float beta, void *C, ql_dtype c_dtype,
                                       int64_t ldc) {
    QL_ASSERT(c_dtype == QL_DT_F32 || c_dtype == QL_DT_BF16);
    QL_ASSERT(M >= 0 && N >= 0 && K >= 0);
    QL_ASSERT(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N);
    if (M == 0 || N == 0) return QL_OK;
    const ql_bf16 *a = (const ql_bf16 *)A, *b = (const ql_bf16 *)B;
    if (K == 0 || g_force_fallback)
        return gemm_simt(M, N, K, alpha, a, lda, trans_a, b, ldb, trans_b, beta, C, c_dtype, ldc);
    QL_TRY(lt_init());

    algo_key key;
    memset(&key, 0, sizeof key); /* the key is compared with memcmp */
    key.M = M;
    key.N = N;
    key.K = K;
    key.lda = lda;
    key.ldb = ldb;
    key.ldc = ldc;
    key.ta = trans_a;
    key.tb = trans_b;
    key.ctype = (int)c_dtype;
    /* The alignment every row start of A, B and C has. */
    const size_t csz = c_dtype == QL_DT_F32 ? 4 : 2;
    const void *starts[6] = {A, (const char *)A + lda * 2,           B, (const char *)B + ldb * 2,
                             C, (const char *)C + ldc * (int64_t)csz};
    int al = 256;
    for (int i = 0; i < 6; i++)
        if (ptr_align(starts[i]) < al) al = ptr_align(starts[i]);
    key.align = al;

    lt_descs d;
    ql_status st = descs_make(&key, &d);
    algo_entry *e = NULL;
    if (st == QL_OK) st = algo_find(&key, &d, &e);
    if (st == QL_OK && e->none) {
        descs_destroy(&d);
        note_fallback(&key);
        return gemm_simt(M, N, K, alpha, a, lda, trans_a, b, ldb, trans_b, beta, C, c_dtype, ldc);
    }
    if (st == QL_OK) {
        cublasStatus_t s = cublasLtMatmul(g_lt, d.op, &alpha, B, d.a, A, d.b, &beta, C, d.c, C, d.c,
                                          &e->algo, g_workspace, WORKSPACE_BYTES, ql_cuda_stream());
        if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
            /* Refused before launching anything: this shape takes the tiled
             * kernel from now on. */
            e->none = 1;
            descs_destroy(&d);
            note_fallback(&key);
            return gemm_simt(M, N, K, alpha, a, lda, trans_a, b, ldb, trans_b, beta, C, c_dtype,
                             ldc);
        }
        if (s != CUBLAS_STATUS_SUCCESS)
            st = ql_error(QL_EBACKEND,
                          "cuBLASLt: cublasLtMatmul [%lld x %lld x %lld] failed: %s: %s",
                          (long long)M, (long long)N, (long long)K, cublasLtGetStatusName(s),
                          cublasLtGetStatusString(s));
    }
    descs_destroy(&d);
    return st;
}

/* --- the dense frozen matmul ops ------------------------------------------------------------- */

extern "C" ql_status ql_matmul_fwd_cuda(const ql_act *W, const ql_act *x, int64_t T, int64_t in,
                                        int64_t out, ql_act *y) {
    /* y[T,out] = x[T,in]·Wᵀ: W stored [N = out, K = in]. */
    return ql_cuda_gemm(T, out, in, 1.0f, (const ql_bf16 *)x, in, 0, (const ql_bf16 *)W, in, 1,
                        0.0f, y, QL_DT_BF16, out);
}

extern "C" ql_status ql_matmul_bwd_cuda(const ql_act *W, const ql_act *dy, int64_t T, int64_t in,
                                        int64_t out, ql_act *dx) {
    /* dx[T,in] = dy[T,out]·W: W stored [K = out, N = in]. */
    return ql_cuda_gemm(T, in, out, 1.0f, (const ql_bf16 *)dy, out, 0, (const ql_bf16 *)W, in, 0,
                        0.0f, dx, QL_DT_BF16, in);
}
