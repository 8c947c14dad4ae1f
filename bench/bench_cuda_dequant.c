/* CUDA NF4 + double-quant dequantize bandwidth against a device-to-device
 * cudaMemcpy of the same number of output bytes, measured side by side.
 *
 *   bench_cuda_dequant [--json PATH] [--reps N] [--tiny]
 *
 * Effective bandwidth = (bytes read + bytes written) / time. For the
 * dequantize that is packed nibbles + absmax codes + nested absmax + output;
 * for the copy, 2 x output bytes. Each timed batch runs K back-to-back
 * launches over enough separate copies of the buffers that the working set
 * is at least three times the L2 cache (so nothing is served from L2), timed
 * with CUDA events; the figure is the median over reps batches, dequantize
 * and copy batches alternating. Shapes: 4096x4096 and 28672x4096 (Llama-3-8B
 * MLP), output bf16 (the CUDA activation dtype) and float32. --tiny (for the
 * CUDA emulator: the same kernels, nothing meaningful timed) takes 256x256 and
 * 1792x256, 3 reps and one set of buffers.
 *
 * Without a device (or a build without CUDA) it prints "no CUDA device" and
 * exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/cuda_api.h"
#include "kernels/quant4.h"

#ifdef QL_HAVE_CUDA

#define MAX_SETS 8
#define GOAL 0.85

static int max_sets = MAX_SETS; /* 1 under --tiny */

