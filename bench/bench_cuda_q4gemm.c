/* The CUDA 4-bit linear layer (NF4 + double quant, LoRA r = 16) against
 * cuBLASLt bf16 on the same shapes, measured side by side.
 *
 *   bench_cuda_q4gemm [--json PATH] [--reps N] [--quick] [--tiny]
 *
 * Shapes are Llama-3-8B's linear layers [out x in]: 4096x4096 (q, o),
 * 6144x4096 (q|k|v fused), 28672x4096 (gate|up fused), 4096x14336 (down), at
 * 256, 1024, 4096 and 16384 tokens, forward (y = x·Wᵀ) and the dX transpose
 * (dx = dy·W).
 *
 *   cublas    cuBLASLt bf16 on a W already dequantized to bf16: the ceiling.
 *   fused     the cuda backend's q4_lora_fwd / q4_lora_bwd as the model calls
 *             them, W decoded inside the GEMM; includes the LoRA work (x·Aᵀ,
 *             and in the backward dy·B, dA and dB as well).
 *   dequant   the same ops on the dequant path (W dequantized to bf16 beside
 *             B or A, then one cuBLASLt GEMM).
 *   auto      whichever of the two the default rule picks for T
 *             (ql_cuda_q4_path_for: fused below QL_CUDA_Q4_FUSED_MAX_T,
 *             512 unless set): what training runs.
 * Rates count only the base product's 2·T·in·out FLOPs, so the LoRA work of
 * fused/dequant is a cost they carry. Goal: auto >= 0.95 of cublas at 4096
 * tokens, 0.97 at 16384 (forward and dX). The last lines name, per token
 * count, which path was faster on how many shapes: the data for the rule's
 * threshold. Median of --reps timed calls after
 * two warm-up calls, CUDA events. --tiny (for the CUDA emulator: the same
 * kernels, nothing meaningful timed) divides every dimension by 16 and the
 * tokens by 64 (256x256 at 64 tokens, ...), at most 3 reps.
 *
 * Without a device it prints "no CUDA device" and exits 0. */
#include "cuda_bench_util.h"

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

#define RANK 16

typedef struct shape {
    int64_t out, in;
    const char *name;
} shape;

typedef struct job {
    const ql_backend *be;
    ql_q4 *w;
    ql_lora *lora;
    int64_t T, in, out;
    void *x, *y, *dy, *dx, *wbf;
    float *xa, *dA, *dB;
} job;

static void run_cublas_fwd(void *p) {
    job *j = p;
    BTRY(ql_cuda_gemm_bf16(j->T, j->out, j->in, 1.0f, j->x, j->in, 0, j->wbf, j->in, 1, 0.0f, j->y,
                           QL_DT_BF16, j->out));
}
static void run_cublas_bwd(void *p) {
    job *j = p;
    BTRY(ql_cuda_gemm_bf16(j->T, j->in, j->out, 1.0f, j->dy, j->out, 0, j->wbf, j->in, 0, 0.0f,
                           j->dx, QL_DT_BF16, j->in));
}
static void run_op_fwd(void *p) {
    job *j = p;
    BTRY(j->be->q4_lora_fwd(j->w, j->lora, j->x, j->T, j->y, j->xa));
}
static void run_op_bwd(void *p) {
    job *j = p;
    BTRY(j->be->q4_lora_bwd(j->w, j->lora, j->x, j->xa, j->dy, j->T, j->dx, j->dA, j->dB));
}

typedef struct result {
    const char *shape_name;
    int64_t out, in, T;
    const char *dir;
    double ms[3]; /* cublas, fused, dequant */
    int auto_k;   /* 1 or 2: the path ql_cuda_q4_path_for(T) takes */
} result;

/* A random NF4 + double-quant weight: random codes are as good as real ones
 * for timing. */
static void make_q4(int64_t rows, int64_t cols, ql_q4 *q) {
    memset(q, 0, sizeof *q);
    q->type = QL_QTYPE_NF4;
    q->rows = rows;
    q->cols = cols;
    q->blocksize = 64;
    q->double_quant = 1;
    BTRY(ql_q4_alloc(q));
    for (int64_t i = 0; i < ql_q4_packed_bytes(q); i++) q->packed[i] = (uint8_t)bench_u32();
    for (int64_t i = 0; i < q->n_blocks; i++) q->absmax_q[i] = (uint8_t)bench_u32();
    for (int64_t i = 0; i < ql_q4_nested_blocks(q); i++)
        q->nested_absmax[i] = 0.01f + (float)(bench_u32() % 1000) * 1e-5f;
    q->nested_offset = 0.02f;
}

