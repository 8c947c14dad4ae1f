/* Generation with the KV cache on the "cuda" backend (model/llama_generate.c:
 * the cache in device memory, attn_cached_fwd, the backend's copies), on a
 * generated model (hidden 256, head_dim 64, GQA 4/2, 2 layers) with random
 * non-zero adapters:
 *   1. every logits row the cache gives (a 21-token prompt in chunks of 8,
 *      so the first chunk takes attn_fwd and the later ones the cache, then
 *      6 batched steps of two sequences at different lengths) against the
 *      last row of ql_llama_logits over the whole sequence on the same
 *      backend: 4e-2 of the row's largest magnitude (bf16 activations and
 *      logits in both, in different orders; 2.4e-2 measured on the
 *      emulator, 4 ulps of a logit);
 *   2. the same rows against the CPU reference backend's generation (the
 *      same 4-bit codes: the weights are quantized on the host): at most
 *      1.5 times the distance between the two backends' full forwards
 *      (the GPU's own bf16 error, 5.0e-2 measured; generation 6.5e-2), and
 *      the reference's cached rows equal its full forward to 1e-5;
 *   3. a second run on the GPU: the same bits;
 *   4. the adapters switched off equal a model loaded without them;
 *   5. on the emulator, a decode step's host waits: 2 (the ids and
 *      positions up, the logits down), none per layer, and no allocation.
 * The token sequence is fixed (not sampled), so both backends see the same
 * inputs however their logits differ. Exits 77 without a device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda_api.h"
#include "model/llama.h"
#include "model/llama_generate.h"
#include "model/random_source.h"
#ifdef QL_CUDA_EMULATED
#include "kernels/cuda/emu/emu_counts.h"
#endif

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

#define V 1000
#define PROMPT0 21
#define PROMPT1 5
#define STEPS 6
#define ROWS (2 + 2 * STEPS) /* the two prefills' rows, then two per step */
#define MAXSEQ (PROMPT0 + STEPS)

#define GTRY(expr)                                                                                 \
    do {                                                                                           \
        ql_status s_ = (expr);                                                                     \
        if (s_ != QL_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, ql_error_message());     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static ql_llama *load(const ql_backend *be, int r) {
    ql_hf_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "llama");
    snprintf(c.architecture, sizeof c.architecture, "LlamaForCausalLM");
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.vocab_size = V;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.rope_type = QL_ROPE_DEFAULT;
    snprintf(c.rope_type_name, sizeof c.rope_type_name, "default");
    ql_model_source src;
    ql_random_source_opts ro = {.seed = 11, .std = 0.05f};
    GTRY(ql_random_source_open(&c, &ro, &src));
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.lora.r = r;
    o.lora.alpha = 16.0f;
    o.max_batch = 1;
    o.max_seq = MAXSEQ;
    o.quiet = 1;
    o.quantize_on_host = 1; /* the same 4-bit codes on every backend */
    ql_llama *m;
    GTRY(ql_llama_load_source(&src, &o, &m));
    ql_model_source_close(&src);
    if (r > 0) {
        ql_adapters *a = ql_llama_adapters(m);
        float *h = malloc((size_t)a->n * sizeof(float));
        ql_rng g;
        ql_rng_seed(&g, 7);
        for (int64_t i = 0; i < a->n; i++) h[i] = ql_rng_uniform_range(&g, -0.2f, 0.2f);
        GTRY(be->upload(a->params, h, (size_t)a->n * sizeof(float)));
        free(h);
    }
    return m;
}

static int32_t seq0[MAXSEQ], seq1[MAXSEQ];

/* The rows of one generation: [ROWS][V]; and, when `full` is not NULL, the
 * full forward's last row for each. */
