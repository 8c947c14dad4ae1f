/* QLoRA training steps on the "cuda" backend, end to end at the library
 * level (model/llama_step.c + train/optim.c, as the trainer drives them),
 * against the CPU backend and against itself:
 *
 *   1. the same generated model (weights quantized on the host, so both
 *      backends hold the same 4-bit codes), the same packed batches (two
 *      documents in a row, ignored targets, LoRA dropout 0.05 with the same
 *      masks, drawn by each backend) and 6 optimizer steps with clipping:
 *      a. in lockstep (before every step the GPU gets the CPU's adapters):
 *         the loss within 1e-3 relative and the whole gradient vector
 *         within 2e-2 (relative L2 error; bf16 activations) at every step;
 *      b. free-running: every step's loss within 1e-2 of the CPU's, the
 *         loss falling on both, and the adapters' total update pointing the
 *         same way (cosine > 0.95). Gradient norms are only printed here:
 *         Adam turns the 1e-3 gradient noise of bf16 activations into a
 *         visibly different trajectory within a few steps. The rate is 1e-2:
 *         at 2e-2 the loss rose again from step 4 on both backends and the
 *         free-running gap reached 1.4e-2 to 3.5e-2 on three of four seeds
 *         (the LoRA seed, which also draws the dropout masks); at 1e-2 it
 *         stayed within 6.1e-3 on all four;
 *   2. the same run twice on the GPU: bit-identical adapters, moments, norms;
 *   3. a simulated restart: 3 steps, the state a checkpoint holds (adapters,
 *      AdamW m/v/t, the dropout stream) copied to the host, model,
 *      optimizer and the backend's caches freed, a new model loaded, the
 *      state put back, 3 more steps: bit-identical to 6 steps straight;
 *   4. the device vector ops (zero, squared norm, scale) against the host;
 *   5. memory: the bytes the backend counts for the model and optimizer
 *      within 15% of model/llama_mem.c's estimate, and a step's peak
 *      below the estimate's total + 15%;
 *   6. the linears held as stored (quant.type none: bf16 on the GPU,
 *      float32 on the CPU): 1b, 2, 3 and 5 again.
 *
 * The shapes (hidden 256, head_dim 64, GQA 4/2) take the tensor-core
 * attention and the fused GEMM's fast path. Exits 77 without a device. In
 * the nvcc-only build of tests/gpu/run.sh the CPU side is cpu-ref.
 *
 * QL_GPU_TEST_AS=cpu-ref runs every check with the CPU reference standing in
 * for the GPU: the test's own logic, checked where there is no GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda_api.h"
#include "model/llama.h"
#include "model/llama_mem.h"
#include "model/random_source.h"
#include "train/optim.h"
#ifdef QL_CUDA_EMULATED
#include "kernels/cuda/emu/emu_counts.h"
#endif

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

#define STEPS 6
#define B 2
#define S 128

static const ql_backend *gpu, *cpu;
static int stand_in;     /* QL_GPU_TEST_AS: gpu is a CPU backend */
static int n_layers = 2; /* of the models load() makes */
static int n_dense;      /* their layers kept dequantized too (quant.dequantized_layers) */
static int ckpt;         /* activation checkpointing */
static int lend = 1;     /* ql_llama_options.lend_dequantized */
static unsigned targets = QL_PROJ_ALL; /* the projections with LoRA */
static float dropout = 0.05f;
static int original; /* ql_llama_options.base_original: linears held as stored (bf16 on CUDA) */