static void run_shape(const ql_backend *be, const shape *s, int64_t T, int reps, result *res) {
    ql_q4 host, dev;
    make_q4(s->out, s->in, &host);
    BTRY(be->q4_upload(&host, &dev));
    ql_q4_free(&host);
    job j;
    memset(&j, 0, sizeof j);
    j.be = be;
    j.w = &dev;
    j.T = T;
    j.in = s->in;
    j.out = s->out;
    float *A = bench_dev_random((int64_t)RANK * s->in, 4, -0.01f, 0.01f);
    float *B = bench_dev_random(s->out * RANK, 4, -0.01f, 0.01f);
    ql_lora lora = {.A = A, .B = B, .r = RANK, .scale = 2.0f};
    j.lora = &lora;
    j.x = bench_dev_random(T * s->in, 2, -1, 1);
    j.dy = bench_dev_random(T * s->out, 2, -1, 1);
    BTRY(ql_cuda_malloc((size_t)(T * s->out) * 2, &j.y));
    BTRY(ql_cuda_malloc((size_t)(T * s->in) * 2, &j.dx));
    BTRY(ql_cuda_malloc((size_t)(s->out * s->in) * 2, &j.wbf));
    BTRY(be->q4_dequantize(&dev, j.wbf));
    j.xa = bench_dev_random(T * RANK, 4, -1, 1);
    j.dA = bench_dev_random((int64_t)RANK * s->in, 4, -1, 1);
    j.dB = bench_dev_random(s->out * RANK, 4, -1, 1);

    for (int d = 0; d < 2; d++) {
        result *r = &res[d];
        r->shape_name = s->name;
        r->out = s->out;
        r->in = s->in;
        r->T = T;
        r->dir = d ? "dx" : "fwd";
        r->auto_k = ql_cuda_q4_path_for(T) == QL_CUDA_Q4_FUSED ? 1 : 2;
        r->ms[0] = bench_time_ms(d ? run_cublas_bwd : run_cublas_fwd, &j, 2, reps);
        ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
        r->ms[1] = bench_time_ms(d ? run_op_bwd : run_op_fwd, &j, 2, reps);
        ql_cuda_q4_set_path(QL_CUDA_Q4_DEQUANT_BLAS);
        r->ms[2] = bench_time_ms(d ? run_op_bwd : run_op_fwd, &j, 2, reps);
        ql_cuda_q4_set_path(QL_CUDA_Q4_AUTO);
    }
    ql_cuda_free(A), ql_cuda_free(B), ql_cuda_free(j.x), ql_cuda_free(j.dy), ql_cuda_free(j.y);
    ql_cuda_free(j.dx), ql_cuda_free(j.wbf), ql_cuda_free(j.xa), ql_cuda_free(j.dA);
    ql_cuda_free(j.dB);
    be->q4_free(&dev);
    ql_cuda_release_cache(); /* the dequant path's scratch is large */
}

static double tflops(const result *r, int k) {
    return 2.0 * (double)r->T * (double)r->in * (double)r->out / (r->ms[k] * 1e-3) / 1e12;
}

