/* The LoRA products that read the dropout-masked input, measured against
 * what they replace, side by side (kernels/cuda/lora_skinny.cu):
 *
 *   bench_cuda_lora [--json PATH] [--reps N] [--quick] [--tiny]
 *
 *   xa masked   ql_cuda_lora_xa with a mask     vs  ql_cuda_dropout_bf16 (x' written)
 *                                                   + cuBLASLt x'·Aᵀ
 *   dA masked   ql_cuda_lora_dA with a mask     vs  the same x' + cuBLASLt Eᵀ·x'
 *   xa plain    ql_cuda_lora_xa without one     vs  cuBLASLt x·Aᵀ
 *   dA plain    ql_cuda_lora_dA without one     vs  cuBLASLt Eᵀ·x
 *
 * The masked rows are what q4_lora runs under dropout (ratio > 1: the new
 * kernels are faster). The plain rows say whether the kernels should also
 * replace cuBLASLt without dropout, which q4_lora does not do yet. LoRA r 16;
 * Llama-3-8B's inputs (4096: q, k, v, o, gate, up; 14336: down) at 2048 and
 * 8192 tokens. GB/s counts x's bytes read once (T·in·2): the floor of any
 * implementation. Median of --reps timed calls after two warm-up calls, CUDA
 * events. --tiny (for the CUDA emulator) divides in by 16 and T by 64.
 *
 * Without a device it prints "no CUDA device" and exits 0. */
#include "cuda_bench_util.h"

#ifdef QL_HAVE_CUDA

#define RANK 16

typedef struct job {
    int64_t T, in;
    void *x, *xm, *A, *E;
    float *xa, *dA;
    ql_dropout d;
} job;

/* What cuBLASLt reads before: x, or x' written by the mask kernel. */
static const void *old_input(job *j) {
    if (!j->d.on) return j->x;
    BTRY(ql_cuda_dropout_bf16(j->x, &j->d, j->T * j->in, j->xm));
    return j->xm;
}

static void xa_old(void *p) {
    job *j = p;
    const void *src = old_input(j);
    BTRY(ql_cuda_gemm_bf16(j->T, RANK, j->in, j->d.scale, src, j->in, 0, j->A, j->in, 1, 0.0f,
                           j->xa, QL_DT_F32, RANK));
}
static void xa_new(void *p) {
    job *j = p;
    BTRY(ql_cuda_lora_xa(j->x, j->A, RANK, RANK, &j->d, j->d.scale, j->T, j->in, j->xa));
}
static void dA_old(void *p) {
    job *j = p;
    const void *src = old_input(j);
    BTRY(ql_cuda_gemm_bf16(RANK, j->in, j->T, j->d.scale, j->E, RANK, 1, src, j->in, 0, 1.0f, j->dA,
                           QL_DT_F32, j->in));
}
static void dA_new(void *p) {
    job *j = p;
    BTRY(ql_cuda_lora_dA(j->E, RANK, j->x, &j->d, j->d.scale, RANK, RANK, j->T, j->in, j->dA));
}

typedef struct result {
    const char *what;
    int64_t T, in;
    double old_ms, new_ms;
} result;

static double gbps(const result *r, double ms) {
    return (double)r->T * (double)r->in * 2.0 / (ms * 1e-3) / 1e9;
}