#define GTRY(expr)                                                                                 \
    do {                                                                                           \
        ql_status s_ = (expr);                                                                     \
        if (s_ != QL_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, ql_error_message());     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void config(ql_hf_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
    c->hidden_size = 256;
    c->intermediate_size = 512;
    c->num_hidden_layers = n_layers;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->head_dim = 64;
    c->vocab_size = 1000;
    c->max_position_embeddings = 4096;
    c->rms_norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    c->rope_type = QL_ROPE_DEFAULT;
    snprintf(c->rope_type_name, sizeof c->rope_type_name, "default");
}

static void options(ql_llama_options *o, const ql_backend *be) {
    ql_llama_options_default(o);
    o->be = be;
    o->lora.r = 16;
    o->lora.alpha = 32.0f;
    o->lora.dropout = dropout;
    o->lora.targets = targets;
    o->max_batch = B;
    o->max_seq = S;
    o->seed = 99;
    o->quiet = 1;
    o->dequantized_layers = n_dense;
    o->checkpoint_activations = ckpt;
    o->lend_dequantized = lend;
    o->base_original = original;
}

static ql_llama *load(const ql_backend *be) {
    ql_hf_config c;
    config(&c);
    ql_model_source src;
    ql_random_source_opts ro = {.seed = 11, .std = 0.05f};
    GTRY(ql_random_source_open(&c, &ro, &src));
    ql_llama_options o;
    options(&o, be);
    ql_llama *m;
    GTRY(ql_llama_load_source(&src, &o, &m));
    ql_model_source_close(&src);
    return m;
}

/* Two packed batches; row 0 holds two documents (positions restart), a
 * target is the next token of the same document, the first 10 of row 1 are
 * ignored. */
static int32_t ids[2][B * S], tgt[2][B * S], pos[2][B * S], doc[2][B * S];
static void make_batches(void) {
    ql_rng r;
    ql_rng_seed(&r, 5);
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < B * S; t++) {
            int row = t / S, i = t % S, cut = 70 + 9 * k;
            doc[k][t] = row == 0 && i >= cut ? 1 : 0;
            pos[k][t] = row == 0 && i >= cut ? i - cut : i;
            /* a learnable stream: mostly +3 steps */
            ids[k][t] = i == 0 || (row == 0 && i == cut) ? (int32_t)ql_rng_below(&r, 1000)
                                                         : (ids[k][t - 1] + 3) % 1000;
        }
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < B * S; t++) {
            int last = t % S == S - 1 || doc[k][t + 1] != doc[k][t];
            tgt[k][t] = last || (t >= S && t < S + 10) ? -100 : ids[k][t + 1];
        }
}

typedef struct run_out {
    double loss[STEPS], norm[STEPS];
    float *params, *m, *v; /* host copies */
    int64_t n;
} run_out;

static ql_optim_config optim_config(void) {
    return (ql_optim_config){.weight_decay = 0.01,
                             .beta1 = 0.9,
                             .beta2 = 0.999,
                             .eps = 1e-8,
                             .max_grad_norm = 0.5,
                             .on_nonfinite = QL_NONFINITE_STOP,
                             .max_nonfinite_in_a_row = 1};
}

/* Steps first..last (1-based) on model m with optimizer o. */
static void steps(ql_llama *m, ql_optim *o, int first, int last, run_out *out) {
    ql_adapters *a = ql_llama_adapters(m);
    const ql_optim_config oc = optim_config();
    for (int s = first; s <= last; s++) {
        int k = s % 2;
        int64_t n_tg = 0;
        for (int t = 0; t < B * S; t++) n_tg += tgt[k][t] >= 0;
        ql_batch b = {
            .batch = B, .seq = S, .ids = ids[k], .targets = tgt[k], .pos = pos[k], .doc = doc[k]};
        double ls;
        int64_t got;
        GTRY(ql_optim_zero_grads(o, a->grads));
        GTRY(ql_llama_forward_backward(m, &b, 1, 1.0f / (float)n_tg, &ls, &got));
        ql_step_result sr;
        GTRY(ql_optim_step(o, &oc, s, ls / (double)n_tg, 1e-2, a->params, a->grads, &sr));
        out->loss[s - 1] = ls / (double)n_tg;
        out->norm[s - 1] = sr.grad_norm;
    }
}

static void save(const ql_backend *be, ql_llama *m, ql_optim *o, run_out *out) {
    ql_adapters *a = ql_llama_adapters(m);
    out->n = a->n;
    out->params = malloc((size_t)a->n * sizeof(float));
    out->m = malloc((size_t)a->n * sizeof(float));
    out->v = malloc((size_t)a->n * sizeof(float));
    GTRY(be->download(out->params, a->params, (size_t)a->n * sizeof(float)));
    GTRY(be->download(out->m, o->m, (size_t)a->n * sizeof(float)));
    GTRY(be->download(out->v, o->v, (size_t)a->n * sizeof(float)));
}

static void run_free(run_out *r) {
    free(r->params);
    free(r->m);
    free(r->v);
}

static void full_run(const ql_backend *be, run_out *out, float **init) {
    ql_llama *m = load(be);
    ql_adapters *a = ql_llama_adapters(m);
    if (init) {
        *init = malloc((size_t)a->n * sizeof(float));
        GTRY(be->download(*init, a->params, (size_t)a->n * sizeof(float)));
    }
    ql_optim o;
    GTRY(ql_optim_init(&o, be, a->n));
    steps(m, &o, 1, STEPS, out);
    save(be, m, &o, out);
    ql_optim_free(&o);
    ql_llama_free(m);
}