static void generate(ql_llama *m, int on_gpu, int adapters, float *rows, float *full) {
    ql_llama_kv *kv = NULL;
    (void)on_gpu; /* read only on the emulator */
    GTRY(ql_llama_kv_create(m, 2, 8, &kv));
    ql_llama_kv_use_adapters(kv, adapters);
    GTRY(ql_llama_kv_reset(kv, 0, MAXSEQ));
    GTRY(ql_llama_kv_reset(kv, 1, MAXSEQ));
    GTRY(ql_llama_kv_prefill(kv, 0, seq0, PROMPT0, rows));
    GTRY(ql_llama_kv_prefill(kv, 1, seq1, PROMPT1, rows + V));
    for (int s = 0; s < STEPS; s++) {
        const int slots[2] = {1, 0};
        const int32_t ids[2] = {seq1[PROMPT1 + s], seq0[PROMPT0 + s]};
        float two[2 * V];
#ifdef QL_CUDA_EMULATED
        ql_emu_counts c0, c1;
        ql_emu_get_counts(&c0);
#endif
        GTRY(ql_llama_kv_step(kv, 2, slots, ids, two));
#ifdef QL_CUDA_EMULATED
        /* A decode step waits for the device twice, whatever the depth: the
         * ids and positions up in one copy, the logits down; and allocates
         * nothing. */
        ql_emu_get_counts(&c1);
        CHECKF(!on_gpu || (c1.host_waits - c0.host_waits == 2 && c1.allocs == c0.allocs),
               "a decode step: %lld host waits (want 2), %lld allocations (want 0)",
               c1.host_waits - c0.host_waits, c1.allocs - c0.allocs);
#endif
        memcpy(rows + (2 + 2 * s) * V, two + V, V * sizeof(float)); /* sequence 0 */
        memcpy(rows + (3 + 2 * s) * V, two, V * sizeof(float));     /* sequence 1 */
    }
    ql_llama_kv_free(kv);
    if (!full) return;
    float *all = malloc((size_t)(MAXSEQ * V) * sizeof(float));
    for (int i = 0; i < ROWS; i++) {
        const int which = i < 2 ? i : i % 2, step = i < 2 ? -1 : (i - 2) / 2;
        const int64_t n = (which ? PROMPT1 : PROMPT0) + step + 1;
        ql_batch b = {.batch = 1, .seq = n, .ids = which ? seq1 : seq0};
        GTRY(ql_llama_logits(m, &b, all));
        memcpy(full + (int64_t)i * V, all + (n - 1) * V, V * sizeof(float));
    }
    free(all);
}

/* The worst error of any row, relative to its row's largest magnitude in
 * `want`. */
static double worst(const float *got, const float *want) {
    double w = 0;
    for (int i = 0; i < ROWS; i++) {
        double scale = 0, err = 0;
        for (int v = 0; v < V; v++) scale = fmax(scale, fabs(want[(int64_t)i * V + v]));
        for (int v = 0; v < V; v++)
            err = fmax(err, fabs((double)got[(int64_t)i * V + v] - want[(int64_t)i * V + v]));
        w = fmax(w, err / scale);
    }
    return w;
}

int main(void) {
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const ql_backend *gpu = ql_backend_cuda_impl(), *ref = ql_backend_cpu_ref();
    if (!gpu) {
        fprintf(stderr, "cuda backend: %s\n", ql_error_message());
        return 1;
    }
    ql_rng g;
    ql_rng_seed(&g, 3);
    for (int i = 0; i < MAXSEQ; i++) seq0[i] = (int32_t)ql_rng_below(&g, V);
    for (int i = 0; i < MAXSEQ; i++) seq1[i] = (int32_t)ql_rng_below(&g, V);
    const size_t bytes = (size_t)ROWS * V * sizeof(float);
    float *rows = malloc(bytes), *full = malloc(bytes), *again = malloc(bytes);
    float *cpu_rows = malloc(bytes), *base_rows = malloc(bytes), *cpu_full = malloc(bytes);

    ql_llama *m = load(gpu, 8);
    generate(m, 1, 1, rows, full);
    generate(m, 1, 1, again, NULL);
    CHECKF(memcmp(rows, again, bytes) == 0, "cuda: a second generation gave other bits");
    generate(m, 1, 0, again, NULL);
    ql_llama_free(m);

    ql_llama *base = load(gpu, 0);
    generate(base, 1, 1, base_rows, NULL);
    ql_llama_free(base);
    CHECKF(memcmp(base_rows, again, bytes) == 0,
           "cuda: adapters switched off differ from a model without them");
    CHECKF(memcmp(rows, again, bytes) != 0, "cuda: the adapters change nothing (a test mistake)");

    ql_llama *c = load(ref, 8);
    generate(c, 0, 1, cpu_rows, cpu_full);
    ql_llama_free(c);
    /* The yardstick: how far the GPU's own full forward (bf16 activations
     * and logits) is from the reference's. */
    const double e_full = worst(full, cpu_full), e_cached = worst(rows, full);
    const double e_gen = worst(rows, cpu_rows), e_ref = worst(cpu_rows, cpu_full);
    printf("worst row error: cuda cached vs cuda full %.3g, cuda vs cpu-ref: full forward %.3g, "
           "generation %.3g; cpu-ref cached vs full %.3g\n",
           e_cached, e_full, e_gen, e_ref);
    CHECKF(e_ref <= 1e-5, "cpu-ref: cached vs full forward %.3g", e_ref);
    CHECKF(e_cached <= 4e-2, "cuda: cached vs full forward %.3g (bf16: a few ulps expected)",
           e_cached);
    CHECKF(e_full <= 1e-1, "cuda vs cpu-ref full forward %.3g (the yardstick itself)", e_full);
    CHECKF(e_gen <= 1.5 * e_full,
           "cuda generation is %.3g from cpu-ref's, its full forward only %.3g", e_gen, e_full);

    free(cpu_full);
    free(rows), free(full), free(again), free(cpu_rows), free(base_rows);
    return CHECK_DONE();
}

#else
int main(void) {
    printf("built without CUDA: skipped\n");
    return 77;
}
#endif
