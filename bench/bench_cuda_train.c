/* The QLoRA training step end to end on the cuda backend: a Llama-3-8B-shaped
 * model (hidden 4096, 32 heads / 8 kv heads of 128, intermediate 14336,
 * vocab 128256, untied) with random NF4 + double-quant weights generated on
 * the host (model/random_source.c, no quantization), LoRA r 16 alpha 32 on
 * all seven projections, one sequence of 2048 tokens per step, with and
 * without activation checkpointing; then without checkpointing and with LoRA
 * dropout P (--dropout, default 0.1; 0 skips it), what most QLoRA recipes
 * use: the cost of dropout in the step; then with checkpointing and every
 * layer's linears kept dequantized in bf16 (quant.dequantized_layers; the
 * same results, no dequantize pass; --no-kept skips it): what that buys
 * where W is dequantized twice a step (the forward pass and the recomputed
 * one; the backward reads the copy lent for the layer, llama_step.c).
 *
 *   bench_cuda_train [--layers L] [--seq S] [--batch B] [--steps N] [--warmup W]
 *                    [--budget SECONDS] [--json PATH] [--quick] [--tiny] [--dropout P]
 *                    [--no-kept]
 *
 * A step is what the trainer does per optimizer step with one micro-batch:
 * zero the gradients, forward + backward (lm_head and loss in chunks), the
 * global norm and clipping on the device, AdamW; it ends when the loss and
 * the norm are on the host, so wall-clock time per step is exact. Median of
 * N timed steps after W warm-up steps (fewer when --budget would be
 * exceeded).
 *
 * FLOPs, the "4N" convention: per token, 2N forward + 2N for the activation
 * gradients, N = the base linears of every layer + lm_head (no weight
 * gradient: the base is frozen); plus LoRA, 6·r·(in + out) per adapted
 * projection and token (x·Aᵀ, ·Bᵀ forward; dy·B, dx, dA, dB backward); plus
 * causal attention, 6·S²·head_dim·heads per layer and sequence (QKᵀ and PV
 * forward at half the square, twice that backward). Recomputation under
 * checkpointing earns nothing. MFU = FLOPs / time / peak, peak the dense
 * bf16 rate of the datasheet (989.4 TFLOP/s for H100/H200 SXM) and, beside
 * it, the cuBLASLt rate measured here on 8192³. With fewer than 32 layers the
 * full model's tokens/s is projected at the same MFU (FLOPs per token of 32
 * layers), which is what "scaled per layer" means here.
 *
 * Profile (unless --no-profile): one more step per configuration with every
 * op timed by CUDA events (bench/cuda_op_profile.h), printed as the device
 * time per op and its share: where the step's time goes.
 *
 * Memory: the backend's counted peak over the timed steps (every cudaMalloc
 * of the backend), the device's used memory (cudaMemGetInfo), and
 * model/llama_mem.c's estimate for the same configuration.
 *
 * --tiny (for the CUDA emulator: the same code, nothing meaningful timed): a
 * model of the same form with hidden 256, 2 heads / 1 kv head of 128,
 * intermediate 896, vocab 4096, at most 2 layers of 128 tokens, lm_head in
 * chunks of 64 rows, 1 warm-up and 2 timed steps, cuBLASLt on 256³.
 *
 * Without a device it prints "no CUDA device" and exits 0. */
#include <math.h>
#include <time.h>

#include "core/clock.h"
#include "cuda_bench_util.h"
#include "cuda_op_profile.h"
#include "model/llama.h"
#include "model/llama_mem.h"
#include "model/random_source.h"
#include "train/optim.h"

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

#define RANK 16
#define FULL_LAYERS 32

static void llama3_8b(ql_hf_config *c, int layers, int tiny) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
    c->hidden_size = tiny ? 256 : 4096;
    c->intermediate_size = tiny ? 896 : 14336;
    c->num_hidden_layers = layers;
    c->num_attention_heads = tiny ? 2 : 32;
    c->num_key_value_heads = tiny ? 1 : 8;
    c->head_dim = 128;
    c->vocab_size = tiny ? 4096 : 128256;
    c->max_position_embeddings = 8192;
    c->rms_norm_eps = 1e-5;
    c->rope_theta = 500000.0;
    c->rope_type = QL_ROPE_DEFAULT;
    snprintf(c->rope_type_name, sizeof c->rope_type_name, "default");
}