static void test_against_cpu(void) {
    run_out g, c;
    float *init;
    memset(&g, 0, sizeof g);
    memset(&c, 0, sizeof c);
    full_run(cpu, &c, &init);
    full_run(gpu, &g, NULL);
    for (int s = 0; s < STEPS; s++) {
        double dl = fabs(g.loss[s] - c.loss[s]) / fabs(c.loss[s]);
        double dn = fabs(g.norm[s] - c.norm[s]) / fabs(c.norm[s]);
        printf("step %d: loss cpu %.6f cuda %.6f (%.1e), grad norm cpu %.5f cuda %.5f (%.1e)\n",
               s + 1, c.loss[s], g.loss[s], dl, c.norm[s], g.norm[s], dn);
        CHECKF(dl <= 1e-2, "step %d: loss %.6f vs cpu %.6f", s + 1, g.loss[s], c.loss[s]);
    }
    CHECK(c.loss[STEPS - 1] < c.loss[0] && g.loss[STEPS - 1] < g.loss[0]);
    double dot = 0, ng = 0, nc = 0;
    for (int64_t i = 0; i < c.n; i++) {
        double ug = (double)g.params[i] - init[i], uc = (double)c.params[i] - init[i];
        dot += ug * uc;
        ng += ug * ug;
        nc += uc * uc;
    }
    double cosine = dot / sqrt(ng * nc);
    printf("adapter update: cosine(cuda, cpu) %.5f, norms %.4g / %.4g\n", cosine, sqrt(ng),
           sqrt(nc));
    CHECKF(cosine > 0.95, "update direction cosine %.4f", cosine);
    free(init);
    run_free(&g);
    run_free(&c);
}

/* 1a: both backends step from the same adapters every time, so their
 * differences cannot compound: the CPU runs the optimizer, the GPU only the
 * forward and backward pass from the CPU's current adapters. From step 2 on
 * LoRA B is non-zero, so the adapters' forward terms are checked as well. */
static void test_lockstep(void) {
    ql_llama *mc = load(cpu), *mg = load(gpu);
    ql_adapters *ac = ql_llama_adapters(mc), *ag = ql_llama_adapters(mg);
    const int64_t n = ac->n;
    CHECK(ag->n == n);
    ql_optim o;
    GTRY(ql_optim_init(&o, cpu, n));
    const ql_optim_config oc = optim_config();
    float *p = malloc((size_t)n * sizeof(float)), *gc = malloc((size_t)n * sizeof(float));
    float *gg = malloc((size_t)n * sizeof(float));
    for (int s = 1; s <= STEPS; s++) {
        const int k = s % 2;
        int64_t n_tg = 0, got;
        for (int t = 0; t < B * S; t++) n_tg += tgt[k][t] >= 0;
        ql_batch b = {
            .batch = B, .seq = S, .ids = ids[k], .targets = tgt[k], .pos = pos[k], .doc = doc[k]};
        GTRY(cpu->download(p, ac->params, (size_t)n * sizeof(float)));
        GTRY(gpu->upload(ag->params, p, (size_t)n * sizeof(float)));
        GTRY(ql_optim_zero_grads(&o, ac->grads));
        GTRY(gpu->zero_f32(ag->grads, n));
        double lc, lg;
        GTRY(ql_llama_forward_backward(mc, &b, 1, 1.0f / (float)n_tg, &lc, &got));
        GTRY(ql_llama_forward_backward(mg, &b, 1, 1.0f / (float)n_tg, &lg, &got));
        GTRY(cpu->download(gc, ac->grads, (size_t)n * sizeof(float)));
        GTRY(gpu->download(gg, ag->grads, (size_t)n * sizeof(float)));
        double err = 0, ref = 0;
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)gg[i] - gc[i];
            err += d * d;
            ref += (double)gc[i] * gc[i];
        }
        const double rel = sqrt(err / ref), dl = fabs(lg - lc) / fabs(lc);
        printf("lockstep %d: loss cpu %.6f cuda %.6f (%.1e), gradient rel. L2 error %.2e\n", s,
               lc / (double)n_tg, lg / (double)n_tg, dl, rel);
        CHECKF(dl <= 1e-3, "lockstep step %d: loss %.6f vs cpu %.6f", s, lg, lc);
        CHECKF(rel <= 2e-2, "lockstep step %d: gradient relative L2 error %.3e", s, rel);
        ql_step_result sr;
        GTRY(ql_optim_step(&o, &oc, s, lc / (double)n_tg, 2e-2, ac->params, ac->grads, &sr));
    }
    free(p), free(gc), free(gg);
    ql_optim_free(&o);
    ql_llama_free(mc);
    ql_llama_free(mg);
}