static void run_shape(int64_t T, int64_t in, int reps, result *res) {
    job j;
    memset(&j, 0, sizeof j);
    j.T = T;
    j.in = in;
    j.x = bench_dev_random(T * in, 2, -1, 1);
    j.A = bench_dev_random((int64_t)RANK * in, 2, -0.01f, 0.01f);
    j.E = bench_dev_random(T * RANK, 2, -1, 1);
    j.dA = bench_dev_random((int64_t)RANK * in, 4, -1, 1);
    BTRY(ql_cuda_malloc((size_t)(T * in) * 2, &j.xm));
    BTRY(ql_cuda_malloc((size_t)(T * RANK) * 4, (void **)&j.xa));
    static const char *const names[4] = {"xa masked", "dA masked", "xa plain", "dA plain"};
    for (int k = 0; k < 4; k++) {
        const int masked = k < 2, fwd = k % 2 == 0;
        /* p = 0.1, as most QLoRA recipes; scale 1 / 0.9 */
        j.d = (ql_dropout){masked, 0x9e3779b97f4a7c15ull + (uint64_t)k, 429496730ull, 1.0f / 0.9f};
        if (!masked) j.d.scale = 1.0f;
        res[k].what = names[k];
        res[k].T = T;
        res[k].in = in;
        res[k].old_ms = bench_time_ms(fwd ? xa_old : dA_old, &j, 2, reps);
        res[k].new_ms = bench_time_ms(fwd ? xa_new : dA_new, &j, 2, reps);
    }
    ql_cuda_free(j.x), ql_cuda_free(j.A), ql_cuda_free(j.E), ql_cuda_free(j.dA);
    ql_cuda_free(j.xm), ql_cuda_free(j.xa);
}

int main(int argc, char **argv) {
    bench_opts opt;
    if (bench_parse_opts(argc, argv, 15, 3, &opt)) return 2;
    const char *json = opt.json;
    const int reps = opt.reps, quick = opt.quick, tiny = opt.tiny;
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device\n");
        return 0;
    }
    ql_cuda_device_info info;
    BTRY(ql_cuda_get_device_info(0, &info));
    printf("device: %s, %d SMs, driver %d, runtime %d\n", info.name, info.sm_count,
           info.driver_version, info.runtime_version);

    static const int64_t shapes[4][2] = {{8192, 4096}, {8192, 14336}, {2048, 4096}, {2048, 14336}};
    const int n_shapes = quick ? 1 : 4;
    result res[16];
    int n = 0;
    for (int s = 0; s < n_shapes; s++) {
        const int64_t T = tiny ? shapes[s][0] / 64 : shapes[s][0];
        const int64_t in = tiny ? shapes[s][1] / 16 : shapes[s][1];
        run_shape(T, in, reps, &res[n]);
        n += 4;
    }

    printf("\nLoRA r=%d products reading x (masked: dropout p 0.1), median of %d; GB/s of x "
           "read once\n",
           RANK, reps);
    printf("%-10s %6s %6s %10s %10s %9s %9s %7s\n", "product", "T", "in", "before ms", "skinny ms",
           "before", "skinny", "ratio");
    for (int i = 0; i < n; i++)
        printf("%-10s %6lld %6lld %10.4f %10.4f %9.0f %9.0f %7.2f\n", res[i].what,
               (long long)res[i].T, (long long)res[i].in, res[i].old_ms, res[i].new_ms,
               gbps(&res[i], res[i].old_ms), gbps(&res[i], res[i].new_ms),
               res[i].old_ms / res[i].new_ms);

    if (json) {
        FILE *f = bench_json_open(json, "cuda_lora", &info);
        fprintf(f,
                "  \"method\": \"median of %d calls after 2 warm-up calls, CUDA events; before: "
                "ql_cuda_dropout_bf16 (masked rows) + cuBLASLt; skinny: kernels/cuda/"
                "lora_skinny.cu; GB/s count T*in*2 bytes; r=%d\",\n",
                reps, RANK);
        if (tiny) fprintf(f, "  \"tiny\": true,\n");
        fprintf(f, "  \"results\": [\n");
        for (int i = 0; i < n; i++)
            fprintf(f,
                    "    {\"product\": \"%s\", \"tokens\": %lld, \"in\": %lld, \"before_ms\": "
                    "%.4f, \"skinny_ms\": %.4f, \"before_gbps\": %.1f, \"skinny_gbps\": %.1f, "
                    "\"ratio\": %.4f}%s\n",
                    res[i].what, (long long)res[i].T, (long long)res[i].in, res[i].old_ms,
                    res[i].new_ms, gbps(&res[i], res[i].old_ms), gbps(&res[i], res[i].new_ms),
                    res[i].old_ms / res[i].new_ms, i + 1 < n ? "," : "");
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
