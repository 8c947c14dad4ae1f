/* Checks the cuBLASLt emulator (emu_cublaslt.cpp) against a reference that
 * thinks in rows: op(A) and op(B) are drawn first as dense row-major arrays,
 * then stored into column-major buffers the way the layouts describe, and the
 * expected D comes from the dense arrays in double. Inputs are small dyadic
 * numbers, so the fp32 sums are exact and fp32 results must match bit for
 * bit; bf16 results must equal this file's own round-to-nearest-even of the
 * exact value. Padding between rows and ld is NaN in A and B (a read of it
 * poisons the result) and a sentinel in D (a write to it is caught).
 *
 * Build and run (from the repository root):
 *   g++ -std=c++17 -O1 -Wall -I kernels/cuda/emu/include kernels/cuda/emu/emu_cublaslt.cpp \
 *       kernels/cuda/emu/test_emu_cublaslt.cpp -o test_emu_cublaslt && ./test_emu_cublaslt
 * Exit status 0 when every check passes. */
#include <cublasLt.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <vector>

static int g_checks, g_fails;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            g_fails++;                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_ST(call, want)                                                                       \
    do {                                                                                           \
        cublasStatus_t got_ = (call);                                                              \
        CHECK(got_ == (want), "%s returned %s, want %s", #call, cublasLtGetStatusName(got_),       \
              cublasLtGetStatusName(want));                                                        \
    } while (0)

/* --- bf16, written independently of the emulator ---------------------------------------- */

static const uint16_t BF16_NAN = 0x7fc0;
static const uint16_t BF16_SENTINEL = 0x7f81; /* a signalling NaN no computation produces */

static uint16_t bf16_exact(double v) {
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((double)f != v || (u & 0xffff)) {
        fprintf(stderr, "test bug: %g is not a bf16 value\n", v);
        exit(2);
    }
    return (uint16_t)(u >> 16);
}

static double bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Nearest bf16 (8 significant bits) to a finite, normal-range v, ties to the
 * even significand: from the binary exponent, not from bit tricks. */
static uint16_t bf16_round(double v) {
    if (v == 0) return bf16_exact(v);
    int e;
    frexp(v, &e); /* |v| = f·2^e, f in [0.5, 1) */
    const double ulp = ldexp(1.0, e - 8);
    const double q = v / ulp, lo = floor(q);
    double r = lo;
    if (q - lo > 0.5 || (q - lo == 0.5 && fmod(lo, 2.0) != 0)) r = lo + 1;
    return bf16_exact(r * ulp);
}

/* --- dense reference ------------------------------------------------------------------- */

typedef std::vector<std::vector<double>> dense; /* [row][col] */

static dense dense_make(int64_t rows, int64_t cols) {
    return dense((size_t)rows, std::vector<double>((size_t)cols, 0.0));
}

static std::mt19937_64 g_rng(20240611);

/* Multiples of 1/32 in [-2, 2]: exact in bf16, and their products and sums
 * stay exact in fp32 for the sizes used here. */
static double rand_dyadic() {
    return (double)(int)std::uniform_int_distribution<int>(-64, 64)(g_rng) / 32.0;
}

static int64_t rand_int(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(g_rng);
}

/* A column-major buffer of rows x cols with leading dimension ld, holding
 * `stored` (the matrix as stored); padding is `pad`. */
static std::vector<uint16_t> store_bf16(const dense &stored, int64_t rows, int64_t cols, int64_t ld,
                                        uint16_t pad) {
    std::vector<uint16_t> buf((size_t)(ld * (cols > 0 ? cols : 1)), pad);
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) buf[(size_t)(c * ld + r)] = bf16_exact(stored[r][c]);
    return buf;
}

static dense transpose(const dense &x, int64_t rows, int64_t cols) {
    dense t = dense_make(cols, rows);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) t[c][r] = x[r][c];
    return t;
}

/* --- one product through the public API ------------------------------------------------ */

struct lt {
    cublasLtHandle_t h = nullptr;
    lt() {
        if (cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "cublasLtCreate failed\n");
            exit(2);
        }
    }
    ~lt() { cublasLtDestroy(h); }
};

struct descs {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~descs() {
        cublasLtMatmulDescDestroy(op);
        cublasLtMatrixLayoutDestroy(a);
        cublasLtMatrixLayoutDestroy(b);
        cublasLtMatrixLayoutDestroy(c);
        cublasLtMatrixLayoutDestroy(d);
        cublasLtMatmulPreferenceDestroy(pref);
    }
};

struct shape {
    cublasOperation_t ta, tb;
    int64_t a_rows, a_cols, lda, b_rows, b_cols, ldb, c_rows, c_cols, ldc, d_rows, d_cols, ldd;
    cudaDataType_t atype, btype, ctype, dtype;
};

