/* CPU emulator of the cuBLASLt subset kernels/cuda/blas.cu uses (see
 * include/cublasLt.h). Semantics follow NVIDIA's documentation of
 * cublasLtMatmul: every matrix is column-major, its layout describes it as
 * stored (rows, cols, ld >= rows), and
 *     D[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C[m, n].
 *
 * The result is computed on the calling thread, the k sum in order in fp32
 * (as a tensor-core accumulator would), bf16 results rounded to nearest even.
 *
 * Everything a GPU would get away with silently and a caller should not rely
 * on is refused here with a status code: shapes that do not fit the
 * transposes, D sharing memory with A, B or (unless exactly in place) C, an
 * algorithm used with other types, less workspace or less alignment than it
 * was found for, destroyed or unknown objects. */
#include <cublasLt.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

/* --- the objects ---------------------------------------------------------------------- */

struct cublasLtContext {
    int unused;
};

struct cublasLtMatmulDescOpaque_t {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t pointer_mode;
    int32_t transa, transb;
};

struct cublasLtMatrixLayoutOpaque_t {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};

enum { ALIGN_A, ALIGN_B, ALIGN_C, ALIGN_D };

struct cublasLtMatmulPreferenceOpaque_t {
    uint64_t max_workspace;
    uint32_t align[4];
};

namespace {

/* Live objects by address, so that a destroyed or never-created object is
 * reported instead of being read after free. */
enum obj_kind { OBJ_HANDLE = 1, OBJ_DESC, OBJ_LAYOUT, OBJ_PREF };

std::mutex g_live_mu;
std::unordered_map<const void *, obj_kind> g_live;

bool live_add(const void *p, obj_kind k) {
    try {
        std::lock_guard<std::mutex> lk(g_live_mu);
        g_live[p] = k;
        return true;
    } catch (...) {
        return false;
    }
}

bool live_has(const void *p, obj_kind k) {
    if (!p) return false;
    std::lock_guard<std::mutex> lk(g_live_mu);
    auto it = g_live.find(p);
    return it != g_live.end() && it->second == k;
}

bool live_remove(const void *p, obj_kind k) {
    std::lock_guard<std::mutex> lk(g_live_mu);
    auto it = g_live.find(p);
    if (it == g_live.end() || it->second != k) return false;
    g_live.erase(it);
    return true;
}

template <typename T> cublasStatus_t obj_create(T **out, obj_kind k, const T &init) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    T *p = new (std::nothrow) T(init);
    if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
    if (!live_add(p, k)) {
        delete p;
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}

/* Destroying NULL is allowed, like free(); destroying twice is not. */
template <typename T> cublasStatus_t obj_destroy(T *p, obj_kind k) {
    if (!p) return CUBLAS_STATUS_SUCCESS;
    if (!live_remove(p, k)) return CUBLAS_STATUS_INVALID_VALUE;
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

/* --- numbers ---------------------------------------------------------------------------- */

float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* ties to even; overflow carries into inf */
    return (uint16_t)(u >> 16);
}

size_t type_size(cudaDataType_t t) {
    switch (t) {
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    }
    return 0;
}

/* --- the problem ------------------------------------------------------------------------ */

struct problem {
    int64_t m, n, k;
    bool ta, tb; /* op(A) = Aᵀ, op(B) = Bᵀ */
    cudaDataType_t ctype;
};

/* Packs what an algorithm is specific to: the compute, scale and matrix
 * types. Transposes and shapes are the algorithm's to handle. */
uint64_t type_signature(const cublasLtMatmulDescOpaque_t *op, const cublasLtMatrixLayoutOpaque_t *a,
                        const cublasLtMatrixLayoutOpaque_t *b,
                        const cublasLtMatrixLayoutOpaque_t *c,
                        const cublasLtMatrixLayoutOpaque_t *d) {
    const uint64_t f[6] = {(uint64_t)op->compute, (uint64_t)op->scale, (uint64_t)a->type,
                           (uint64_t)b->type,     (uint64_t)c->type,   (uint64_t)d->type};
    uint64_t s = 0;
    for (int i = 0; i < 6; i++) s = (s << 10) | (f[i] & 0x3ff);
    return s;
}

bool layout_ok(const cublasLtMatrixLayoutOpaque_t *l) {
    if (l->rows > INT32_MAX || l->cols > INT32_MAX) return false;
    if (l->ld < 1 || (uint64_t)l->ld < l->rows) return false;
    /* The last element's offset must fit in int64_t bytes. */
    int64_t last;
    if (l->cols > 0 && (__builtin_mul_overflow((int64_t)(l->cols - 1), l->ld, &last) ||
                        __builtin_add_overflow(last, (int64_t)l->rows, &last) ||
                        __builtin_mul_overflow(last, (int64_t)type_size(l->type), &last)))
        return false;
    return true;
}

/* The checks cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul share: the
 * descriptors exist, the types are supported and the shapes fit the ops. */
cublasStatus_t check_problem(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                             cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                             cublasLtMatrixLayout_t d, problem *pr) {
    if (!live_has(op, OBJ_DESC) || !live_has(a, OBJ_LAYOUT) || !live_has(b, OBJ_LAYOUT) ||
        !live_has(c, OBJ_LAYOUT) || !live_has(d, OBJ_LAYOUT))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!layout_ok(a) || !layout_ok(b) || !layout_ok(c) || !layout_ok(d))
        return CUBLAS_STATUS_INVALID_VALUE;

