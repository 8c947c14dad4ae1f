/* Which way the CUDA backend computes a 4-bit linear layer (cuda_api.h).
 *
 * Plain C with no CUDA in it, so that the memory estimate (model/llama_mem.c)
 * follows the same rule in every build. The rule depends on the number of
 * tokens only: never on timings, so a run and its resumption take the same
 * path for the same micro-batch and stay bit-identical. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_api.h"

/* Why 512: the fused kernel reads W once as 4 bits; the baseline first writes
 * and rereads it as bf16 (4.5 bytes an element more), then runs cuBLASLt's
 * wgmma kernels. With H200's ~4.8 TB/s and guessed rates of ~350 TFLOP/s
 * for the mma.sync kernel against ~700 for cuBLASLt, they cost the same near
 * T = 330 for any shape. bench_cuda_q4gemm prints both at several T;
 * QL_CUDA_Q4_FUSED_MAX_T overrides the guess. */
#define DEFAULT_FUSED_MAX_T 512

static int g_path = -1;
static int64_t g_fused_max_t = -1;
static int g_last_path = -1;

void ql_cuda_q4_set_path(ql_cuda_q4_path p) { g_path = (int)p; }

ql_cuda_q4_path ql_cuda_q4_get_path(void) {
    if (g_path < 0) {
        const char *e = getenv("QL_CUDA_Q4_PATH");
        if (e && strcmp(e, "dequant") == 0)
            g_path = QL_CUDA_Q4_DEQUANT_BLAS;
        else if (e && strcmp(e, "fused") == 0)
            g_path = QL_CUDA_Q4_FUSED;
        else
            g_path = QL_CUDA_Q4_AUTO;
    }
    return (ql_cuda_q4_path)g_path;
}

int64_t ql_cuda_q4_fused_max_tokens(void) {
    if (g_fused_max_t < 0) {
        const char *e = getenv("QL_CUDA_Q4_FUSED_MAX_T");
        char *end = NULL;
        long long v = e ? strtoll(e, &end, 10) : -1;
        g_fused_max_t =
            (e && end != e && *end == '\0' && v >= 0) ? (int64_t)v : DEFAULT_FUSED_MAX_T;
    }
    return g_fused_max_t;
}

void ql_cuda_q4_set_fused_max_tokens(int64_t t) { g_fused_max_t = t; }

ql_cuda_q4_path ql_cuda_q4_path_for(int64_t T) {
    ql_cuda_q4_path p = ql_cuda_q4_get_path();
    if (p != QL_CUDA_Q4_AUTO) return p;
    return T < ql_cuda_q4_fused_max_tokens() ? QL_CUDA_Q4_FUSED : QL_CUDA_Q4_DEQUANT_BLAS;
}

int ql_cuda_q4_last_path(void) { return g_last_path; }

void ql_cuda_q4_note_path(ql_cuda_q4_path p) { g_last_path = (int)p; }

ql_status ql_cuda_q4_check_env(void) {
    const char *e = getenv("QL_CUDA_Q4_PATH");
    if (e && strcmp(e, "fused") != 0 && strcmp(e, "dequant") != 0 && strcmp(e, "auto") != 0)
        return ql_error(QL_EINVAL,
                        "environment variable QL_CUDA_Q4_PATH=\"%s\": expected fused, dequant or "
                        "auto",
                        e);
    e = getenv("QL_CUDA_Q4_FUSED_MAX_T");
    if (e) {
        char *end = NULL;
        long long v = strtoll(e, &end, 10);
        if (end == e || *end != '\0' || v < 0)
            return ql_error(QL_EINVAL,
                            "environment variable QL_CUDA_Q4_FUSED_MAX_T=\"%s\": expected a "
                            "number of tokens >= 0",
                            e);
    }
    return QL_OK;
}