/* Builds the descriptors; returns the first failing status. */
static cublasStatus_t descs_build(const shape &s, descs *d, uint32_t align = 2,
                                  uint64_t max_ws = 0) {
    cublasStatus_t st;
    if ((st = cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F))) return st;
    int32_t ta = s.ta, tb = s.tb;
    if ((st = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)))
        return st;
    if ((st = cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)))
        return st;
    if ((st = cublasLtMatrixLayoutCreate(&d->a, s.atype, s.a_rows, s.a_cols, s.lda))) return st;
    if ((st = cublasLtMatrixLayoutCreate(&d->b, s.btype, s.b_rows, s.b_cols, s.ldb))) return st;
    if ((st = cublasLtMatrixLayoutCreate(&d->c, s.ctype, s.c_rows, s.c_cols, s.ldc))) return st;
    if ((st = cublasLtMatrixLayoutCreate(&d->d, s.dtype, s.d_rows, s.d_cols, s.ldd))) return st;
    if ((st = cublasLtMatmulPreferenceCreate(&d->pref))) return st;
    if ((st = cublasLtMatmulPreferenceSetAttribute(
             d->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof max_ws)))
        return st;
    const cublasLtMatmulPreferenceAttributes_t al[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        if ((st = cublasLtMatmulPreferenceSetAttribute(d->pref, al[i], &align, sizeof align)))
            return st;
    return CUBLAS_STATUS_SUCCESS;
}

/* Heuristic then matmul, as blas.cu does; returns the first failing status. */
static cublasStatus_t run_gemm(const lt &L, const descs &d, float alpha, const void *A,
                               const void *B, float beta, const void *C, void *D,
                               void *ws = nullptr, size_t ws_bytes = 0) {
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, d.pref, 1, &res, &n);
    if (st) return st;
    if (n != 1 || res.state != CUBLAS_STATUS_SUCCESS) return CUBLAS_STATUS_INTERNAL_ERROR;
    return cublasLtMatmul(L.h, d.op, &alpha, A, d.a, B, d.b, &beta, C, d.c, D, d.d, &res.algo, ws,
                          ws_bytes, nullptr);
}

/* --- random products ------------------------------------------------------------------- */

/* Counts the elements of D (column-major, ldd) that differ from the dense
 * expectation, plus padding elements that changed. */
static int64_t count_mismatches(const dense &want, int64_t m, int64_t n, const void *D, int64_t ldd,
                                cudaDataType_t dtype, bool check_pad) {
    int64_t bad = 0;
    for (int64_t j = 0; j < n; j++)
        for (int64_t r = 0; r < ldd; r++) {
            const size_t at = (size_t)(j * ldd + r);
            if (r >= m) {
                if (!check_pad) continue;
                bool pad_ok = dtype == CUDA_R_32F ? ((const uint32_t *)D)[at] == 0x7f800001u
                                                  : ((const uint16_t *)D)[at] == BF16_SENTINEL;
                bad += !pad_ok;
            } else if (dtype == CUDA_R_32F) {
                const float got = ((const float *)D)[at];
                bad += !(got == (float)want[r][j] && (double)(float)want[r][j] == want[r][j]);
            } else {
                bad += ((const uint16_t *)D)[at] != bf16_round(want[r][j]);
            }
        }
    return bad;
}

struct case_cfg {
    cublasOperation_t ta, tb;
    cudaDataType_t dtype;
    float alpha, beta;
    bool in_place;
};