    /* NVIDIA: C and D must agree in type and shape (only their ld may differ). */
    if (c->type != d->type || c->rows != d->rows || c->cols != d->cols)
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool ta = op->transa != CUBLAS_OP_N, tb = op->transb != CUBLAS_OP_N;
    const uint64_t m = d->rows, n = d->cols;
    const uint64_t a_m = ta ? a->cols : a->rows, a_k = ta ? a->rows : a->cols;
    const uint64_t b_k = tb ? b->cols : b->rows, b_n = tb ? b->rows : b->cols;
    if (a_m != m || b_n != n || a_k != b_k) return CUBLAS_STATUS_INVALID_VALUE;

    /* Valid requests this emulator (like blas.cu) does not cover. */
    if (op->compute != CUBLAS_COMPUTE_32F || op->scale != CUDA_R_32F ||
        op->pointer_mode != CUBLASLT_POINTER_MODE_HOST)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type != CUDA_R_16BF || b->type != CUDA_R_16BF ||
        (d->type != CUDA_R_16BF && d->type != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;

    pr->m = (int64_t)m;
    pr->n = (int64_t)n;
    pr->k = (int64_t)a_k;
    pr->ta = ta;
    pr->tb = tb;
    pr->ctype = d->type;
    return CUBLAS_STATUS_SUCCESS;
}

/* --- memory overlap --------------------------------------------------------------------- */

/* A column-major matrix as a set of byte intervals: column j is
 * [base + j·stride, base + j·stride + len). */
struct span {
    uintptr_t base;
    int64_t len, stride, cols;
};

span span_of(const void *p, const cublasLtMatrixLayoutOpaque_t *l) {
    const int64_t es = (int64_t)type_size(l->type);
    return span{(uintptr_t)p, (int64_t)l->rows * es, l->ld * es, (int64_t)l->cols};
}

int64_t floor_div(int64_t a, int64_t b) { /* b > 0 */
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Whether any byte of x is a byte of y. Exact, so that disjoint slices of one
 * buffer (e.g. the column blocks of a fused QKV tensor, which in the
 * column-major view interleave) are not mistaken for overlapping. */
bool spans_overlap(span x, span y) {
    if (x.len == 0 || x.cols == 0 || y.len == 0 || y.cols == 0) return false;
    if (x.cols > y.cols) {
        span t = x;
        x = y;
        y = t;
    }
    /* Offsets relative to y's base; the address space is below 2^63. */
    const int64_t off = (int64_t)(x.base - y.base);
    for (int64_t j = 0; j < x.cols; j++) {
        const int64_t s = off + j * x.stride, e = s + x.len;
        /* y's columns i with i·stride < e and i·stride + len > s. */
        int64_t hi = floor_div(e - 1, y.stride);
        int64_t lo = floor_div(s - y.len, y.stride) + 1;
        if (lo < 0) lo = 0;
        if (hi > y.cols - 1) hi = y.cols - 1;
        if (lo <= hi) return true;
    }
    return false;
}

/* --- the algorithm record --------------------------------------------------------------- */

/* cublasLtMatmulAlgo_t.data as the emulator fills it. */
enum {
    ALGO_MAGIC,     /* ALGO_MAGIC_VALUE: it came from cublasLtMatmulAlgoGetHeuristic */
    ALGO_TYPES,     /* type_signature() of the problem it was found for */
    ALGO_WORKSPACE, /* workspace bytes it needs */
    ALGO_ALIGN,     /* the four MIN_ALIGNMENT preferences, 16 bits each (log2) */
};
const uint64_t ALGO_MAGIC_VALUE = 0x716c656d754c7431ull;

/* The algorithm "uses" this much of the workspace the preference allows, and
 * cublasLtMatmul scribbles over it, so that a caller who shares the workspace
 * with live data, or passes less than the heuristic was told, finds out. */
const uint64_t WORKSPACE_USED_MAX = (uint64_t)1 << 20;

int log2_floor(uint32_t v) {
    int l = 0;
    while (v > 1) {
        v >>= 1;
        l++;
    }
    return l;
}

/* --- the product ------------------------------------------------------------------------ */

/* Rows [r0, r1) of op(X) as floats, row after row, so the inner product runs
 * over contiguous memory whatever the transposes. Element p of row r is
 * X[r + p·ld] when X is not transposed, X[p + r·ld] when it is. */
void pack_rows(const uint16_t *x, int64_t ld, bool trans, int64_t r0, int64_t r1, int64_t k,
               float *out) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t p = 0; p < k; p++)
            out[(r - r0) * k + p] = bf16_to_float(trans ? x[p + r * ld] : x[r + p * ld]);
}

