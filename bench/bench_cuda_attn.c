/* CUDA causal attention, forward + backward, against the same FLOPs at the
 * cuBLASLt bf16 rate measured in the same run.
 *
 *   bench_cuda_attn [--json PATH] [--reps N] [--quick] [--tiny]
 *
 * Llama-3-8B heads (32 query heads, 8 kv heads, head_dim 128), 16384 tokens
 * as 8 rows of 2048 or 2 rows of 8192, causal mask, no document mask (and
 * one run with documents of ~512 tokens, reported beside it). FLOPs are the
 * usual count for causal attention: forward 4·B·H·S²·D / 2 (two products,
 * half the pairs), backward 2.5 times that (five products). The kernels do
 * more (the deterministic backward computes Q·Kᵀ and dO·Vᵀ twice); that is
 * their cost. Goal: (fwd + bwd FLOPs / time) >= 0.6 of the cuBLASLt rate of
 * an 8192³ bf16 product. Median of --reps calls after two warm-ups.
 *
 * --tiny (for the CUDA emulator: the same kernels, nothing meaningful timed):
 * 8 query heads and 2 kv heads, 256 tokens as 2 rows of 128 or 1 row of 256
 * (documents of 64), cuBLASLt on 256³, at most 2 reps. */
#include "cuda_bench_util.h"

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

static int n_heads = 32, n_kv = 8; /* 8 and 2 under --tiny */

typedef struct job {
    const ql_backend *be;
    ql_attn_shape s;
    void *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float *lse;
    int32_t *doc;
} job;

static void run_fwd(void *p) {
    job *j = p;
    BTRY(j->be->attn_fwd(j->q, j->k, j->v, j->doc, &j->s, j->out, j->lse));
}
static void run_bwd(void *p) {
    job *j = p;
    BTRY(j->be->attn_bwd(j->dout, j->q, j->k, j->v, j->out, j->lse, j->doc, &j->s, j->dq, j->dk,
                         j->dv));
}

typedef struct result {
    int64_t batch, seq;
    int docs;
    double fwd_ms, bwd_ms, tflops, ratio;
} result;

static result run_case(const ql_backend *be, int64_t batch, int64_t seq, int doc_len, int reps,
                       double cublas) {
    job j;
    memset(&j, 0, sizeof j);
    j.be = be;
    j.s = (ql_attn_shape){batch, seq, n_heads, n_kv, 128};
    const int64_t nq = batch * seq * n_heads * 128, nk = batch * seq * n_kv * 128;
    j.q = bench_dev_random(nq, 2, -2, 2);
    j.k = bench_dev_random(nk, 2, -2, 2);
    j.v = bench_dev_random(nk, 2, -1, 1);
    j.dout = bench_dev_random(nq, 2, -1, 1);
    BTRY(ql_cuda_malloc((size_t)nq * 2, &j.out));
    BTRY(ql_cuda_malloc((size_t)nq * 2, &j.dq));
    BTRY(ql_cuda_malloc((size_t)nk * 2, &j.dk));
    BTRY(ql_cuda_malloc((size_t)nk * 2, &j.dv));
    BTRY(ql_cuda_malloc((size_t)(batch * n_heads * seq) * 4, (void **)&j.lse));
    if (doc_len > 0) {
        int32_t *h = malloc((size_t)(batch * seq) * 4);
        for (int64_t i = 0; i < batch * seq; i++) h[i] = (int32_t)((i % seq) / doc_len);
        BTRY(ql_cuda_malloc((size_t)(batch * seq) * 4, (void **)&j.doc));
        BTRY(ql_cuda_upload(j.doc, h, (size_t)(batch * seq) * 4));
        free(h);
    }
    result r;
    r.batch = batch;
    r.seq = seq;
    r.docs = doc_len;
    r.fwd_ms = bench_time_ms(run_fwd, &j, 2, reps);
    r.bwd_ms = bench_time_ms(run_bwd, &j, 2, reps);
    const double fwd_flops =
        4.0 * (double)batch * n_heads * (double)seq * (double)seq * 128.0 / 2.0;
    r.tflops = 3.5 * fwd_flops / ((r.fwd_ms + r.bwd_ms) * 1e-3) / 1e12;
    r.ratio = r.tflops / cublas;
    ql_cuda_free(j.q), ql_cuda_free(j.k), ql_cuda_free(j.v), ql_cuda_free(j.dout);
    ql_cuda_free(j.out), ql_cuda_free(j.dq), ql_cuda_free(j.dk), ql_cuda_free(j.dv);
    ql_cuda_free(j.lse), ql_cuda_free(j.doc);
    return r;
}