static void random_case(const lt &L, const case_cfg &cfg, int trial, bool large = false) {
    /* Large enough, when asked, to cross the emulator's 64-row blocks. */
    const int64_t m = large ? rand_int(65, 150) : rand_int(1, 37);
    const int64_t n = large ? rand_int(65, 150) : rand_int(1, 29), k = rand_int(1, 45);
    const bool ta = cfg.ta != CUBLAS_OP_N, tb = cfg.tb != CUBLAS_OP_N;

    /* op(A) [m, k] and op(B) [k, n], row-major, drawn first. */
    dense opa = dense_make(m, k), opb = dense_make(k, n), c = dense_make(m, n);
    for (auto &row : opa)
        for (double &v : row) v = rand_dyadic();
    for (auto &row : opb)
        for (double &v : row) v = rand_dyadic();
    for (auto &row : c)
        for (double &v : row) v = rand_dyadic();

    /* What is stored is op(X) itself, or its transpose when the op
     * transposes it back. */
    const dense sa = ta ? transpose(opa, m, k) : opa, sb = tb ? transpose(opb, k, n) : opb;
    const int64_t sa_rows = ta ? k : m, sa_cols = ta ? m : k;
    const int64_t sb_rows = tb ? n : k, sb_cols = tb ? k : n;
    const int64_t lda = sa_rows + rand_int(0, 5), ldb = sb_rows + rand_int(0, 5);
    const int64_t ldd = m + rand_int(0, 5), ldc = cfg.in_place ? ldd : m + rand_int(0, 5);
    std::vector<uint16_t> A = store_bf16(sa, sa_rows, sa_cols, lda, BF16_NAN);
    std::vector<uint16_t> B = store_bf16(sb, sb_rows, sb_cols, ldb, BF16_NAN);

    /* D and C buffers; with beta == 0 every C element is NaN. */
    const bool f32 = cfg.dtype == CUDA_R_32F;
    const size_t es = f32 ? 4 : 2;
    std::vector<unsigned char> Dbuf((size_t)(ldd * n) * es), Cbuf((size_t)(ldc * n) * es);
    for (int64_t j = 0; j < n; j++)
        for (int64_t r = 0; r < ldd; r++) {
            const size_t at = (size_t)(j * ldd + r);
            if (f32) {
                const uint32_t s = 0x7f800001u;
                memcpy(&Dbuf[at * 4], &s, 4);
            } else {
                memcpy(&Dbuf[at * 2], &BF16_SENTINEL, 2);
            }
        }
    unsigned char *Cp = cfg.in_place ? Dbuf.data() : Cbuf.data();
    for (int64_t j = 0; j < n; j++)
        for (int64_t r = 0; r < m; r++) {
            const size_t at = (size_t)(j * ldc + r);
            const double v = cfg.beta == 0 ? NAN : c[r][j];
            if (f32) {
                const float f = (float)v;
                memcpy(&Cp[at * 4], &f, 4);
            } else {
                const uint16_t h = cfg.beta == 0 ? BF16_NAN : bf16_exact(v);
                memcpy(&Cp[at * 2], &h, 2);
            }
        }

    dense want = dense_make(m, n);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t p = 0; p < k; p++) acc += opa[i][p] * opb[p][j];
            want[i][j] = (double)cfg.alpha * acc + (cfg.beta == 0 ? 0.0 : cfg.beta * c[i][j]);
        }

    const shape s{cfg.ta,  cfg.tb, sa_rows,     sa_cols,     lda,       sb_rows,
                  sb_cols, ldb,    m,           n,           ldc,       m,
                  n,       ldd,    CUDA_R_16BF, CUDA_R_16BF, cfg.dtype, cfg.dtype};
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(run_gemm(L, d, cfg.alpha, A.data(), B.data(), cfg.beta, Cp, Dbuf.data()),
             CUBLAS_STATUS_SUCCESS);
    const int64_t bad = count_mismatches(want, m, n, Dbuf.data(), ldd, cfg.dtype, true);
    CHECK(bad == 0,
          "trial %d: %lld of %lld elements wrong (m %lld n %lld k %lld, op %d/%d, %s, alpha %g "
          "beta %g, %s)",
          trial, (long long)bad, (long long)(m * n), (long long)m, (long long)n, (long long)k,
          (int)cfg.ta, (int)cfg.tb, f32 ? "f32" : "bf16", cfg.alpha, cfg.beta,
          cfg.in_place ? "in place" : "out of place");
}

static void test_random(const lt &L) {
    const cublasOperation_t ops[2] = {CUBLAS_OP_N, CUBLAS_OP_T};
    const cudaDataType_t outs[2] = {CUDA_R_32F, CUDA_R_16BF};
    const float alphas[2] = {1.0f, 0.75f}, betas[3] = {0.0f, 1.0f, -1.5f};
    int trial = 0;
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops)
            for (cudaDataType_t dt : outs)
                for (float alpha : alphas)
                    for (float beta : betas)
                        for (int ip = 0; ip < 2; ip++)
                            for (int rep = 0; rep < 3; rep++)
                                random_case(L, case_cfg{ta, tb, dt, alpha, beta, ip != 0}, trial++);
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops)
            for (cudaDataType_t dt : outs)
                random_case(L, case_cfg{ta, tb, dt, 0.75f, -1.5f, dt == CUDA_R_32F}, trial++, true);
}

/* CUBLAS_OP_C is the transpose for real types. */
static void test_op_c(const lt &L) {
    for (int i = 0; i < 4; i++)
        random_case(L,
                    case_cfg{CUBLAS_OP_C, i & 1 ? CUBLAS_OP_C : CUBLAS_OP_N, CUDA_R_32F, 0.75f,
                             -1.5f, false},
                    1000 + i);
}

/* The comparison must be able to fail: one flipped bit, one product with the
 * transposes swapped. */