/* Blocks of op(A) rows and op(B) columns bound the packed copies to
 * 2·BLOCK·k floats, whatever m and n are (an lm_head's n is the vocabulary). */
const int64_t BLOCK = 64;

void matmul_run(const problem &pr, float alpha, const uint16_t *a, int64_t lda, const uint16_t *b,
                int64_t ldb, float beta, const void *c, int64_t ldc, void *d, int64_t ldd,
                float *abuf, float *bbuf) {
    const int64_t k = pr.k;
    for (int64_t i0 = 0; i0 < pr.m; i0 += BLOCK) {
        const int64_t i1 = i0 + BLOCK < pr.m ? i0 + BLOCK : pr.m;
        pack_rows(a, lda, pr.ta, i0, i1, k, abuf);
        for (int64_t j0 = 0; j0 < pr.n; j0 += BLOCK) {
            const int64_t j1 = j0 + BLOCK < pr.n ? j0 + BLOCK : pr.n;
            /* Column j of op(B) is row j of op(B)ᵀ: B read transposed when
             * op(B) does not transpose it. */
            pack_rows(b, ldb, !pr.tb, j0, j1, k, bbuf);
            for (int64_t j = j0; j < j1; j++) {
                const float *bj = bbuf + (j - j0) * k;
                for (int64_t i = i0; i < i1; i++) {
                    const float *ai = abuf + (i - i0) * k;
                    float acc = 0.0f;
                    for (int64_t p = 0; p < k; p++) acc += ai[p] * bj[p];
                    float r = alpha * acc;
                    /* beta == 0: C is not read, so NaN or garbage there
                     * cannot leak into D. */
                    if (pr.ctype == CUDA_R_32F) {
                        if (beta != 0.0f) r = alpha * acc + beta * ((const float *)c)[i + j * ldc];
                        ((float *)d)[i + j * ldd] = r;
                    } else {
                        if (beta != 0.0f)
                            r = alpha * acc +
                                beta * bf16_to_float(((const uint16_t *)c)[i + j * ldc]);
                        ((uint16_t *)d)[i + j * ldd] = float_to_bf16(r);
                    }
                }
            }
        }
    }
}

} // namespace