int main(int argc, char **argv) {
    bench_opts opt;
    if (bench_parse_opts(argc, argv, 5, 2, &opt)) return 2;
    const char *json = opt.json;
    const int reps = opt.reps, quick = opt.quick, tiny = opt.tiny;
    /* Tokens per case (rows x seq) and the cuBLASLt cube: shrunk by 64 and 32 under --tiny. */
    const int64_t tokens = tiny ? 256 : 16384, cube = tiny ? 256 : 8192;
    const int64_t long_seq = tiny ? 256 : 8192, short_seq = tiny ? 128 : 2048;
    const int doc_len = tiny ? 64 : 512;
    if (tiny) n_heads = 8, n_kv = 2;
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
    const double cublas = bench_cublas_tflops(cube, reps);
    printf("cuBLASLt bf16 %lld^3: %.1f TFLOP/s\n", (long long)cube, cublas);

    result res[3];
    int n = 0;
    res[n++] = run_case(be, tokens / short_seq, short_seq, 0, reps, cublas);
    if (!quick) {
        res[n++] = run_case(be, tokens / long_seq, long_seq, 0, reps, cublas);
        res[n++] = run_case(be, tokens / long_seq, long_seq, doc_len, reps, cublas);
    }

    printf("\ncausal attention fwd+bwd, H=%d KV=%d D=128, %lld tokens; median of %d\n", n_heads,
           n_kv, (long long)tokens, reps);
    printf("%6s %6s %6s %9s %9s %9s %7s %6s\n", "batch", "seq", "docs", "fwd ms", "bwd ms",
           "TFLOP/s", "ratio", "goal");
    for (int i = 0; i < n; i++)
        printf("%6lld %6lld %6d %9.3f %9.3f %9.1f %7.3f %6.2f\n", (long long)res[i].batch,
               (long long)res[i].seq, res[i].docs, res[i].fwd_ms, res[i].bwd_ms, res[i].tflops,
               res[i].ratio, 0.6);

    if (json) {
        FILE *f = bench_json_open(json, "cuda_attn", &info);
        fprintf(f,
                "  \"method\": \"median of %d calls after 2 warm-up calls, CUDA events; FLOPs "
                "3.5 x 4*B*H*S^2*D/2 (causal fwd + bwd); ratio against cuBLASLt bf16 %lld^3 "
                "in the same run\",\n",
                reps, (long long)cube);
        if (tiny) fprintf(f, "  \"tiny\": true,\n");
        fprintf(f, "  \"cublas_bf16_tflops\": %.2f,\n  \"results\": [\n", cublas);
        for (int i = 0; i < n; i++)
            fprintf(f,
                    "    {\"batch\": %lld, \"seq\": %lld, \"heads\": %d, \"kv_heads\": %d, "
                    "\"head_dim\": 128, \"doc_len\": %d, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, "
                    "\"tflops\": %.2f, \"ratio\": %.4f, \"goal\": 0.6}%s\n",
                    (long long)res[i].batch, (long long)res[i].seq, n_heads, n_kv, res[i].docs,
                    res[i].fwd_ms, res[i].bwd_ms, res[i].tflops, res[i].ratio,
                    i + 1 < n ? "," : "");
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