typedef struct result {
    int64_t rows, cols;
    const char *dtype;
    double deq_ms, deq_gbps, copy_ms, copy_gbps, ratio;
} result;

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        ql_status s_ = (expr);                                                                     \
        if (s_ != QL_OK) {                                                                         \
            fprintf(stderr, "bench_cuda_dequant: %s: %s\n", #expr, ql_error_message());            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A random NF4 + double-quant matrix (random bits are as good as real
 * weights for bandwidth; no host quantization of 117M elements needed). */
static void make_q4(int64_t rows, int64_t cols, ql_q4 *q) {
    memset(q, 0, sizeof *q);
    q->type = QL_QTYPE_NF4;
    q->rows = rows;
    q->cols = cols;
    q->blocksize = 64;
    q->double_quant = 1;
    TRY(ql_q4_alloc(q));
    for (int64_t i = 0; i < ql_q4_packed_bytes(q); i++) q->packed[i] = (uint8_t)rng_u32();
    for (int64_t i = 0; i < q->n_blocks; i++) q->absmax_q[i] = (uint8_t)rng_u32();
    for (int64_t i = 0; i < ql_q4_nested_blocks(q); i++)
        q->nested_absmax[i] = 0.01f + (float)(rng_u32() % 1000) * 1e-5f;
    q->nested_offset = 0.02f;
}

static result run_shape(int64_t rows, int64_t cols, ql_dtype dt, int reps,
                        const ql_cuda_device_info *info) {
    ql_q4 host;
    make_q4(rows, cols, &host);
    size_t out_bytes = (size_t)host.n * ql_dtype_size(dt);
    size_t in_bytes = (size_t)ql_q4_packed_bytes(&host) + (size_t)host.n_blocks +
                      (size_t)ql_q4_nested_blocks(&host) * sizeof(float);
    size_t set_bytes = in_bytes + out_bytes;
    size_t want = 3 * (size_t)info->l2_bytes;
    int sets = (int)((want + set_bytes - 1) / set_bytes);
    if (sets < 1) sets = 1;
    if (sets > max_sets) sets = max_sets;
    int per_batch = 10 * sets;

    ql_q4 dq[MAX_SETS];
    void *out[MAX_SETS], *csrc[MAX_SETS], *cdst[MAX_SETS];
    for (int s = 0; s < sets; s++) {
        TRY(ql_cuda_q4_upload(&host, &dq[s]));
        TRY(ql_cuda_malloc(out_bytes, &out[s]));
        TRY(ql_cuda_malloc(out_bytes, &csrc[s]));
        TRY(ql_cuda_malloc(out_bytes, &cdst[s]));
        TRY(ql_cuda_memset(csrc[s], 0x3c, out_bytes, NULL));
    }
    ql_cuda_timer *t;
    TRY(ql_cuda_timer_create(&t));

    /* Warm-up: first launches, clocks up. */
    for (int i = 0; i < 3 * sets; i++) {
        TRY(ql_cuda_q4_dequantize(&dq[i % sets], dt, out[i % sets], NULL));
        TRY(ql_cuda_copy_d2d(cdst[i % sets], csrc[i % sets], out_bytes, NULL));
    }
    TRY(ql_cuda_sync());

    double *deq = malloc((size_t)reps * sizeof(double));
    double *cpy = malloc((size_t)reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        float ms;
        TRY(ql_cuda_timer_start(t, NULL));
        for (int i = 0; i < per_batch; i++)
            TRY(ql_cuda_q4_dequantize(&dq[i % sets], dt, out[i % sets], NULL));
        TRY(ql_cuda_timer_stop(t, NULL, &ms));
        deq[r] = (double)ms / per_batch;
        TRY(ql_cuda_timer_start(t, NULL));
        for (int i = 0; i < per_batch; i++)
            TRY(ql_cuda_copy_d2d(cdst[i % sets], csrc[i % sets], out_bytes, NULL));
        TRY(ql_cuda_timer_stop(t, NULL, &ms));
        cpy[r] = (double)ms / per_batch;
    }
    result res;
    res.rows = rows;
    res.cols = cols;
    res.dtype = dt == QL_DT_BF16 ? "bf16" : "f32";
    res.deq_ms = median(deq, reps);
    res.copy_ms = median(cpy, reps);
    res.deq_gbps = (double)(in_bytes + out_bytes) / (res.deq_ms * 1e6);
    res.copy_gbps = 2.0 * (double)out_bytes / (res.copy_ms * 1e6);
    res.ratio = res.deq_gbps / res.copy_gbps;

    free(deq);
    free(cpy);
    ql_cuda_timer_destroy(t);
    for (int s = 0; s < sets; s++) {
        ql_cuda_q4_free(&dq[s]);
        ql_cuda_free(out[s]);
        ql_cuda_free(csrc[s]);
        ql_cuda_free(cdst[s]);
    }
    ql_q4_free(&host);
    return res;
}

int main(int argc, char **argv) {
    const char *json = NULL;
    int reps = 15, tiny = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tiny"))
            tiny = 1;
        else {
            fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--tiny]\n", argv[0]);
            return 2;
        }
    }
    if (tiny) reps = reps < 3 ? reps : 3, max_sets = 1;
    if (reps < 1) reps = 1;
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device\n");
        return 0;
    }
    ql_cuda_device_info info;
    TRY(ql_cuda_set_device(0));
    TRY(ql_cuda_get_device_info(0, &info));
    printf("device: %s, %d SMs, L2 %d MiB, driver %d, runtime %d\n", info.name, info.sm_count,
           info.l2_bytes >> 20, info.driver_version, info.runtime_version);

    static const int64_t full_shapes[][2] = {{4096, 4096}, {28672, 4096}};
    static const int64_t tiny_shapes[][2] = {{256, 256}, {1792, 256}};
    const int64_t(*shapes)[2] = tiny ? tiny_shapes : full_shapes;
    static const ql_dtype dts[] = {QL_DT_BF16, QL_DT_F32};
    result res[4];
    int nres = 0;
    for (int s = 0; s < 2; s++)
        for (int d = 0; d < 2; d++)
            res[nres++] = run_shape(shapes[s][0], shapes[s][1], dts[d], reps, &info);

    printf("\nNF4+DQ dequantize (bs 64) vs cudaMemcpy D2D of the output bytes; median of %d\n",
           reps);
    printf("%-12s %-5s %10s %10s %10s %10s %7s %6s\n", "shape", "out", "deq ms", "deq GB/s",
           "copy ms", "copy GB/s", "ratio", "goal");
    for (int i = 0; i < nres; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)res[i].rows, (long long)res[i].cols);
        printf("%-12s %-5s %10.4f %10.1f %10.4f %10.1f %7.3f %6.2f\n", shape, res[i].dtype,
               res[i].deq_ms, res[i].deq_gbps, res[i].copy_ms, res[i].copy_gbps, res[i].ratio,
               GOAL);
    }

    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        char date[64];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        fprintf(f, "{\n  \"bench\": \"cuda_dequant\",\n  \"date\": \"%s\",\n", date);
        fprintf(f, "  \"gpu\": \"%s\",\n  \"sm_count\": %d,\n  \"l2_bytes\": %d,\n", info.name,
                info.sm_count, info.l2_bytes);
        fprintf(f, "  \"cuda_driver_version\": %d,\n  \"cuda_runtime_version\": %d,\n",
                info.driver_version, info.runtime_version);
        fprintf(f,
                "  \"method\": \"median of %d batches of back-to-back launches, CUDA events, "
                "working set >= 3x L2\",\n",
                reps);
        if (tiny) fprintf(f, "  \"tiny\": true,\n");
        fprintf(f, "  \"results\": [\n");
        for (int i = 0; i < nres; i++)
            fprintf(f,
                    "    {\"op\": \"nf4_dq_dequantize\", \"blocksize\": 64, \"rows\": %lld, "
                    "\"cols\": %lld, \"out_dtype\": \"%s\", \"dequant_ms\": %.6f, "
                    "\"dequant_gbps\": %.2f, \"copy_ms\": %.6f, \"copy_gbps\": %.2f, "
                    "\"ratio\": %.4f, \"goal\": %.2f}%s\n",
                    (long long)res[i].rows, (long long)res[i].cols, res[i].dtype, res[i].deq_ms,
                    res[i].deq_gbps, res[i].copy_ms, res[i].copy_gbps, res[i].ratio, GOAL,
                    i + 1 < nres ? "," : "");
        fprintf(f, "  ]\n}\n");
        fclose(f);
        printf("wrote %s\n", json);
    }
    return 0;
}

#else

int main(void) {
    printf("no CUDA device (built without the CUDA backend)\n");
    return 0;
}

#endif
