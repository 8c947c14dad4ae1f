/* CPU benchmark of the "cpu" backend, each figure side by side with a
 * baseline measured in the same run:
 *
 *   (a) q4_dequantize (NF4 + double quant, bs 64, fp32 out) against memcpy of
 *       the same number of output bytes;
 *   (b) q4_lora_fwd (NF4 + DQ base, LoRA r = 16) against OpenBLAS cblas_sgemm
 *       on the already dequantized fp32 weight (same x, same output shape,
 *       no LoRA: the plain GEMM a dense fp32 model would do).
 *
 * Shapes: the MLP of a 135M Llama (SmolLM2-135M: 576 -> 1536 and 1536 -> 576)
 * with T = 16 and 256 tokens, and of Llama-3-8B (4096 -> 14336 and 14336 ->
 * 4096) with T = 16. Wall clock (CLOCK_MONOTONIC) after a warm-up call, median
 * over repetitions; see measure() for how short ops are batched.
 *
 *   bench_cpu [--json PATH] [--reps N] [--quick]
 *
 * --json defaults to bench/results/cpu-<hostname>.json (relative to the
 * working directory); --quick runs only the 135M shapes. */
#include <errno.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/quant4.h"

#define LORA_R 16
#define GOAL_DEQUANT 0.5 /* dequantize at >= 0.5 of memcpy bandwidth (fp32 output bytes) */
#define GOAL_MATMUL 0.9  /* NF4+LoRA forward at >= 0.9 of sgemm throughput on fp32 W */

typedef struct row {
    char op[16];
    int64_t in, out, T;
    double ours_ms, base_ms, ratio, goal;
    int reps;
} row;

static row rows_[32];
static int nrows;

static ql_rng rng;
static int rng_ready;
static float rng_uniform(float lo, float hi) {
    if (!rng_ready) {
        ql_rng_seed(&rng, 0x9e3779b97f4a7c15ull);
        rng_ready = 1;
    }
    return ql_rng_uniform_range(&rng, lo, hi);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what) {
    fprintf(stderr, "bench_cpu: %s: %s\n", what, ql_error_message());
    exit(1);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_cpu: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void fill(float *p, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) p[i] = rng_uniform(lo, hi);
}

static void add_row(const char *op, int64_t in, int64_t out, int64_t T, double ours, double base,
                    double goal, int reps) {
    row *r = &rows_[nrows++];
    snprintf(r->op, sizeof r->op, "%s", op);
    r->in = in;
    r->out = out;
    r->T = T;
    r->ours_ms = ours;
    r->base_ms = base;
    r->ratio = base / ours; /* throughput relative to the baseline */
    r->goal = goal;
    r->reps = reps;
}

/* The baseline: y[T, out] = x[T, in]·Wᵀ with the fp32 weight, threaded OpenBLAS. */
static void sgemm_xwt(const float *x, const float *w, int64_t T, int64_t in, int64_t out,
                      float *y) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)out, (int)in, 1.0f, x,
                (int)in, w, (int)in, 0.0f, y, (int)out);
}

/* What one timed call does: ours (backend op) or the baseline. */
typedef enum job { J_DEQUANT, J_MEMCPY, J_LORA_FWD, J_SGEMM } job;

typedef struct layer {
    const ql_backend *be;
    ql_q4 q;
    const ql_lora *lora;
    int64_t in, out, T;
    float *wdq, *dst, *x, *y, *xa;
} layer;

static void run_job(layer *L, job j) {
    switch (j) {
    case J_DEQUANT:
        if (L->be->q4_dequantize(&L->q, L->dst) != QL_OK) die("q4_dequantize");
        break;
    case J_MEMCPY: memcpy(L->dst, L->wdq, (size_t)(L->in * L->out) * sizeof(float)); break;
    case J_LORA_FWD:
        if (L->be->q4_lora_fwd(&L->q, L->lora, L->x, L->T, L->y, L->xa) != QL_OK)
            die("q4_lora_fwd");
        break;
    case J_SGEMM: sgemm_xwt(L->x, L->wdq, L->T, L->in, L->out, L->y); break;
    }
}