/* FLOPs of one step under the 4N convention (see the top of the file). */
static double step_flops(const ql_hf_config *c, int layers, int64_t B, int64_t S) {
    const double d = c->hidden_size, kv = c->num_key_value_heads * c->head_dim;
    const double im = c->intermediate_size, V = c->vocab_size, T = (double)(B * S);
    const double lin = 2 * d * d + 2 * d * kv + 3 * d * im;
    const double lora = RANK * ((d + d) + 2 * (d + kv) + (d + d) + 2 * (d + im) + (im + d));
    const double dense = 4 * T * (layers * lin + V * d);
    const double adapters = 6 * T * layers * lora;
    const double attn =
        6.0 * (double)B * (double)S * (double)S * c->head_dim * c->num_attention_heads * layers;
    return dense + adapters + attn;
}

typedef struct result {
    int ckpt;
    double dropout;
    int kept; /* every layer's linears kept dequantized */
    double step_s, tokens_per_s, tflops, mfu, mfu_cublas, full_tokens_per_s;
    double load_s, load_upload_s, first_loss, last_loss;
    double wait_fraction;          /* median share of a step the host waited for the device */
    double prof_ms[PROF_N];        /* the profiled step's device time per op */
    double phase_ms[QL_Q4_PHASES]; /* its q4_lora calls' device time by phase */
    int prof_calls[PROF_N];
    size_t peak, device_used, estimate, estimate_reserve;
    int steps;
} result;