/* ql_llama_reserve before the first step: the run's adapters, moments and
 * losses are those of a run without it, bit for bit, and (counted by the
 * emulator) the first micro-batch's forward and backward allocate nothing:
 * the pass grew every buffer to the largest micro-batch. */
static void test_reserve(const run_out *straight) {
    if (!stand_in) ql_cuda_release_cache();
    ql_llama *m = load(gpu);
    ql_adapters *ad = ql_llama_adapters(m);
    ql_optim o;
    GTRY(ql_optim_init(&o, gpu, ad->n));
    GTRY(ql_llama_reserve(m, B, S));
#ifdef QL_CUDA_EMULATED
    ql_emu_counts c0, c1;
    const ql_rng rng0 = *ql_llama_rng(m); /* the counted pass draws a dropout key */
    ql_emu_get_counts(&c0);
    double loss;
    int64_t got;
    const ql_batch b = {
        .batch = B, .seq = S, .ids = ids[0], .targets = tgt[0], .pos = pos[0], .doc = doc[0]};
    GTRY(ql_llama_forward_backward(m, &b, 1, 1.0f, &loss, &got));
    GTRY(gpu->zero_f32(ad->grads, ad->n));
    ql_emu_get_counts(&c1);
    *ql_llama_rng(m) = rng0;
    if (!stand_in)
        CHECKF(c1.allocs == c0.allocs, "a micro-batch after ql_llama_reserve allocated %lld times",
               c1.allocs - c0.allocs);
#endif
    run_out r;
    memset(&r, 0, sizeof r);
    steps(m, &o, 1, STEPS, &r);
    save(gpu, m, &o, &r);
    const size_t bytes = (size_t)r.n * sizeof(float);
    CHECKF(r.n == straight->n && !memcmp(straight->params, r.params, bytes) &&
               !memcmp(straight->m, r.m, bytes) && !memcmp(straight->v, r.v, bytes) &&
               !memcmp(straight->loss, r.loss, sizeof r.loss),
           "a run after ql_llama_reserve differs from one without");
    run_free(&r);
    ql_optim_free(&o);
    ql_llama_free(m);
}

static void test_determinism_and_resume(void) {
    run_out a, b, r;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&r, 0, sizeof r);
    full_run(gpu, &a, NULL);
    full_run(gpu, &b, NULL);
    size_t bytes = (size_t)a.n * sizeof(float);
    CHECK(!memcmp(a.params, b.params, bytes) && !memcmp(a.m, b.m, bytes) &&
          !memcmp(a.v, b.v, bytes) && !memcmp(a.loss, b.loss, sizeof a.loss) &&
          !memcmp(a.norm, b.norm, sizeof a.norm));

    /* 3 steps, "checkpoint", tear everything down, reload, 3 more. */
    int k = STEPS / 2;
    ql_llama *m = load(gpu);
    ql_adapters *ad = ql_llama_adapters(m);
    ql_optim o;
    GTRY(ql_optim_init(&o, gpu, ad->n));
    steps(m, &o, 1, k, &r);
    save(gpu, m, &o, &r);
    ql_rng rng = *ql_llama_rng(m);
    int64_t t = o.t;
    ql_optim_free(&o);
    ql_llama_free(m);
    if (!stand_in) ql_cuda_release_cache();
    m = load(gpu);
    ad = ql_llama_adapters(m);
    GTRY(ql_optim_init(&o, gpu, ad->n));
    GTRY(gpu->upload(ad->params, r.params, bytes));
    GTRY(gpu->upload(o.m, r.m, bytes));
    GTRY(gpu->upload(o.v, r.v, bytes));
    o.t = t;
    *ql_llama_rng(m) = rng;
    run_free(&r);
    steps(m, &o, k + 1, STEPS, &r);
    save(gpu, m, &o, &r);
    ql_optim_free(&o);
    ql_llama_free(m);
    CHECKF(!memcmp(a.params, r.params, bytes) && !memcmp(a.m, r.m, bytes) &&
               !memcmp(a.v, r.v, bytes),
           "resumed after step %d: adapters or moments differ from the straight run", k);
    CHECK(!memcmp(a.loss + k, r.loss + k, sizeof(double) * (STEPS - k)));
    test_reserve(&a);
    /* Again on the dequant path, where most of the pass's scratch is. */
    const ql_cuda_q4_path path = ql_cuda_q4_get_path();
    ql_cuda_q4_set_path(QL_CUDA_Q4_DEQUANT_BLAS);
    run_out dq;
    memset(&dq, 0, sizeof dq);
    full_run(gpu, &dq, NULL);
    test_reserve(&dq);
    run_free(&dq);
    ql_cuda_q4_set_path(path);
    run_free(&a);
    run_free(&b);
    run_free(&r);
}

