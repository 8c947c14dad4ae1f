/* The qlora side of the training benchmark (bench/bench_train.sh runs it next
 * to bench/torch_lora_step.py on the same model directory and token count).
 *
 * One QLoRA training step: forward and backward of the whole model over one
 * micro-batch (frozen NF4 + double-quant linears, LoRA r 16, alpha 32 on all
 * seven projections, dropout 0), then AdamW on the flat LoRA vector; the
 * gradients are zeroed before each step. Random token ids, every position a
 * target except the last of each row, as the PyTorch side's `labels=ids`.
 *
 *   bench_train --model DIR [--batch B] [--seq T] [--steps N] [--warmup W]
 *               [--backend NAME] [--checkpoint]
 *
 * Prints one JSON line: median step time over N steps after W warm-up steps,
 * tokens/s, and resident memory from /proc/self/status: VmHWM after loading,
 * then (the high-water mark being reset by writing 5 to
 * /proc/self/clear_refs) VmHWM over the training steps alone. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "model/llama.h"

/* OpenBLAS' choice of kernels: with DYNAMIC_ARCH it falls back to "Prescott"
 * (SSE3) on CPU models it does not know, which decides sgemm's speed. */
char *openblas_get_corename(void);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A field of /proc/self/status in kB, -1 if absent. */
static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static int reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    fprintf(stderr, "bench_train: %s: %s\n", what, ql_error_message());
    exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_train --model DIR [--batch B] [--seq T] [--steps N] "
                    "[--warmup W] [--backend NAME] [--checkpoint]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *model = NULL, *backend = "cpu";
    long batch = 1, seq = 256, steps = 5, warmup = 2;
    int checkpoint = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--checkpoint")) {
            checkpoint = 1;
            continue;
        }
        if (!v) usage();
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--batch"))
            batch = strtol(v, NULL, 10);
        else if (!strcmp(a, "--seq"))
            seq = strtol(v, NULL, 10);
        else if (!strcmp(a, "--steps"))
            steps = strtol(v, NULL, 10);
        else if (!strcmp(a, "--warmup"))
            warmup = strtol(v, NULL, 10);
        else
            usage();
        i++;
    }
    if (!model || batch < 1 || seq < 2 || steps < 1 || warmup < 0) usage();

    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = ql_backend_by_name(backend);
    if (!o.be) die(backend);
    o.max_batch = batch;
    o.max_seq = seq;
    o.checkpoint_activations = checkpoint;
    o.quiet = 1;

    double t0 = now_s();
    ql_llama *m = NULL;
    if (ql_llama_load(model, &o, &m) != QL_OK) die(model);
    ql_adapters *ad = ql_llama_adapters(m);
    const ql_backend *be = o.be;
    float *mom = NULL, *var = NULL;
    size_t bytes = (size_t)ad->n * sizeof(float);
    if (be->alloc(bytes, (void **)&mom) != QL_OK || be->alloc(bytes, (void **)&var) != QL_OK)
        die("AdamW state");
    /* Zero state through the host: upload a zeroed buffer (works on any backend). */
    float *zeros = calloc((size_t)ad->n, sizeof(float));
    if (!zeros) die("zeros");
    if (be->upload(mom, zeros, bytes) != QL_OK || be->upload(var, zeros, bytes) != QL_OK)
        die("AdamW state");
    double load_s = now_s() - t0;
    long hwm_load = status_kb("VmHWM"), rss_load = status_kb("VmRSS");
    int did_reset = reset_hwm();

    int64_t T = (int64_t)batch * seq;
    int32_t *ids = malloc((size_t)T * sizeof *ids), *tg = malloc((size_t)T * sizeof *tg);
    if (!ids || !tg) die("batch");
    ql_rng rng;
    ql_rng_seed(&rng, 1234);
    int64_t vocab = ql_llama_config(m)->vocab_size;
    for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)ql_rng_below(&rng, (uint64_t)vocab);
    for (int64_t t = 0; t < T; t++) tg[t] = (t + 1) % seq ? ids[t + 1] : -1;
    int64_t n_targets = (int64_t)batch * (seq - 1);
    ql_batch b = {.batch = batch, .seq = seq, .ids = ids, .targets = tg};
    ql_adamw h = {.lr = 2e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f};

    double *times = malloc((size_t)steps * sizeof *times);
    double loss_first = 0, loss_last = 0;
    for (long s = 0; s < warmup + steps; s++) {
        double ts = now_s(), loss_sum = 0;
        int64_t nt = 0;
        if (be->upload(ad->grads, zeros, bytes) != QL_OK) die("zero grads");
        if (ql_llama_forward_backward(m, &b, 1, 1.0f / (float)n_targets, &loss_sum, &nt) != QL_OK)
            die("forward_backward");
        if (be->adamw(ad->params, ad->grads, mom, var, ad->n, &h, s + 1) != QL_OK) die("adamw");
        if (be->sync() != QL_OK) die("sync");
        double dt = now_s() - ts;
        if (s == 0) loss_first = loss_sum / (double)nt;
        loss_last = loss_sum / (double)nt;
        if (s >= warmup) times[s - warmup] = dt;
    }
    long hwm_train = status_kb("VmHWM");
    double t_min = times[0], t_max = times[0];
    for (long s = 1; s < steps; s++) {
        if (times[s] < t_min) t_min = times[s];
        if (times[s] > t_max) t_max = times[s];
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    long hwm = hwm_train > hwm_load ? hwm_train : hwm_load;

    printf("{\"impl\": \"qlora-%s\", \"openblas_core\": \"%s\", \"threads\": %d, "
           "\"checkpoint_activations\": %d, "
           "\"batch\": %ld, \"seq\": %ld, \"tokens_per_step\": %lld, \"steps\": %ld, "
           "\"warmup\": %ld, \"step_ms\": %.3f, \"step_ms_min\": %.3f, \"step_ms_max\": %.3f, "
           "\"tokens_per_s\": %.3f, \"loss_first\": %.6f, \"loss_last\": %.6f, "
           "\"trainable_params\": %lld, \"load_s\": %.3f, \"rss_after_load_mb\": %.1f, "
           "\"peak_rss_load_mb\": %.1f, ",
           be->name, openblas_get_corename(), omp_get_max_threads(), checkpoint, batch, seq,
           (long long)T, steps, warmup, 1e3 * med, 1e3 * t_min, 1e3 * t_max, (double)T / med,
           loss_first, loss_last, (long long)ad->n, load_s, rss_load / 1024.0, hwm_load / 1024.0);
    if (did_reset)
        printf("\"peak_rss_train_mb\": %.1f, ", hwm_train / 1024.0);
    else
        printf("\"peak_rss_train_mb\": null, ");
    printf("\"peak_rss_mb\": %.1f}\n", hwm / 1024.0);

    free(times);
    free(ids);
    free(tg);
    free(zeros);
    be->free(mom);
    be->free(var);
    ql_llama_free(m);
    return 0;
}