/* --- the API ---------------------------------------------------------------------------- */

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *lightHandle) {
    return obj_create(lightHandle, OBJ_HANDLE, cublasLtContext{0});
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
    if (!lightHandle || !live_remove(lightHandle, OBJ_HANDLE)) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete lightHandle;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasLtGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the handle is not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "an invalid value was passed (emulator: a NULL or destroyed object, shapes that "
               "do not fit the transposes, overlapping output, or an algorithm that does not fit)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "the device architecture is not supported";
    case CUBLAS_STATUS_MAPPING_ERROR: return "access to GPU memory failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "the requested functionality is not supported (emulator: bf16 A/B, bf16 or fp32 "
               "C/D, CUBLAS_COMPUTE_32F, fp32 host scalars only)";
    }
    return "unknown status";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc,
                                        cublasComputeType_t computeType, cudaDataType_t scaleType) {
    /* Unsupported compute or scale types are reported where they are used,
     * as NOT_SUPPORTED, like a library without a kernel for them. */
    return obj_create(
        matmulDesc, OBJ_DESC,
        cublasLtMatmulDescOpaque_t{computeType, scaleType, CUBLASLT_POINTER_MODE_HOST, 0, 0});
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
    return obj_destroy(matmulDesc, OBJ_DESC);
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t sizeInBytes) {
    if (!live_has(matmulDesc, OBJ_DESC) || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    /* Every attribute handled here is a 32-bit value; NVIDIA's library also
     * refuses a size that is not the attribute's. */
    int32_t v;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
    case CUBLASLT_MATMUL_DESC_TRANSC:
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (sizeInBytes != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: matmulDesc->compute = (cublasComputeType_t)v; break;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: matmulDesc->scale = (cudaDataType_t)v; break;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
        if (v != CUBLASLT_POINTER_MODE_HOST && v != CUBLASLT_POINTER_MODE_DEVICE)
            return CUBLAS_STATUS_INVALID_VALUE;
        matmulDesc->pointer_mode = v;
        break;
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        /* For real types the conjugate transpose is the transpose. */
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T && v != CUBLAS_OP_C)
            return CUBLAS_STATUS_INVALID_VALUE;
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? matmulDesc->transa : matmulDesc->transb) = v;
        break;
    case CUBLASLT_MATMUL_DESC_TRANSC:
        if (v != CUBLAS_OP_N) return CUBLAS_STATUS_NOT_SUPPORTED;
        break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (v != CUBLASLT_EPILOGUE_DEFAULT) return CUBLAS_STATUS_NOT_SUPPORTED;
        break;
    default: break;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    /* ld >= rows is checked where the layout is used, as NVIDIA documents it
     * for the operation; a negative ld is never supported. */
    if (type_size(type) == 0 || ld < 0) return CUBLAS_STATUS_INVALID_VALUE;
    return obj_create(matLayout, OBJ_LAYOUT, cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld});
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
    return obj_destroy(matLayout, OBJ_LAYOUT);
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    /* NVIDIA's defaults: no workspace, 256-byte alignment of every matrix. */
    return obj_create(pref, OBJ_PREF, cublasLtMatmulPreferenceOpaque_t{0, {256, 256, 256, 256}});
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    return obj_destroy(pref, OBJ_PREF);
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t sizeInBytes) {
    if (!live_has(pref, OBJ_PREF) || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        if (sizeInBytes != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&pref->max_workspace, buf, sizeof(uint64_t));
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
        uint32_t v;
        if (sizeInBytes != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int *returnAlgoCount) {
    if (!live_has(lightHandle, OBJ_HANDLE)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!returnAlgoCount) return CUBLAS_STATUS_INVALID_VALUE;
    *returnAlgoCount = 0;
    if (!live_has(preference, OBJ_PREF) || requestedAlgoCount < 1 || !heuristicResultsArray)
        return CUBLAS_STATUS_INVALID_VALUE;
    problem pr;
    cublasStatus_t s = check_problem(operationDesc, Adesc, Bdesc, Cdesc, Ddesc, &pr);
    if (s != CUBLAS_STATUS_SUCCESS) return s;

    /* QL_EMU_CUBLASLT_MIN_ALIGN=N (bytes) plays a library whose kernels all
     * need N-byte aligned operands: no algorithm for a request that promises
     * less (tests of the callers' fallback). */
    const char *min_align = getenv("QL_EMU_CUBLASLT_MIN_ALIGN");
    if (min_align)
        for (int i = 0; i < 4; i++)
            if (preference->align[i] < strtoul(min_align, NULL, 10)) return CUBLAS_STATUS_SUCCESS;

    /* One algorithm, for any alignment: the CPU needs none, but the
     * promised alignment is recorded and held against the call. */
    cublasLtMatmulHeuristicResult_t *r = &heuristicResultsArray[0];
    memset(r, 0, sizeof *r);
    const uint64_t ws = preference->max_workspace < WORKSPACE_USED_MAX ? preference->max_workspace
                                                                       : WORKSPACE_USED_MAX;
    r->algo.data[ALGO_MAGIC] = ALGO_MAGIC_VALUE;
    r->algo.data[ALGO_TYPES] = type_signature(operationDesc, Adesc, Bdesc, Cdesc, Ddesc);
    r->algo.data[ALGO_WORKSPACE] = ws;
    for (int i = 0; i < 4; i++)
        r->algo.data[ALGO_ALIGN] |= (uint64_t)log2_floor(preference->align[i]) << (16 * i);
    r->workspaceSize = (size_t)ws;
    r->state = CUBLAS_STATUS_SUCCESS;
    r->wavesCount = 1.0f;
    *returnAlgoCount = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                              const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc,
                              const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspaceSizeInBytes, cudaStream_t stream) {
    ql_emu_stream_land(stream); /* after the stream's earlier work */
    ql_emu_count_matmul();
    ql_emu_device_scope open;
    if (!live_has(lightHandle, OBJ_HANDLE)) return CUBLAS_STATUS_NOT_INITIALIZED;
    problem pr;
    cublasStatus_t s = check_problem(computeDesc, Adesc, Bdesc, Cdesc, Ddesc, &pr);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    /* NVIDIA documents no exception for C when beta == 0, so none here. */
    if (!alpha || !beta || !A || !B || !C || !D) return CUBLAS_STATUS_INVALID_VALUE;
    if (workspaceSizeInBytes > 0 && !workspace) return CUBLAS_STATUS_INVALID_VALUE;

    /* NULL algo: the library picks one itself, with no promises to keep. */
    uint64_t ws_used = 0;
    if (algo) {
        if (algo->data[ALGO_MAGIC] != ALGO_MAGIC_VALUE ||
            algo->data[ALGO_TYPES] != type_signature(computeDesc, Adesc, Bdesc, Cdesc, Ddesc) ||
            algo->data[ALGO_WORKSPACE] > workspaceSizeInBytes)
            return CUBLAS_STATUS_INVALID_VALUE;
        const void *ptrs[4] = {A, B, C, D};
        for (int i = 0; i < 4; i++) {
            const uint64_t al = (uint64_t)1 << ((algo->data[ALGO_ALIGN] >> (16 * i)) & 0xffff);
            if ((uintptr_t)ptrs[i] % al) return CUBLAS_STATUS_INVALID_VALUE;
        }
        ws_used = algo->data[ALGO_WORKSPACE];
    }

    float fa, fb;
    memcpy(&fa, alpha, sizeof fa);
    memcpy(&fb, beta, sizeof fb);

    /* Memory D shares with an input would be read after being written on a
     * GPU, in an order nobody promises. In place is fine only as NVIDIA
     * defines it: C == D with the same layout. */
    const span sd = span_of(D, Ddesc);
    if (spans_overlap(sd, span_of(A, Adesc)) || spans_overlap(sd, span_of(B, Bdesc)))
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool in_place = C == D && Cdesc->ld == Ddesc->ld;
    if (fb != 0.0f && !in_place && spans_overlap(sd, span_of(C, Cdesc)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (ws_used > 0) {
        const span sw{(uintptr_t)workspace, (int64_t)ws_used, (int64_t)ws_used, 1};
        if (spans_overlap(sw, sd) || spans_overlap(sw, span_of(A, Adesc)) ||
            spans_overlap(sw, span_of(B, Bdesc)) ||
            (fb != 0.0f && spans_overlap(sw, span_of(C, Cdesc))))
            return CUBLAS_STATUS_INVALID_VALUE;
    }

    if (pr.m == 0 || pr.n == 0) return CUBLAS_STATUS_SUCCESS;
    if (ws_used > 0) memset(workspace, 0xa5, (size_t)ws_used);

    std::vector<float> abuf, bbuf;
    try {
        abuf.resize((size_t)(BLOCK * pr.k));
        bbuf.resize((size_t)(BLOCK * pr.k));
    } catch (const std::bad_alloc &) {
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    matmul_run(pr, fa, (const uint16_t *)A, Adesc->ld, (const uint16_t *)B, Bdesc->ld, fb, C,
               Cdesc->ld, D, Ddesc->ld, abuf.data(), bbuf.data());
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