static void test_vec_ops(void) {
    enum { N = 100003 };
    float *h = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float)), *d;
    ql_rng r;
    ql_rng_seed(&r, 2);
    for (int i = 0; i < N; i++) h[i] = ql_rng_normal(&r);
    GTRY(gpu->alloc(N * sizeof(float), (void **)&d));
    GTRY(gpu->upload(d, h, N * sizeof(float)));
    double s1 = 0, s2 = 0, ref = 0;
    for (int i = 0; i < N; i++) ref += (double)h[i] * (double)h[i];
    GTRY(gpu->sq_sum_f32(d, N, &s1));
    GTRY(gpu->sq_sum_f32(d, N, &s2));
    CHECKF(fabs(s1 - ref) <= 1e-12 * ref, "sq_sum %.17g vs host %.17g", s1, ref);
    CHECK(s1 == s2);
    GTRY(gpu->scale_f32(d, N, 0.3f));
    GTRY(gpu->download(back, d, N * sizeof(float)));
    int same = 1;
    for (int i = 0; i < N; i++) same &= back[i] == h[i] * 0.3f;
    CHECK(same);
    GTRY(gpu->zero_f32(d, N));
    GTRY(gpu->download(back, d, N * sizeof(float)));
    same = 1;
    for (int i = 0; i < N; i++) same &= back[i] == 0.0f;
    CHECK(same);
    gpu->free(d);
    free(h);
    free(back);
}

static size_t test_memory(int dense) {
    n_dense = dense;
    if (!stand_in) ql_cuda_release_cache();
    ql_mem_stats a, b, c;
    gpu->mem_stats(&a);
    ql_llama *m = load(gpu);
    ql_adapters *ad = ql_llama_adapters(m);
    ql_optim o;
    GTRY(ql_optim_init(&o, gpu, ad->n));
    gpu->mem_stats(&b);
    gpu->mem_reset_peak();
    run_out r;
    memset(&r, 0, sizeof r);
    steps(m, &o, 1, 1, &r);
    gpu->mem_stats(&c);
    ql_hf_config hc;
    config(&hc);
    ql_llama_options opt;
    options(&opt, gpu);
    ql_mem_estimate e;
    GTRY(ql_llama_mem_estimate(&hc, &opt, !stand_in, 1, &e));
    size_t held = b.in_use - a.in_use, peak = c.peak - a.in_use;
    printf("memory: model + optimizer %zu bytes (estimate %zu without workspace), step peak %zu "
           "(estimate %zu), device used %.1f of %.1f GiB\n",
           held, e.total - e.workspace, peak, e.total, c.device_used / 1073741824.0,
           c.device_total / 1073741824.0);
    CHECK(stand_in ? e.base_dense == 0 : e.base_dense > 0 || !dense || original);
    CHECK(e.linears_f32 == original);
    double want = (double)(e.total - e.workspace);
    CHECKF(fabs((double)held - want) <= 0.15 * want, "held %zu vs estimate %.0f", held, want);
    CHECKF((double)peak <= 1.15 * (double)e.total, "peak %zu vs estimate %zu", peak, e.total);
    CHECK(stand_in || (c.device_total > 0 && c.device_used > 0));
    ql_optim_free(&o);
    ql_llama_free(m);
    n_dense = 0;
    return held - e.base_dense - e.dense_lent;
}

/* quant.type none: the linears held as stored (dense_upload; bf16 in the
 * dequant path's layout on CUDA, float32 on the CPU): the memory the
 * estimate says, losses that follow the CPU's float32 base to bf16
 * precision, and a bit-identical restart. */