static void run(const ql_backend *be, int layers, int tiny, int64_t B, int64_t S, int ckpt,
                double dropout, int kept, int warm, int steps, double budget, double peak_flops,
                double cublas, int profile, result *r) {
    memset(r, 0, sizeof *r);
    r->ckpt = ckpt;
    r->dropout = dropout;
    r->kept = kept;
    ql_hf_config cfg;
    llama3_8b(&cfg, layers, tiny);
    ql_random_source_opts ro = {.seed = 1,
                                .std = 0.02f,
                                .q4 = 1,
                                .quant_type = QL_QTYPE_NF4,
                                .blocksize = 64,
                                .double_quant = 1};
    ql_model_source src;
    BTRY(ql_random_source_open(&cfg, &ro, &src));
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.lora.r = RANK;
    o.lora.alpha = 32.0f;
    o.lora.dropout = (float)dropout;
    o.checkpoint_activations = ckpt;
    o.dequantized_layers = kept ? layers : 0;
    o.max_batch = B;
    o.max_seq = S;
    o.quiet = 1;
    if (tiny) o.logit_rows = 64; /* several lm_head chunks, as at full size */
    ql_mem_estimate est;
    BTRY(ql_llama_mem_estimate(&cfg, &o, 1, 1, &est));
    r->estimate = est.total;
    r->estimate_reserve = est.runtime_reserve;

    ql_cuda_release_cache();
    ql_mem_stats m0;
    be->mem_stats(&m0);
    ql_llama *m;
    BTRY(ql_llama_load_source(&src, &o, &m));
    ql_model_source_close(&src);
    ql_llama_load_info li;
    ql_llama_load_stats(m, &li);
    r->load_s = li.total_s;
    r->load_upload_s = li.upload_s;
    ql_adapters *a = ql_llama_adapters(m);
    ql_optim opt;
    BTRY(ql_optim_init(&opt, be, a->n));

    const int64_t T = B * S;
    int32_t *ids = malloc((size_t)T * sizeof *ids), *tg = malloc((size_t)T * sizeof *tg);
    uint64_t x = 12345;
    for (int64_t t = 0; t < T; t++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[t] = (int32_t)((x >> 33) % (uint64_t)cfg.vocab_size);
    }
    for (int64_t t = 0; t < T; t++) tg[t] = (t + 1) % S ? ids[t + 1] : -100;
    int64_t n_tg = T - B;
    ql_batch batch = {.batch = B, .seq = S, .ids = ids, .targets = tg};
    ql_optim_config oc = {.beta1 = 0.9,
                          .beta2 = 0.999,
                          .eps = 1e-8,
                          .max_grad_norm = 1.0,
                          .on_nonfinite = QL_NONFINITE_SKIP,
                          .max_nonfinite_in_a_row = 1000};
    double *times = malloc((size_t)(steps > 0 ? steps : 1) * sizeof *times);
    double *waits = malloc((size_t)(steps > 0 ? steps : 1) * sizeof *waits);
    int timed = 0;
    double t_start = ql_clock_s();
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm) be->mem_reset_peak();
        double t0 = ql_clock_s(), loss;
        int64_t got;
        ql_step_result sr;
        BTRY(ql_optim_zero_grads(&opt, a->grads));
        BTRY(ql_llama_forward_backward(m, &batch, 1, 1.0f / (float)n_tg, &loss, &got));
        BTRY(ql_optim_step(&opt, &oc, s + 1, loss / (double)n_tg, 1e-4, a->params, a->grads, &sr));
        double dt = ql_clock_s() - t0;
        if (s == 0) r->first_loss = loss / (double)n_tg;
        r->last_loss = loss / (double)n_tg;
        if (s >= warm) {
            waits[timed] = ql_llama_last_wait_s(m) / dt;
            times[timed++] = dt;
        }
        printf("  %s step %d: %.1f ms, loss %.4f, grad norm %.4g\n",
               kept          ? "kept dequantized"
               : ckpt        ? "checkpointing"
               : dropout > 0 ? "dropout"
                             : "plain",
               s + 1, dt * 1e3, loss / (double)n_tg, sr.grad_norm);
        fflush(stdout);
        /* This configuration's share of the budget: stop early rather than overrun. */
        if (s >= warm && timed >= 1 && ql_clock_s() - t_start + dt > budget) break;
    }
    ql_mem_stats ms;
    be->mem_stats(&ms);
    if (profile) {
        /* One more step with every op timed (after the memory figures:
         * the timer's events are not the step's). */
        const ql_backend *pb = prof_wrap(be);
        ql_cuda_q4_phases_enable(1);
        ql_llama_set_backend(m, pb);
        opt.be = pb;
        double loss;
        int64_t got;
        ql_step_result sr;
        BTRY(ql_optim_zero_grads(&opt, a->grads));
        BTRY(ql_llama_forward_backward(m, &batch, 1, 1.0f / (float)n_tg, &loss, &got));
        BTRY(ql_optim_step(&opt, &oc, warm + steps + 1, loss / (double)n_tg, 1e-4, a->params,
                           a->grads, &sr));
        ql_llama_set_backend(m, be);
        opt.be = be;
        memcpy(r->prof_ms, prof_ms, sizeof prof_ms);
        memcpy(r->prof_calls, prof_calls, sizeof prof_calls);
        ql_cuda_q4_phases_get(r->phase_ms, NULL);
        ql_cuda_q4_phases_enable(0);
    }
    r->peak = ms.peak - m0.in_use;
    r->device_used = ms.device_used;
    r->steps = timed;
    r->step_s = bench_median(times, timed);
    r->wait_fraction = bench_median(waits, timed);
    r->tokens_per_s = (double)T / r->step_s;
    double fl = step_flops(&cfg, layers, B, S);
    r->tflops = fl / r->step_s / 1e12;
    r->mfu = fl / r->step_s / peak_flops;
    r->mfu_cublas = cublas > 0 ? r->tflops / cublas : 0;
    /* The full model at the same MFU. */
    r->full_tokens_per_s = r->mfu * peak_flops / (step_flops(&cfg, FULL_LAYERS, B, S) / (double)T);
    free(times);
    free(waits);
    free(ids);
    free(tg);
    ql_optim_free(&opt);
    ql_llama_free(m);
    ql_cuda_release_cache();
}