/* Median time of one call of `ours` and of `base`. Each repetition times a
 * batch of calls lasting at least MIN_REP_MS (so a short op is not one
 * scheduler hiccup), the batch of ours and the batch of the baseline
 * alternating, so a slow spell of the machine hits both. */
#define MIN_REP_MS 15.0
static void measure(layer *L, job ours, job base, int reps, double *ours_ms, double *base_ms) {
    job jobs[2] = {ours, base};
    int iters[2];
    for (int k = 0; k < 2; k++) {
        run_job(L, jobs[k]); /* warm-up */
        double t0 = now_ms();
        run_job(L, jobs[k]);
        double once = now_ms() - t0;
        iters[k] = once >= MIN_REP_MS ? 1 : (int)(MIN_REP_MS / (once > 1e-3 ? once : 1e-3)) + 1;
    }
    double *t[2];
    for (int k = 0; k < 2; k++) t[k] = xmalloc((size_t)reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            double t0 = now_ms();
            for (int i = 0; i < iters[k]; i++) run_job(L, jobs[k]);
            t[k][r] = (now_ms() - t0) / iters[k];
        }
    }
    *ours_ms = median(t[0], reps);
    *base_ms = median(t[1], reps);
    free(t[0]);
    free(t[1]);
}

/* One linear layer [out, in]: dequantize vs memcpy, then forward at each T. */
static void bench_layer(const ql_backend *be, int64_t in, int64_t out, const int64_t *Ts, int nT,
                        int reps) {
    layer L;
    memset(&L, 0, sizeof L);
    L.be = be;
    L.in = in;
    L.out = out;
    int64_t n = in * out;
    float *w = xmalloc((size_t)n * sizeof(float));
    fill(w, n, -0.05f, 0.05f);
    ql_q4 host;
    if (ql_q4_quantize(w, out, in, QL_QTYPE_NF4, 64, 1, &host) != QL_OK) die("quantize");
    free(w);
    if (be->q4_upload(&host, &L.q) != QL_OK) die("q4_upload");

    L.wdq = xmalloc((size_t)n * sizeof(float)); /* the dequantized weight */
    L.dst = xmalloc((size_t)n * sizeof(float));
    if (be->q4_dequantize(&L.q, L.wdq) != QL_OK) die("q4_dequantize");
    double ours, base;
    measure(&L, J_DEQUANT, J_MEMCPY, reps, &ours, &base);
    add_row("dequantize", in, out, 0, ours, base, GOAL_DEQUANT, reps);

    float *A = xmalloc((size_t)LORA_R * (size_t)in * sizeof(float));
    float *B = xmalloc((size_t)out * LORA_R * sizeof(float));
    fill(A, LORA_R * in, -0.02f, 0.02f);
    fill(B, out * LORA_R, -0.02f, 0.02f);
    ql_lora lora = {.A = A, .B = B, .r = LORA_R, .scale = 32.0f / LORA_R};
    L.lora = &lora;
    for (int k = 0; k < nT; k++) {
        L.T = Ts[k];
        L.x = xmalloc((size_t)(L.T * in) * sizeof(float));
        L.y = xmalloc((size_t)(L.T * out) * sizeof(float));
        L.xa = xmalloc((size_t)(L.T * LORA_R) * sizeof(float));
        fill(L.x, L.T * in, -1.0f, 1.0f);
        measure(&L, J_LORA_FWD, J_SGEMM, reps, &ours, &base);
        add_row("lora_fwd", in, out, L.T, ours, base, GOAL_MATMUL, reps);
        free(L.x);
        free(L.y);
        free(L.xa);
    }
    free(A);
    free(B);
    free(L.wdq);
    free(L.dst);
    be->q4_free(&L.q);
    ql_q4_free(&host);
}

static void cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *c = strchr(line, ':');
        if (!c) continue;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = '\0';
        snprintf(buf, len, "%s", c);
        break;
    }
    fclose(f);
}

/* The 1-minute load average: how busy the machine was around the run. */
static double loadavg(void) {
    double l = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1.0;
        fclose(f);
    }
    return l;
}