static void test_base_original(void) {
    original = 1;
    test_memory(0);
    test_against_cpu();
    test_determinism_and_resume();
    original = 0;
}

/* Layers kept dequantized hold what the estimate says, to the byte (on the
 * CPU backends nothing; they have no q4_keep_dequantized). */
static void test_memory_dense(void) {
    const size_t plain = test_memory(0), with_one = test_memory(1);
    CHECKF(with_one == plain,
           "model + optimizer with layer 0 kept dequantized, less the "
           "estimate's copies: %zu bytes, without: %zu",
           with_one, plain);
}

/* Under checkpointing on the dequant path a layer's weights are lent
 * dequantized copies while it runs (llama_step.c): each is dequantized twice
 * a step (the forward pass, the recomputed one) where the three calls
 * (those two and the backward) dequantized it once each, the buffers hold
 * what the estimate says to the byte, and the run's bits are those without
 * lending. */
static void test_lending(void) {
    if (stand_in) return;
    const ql_cuda_q4_path path = ql_cuda_q4_get_path();
    ql_cuda_q4_set_path(QL_CUDA_Q4_DEQUANT_BLAS);
    ckpt = 1;
    /* Dropout on every projection; then no dropout (the backward's [W ; A]
     * product), LoRA on q, v and down only (copies laid out for r 0 too)
     * and layer 0 keeping a copy of its own (not lent one). */
    static const struct {
        float dropout;
        unsigned targets;
        int dense;
    } cases[] = {{0.05f, QL_PROJ_ALL, 0},
                 {0.0f, 1u << QL_PROJ_Q | 1u << QL_PROJ_V | 1u << QL_PROJ_DOWN, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dropout = cases[c].dropout;
        targets = cases[c].targets;
        n_dense = cases[c].dense;
        run_out r[2];
        int64_t dequants[2];
        for (int k = 0; k < 2; k++) {
            lend = k;
            memset(&r[k], 0, sizeof r[k]);
            double ms[QL_Q4_PHASES];
            int64_t calls[QL_Q4_PHASES];
            ql_cuda_q4_phases_enable(1);
            full_run(gpu, &r[k], NULL);
            ql_cuda_q4_phases_get(ms, calls);
            ql_cuda_q4_phases_enable(0);
            dequants[k] = calls[QL_Q4_PHASE_DEQUANT];
        }
        /* Layers with a copy of their own dequantize nothing. The others,
         * without lending: three a weight, less the backward's of layer 0's
         * q, k and v (no dx there, so no W); with: the two forward passes'. */
        int64_t without = 0, with = 0;
        for (int l = n_dense; l < n_layers; l++) {
            without += 3 * QL_N_PROJ - (l == 0 ? 3 : 0);
            with += 2 * QL_N_PROJ;
        }
        without *= STEPS;
        with *= STEPS;
        CHECKF(dequants[0] == without && dequants[1] == with,
               "case %zu: dequantize passes in %d steps: %lld without lending, %lld with (want "
               "%lld and %lld)",
               c, STEPS, (long long)dequants[0], (long long)dequants[1], (long long)without,
               (long long)with);
        const size_t bytes = (size_t)r[0].n * sizeof(float);
        CHECKF(!memcmp(r[0].params, r[1].params, bytes) && !memcmp(r[0].m, r[1].m, bytes) &&
                   !memcmp(r[0].v, r[1].v, bytes) &&
                   !memcmp(r[0].loss, r[1].loss, sizeof r[0].loss) &&
                   !memcmp(r[0].norm, r[1].norm, sizeof r[0].norm),
               "case %zu: lending changed the run's bits", c);
        run_free(&r[0]);
        run_free(&r[1]);
        lend = 0;
        const size_t held_without = test_memory(cases[c].dense);
        lend = 1;
        const size_t held_with = test_memory(cases[c].dense);
        CHECKF(held_with == held_without,
               "case %zu: model + optimizer with lending, less the estimate's buffers: %zu "
               "bytes, without: %zu",
               c, held_with, held_without);
    }
    dropout = 0.05f;
    targets = QL_PROJ_ALL;
    n_dense = 0;
    ckpt = 0;
    ql_cuda_q4_set_path(path);
}

#ifdef QL_CUDA_EMULATED
/* What a warm step (the third) asks of the device, counted by the
 * emulator: no allocation, and host waits only at the batch's edges (one
 * upload of ids, targets, positions and documents, the losses, the
 * cross-entropy's target check, the gradient norm), so none that grows with
 * the depth: a host read inside a layer would make the host wait for the
 * device once per layer. Launches per layer (kernels and cuBLASLt matmuls:
 * the masked LoRA products are kernels of qlora's where they were matmuls)
 * are held to what this model (r 16 on all seven projections, dropout, the
 * fused path) takes now: more means a change added launches to every layer
 * of every step; raise the bound only for a reason. */
#define WARM_STEP_MAX_WAITS 4
#define LAYER_MAX_LAUNCHES 108
static void count_warm_step(int layers, ql_emu_counts *d) {
    n_layers = layers;
    ql_llama *m = load(gpu);
    n_layers = 2;
    ql_adapters *a = ql_llama_adapters(m);
    ql_optim o;
    GTRY(ql_optim_init(&o, gpu, a->n));
    run_out r;
    memset(&r, 0, sizeof r);
    steps(m, &o, 1, 2, &r);
    ql_emu_counts c0, c1;
    ql_emu_get_counts(&c0);
    steps(m, &o, 3, 3, &r);
    ql_emu_get_counts(&c1);
    d->launches = c1.launches - c0.launches;
    d->matmuls = c1.matmuls - c0.matmuls;
    d->host_waits = c1.host_waits - c0.host_waits;
    d->allocs = c1.allocs - c0.allocs;
    d->frees = c1.frees - c0.frees;
    printf("warm step, %d layers: %lld kernels, %lld cuBLASLt matmuls, %lld host waits, %lld "
           "allocations, %lld frees\n",
           layers, d->launches, d->matmuls, d->host_waits, d->allocs, d->frees);
    ql_optim_free(&o);
    ql_llama_free(m);
}

static void test_warm_step_counts(void) {
    if (stand_in) return;
    /* The fused path whatever QL_CUDA_Q4_PATH says: the bound is its count. */
    const ql_cuda_q4_path path = ql_cuda_q4_get_path();
    ql_cuda_q4_set_path(QL_CUDA_Q4_FUSED);
    ql_emu_counts two, three;
    count_warm_step(2, &two);
    count_warm_step(3, &three);
    ql_cuda_q4_set_path(path);
    CHECK(two.allocs == 0 && two.frees == 0 && three.allocs == 0 && three.frees == 0);
    CHECKF(three.host_waits == two.host_waits, "host waits: %lld with 3 layers, %lld with 2",
           three.host_waits, two.host_waits);
    CHECKF(two.host_waits <= WARM_STEP_MAX_WAITS, "host waits: %lld, at most %d expected",
           two.host_waits, WARM_STEP_MAX_WAITS);
    printf("per layer: %lld kernels, %lld cuBLASLt matmuls\n", three.launches - two.launches,
           three.matmuls - two.matmuls);
    const long long per_layer = three.launches - two.launches + three.matmuls - two.matmuls;
    CHECKF(per_layer <= LAYER_MAX_LAUNCHES,
           "kernels and matmuls per layer: %lld, at most %d expected", per_layer,
           LAYER_MAX_LAUNCHES);
}
#endif

int main(void) {
    const char *as = getenv("QL_GPU_TEST_AS");
    stand_in = as && !strcmp(as, "cpu-ref");
    if (!stand_in && ql_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    gpu = stand_in ? ql_backend_cpu_ref() : ql_backend_cuda_impl();
    if (!gpu) {
        fprintf(stderr, "cuda backend: %s\n", ql_error_message());
        return 1;
    }
#ifdef QL_GPU_MIN_BUILD
    cpu = ql_backend_cpu_ref();
#else
    cpu = ql_backend_cpu();
#endif
    make_batches();
#ifdef QL_CUDA_EMULATED
    test_warm_step_counts();
#endif
    test_vec_ops();
    test_memory_dense();
    test_lending();
    test_lockstep();
    test_against_cpu();
    test_determinism_and_resume();
    test_base_original();
    if (!stand_in) { /* for the record: each is a product on the slow tiled kernel */
        char first[192];
        const int64_t fb = ql_cuda_gemm_fallbacks(first, sizeof first);
        printf("products cuBLASLt had no algorithm for: %lld%s%s\n", (long long)fb,
               fb ? ", the first " : "", first);
    }
    return CHECK_DONE();
}

#else
int main(void) {
    printf("built without CUDA: skipped\n");
    return 77;
}
#endif