int main(int argc, char **argv) {
    int layers = FULL_LAYERS, warm = 2, steps = 5, quick = 0, tiny = 0, profile = 1, with_kept = 1;
    int64_t B = 1, S = 2048;
    double budget = 150, dropout = 0.1;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--layers") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(a, "--seq") && i + 1 < argc)
            S = atoll(argv[++i]);
        else if (!strcmp(a, "--batch") && i + 1 < argc)
            B = atoll(argv[++i]);
        else if (!strcmp(a, "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && i + 1 < argc)
            warm = atoi(argv[++i]);
        else if (!strcmp(a, "--budget") && i + 1 < argc)
            budget = atof(argv[++i]);
        else if (!strcmp(a, "--json") && i + 1 < argc)
            json = argv[++i];
        else if (!strcmp(a, "--quick"))
            quick = 1;
        else if (!strcmp(a, "--tiny"))
            tiny = 1;
        else if (!strcmp(a, "--no-profile"))
            profile = 0;
        else if (!strcmp(a, "--dropout") && i + 1 < argc)
            dropout = atof(argv[++i]);
        else if (!strcmp(a, "--no-kept"))
            with_kept = 0;
        else {
            fprintf(stderr,
                    "usage: bench_cuda_train [--layers L] [--seq S] [--batch B] [--steps N] "
                    "[--warmup W] [--budget SECONDS] [--json PATH] [--quick] [--tiny] "
                    "[--no-profile] [--dropout P] [--no-kept]\n");
            return 2;
        }
    }
    if (quick) layers = layers > 4 ? 4 : layers, steps = steps > 3 ? 3 : steps, warm = 1;
    if (tiny) layers = layers > 2 ? 2 : layers, S = S > 128 ? 128 : S;
    if (tiny) steps = steps > 2 ? 2 : steps, warm = warm > 1 ? 1 : warm;
    if (layers < 1 || S < 2 || B < 1 || steps < 1 || warm < 0 || !(dropout >= 0 && dropout < 1)) {
        fprintf(stderr, "bench_cuda_train: bad sizes\n");
        return 2;
    }
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
    int hopper =
        strstr(info.name, "H100") || strstr(info.name, "H200") || strstr(info.name, "H800");
    double peak = hopper ? 989.4e12 : 0;
    const int64_t cube = tiny ? 256 : 8192;
    const char *model_name = tiny ? "tiny Llama (hidden 256)" : "Llama-3-8B";
    double cublas = bench_cublas_tflops(cube, tiny ? 2 : 10);
    if (!peak) peak = cublas * 1e12; /* another GPU: against what cuBLASLt reaches */
    printf("device: %s, %d SMs; cuBLASLt bf16 %lld^3: %.0f TFLOP/s; MFU against %.1f TFLOP/s\n",
           info.name, info.sm_count, (long long)cube, cublas, peak / 1e12);
    printf("model: %s shapes, %d of %d layers, NF4 + double quant (random), LoRA r %d on "
           "all 7 projections, %lld x %lld tokens per step\n",
           model_name, layers, FULL_LAYERS, RANK, (long long)B, (long long)S);

    /* Configurations: checkpointing off, on; off with LoRA dropout; on with
     * every layer kept dequantized. The budget is split by `share`. */
    typedef struct bench_cfg {
        int ckpt;
        double dropout;
        int kept;
        double share;
        const char *name, *col;
    } bench_cfg;
    bench_cfg cfgs[4];
    int n_cfg = 0, i_drop = -1, i_kept = -1;
    cfgs[n_cfg++] = (bench_cfg){0, 0.0, 0, 0.3, "without checkpointing", "off"};
    cfgs[n_cfg++] = (bench_cfg){1, 0.0, 0, 0.3, "with activation checkpointing", "on"};
    if (dropout > 0) {
        i_drop = n_cfg;
        cfgs[n_cfg++] =
            (bench_cfg){0, dropout, 0, 0.15, "without checkpointing, LoRA dropout", "drop"};
    }
    if (with_kept) {
        i_kept = n_cfg;
        cfgs[n_cfg++] = (bench_cfg){
            1, 0.0, 1, 0.25, "with activation checkpointing, every layer kept dequantized", "kept"};
    }
    double shares = 0;
    for (int c = 0; c < n_cfg; c++) shares += cfgs[c].share;
    result res[4];
    for (int c = 0; c < n_cfg; c++) {
        const bench_cfg *k = &cfgs[c];
        run(be, layers, tiny, B, S, k->ckpt, k->dropout, k->kept, warm, steps,
            k->share / shares * budget, peak, cublas, profile, &res[c]);
        result *r = &res[c];
        printf("%s: load %.1f s (upload %.1f s); %.1f ms/step (median of %d), %.0f tokens/s, "
               "%.0f TFLOP/s, MFU %.1f%% (%.1f%% of cuBLASLt); full 32 layers at this MFU: %.0f "
               "tokens/s; peak %.2f GiB counted (estimate %.2f + %.1f reserve), device used %.2f "
               "GiB\n",
               k->name, r->load_s, r->load_upload_s, r->step_s * 1e3, r->steps, r->tokens_per_s,
               r->tflops, 100 * r->mfu, 100 * r->mfu_cublas, r->full_tokens_per_s,
               r->peak / 1073741824.0, r->estimate / 1073741824.0,
               r->estimate_reserve / 1073741824.0, r->device_used / 1073741824.0);
    }
    printf("\n%-16s %9s %10s %8s %7s %12s %10s %10s\n", "checkpointing", "ms/step", "tokens/s",
           "TFLOP/s", "MFU", "32L tok/s", "peak GiB", "est. GiB");
    for (int c = 0; c < n_cfg; c++) {
        char name[32];
        if (c == i_drop)
            snprintf(name, sizeof name, "off, dropout %g", dropout);
        else
            snprintf(name, sizeof name, "%s", c == i_kept ? "on, kept dequant" : cfgs[c].col);
        printf("%-16s %9.1f %10.0f %8.0f %6.1f%% %12.0f %10.2f %10.2f\n", name, res[c].step_s * 1e3,
               res[c].tokens_per_s, res[c].tflops, 100 * res[c].mfu, res[c].full_tokens_per_s,
               res[c].peak / 1073741824.0, res[c].estimate / 1073741824.0);
    }
    printf("goals: MFU >= 50%% without checkpointing, >= 36%% with it\n");
    char fb_first[192];
    const int64_t fallbacks = ql_cuda_gemm_fallbacks(fb_first, sizeof fb_first);
    printf("products cuBLASLt had no algorithm for (the slow tiled kernel ran them): %lld%s%s\n",
           (long long)fallbacks, fallbacks ? ", the first " : "", fb_first);
    if (i_drop >= 0)
        printf("LoRA dropout %g costs %.1f%% of the step without checkpointing\n", dropout,
               100 * (res[i_drop].step_s / res[0].step_s - 1));
    if (i_kept >= 0)
        printf("every layer kept dequantized (%.2f GiB more at peak) makes the step with "
               "checkpointing %.1f%% faster\n",
               ((double)res[i_kept].peak - (double)res[1].peak) / 1073741824.0,
               100 * (res[1].step_s / res[i_kept].step_s - 1));
    /* Near 0: the device finished before the host had queued the step, so
     * launches, not kernels, set the pace (CUDA graphs would pay off). */
    printf("host waited for the device %.0f%% / %.0f%% of a step (off / on): %s\n",
           100 * res[0].wait_fraction, 100 * res[1].wait_fraction,
           res[0].wait_fraction < 0.1 ? "launch-bound, the host is the pace"
                                      : "the device is the pace, launches are hidden");
    if (profile) {
        /* The ops by device time, largest first (off's order for both). */
        int order[PROF_N];
        for (int i = 0; i < PROF_N; i++) order[i] = i;
        for (int i = 1; i < PROF_N; i++)
            for (int k = i; k > 0 && res[0].prof_ms[order[k - 1]] < res[0].prof_ms[order[k]]; k--) {
                int x = order[k];
                order[k] = order[k - 1];
                order[k - 1] = x;
            }
        double tot[4] = {0, 0, 0, 0};
        for (int c = 0; c < n_cfg; c++)
            for (int i = 0; i < PROF_N; i++) tot[c] += res[c].prof_ms[i];
        printf("\nprofile: device ms per op in one step (each op timed alone; checkpointing "
               "off, on%s%s)\n%-14s",
               i_drop >= 0 ? ", off with LoRA dropout" : "",
               i_kept >= 0 ? ", on with every layer kept dequantized" : "", "op");
        for (int c = 0; c < n_cfg; c++) printf(" %6s %7s ms %6s", "calls", cfgs[c].col, "%");
        printf("\n");
        for (int k = 0; k < PROF_N; k++) {
            const int i = order[k];
            int any = 0;
            for (int c = 0; c < n_cfg; c++) any |= res[c].prof_calls[i] != 0;
            if (!any) continue;
            printf("%-14s", prof_names[i]);
            for (int c = 0; c < n_cfg; c++)
                printf(" %6d %10.2f %5.1f%%", res[c].prof_calls[i], res[c].prof_ms[i],
                       tot[c] > 0 ? 100 * res[c].prof_ms[i] / tot[c] : 0);
            printf("\n");
        }
        printf("%-14s", "sum");
        for (int c = 0; c < n_cfg; c++) printf(" %6s %10.2f %6s", "", tot[c], "");
        printf("  (the timed steps:");
        for (int c = 0; c < n_cfg; c++) printf(" %.2f", res[c].step_s * 1e3);
        printf(" ms)\n");
        /* Inside the 4-bit layers: what the next kernel work should go to. */
        printf("\ninside q4_lora_fwd/bwd: device ms by phase in the same step\n%-14s", "phase");
        for (int c = 0; c < n_cfg; c++) printf(" %7s ms %6s", cfgs[c].col, "%");
        printf("\n");
        double ptot[4] = {0, 0, 0, 0};
        for (int c = 0; c < n_cfg; c++)
            for (int p = 0; p < QL_Q4_PHASES; p++) ptot[c] += res[c].phase_ms[p];
        for (int p = 0; p < QL_Q4_PHASES; p++) {
            printf("%-14s", ql_cuda_q4_phase_name(p));
            for (int c = 0; c < n_cfg; c++)
                printf(" %10.2f %5.1f%%", res[c].phase_ms[p],
                       ptot[c] > 0 ? 100 * res[c].phase_ms[p] / ptot[c] : 0);
            printf("\n");
        }
    }

    if (json) {
        FILE *f = bench_json_open(json, "cuda_train", &info);
        fprintf(f,
                "  \"method\": \"%s shapes, %d layers, random NF4+DQ weights, LoRA r=%d "
                "alpha 32 on q,k,v,o,gate,up,down, batch %lld x %lld tokens; a step = zero grads, "
                "forward+backward, device norm and clipping, AdamW; median of the timed steps "
                "after %d warm-up; FLOPs 4N (N = base linears + lm_head) + LoRA 6r(in+out) + "
                "attention 6*S^2*D*H per layer, no credit for recompute; MFU vs %.1f TFLOP/s\",\n",
                model_name, layers, RANK, (long long)B, (long long)S, warm, peak / 1e12);
        if (tiny) fprintf(f, "  \"tiny\": true,\n");
        fprintf(f, "  \"layers\": %d,\n  \"seq\": %lld,\n  \"batch\": %lld,\n", layers,
                (long long)S, (long long)B);
        fprintf(f, "  \"peak_tflops\": %.1f,\n  \"cublas_8192_tflops\": %.1f,\n", peak / 1e12,
                cublas);
        fprintf(f, "  \"gemm_fallbacks\": %lld,\n  \"gemm_fallback_first\": \"%s\",\n",
                (long long)fallbacks, fb_first);
        fprintf(f, "  \"results\": [\n");
        for (int c = 0; c < n_cfg; c++) {
            const result *r = &res[c];
            const int ck = r->ckpt;
            fprintf(
                f,
                "    {\"activation_checkpointing\": %s, \"steps_timed\": %d, \"step_ms\": %.2f, "
                "\"tokens_per_s\": %.1f, \"tflops\": %.1f, \"mfu\": %.4f, \"mfu_of_cublas\": "
                "%.4f, \"full_model_tokens_per_s\": %.1f, \"peak_bytes\": %zu, "
                "\"device_used_bytes\": %zu, \"estimate_bytes\": %zu, \"load_s\": %.2f, "
                "\"first_loss\": %.5f, \"last_loss\": %.5f, \"host_wait_fraction\": %.3f, "
                "\"lora_dropout\": %g, \"dequantized_layers\": %d, \"goal_mfu\": %.2f, "
                "\"profile_ms\": {",
                ck ? "true" : "false", r->steps, r->step_s * 1e3, r->tokens_per_s, r->tflops,
                r->mfu, r->mfu_cublas, r->full_tokens_per_s, r->peak, r->device_used, r->estimate,
                r->load_s, r->first_loss, r->last_loss, r->wait_fraction, r->dropout,
                r->kept ? layers : 0, ck ? 0.36 : 0.50);
            int first = 1;
            for (int i = 0; i < PROF_N; i++) {
                if (!r->prof_calls[i]) continue;
                fprintf(f, "%s\"%s\": %.3f", first ? "" : ", ", prof_names[i], r->prof_ms[i]);
                first = 0;
            }
            fprintf(f, "}, \"q4_phases_ms\": {");
            for (int p = 0; p < QL_Q4_PHASES; p++)
                fprintf(f, "%s\"%s\": %.3f", p ? ", " : "", ql_cuda_q4_phase_name(p),
                        r->phase_ms[p]);
            fprintf(f, "}}%s\n", c + 1 < n_cfg ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        fclose(f);
        printf("wrote %s\n", json);
    }
    return 0;
}

#else
int main(void) {
    printf("no CUDA device (built without CUDA)\n");
    return 0;
}
#endif