static void test_negative_control(const lt &L) {
    const int64_t m = 6, n = 6, k = 6;
    dense a = dense_make(m, k), b = dense_make(k, n), want = dense_make(m, n);
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++) a[i][p] = (double)((i * 7 + p * 3) % 11 - 5) / 4;
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++) b[p][j] = (double)((p * 5 + j) % 7 - 3) / 8;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t p = 0; p < k; p++) want[i][j] += a[i][p] * b[p][j];
    std::vector<uint16_t> A = store_bf16(a, m, k, m, 0), B = store_bf16(b, k, n, k, 0);
    std::vector<float> D((size_t)(m * n)), C((size_t)(m * n), 0.0f);
    shape s{CUBLAS_OP_N, CUBLAS_OP_N, m, k, m, k,           n,           k,          m,
            n,           m,           m, n, m, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F};
    {
        descs d;
        CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, 1.0f, A.data(), B.data(), 0.0f, C.data(), D.data()),
                 CUBLAS_STATUS_SUCCESS);
        CHECK(count_mismatches(want, m, n, D.data(), m, CUDA_R_32F, false) == 0, "baseline");
        D[7] = nextafterf(D[7], 1e30f);
        CHECK(count_mismatches(want, m, n, D.data(), m, CUDA_R_32F, false) == 1,
              "a flipped bit goes unnoticed");
    }
    s.ta = CUBLAS_OP_T;
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(run_gemm(L, d, 1.0f, A.data(), B.data(), 0.0f, C.data(), D.data()),
             CUBLAS_STATUS_SUCCESS);
    CHECK(count_mismatches(want, m, n, D.data(), m, CUDA_R_32F, false) > 0,
          "the transpose makes no difference");
}

/* Non-dyadic values: the emulator sums in fp32, so compare within fp32
 * rounding of the sum plus one bf16 rounding of the result. */
static void test_general_values(const lt &L) {
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (int rep = 0; rep < 8; rep++) {
        const int64_t m = rand_int(1, 20), n = rand_int(1, 20), k = rand_int(100, 400);
        const bool f32 = rep & 1;
        const float alpha = 0.37f, beta = 0.61f;
        dense a = dense_make(m, k), b = dense_make(k, n), c = dense_make(m, n);
        /* Truncating a double's float to 16 bits gives a bf16 value. */
        auto rnd = [&]() {
            float f = (float)u(g_rng);
            uint32_t x;
            memcpy(&x, &f, 4);
            x &= 0xffff0000u;
            memcpy(&f, &x, 4);
            return (double)f;
        };
        for (auto &r : a)
            for (double &v : r) v = rnd();
        for (auto &r : b)
            for (double &v : r) v = rnd();
        for (auto &r : c)
            for (double &v : r) v = rnd();
        std::vector<uint16_t> A = store_bf16(a, m, k, m, BF16_NAN),
                              B = store_bf16(b, k, n, k, BF16_NAN);
        std::vector<float> Cf((size_t)(m * n)), Df((size_t)(m * n));
        std::vector<uint16_t> Cb((size_t)(m * n)), Db((size_t)(m * n));
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                Cf[(size_t)(j * m + i)] = (float)c[i][j];
                Cb[(size_t)(j * m + i)] = bf16_exact(c[i][j]);
            }
        const cudaDataType_t dt = f32 ? CUDA_R_32F : CUDA_R_16BF;
        shape s{CUBLAS_OP_N, CUBLAS_OP_N, m, k, m, k,           n,           k,  m,
                n,           m,           m, n, m, CUDA_R_16BF, CUDA_R_16BF, dt, dt};
        descs d;
        CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, alpha, A.data(), B.data(), beta,
                          f32 ? (void *)Cf.data() : (void *)Cb.data(),
                          f32 ? (void *)Df.data() : (void *)Db.data()),
                 CUBLAS_STATUS_SUCCESS);
        int64_t bad = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0, mag = 0;
                for (int64_t p = 0; p < k; p++) {
                    acc += a[i][p] * b[p][j];
                    mag += fabs(a[i][p] * b[p][j]);
                }
                const double want = alpha * acc + beta * c[i][j];
                const double got =
                    f32 ? Df[(size_t)(j * m + i)] : bf16_value(Db[(size_t)(j * m + i)]);
                const double tol = (double)k * ldexp(1.0, -23) * alpha * mag +
                                   ldexp(1.0, -22) * (fabs(want) + beta * fabs(c[i][j])) +
                                   (f32 ? 0.0 : ldexp(1.0, -8) * fabs(want)) + 1e-30;
                bad += !(fabs(got - want) <= tol);
            }
        CHECK(bad == 0, "general values rep %d: %lld elements out of tolerance", rep,
              (long long)bad);
    }
}