int main(int argc, char **argv) {
    bench_opts opt;
    if (bench_parse_opts(argc, argv, 7, 3, &opt)) return 2;
    const char *json = opt.json;
    const int reps = opt.reps, quick = opt.quick, tiny = opt.tiny;
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device\n");
        return 0;
    }
    const ql_backend *be = ql_backend_cuda_impl();
    if (!be) {
        fprintf(stderr, "cuda backend: %s\n", ql_error_message());
        return 1;
    }
    ql_cuda_device_info info;
    BTRY(ql_cuda_get_device_info(0, &info));
    printf("device: %s, %d SMs, driver %d, runtime %d\n", info.name, info.sm_count,
           info.driver_version, info.runtime_version);

    static const shape full_shapes[] = {{4096, 4096, "q/o 4096x4096"},
                                        {6144, 4096, "qkv 6144x4096"},
                                        {28672, 4096, "gate|up 28672x4096"},
                                        {4096, 14336, "down 4096x14336"}};
    static const shape tiny_shapes[] = {{256, 256, "q/o 256x256"},
                                        {384, 256, "qkv 384x256"},
                                        {1792, 256, "gate|up 1792x256"},
                                        {256, 896, "down 256x896"}};
    static const int64_t full_tokens[] = {4096, 256, 1024, 16384},
                         tiny_tokens[] = {64, 16, 32, 256};
    const shape *shapes = tiny ? tiny_shapes : full_shapes;
    const int64_t *tokens = tiny ? tiny_tokens : full_tokens;
    const int n_shapes = quick ? 1 : 4, n_tokens = quick ? 1 : 4;
    result res[32];
    int n = 0;
    for (int t = 0; t < n_tokens; t++)
        for (int s = 0; s < n_shapes; s++) {
            run_shape(be, &shapes[s], tokens[t], reps, &res[n]);
            n += 2;
        }

    printf("\n4-bit linear (NF4+DQ, LoRA r=%d) vs cuBLASLt bf16; TFLOP/s of the base product, "
           "median of %d\n",
           RANK, reps);
    printf("%-20s %6s %4s %9s %9s %9s %9s %7s %6s\n", "shape", "T", "dir", "cublas", "fused",
           "dequant", "auto", "ratio", "goal");
    for (int i = 0; i < n; i++) {
        const double goal = res[i].T >= 16384 ? 0.97 : 0.95;
        printf("%-20s %6lld %4s %9.1f %9.1f %9.1f %9.1f %7.3f %6.2f\n", res[i].shape_name,
               (long long)res[i].T, res[i].dir, tflops(&res[i], 0), tflops(&res[i], 1),
               tflops(&res[i], 2), tflops(&res[i], res[i].auto_k),
               tflops(&res[i], res[i].auto_k) / tflops(&res[i], 0), goal);
    }
    /* Which path won at each token count (the rule's threshold should sit
     * between the last T where fused wins and the first where it loses). */
    int64_t sorted[4];
    for (int t = 0; t < n_tokens; t++) sorted[t] = tokens[t];
    for (int t = 1; t < n_tokens; t++) /* ascending, for reading */
        for (int u = t; u > 0 && sorted[u - 1] > sorted[u]; u--) {
            int64_t x = sorted[u];
            sorted[u] = sorted[u - 1];
            sorted[u - 1] = x;
        }
    for (int t = 0; t < n_tokens; t++) {
        int fused_wins = 0, total = 0;
        for (int i = 0; i < n; i++)
            if (res[i].T == sorted[t]) fused_wins += res[i].ms[1] < res[i].ms[2], total++;
        printf("T = %6lld: fused faster on %d of %d (shape, dir); the rule takes %s "
               "(QL_CUDA_Q4_FUSED_MAX_T = %lld)\n",
               (long long)sorted[t], fused_wins, total,
               ql_cuda_q4_path_for(sorted[t]) == QL_CUDA_Q4_FUSED ? "fused" : "dequant",
               (long long)ql_cuda_q4_fused_max_tokens());
    }

    if (json) {
        FILE *f = bench_json_open(json, "cuda_q4gemm", &info);
        fprintf(f,
                "  \"method\": \"median of %d calls after 2 warm-up calls, CUDA events; TFLOP/s "
                "count 2*T*in*out (the base product); fused/dequant are the cuda backend's "
                "q4_lora_fwd/bwd with LoRA r=%d included\",\n",
                reps, RANK);
        if (tiny) fprintf(f, "  \"tiny\": true,\n");
        fprintf(f, "  \"results\": [\n");
        for (int i = 0; i < n; i++) {
            const double goal = res[i].T >= 16384 ? 0.97 : 0.95;
            fprintf(
                f,
                "    {\"shape\": \"%s\", \"out\": %lld, \"in\": %lld, \"tokens\": %lld, "
                "\"dir\": \"%s\", \"cublas_ms\": %.4f, \"fused_ms\": %.4f, "
                "\"dequant_ms\": %.4f, \"cublas_tflops\": %.2f, \"fused_tflops\": %.2f, "
                "\"dequant_tflops\": %.2f, \"auto_path\": \"%s\", \"fused_ratio\": %.4f, "
                "\"ratio\": %.4f, \"goal\": %.2f}%s\n",
                res[i].shape_name, (long long)res[i].out, (long long)res[i].in, (long long)res[i].T,
                res[i].dir, res[i].ms[0], res[i].ms[1], res[i].ms[2], tflops(&res[i], 0),
                tflops(&res[i], 1), tflops(&res[i], 2), res[i].auto_k == 1 ? "fused" : "dequant",
                tflops(&res[i], 1) / tflops(&res[i], 0),
                tflops(&res[i], res[i].auto_k) / tflops(&res[i], 0), goal, i + 1 < n ? "," : "");
        }
        bench_json_close(f, json);
    }
    return 0;
}

#else
int main(void) {
    printf("no CUDA device (built without the CUDA backend)\n");
    return 0;
}
#endif
