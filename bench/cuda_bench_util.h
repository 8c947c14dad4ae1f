/* Helpers shared by the CUDA benchmarks (bench_cuda_*.c): error exit, random
 * device buffers, medians, CUDA-event timing of a callback, the JSON header
 * (GPU, driver, date). Benchmarks are programs: they may exit(). */
#ifndef QL_CUDA_BENCH_UTIL_H
#define QL_CUDA_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "kernels/cuda_api.h"

#define BTRY(expr)                                                                                 \
    do {                                                                                           \
        ql_status s_ = (expr);                                                                     \
        if (s_ != QL_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, ql_error_message());     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t bench_rng = 0x853c49e6748fea9bull;
static inline uint32_t bench_u32(void) {
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return (uint32_t)(bench_rng >> 32);
}
static inline float bench_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((bench_u32() >> 8) * (1.0 / 16777216.0));
}

/* A device buffer of n random values in [lo, hi): bf16 (esz 2) or fp32
 * (esz 4). A 1 Mi-element random chunk is uploaded and repeated, which is
 * as good as fresh randomness for timing and far faster to make. */
static inline void *bench_dev_random(int64_t n, int esz, float lo, float hi) {
    const int64_t chunk = (int64_t)1 << 20;
    const int64_t c = n < chunk ? n : chunk;
    void *host = malloc((size_t)(c > 0 ? c : 1) * (size_t)esz);
    for (int64_t i = 0; i < c; i++) {
        float v = bench_uniform(lo, hi);
        if (esz == 2) {
            uint16_t b = ql_f32_to_bf16(v);
            memcpy((char *)host + i * 2, &b, 2);
        } else {
            memcpy((char *)host + i * 4, &v, 4);
        }
    }
    void *d = NULL;
    BTRY(ql_cuda_malloc((size_t)(n > 0 ? n : 1) * (size_t)esz, &d));
    BTRY(ql_cuda_upload(d, host, (size_t)c * (size_t)esz));
    for (int64_t off = c; off < n; off += c) {
        int64_t len = n - off < c ? n - off : c;
        BTRY(ql_cuda_copy_d2d((char *)d + off * esz, d, (size_t)(len * esz), NULL));
    }
    BTRY(ql_cuda_sync());
    free(host);
    return d;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Milliseconds of one call of fn(arg), median of reps after `warm` untimed
 * calls, each call timed alone with CUDA events on the default stream. */
typedef void (*bench_fn)(void *arg);
static inline double bench_time_ms(bench_fn fn, void *arg, int warm, int reps) {
    ql_cuda_timer *t;
    BTRY(ql_cuda_timer_create(&t));
    for (int i = 0; i < warm; i++) fn(arg);
    BTRY(ql_cuda_sync());
    double *ms = malloc((size_t)reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        float m;
        BTRY(ql_cuda_timer_start(t, NULL));
        fn(arg);
        BTRY(ql_cuda_timer_stop(t, NULL, &m));
        ms[r] = m;
    }
    double med = bench_median(ms, reps);
    free(ms);
    ql_cuda_timer_destroy(t);
    return med;
}

/* The dense bf16 rate of cuBLASLt on this device: an n x n x n product,
 * random inputs, TFLOP/s. */
typedef struct bench_gemm_arg {
    int64_t n;
    void *a, *b, *c;
} bench_gemm_arg;
static inline void bench_gemm_call(void *p) {
    bench_gemm_arg *g = p;
    BTRY(ql_cuda_gemm_bf16(g->n, g->n, g->n, 1.0f, g->a, g->n, 0, g->b, g->n, 1, 0.0f, g->c,
                           QL_DT_BF16, g->n));
}
static inline double bench_cublas_tflops(int64_t n, int reps) {
    bench_gemm_arg g = {n, bench_dev_random(n * n, 2, -1, 1), bench_dev_random(n * n, 2, -1, 1),
                        NULL};
    BTRY(ql_cuda_malloc((size_t)(n * n) * 2, &g.c));
    double ms = bench_time_ms(bench_gemm_call, &g, 3, reps);
    ql_cuda_free(g.a);
    ql_cuda_free(g.b);
    ql_cuda_free(g.c);
    return 2.0 * (double)n * (double)n * (double)n / (ms * 1e-3) / 1e12;
}

/* Opens `path` and writes the common head of a result object (without the
 * closing brace): bench name, date, GPU, SMs, driver and runtime. */
static inline FILE *bench_json_open(const char *path, const char *bench,
                                    const ql_cuda_device_info *info) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"bench\": \"%s\",\n  \"date\": \"%s\",\n", bench, date);
    fprintf(f, "  \"gpu\": \"%s\",\n  \"sm_count\": %d,\n  \"l2_bytes\": %d,\n", info->name,
            info->sm_count, info->l2_bytes);
    fprintf(f, "  \"cuda_driver_version\": %d,\n  \"cuda_runtime_version\": %d,\n",
            info->driver_version, info->runtime_version);
    return f;
}

/* The kernel benchmarks' options: --json PATH, --reps N (default `reps`,
 * at most `tiny_reps` under --tiny, at least 1), --quick, --tiny. Returns 0,
 * or 2 after printing the usage. */
typedef struct bench_opts {
    const char *json;
    int reps, quick, tiny;
} bench_opts;
static inline int bench_parse_opts(int argc, char **argv, int reps, int tiny_reps, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->reps = reps;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            o->json = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            o->quick = 1;
        else if (!strcmp(argv[i], "--tiny"))
            o->tiny = 1;
        else {
            fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--quick] [--tiny]\n", argv[0]);
            return 2;
        }
    }
    if (o->tiny && o->reps > tiny_reps) o->reps = tiny_reps;
    if (o->reps < 1) o->reps = 1;
    return 0;
}

/* Ends the "results" array bench_json_open's caller wrote and the file. */
static inline void bench_json_close(FILE *f, const char *path) {
    fprintf(f, "  ]\n}\n");
    fclose(f);
    printf("wrote %s\n", path);
}

#endif