/* JSON string body: the few characters a CPU or host name could need escaped. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned)(unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* mkdir -p of the directory part of path. */
static void make_parent_dirs(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return;
        *p = '/';
    }
}

int main(int argc, char **argv) {
    const char *json = NULL;
    int reps = 7, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else {
            fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    char json_default[512];
    if (!json) {
        snprintf(json_default, sizeof json_default, "bench/results/cpu-%s.json", host);
        json = json_default;
    }
    const ql_backend *be = ql_backend_by_name("cpu");
    if (!be) die("backend cpu");
    char model[256];
    cpu_model(model, sizeof model);
    int threads = omp_get_max_threads();
    int blas_threads = openblas_get_num_threads();
    printf("cpu: %s, %d OpenMP threads, OpenBLAS %d threads\n", model, threads, blas_threads);

    double load_start = loadavg();
    double t_start = now_ms();
    static const int64_t small_T[] = {16, 256};
    static const int64_t big_T[] = {16};
    bench_layer(be, 576, 1536, small_T, 2, reps);
    bench_layer(be, 1536, 576, small_T, 2, reps);
    if (!quick) {
        bench_layer(be, 4096, 14336, big_T, 1, reps);
        bench_layer(be, 14336, 4096, big_T, 1, reps);
    }
    double total_s = (now_ms() - t_start) * 1e-3;
    double load_end = loadavg();

    printf("\nratio = baseline time / our time (throughput relative to the baseline; higher is "
           "better); median of reps\n");
    printf("%-10s %-12s %5s %11s %11s %-13s %7s %6s %4s\n", "op", "in->out", "T", "ours ms",
           "base ms", "baseline", "ratio", "goal", "ok");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows_[i];
        char shape[32], T[16];
        snprintf(shape, sizeof shape, "%lld->%lld", (long long)r->in, (long long)r->out);
        snprintf(T, sizeof T, "%lld", (long long)r->T);
        printf("%-10s %-12s %5s %11.3f %11.3f %-13s %7.3f %6.2f %4s\n", r->op, shape,
               r->T ? T : "-", r->ours_ms, r->base_ms, r->T ? "cblas_sgemm" : "memcpy", r->ratio,
               r->goal, r->ratio >= r->goal ? "yes" : "no");
    }
    printf("total %.1f s; load average %.2f before, %.2f after (%d threads: a load above that "
           "means other work shared the cores)\n",
           total_s, load_start, load_end, threads);

    make_parent_dirs(json);
    FILE *f = fopen(json, "w");
    if (!f) {
        perror(json);
        return 1;
    }
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"bench\": \"cpu\",\n  \"date\": \"%s\",\n  \"host\": ", date);
    json_str(f, host);
    fprintf(f, ",\n  \"cpu_model\": ");
    json_str(f, model);
    fprintf(f, ",\n  \"omp_threads\": %d,\n  \"openblas_threads\": %d,\n", threads, blas_threads);
    fprintf(f, "  \"backend\": \"%s\",\n  \"quant\": \"nf4, double quant, blocksize 64\",\n",
            be->name);
    fprintf(f, "  \"lora_r\": %d,\n  \"ratio\": \"baseline time / our time\",\n", LORA_R);
    fprintf(f, "  \"total_s\": %.2f,\n  \"loadavg_before\": %.2f,\n  \"loadavg_after\": %.2f,\n",
            total_s, load_start, load_end);
    fprintf(f, "  \"results\": [\n");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows_[i];
        fprintf(f,
                "    {\"op\": \"%s\", \"in\": %lld, \"out\": %lld, \"T\": %lld, "
                "\"baseline\": \"%s\", \"ours_ms\": %.4f, \"baseline_ms\": %.4f, "
                "\"ratio\": %.4f, \"goal\": %.2f, \"reps\": %d}%s\n",
                r->op, (long long)r->in, (long long)r->out, (long long)r->T,
                r->T ? "cblas_sgemm" : "memcpy", r->ours_ms, r->base_ms, r->ratio, r->goal, r->reps,
                i + 1 < nrows ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
    printf("wrote %s\n", json);
    return 0;
}