/* Round to nearest even on the bf16 output, exactly at the ties. */
static void test_bf16_rounding(const lt &L) {
    const float alphas[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
                             -(1.0f + 3 * 0x1p-8f)};
    const uint16_t want[4] = {0x3f80, 0x3f82, 0x3f81, 0xbf82};
    std::vector<uint16_t> A{bf16_exact(1.0)}, B{bf16_exact(1.0)}, C{BF16_NAN}, D{0};
    shape s{CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, 1,           1,           1,           1,
            1,           1,           1, 1, 1, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF};
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    for (int i = 0; i < 4; i++) {
        CHECK_ST(run_gemm(L, d, alphas[i], A.data(), B.data(), 0.0f, C.data(), D.data()),
                 CUBLAS_STATUS_SUCCESS);
        CHECK(D[0] == want[i], "alpha %.9g gave 0x%04x, want 0x%04x", alphas[i], D[0], want[i]);
    }
    /* With beta != 0 a NaN in C is read, and shows. */
    CHECK_ST(run_gemm(L, d, 1.0f, A.data(), B.data(), 1.0f, C.data(), D.data()),
             CUBLAS_STATUS_SUCCESS);
    CHECK((D[0] & 0x7fff) > 0x7f80, "NaN C with beta 1 gave 0x%04x", D[0]);
}

/* --- the row-major mapping of kernels/cuda/blas.cu ---------------------------------------- */

/* Row-major C[M,N] = op(A)·op(B) run as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ
 * with the operands swapped, checked against a row-major loop. */
static void test_row_major_mapping(const lt &L) {
    for (int rep = 0; rep < 16; rep++) {
        const int ta = rep & 1, tb = (rep >> 1) & 1;
        const int64_t M = rand_int(1, 23), N = rand_int(1, 23), K = rand_int(1, 23);
        /* Row-major storage: A is [M,K] (or [K,M] when ta), row stride lda. */
        const int64_t lda = (ta ? M : K) + rand_int(0, 3), ldb = (tb ? K : N) + rand_int(0, 3);
        const int64_t ldc = N + rand_int(0, 3);
        std::vector<uint16_t> A((size_t)((ta ? K : M) * lda)), B((size_t)((tb ? N : K) * ldb));
        for (uint16_t &v : A) v = bf16_exact(rand_dyadic());
        for (uint16_t &v : B) v = bf16_exact(rand_dyadic());
        std::vector<float> C((size_t)(M * ldc), 0.0f);
        dense want = dense_make(N, M); /* column-major view: [n][m] of Cᵀ, i.e. want[j][i] */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t p = 0; p < K; p++) {
                    const double a =
                        bf16_value(ta ? A[(size_t)(p * lda + i)] : A[(size_t)(i * lda + p)]);
                    const double b =
                        bf16_value(tb ? B[(size_t)(j * ldb + p)] : B[(size_t)(p * ldb + j)]);
                    acc += a * b;
                }
                want[j][i] = acc;
            }
        /* Lt's A is our B: op(B)ᵀ [N,K]; Lt's B is our A: op(A)ᵀ [K,M]. */
        shape s{tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                tb ? K : N,
                tb ? N : K,
                ldb,
                ta ? M : K,
                ta ? K : M,
                lda,
                N,
                M,
                ldc,
                N,
                M,
                ldc,
                CUDA_R_16BF,
                CUDA_R_16BF,
                CUDA_R_32F,
                CUDA_R_32F};
        descs d;
        CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, 1.0f, B.data(), A.data(), 0.0f, C.data(), C.data()),
                 CUBLAS_STATUS_SUCCESS);
        CHECK(count_mismatches(want, N, M, C.data(), ldc, CUDA_R_32F, false) == 0,
              "row-major rep %d (M %lld N %lld K %lld ta %d tb %d)", rep, (long long)M,
              (long long)N, (long long)K, ta, tb);
    }
}

/* --- refusals --------------------------------------------------------------------------- */

struct base {
    /* m 5, n 4, k 3, both ops N, bf16 in, fp32 out; buffers 256-aligned. */
    shape s{CUBLAS_OP_N, CUBLAS_OP_N, 5, 3, 5, 3,           4,           3,          5,
            4,           5,           5, 4, 5, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F};
    uint16_t *A, *B;
    float *C, *D;
    base() {
        A = (uint16_t *)aligned_alloc(256, 4096);
        B = (uint16_t *)aligned_alloc(256, 4096);
        C = (float *)aligned_alloc(256, 4096);
        D = (float *)aligned_alloc(256, 4096);
        memset(A, 0, 4096);
        memset(B, 0, 4096);
        memset(C, 0, 4096);
        memset(D, 0, 4096);
    }
    ~base() {
        free(A);
        free(B);
        free(C);
        free(D);
    }
};

/* Both the heuristic and the matmul (with a NULL algo, as the heuristic
 * refuses to give one) must return `want` for shape s. */
static void expect_refused(const lt &L, const shape &s, cublasStatus_t want, const char *what) {
    base bf;
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t res;
    int n = -1;
    const cublasStatus_t h =
        cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, d.pref, 1, &res, &n);
    CHECK(h == want && n == 0, "%s: heuristic gave %s with %d results, want %s", what,
          cublasLtGetStatusName(h), n, cublasLtGetStatusName(want));
    const float one = 1.0f;
    const cublasStatus_t m = cublasLtMatmul(L.h, d.op, &one, bf.A, d.a, bf.B, d.b, &one, bf.C, d.c,
                                            bf.D, d.d, nullptr, nullptr, 0, nullptr);
    CHECK(m == want, "%s: matmul gave %s, want %s", what, cublasLtGetStatusName(m),
          cublasLtGetStatusName(want));
}

static void test_refusals(const lt &L) {
    const cublasStatus_t INV = CUBLAS_STATUS_INVALID_VALUE, NS = CUBLAS_STATUS_NOT_SUPPORTED;
    base b0;
    {
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, 1.0f, b0.A, b0.B, 0.0f, b0.C, b0.D), CUBLAS_STATUS_SUCCESS);
    }
    shape s;
    s = b0.s, s.a_rows = 4, s.lda = 4;
    expect_refused(L, s, INV, "op N: A rows != m");
    s = b0.s, s.ta = CUBLAS_OP_T;
    expect_refused(L, s, INV, "op T on an A stored [m, k]");
    s = b0.s, s.ta = CUBLAS_OP_T, s.a_rows = 3, s.a_cols = 5, s.lda = 3;
    {
        base bf;
        descs d;
        CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, 1.0f, bf.A, bf.B, 0.0f, bf.C, bf.D), CUBLAS_STATUS_SUCCESS);
    }
    s = b0.s, s.b_rows = 2, s.ldb = 2;
    expect_refused(L, s, INV, "k of A != k of B");
    s = b0.s, s.tb = CUBLAS_OP_T;
    expect_refused(L, s, INV, "op T on a B stored [k, n]");
    s = b0.s, s.c_cols = 3;
    expect_refused(L, s, INV, "C cols != D cols");
    s = b0.s, s.c_rows = 4, s.ldc = 4;
    expect_refused(L, s, INV, "C rows != D rows");
    s = b0.s, s.lda = 4;
    expect_refused(L, s, INV, "lda < rows");
    s = b0.s, s.ldd = 4;
    expect_refused(L, s, INV, "ldd < rows");
    s = b0.s, s.ctype = CUDA_R_16BF;
    expect_refused(L, s, INV, "C and D types differ");
    s = b0.s, s.atype = CUDA_R_32F;
    expect_refused(L, s, NS, "fp32 A");
    s = b0.s, s.ctype = s.dtype = CUDA_R_64F;
    expect_refused(L, s, NS, "fp64 C/D");

    /* Compute and scale types other than fp32. */
    {
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        int32_t ct = CUBLAS_COMPUTE_32F_FAST_TF32;
        CHECK_ST(
            cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &ct, sizeof ct),
            CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulHeuristicResult_t res;
        int n;
        CHECK_ST(cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, d.pref, 1, &res, &n),
                 NS);
    }
    {
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulDescDestroy(d.op);
        CHECK_ST(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_16BF),
                 CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d, 1.0f, b0.A, b0.B, 0.0f, b0.C, b0.D), NS);
    }

    /* NULL pointers, a bad handle. */
    {
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        const float one = 1.0f;
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, nullptr, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, nullptr, d.b, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, nullptr, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, nullptr,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, nullptr, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, nullptr, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, nullptr, b0.B, d.b, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(nullptr, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 CUBLAS_STATUS_NOT_INITIALIZED);
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                                nullptr, nullptr, 16, nullptr),
                 INV);
        cublasLtMatmulHeuristicResult_t res;
        int n;
        CHECK_ST(cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, d.pref, 0, &res, &n),
                 INV);
        CHECK_ST(
            cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, nullptr, 1, &res, &n),
            INV);
    }

    /* Attributes of the wrong size or value. */
    {
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        int64_t wide = CUBLAS_OP_T;
        CHECK_ST(
            cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &wide, sizeof wide),
            INV);
        int32_t bad_op = 7;
        CHECK_ST(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &bad_op,
                                                sizeof bad_op),
                 INV);
        uint32_t ws32 = 1024;
        CHECK_ST(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws32, sizeof ws32),
                 INV);
        uint64_t al64 = 16;
        CHECK_ST(cublasLtMatmulPreferenceSetAttribute(
                     d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al64, sizeof al64),
                 INV);
        CHECK_ST(cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, 2, 2, -1), INV);
    }

    /* Destroyed objects. */
    {
        cublasLtMatrixLayout_t l;
        CHECK_ST(cublasLtMatrixLayoutCreate(&l, CUDA_R_16BF, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(cublasLtMatrixLayoutDestroy(l), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(cublasLtMatrixLayoutDestroy(l), INV);
        descs d;
        CHECK_ST(descs_build(b0.s, &d), CUBLAS_STATUS_SUCCESS);
        cublasLtMatrixLayout_t dead = d.b;
        CHECK_ST(cublasLtMatrixLayoutDestroy(d.b), CUBLAS_STATUS_SUCCESS);
        d.b = nullptr;
        const float one = 1.0f;
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, dead, &one, b0.C, d.c, b0.D, d.d,
                                nullptr, nullptr, 0, nullptr),
                 INV);
        CHECK_ST(cublasLtMatmul(L.h, nullptr, &one, b0.A, d.a, b0.B, d.a, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        cublasLtMatmulDesc_t dead_op = d.op;
        CHECK_ST(cublasLtMatmulDescDestroy(d.op), CUBLAS_STATUS_SUCCESS);
        d.op = nullptr;
        CHECK_ST(cublasLtMatmul(L.h, dead_op, &one, b0.A, d.a, b0.B, d.a, &one, b0.C, d.c, b0.D,
                                d.d, nullptr, nullptr, 0, nullptr),
                 INV);
        cublasLtHandle_t h2;
        CHECK_ST(cublasLtCreate(&h2), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(cublasLtDestroy(h2), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(cublasLtDestroy(h2), CUBLAS_STATUS_NOT_INITIALIZED);
    }
}

/* An algorithm is held to what it was found for. */
static void test_algo_contract(const lt &L) {
    base b0;
    descs d;
    CHECK_ST(descs_build(b0.s, &d, 256, (uint64_t)4 << 20), CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    CHECK_ST(cublasLtMatmulAlgoGetHeuristic(L.h, d.op, d.a, d.b, d.c, d.d, d.pref, 1, &res, &n),
             CUBLAS_STATUS_SUCCESS);
    CHECK(n == 1 && res.state == CUBLAS_STATUS_SUCCESS, "n %d state %d", n, (int)res.state);
    CHECK(res.workspaceSize <= ((size_t)4 << 20), "workspace %zu over the limit",
          res.workspaceSize);
    const float one = 1.0f;
    std::vector<unsigned char> ws(((size_t)4 << 20) + 64, 0);

    CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                            &res.algo, ws.data(), ws.size(), nullptr),
             CUBLAS_STATUS_SUCCESS);
    if (res.workspaceSize > 0) {
        CHECK(ws[0] != 0 && ws[res.workspaceSize - 1] != 0, "the workspace was not used");
        CHECK(ws[res.workspaceSize] == 0, "written past the workspace it asked for");
        CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                                &res.algo, ws.data(), res.workspaceSize - 1, nullptr),
                 CUBLAS_STATUS_INVALID_VALUE);
    }
    /* Misaligned against the 256 bytes promised; fine with 2 promised. */
    CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A + 1, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                            &res.algo, ws.data(), ws.size(), nullptr),
             CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D + 4, d.d,
                            &res.algo, ws.data(), ws.size(), nullptr),
             CUBLAS_STATUS_INVALID_VALUE);
    {
        descs d2;
        CHECK_ST(descs_build(b0.s, &d2, 2), CUBLAS_STATUS_SUCCESS);
        CHECK_ST(run_gemm(L, d2, 1.0f, b0.A + 1, b0.B + 1, 0.0f, b0.C + 1, b0.D + 1),
                 CUBLAS_STATUS_SUCCESS);
    }
    /* A zeroed algorithm, and one found for fp32 output used for bf16. */
    cublasLtMatmulAlgo_t zero;
    memset(&zero, 0, sizeof zero);
    CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                            &zero, ws.data(), ws.size(), nullptr),
             CUBLAS_STATUS_INVALID_VALUE);
    shape s16 = b0.s;
    s16.ctype = s16.dtype = CUDA_R_16BF;
    descs d16;
    CHECK_ST(descs_build(s16, &d16, 256, (uint64_t)4 << 20), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(cublasLtMatmul(L.h, d16.op, &one, b0.A, d16.a, b0.B, d16.b, &one, b0.C, d16.c, b0.D,
                            d16.d, &res.algo, ws.data(), ws.size(), nullptr),
             CUBLAS_STATUS_INVALID_VALUE);
    /* The NULL algorithm needs no promises. */
    CHECK_ST(cublasLtMatmul(L.h, d.op, &one, b0.A + 1, d.a, b0.B, d.b, &one, b0.C, d.c, b0.D, d.d,
                            nullptr, nullptr, 0, nullptr),
             CUBLAS_STATUS_SUCCESS);
}

/* Output sharing memory with an input. */
static void test_overlap(const lt &L) {
    /* One bf16 column-major buffer of 2m rows: A in rows [0, m), D in rows
     * [m, 2m), same ld. Their byte ranges interleave but no element is
     * shared, which must be accepted; shifting D by one row makes it share. */
    const int64_t m = 4, k = 3, ld = 2 * m;
    std::vector<uint16_t> buf((size_t)(ld * k), 0);
    dense a = dense_make(m, k), b = dense_make(k, k), want = dense_make(m, k);
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++) a[i][p] = (double)(i + 2 * p) / 4;
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < k; j++) b[p][j] = p == j ? 2.0 : 0.5;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++)
            for (int64_t p = 0; p < k; p++) want[i][j] += a[i][p] * b[p][j];
    for (int64_t p = 0; p < k; p++)
        for (int64_t i = 0; i < m; i++) buf[(size_t)(p * ld + i)] = bf16_exact(a[i][p]);
    std::vector<uint16_t> B = store_bf16(b, k, k, k, 0);
    shape s{CUBLAS_OP_N, CUBLAS_OP_N, m, k, ld, k,           k,           k,           m,
            k,           ld,          m, k, ld, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF};
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    uint16_t *D = buf.data() + m;
    CHECK_ST(run_gemm(L, d, 1.0f, buf.data(), B.data(), 0.0f, D, D), CUBLAS_STATUS_SUCCESS);
    int64_t bad = 0;
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < m; i++) bad += D[j * ld + i] != bf16_round(want[i][j]);
    CHECK(bad == 0, "interleaved D: %lld wrong", (long long)bad);
    CHECK_ST(run_gemm(L, d, 1.0f, buf.data(), B.data(), 0.0f, D - 1, D - 1),
             CUBLAS_STATUS_INVALID_VALUE);
    /* D exactly on A. */
    CHECK_ST(run_gemm(L, d, 1.0f, buf.data(), B.data(), 0.0f, buf.data(), buf.data()),
             CUBLAS_STATUS_INVALID_VALUE);

    /* C overlapping D without being D: refused when C is read, ignored
     * when beta == 0. */
    std::vector<float> cd(64, 1.0f);
    std::vector<uint16_t> A2(64, bf16_exact(1.0)), B2(64, bf16_exact(1.0));
    shape s2{CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 4, 2,           4,           2,          4,
             4,           4,           4, 4, 4, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F};
    descs d2;
    CHECK_ST(descs_build(s2, &d2), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(run_gemm(L, d2, 1.0f, A2.data(), B2.data(), 1.0f, cd.data() + 1, cd.data()),
             CUBLAS_STATUS_INVALID_VALUE);
    CHECK_ST(run_gemm(L, d2, 1.0f, A2.data(), B2.data(), 0.0f, cd.data() + 1, cd.data()),
             CUBLAS_STATUS_SUCCESS);
    CHECK(cd[0] == 2.0f && cd[15] == 2.0f, "got %g %g", cd[0], cd[15]);
    /* In place with a different ld for C than for D. */
    shape s3 = s2;
    s3.ldc = 5;
    s3.ldd = 4;
    descs d3;
    CHECK_ST(descs_build(s3, &d3), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(run_gemm(L, d3, 1.0f, A2.data(), B2.data(), 1.0f, cd.data(), cd.data()),
             CUBLAS_STATUS_INVALID_VALUE);
}

/* k == 0 is beta·C; m or n == 0 is nothing. */
static void test_empty(const lt &L) {
    std::vector<uint16_t> A(4, 0), B(4, 0);
    std::vector<float> C{1.0f, 2.0f, 3.0f, 4.0f}, D(4, -1.0f);
    shape s{CUBLAS_OP_N, CUBLAS_OP_N, 2, 0, 2, 0,           2,           1,          2,
            2,           2,           2, 2, 2, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F};
    descs d;
    CHECK_ST(descs_build(s, &d), CUBLAS_STATUS_SUCCESS);
    CHECK_ST(run_gemm(L, d, 1.0f, A.data(), B.data(), 0.5f, C.data(), D.data()),
             CUBLAS_STATUS_SUCCESS);
    CHECK(D[0] == 0.5f && D[3] == 2.0f, "k = 0 gave %g %g", D[0], D[3]);
}

int main(void) {
    lt L;
    test_random(L);
    test_op_c(L);
    test_negative_control(L);
    test_general_values(L);
    test_bf16_rounding(L);
    test_row_major_mapping(L);
    test_refusals(L);
    test_algo_contract(L);
    test_overlap(L);
    test_empty(L);
    printf("test_emu_cublaslt: %d checks, %d failed\n", g_checks, g_fails);
    return g_fails ? 1 : 0;
}
