/* ql_mem_plan_*: the estimate of a training configuration, its limit, the
 * dry-run report and the too-big error (train/mem_plan.h). */
#include "train/mem_plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kernels/cuda_api.h"
#include "train/trainer.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

void ql_quant_options_from_config(const ql_config *c, ql_llama_options *o) {
    o->quant_type = c->quant.type == QL_QTYPE_FP4 ? QL_QTYPE_FP4 : QL_QTYPE_NF4;
    o->blocksize = (int)c->quant.blocksize;
    o->double_quant = c->quant.double_quant;
    o->base_original = c->quant.type == QL_QUANT_NONE;
}

void ql_mem_plan_options(const ql_config *c, int64_t max_seq, ql_llama_options *o) {
    ql_llama_options_default(o);
    o->be = NULL;
    ql_quant_options_from_config(c, o);
    o->dequantized_layers = c->quant.dequantized_layers;
    o->lora = (ql_lora_config){.r = (int)c->lora.r,
                               .alpha = (float)c->lora.alpha,
                               .dropout = (float)c->lora.dropout,
                               .use_rslora = c->lora.use_rslora,
                               .targets = c->lora.targets};
    o->checkpoint_activations = c->train.activation_checkpointing;
    o->max_batch = c->train.micro_batch;
    o->max_seq = max_seq;
}

static ql_status estimate_with(const ql_config *c, const ql_hf_config *hc, int64_t max_seq,
                               int64_t micro, int ckpt, int64_t dense, int device, int world,
                               ql_mem_estimate *e) {
    ql_llama_options o;
    ql_mem_plan_options(c, max_seq, &o);
    o.max_batch = micro;
    o.checkpoint_activations = ckpt;
    o.dequantized_layers = dense;
    return ql_llama_mem_estimate(hc, &o, device, world, e);
}

/* The rows one rank runs at a time (train/trainer.h): what the buffers hold. */
static int64_t rows_of(const ql_config *c, int world) {
    return ql_train_rank_rows(c->train.global_batch, c->train.micro_batch, world);
}

ql_status ql_mem_plan_estimate(const ql_config *c, const ql_hf_config *hc, int64_t max_seq,
                               int device, int world, ql_mem_estimate *e) {
    return estimate_with(c, hc, max_seq, rows_of(c, world), c->train.activation_checkpointing,
                         c->quant.dequantized_layers, device, world, e);
}

size_t ql_mem_plan_limit(const ql_config *c, size_t device_total, const char *device_name,
                         int local_ranks, char *what, size_t what_n) {
    if (c->train.memory_limit_gb > 0) {
        snprintf(what, what_n, "train.memory_limit_gb = %g", c->train.memory_limit_gb);
        return (size_t)(c->train.memory_limit_gb * GIB);
    }
    if (device_total > 0) {
        snprintf(what, what_n, "the memory of %s",
                 device_name && *device_name ? device_name : "the GPU");
        return device_total;
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0) {
        snprintf(what, what_n, "unknown");
        return 0;
    }
    size_t host = (size_t)pages * (size_t)psz;
    if (local_ranks > 1) {
        snprintf(what, what_n, "the host's memory shared by %d ranks", local_ranks);
        return host / (size_t)local_ranks;
    }
    snprintf(what, what_n, "the host's memory");
    return host;
}

static double gib(size_t b) { return (double)b / GIB; }

/* "12.345 GiB" at or above 1 GiB, else "123.4 MiB" (or KiB). */
static const char *human(size_t b, char *buf, size_t n) {
    if ((double)b >= GIB)
        snprintf(buf, n, "%.3f GiB", gib(b));
    else if (b >= (1u << 20))
        snprintf(buf, n, "%.1f MiB", (double)b / (1 << 20));
    else
        snprintf(buf, n, "%.1f KiB", (double)b / 1024.0);
    return buf;
}

static void row(FILE *f, const char *what, size_t bytes, const char *note) {
    char h[32];
    fprintf(f, "  %-42s %12s%s%s\n", what, human(bytes, h, sizeof h), note && *note ? "  " : "",
            note ? note : "");
}

static const char *count(double v, char *buf, size_t n) {
    if (v >= 1e9)
        snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, n, "%.2fM", v / 1e6);
    else
        snprintf(buf, n, "%.0f", v);
    return buf;
}

void ql_mem_plan_print(FILE *f, const ql_config *c, const ql_mem_estimate *e, size_t limit,
                       const char *what) {
    char note[256], h1[32], h2[32], n1[32];
    fprintf(f,
            "memory estimate per rank (%s, micro-batch %lld x %lld tokens, activations in %s%s):\n",
            e->device ? "GPU" : "CPU", (long long)e->rows, (long long)e->seq,
            e->esz == 2 ? "bf16" : "fp32",
            c->train.activation_checkpointing ? ", activation checkpointing" : "");
    snprintf(note, sizeof note, "%s base parameters in all",
             count((double)e->base_params, n1, sizeof n1));
    row(f,
        e->linears_f32          ? (e->device ? "base linears, bf16 (quant.type none)"
                                             : "base linears, float32 (quant.type none)")
        : c->quant.double_quant ? "base linears, 4-bit + double-quant absmax"
                                : "base linears, 4-bit + absmax",
        e->base_q4, note);
    row(f, "embeddings, lm_head, norms", e->base_other, NULL);
    if (e->base_dense) {
        snprintf(note, sizeof note, "quant.dequantized_layers: %lld",
                 (long long)c->quant.dequantized_layers);
        row(f, "base linears kept dequantized, bf16", e->base_dense, note);
    }
    if (e->dense_lent)
        row(f, "one layer's linears dequantized while it runs", e->dense_lent,
            "checkpointing: its two passes share them");
    snprintf(note, sizeof note, "%s trainable", count((double)e->trainable, n1, sizeof n1));
    row(f, "LoRA parameters", e->adapters, note);
    row(f, "LoRA gradients", e->grads, NULL);
    row(f, "AdamW m and v (ZeRO-1 slice)", e->optimizer, NULL);
    snprintf(note, sizeof note, "without checkpointing %s, with %s",
             human(e->act_full, h1, sizeof h1), human(e->act_ckpt, h2, sizeof h2));
    row(f, "activations kept for the backward", e->activations, note);
    row(f, "step buffers and gradients", e->step_buffers, NULL);
    snprintf(note, sizeof note, "%lld rows", (long long)e->logit_rows);
    row(f, "logits chunk", e->logits, note);
    row(f, e->device ? "backend workspace" : "backend workspace (host tiles not counted)",
        e->workspace, NULL);
    note[0] = 0;
    if (e->runtime_reserve)
        snprintf(note, sizeof note, "+ %s allowed for the CUDA context, libraries, NCCL",
                 human(e->runtime_reserve, h1, sizeof h1));
    row(f, "total", e->total, note);
    if (limit) {
        snprintf(note, sizeof note, "%s: %s", what,
                 e->total + e->runtime_reserve <= limit ? "fits" : "DOES NOT FIT");
        row(f, "limit", limit, note);
    } else {
        fprintf(f, "  limit: %s\n", what);
    }
}

/* A configuration being tried against the limit; smaller micro-batches and
 * shorter rows never need more memory, so a bisection finds the largest. */
typedef struct probe {
    const ql_config *c;
    const ql_hf_config *hc;
    int device, world;
    size_t limit;
    int64_t dense; /* quant.dequantized_layers being tried */
} probe;

static size_t need_of(const probe *p, int64_t seq, int64_t micro, int ckpt) {
    ql_mem_estimate e;
    if (estimate_with(p->c, p->hc, seq, micro, ckpt, p->dense, p->device, p->world, &e) != QL_OK)
        return (size_t)-1;
    return e.total + e.runtime_reserve;
}

/* The largest value v in [lo, hi] that fits as the sequence length (seq <
 * 0) or as the micro-batch (micro < 0), the other fixed; 0 when none. */
static int64_t largest(const probe *p, int64_t lo, int64_t hi, int64_t seq, int64_t micro,
                       int ckpt) {
    int64_t best = 0;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (need_of(p, seq < 0 ? mid : seq, micro < 0 ? mid : micro, ckpt) <= p->limit) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

int64_t ql_mem_plan_dense_fits(const ql_config *c, const ql_hf_config *hc, int64_t max_seq,
                               int device, int world, size_t limit) {
    probe p = {.c = c, .hc = hc, .device = device, .world = world, .limit = limit};
    int64_t lo = 0, hi = hc->num_hidden_layers, best = -1;
    while (lo <= hi) {
        p.dense = lo + (hi - lo) / 2;
        if (need_of(&p, max_seq, rows_of(c, world), c->train.activation_checkpointing) <= limit) {
            best = p.dense;
            lo = p.dense + 1;
        } else {
            hi = p.dense - 1;
        }
    }
    return best;
}

void ql_mem_plan_print_dense_hint(FILE *f, const ql_config *c, const ql_hf_config *hc,
                                  int64_t max_seq, int world, size_t limit) {
    const int64_t L = hc->num_hidden_layers, now = c->quant.dequantized_layers;
    const int64_t rows = rows_of(c, world);
    if (!limit || now >= L || ql_cuda_q4_path_for(rows * max_seq) != QL_CUDA_Q4_DEQUANT_BLAS)
        return;
    const int64_t k = ql_mem_plan_dense_fits(c, hc, max_seq, 1, world, limit);
    if (k <= now) return;
    ql_mem_estimate a, b;
    if (estimate_with(c, hc, max_seq, rows, c->train.activation_checkpointing, now, 1, world, &a) !=
            QL_OK ||
        estimate_with(c, hc, max_seq, rows, c->train.activation_checkpointing, k, 1, world, &b) !=
            QL_OK)
        return;
    char h[32];
    fprintf(f,
            "  room to spare: quant.dequantized_layers: %lld%s would still fit (+%s): those "
            "layers' linears also kept in bf16, so micro-batches of at least %lld tokens skip "
            "dequantizing them (the same results)\n",
            (long long)k, k == L ? " (all)" : "", human(b.total - a.total, h, sizeof h),
            (long long)ql_cuda_q4_fused_max_tokens());
}

/* Appends "; " and the formatted text to buf. */
static void add(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(char *buf, size_t n, const char *fmt, ...) {
    size_t used = strlen(buf);
    if (used && used + 2 < n) {
        memcpy(buf + used, "; ", 3);
        used += 2;
    }
    if (used >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, n - used, fmt, ap);
    va_end(ap);
}

ql_status ql_mem_plan_check(const ql_config *c, const ql_hf_config *hc, int64_t max_seq, int device,
                            int world, const ql_mem_estimate *e, size_t limit, const char *what) {
    size_t need = e->total + e->runtime_reserve;
    if (!limit || need <= limit) return QL_OK;
    probe p = {.c = c,
               .hc = hc,
               .device = device,
               .world = world,
               .limit = limit,
               .dense = c->quant.dequantized_layers};
    const int64_t micro = rows_of(c, world);
    const int ckpt = c->train.activation_checkpointing;
    char fit[1024] = "", short_[1024] = "", h[32], h2[32], h3[32];
    /* The bf16 copies first: they buy speed, not the ability to train. When
     * not even none of them fits, the other settings are tried without any
     * (and say so). */
    int without_copies = 0;
    if (e->base_dense) {
        const int64_t best = ql_mem_plan_dense_fits(c, hc, max_seq, device, world, limit);
        if (best >= 0) {
            p.dense = best;
            add(fit, sizeof fit, "quant.dequantized_layers=%lld (%s)", (long long)best,
                human(need_of(&p, max_seq, micro, ckpt), h, sizeof h));
            p.dense = c->quant.dequantized_layers;
        } else {
            p.dense = 0;
            without_copies = 1;
        }
    }
    /* Each knob alone: a value that fits, or what its best does. */
    if (!ckpt) {
        size_t t = need_of(&p, max_seq, micro, 1);
        if (t <= limit)
            add(fit, sizeof fit, "train.activation_checkpointing=true (%s)", human(t, h, sizeof h));
        else
            add(short_, sizeof short_, "train.activation_checkpointing=true alone gives %s",
                human(t, h, sizeof h));
    }
    int64_t m = micro > 1 ? largest(&p, 1, micro - 1, max_seq, -1, ckpt) : 0;
    if (m >= 1)
        add(fit, sizeof fit,
            "train.micro_batch=%lld (%s; train.global_batch is kept by more "
            "gradient accumulation)",
            (long long)m, human(need_of(&p, max_seq, m, ckpt), h, sizeof h));
    else if (micro > 1)
        add(short_, sizeof short_, "train.micro_batch=1 alone gives %s",
            human(need_of(&p, max_seq, 1, ckpt), h, sizeof h));
    /* No longer than the model's positions: a suggestion past them is no help. */
    const int64_t mpe = hc->max_position_embeddings;
    int64_t sq_hi = max_seq - 1;
    if (mpe > 0 && sq_hi > mpe) sq_hi = mpe;
    int64_t sq = largest(&p, 1, sq_hi, -1, micro, ckpt);
    if (sq >= 64) sq = sq / 64 * 64;
    if (sq >= 1)
        add(fit, sizeof fit, "data.max_seq_len=%lld (%s)", (long long)sq,
            human(need_of(&p, sq, micro, ckpt), h, sizeof h));
    else
        add(short_, sizeof short_, "no data.max_seq_len fits at micro-batch %lld",
            (long long)micro);
    /* Nothing alone: all three together. */
    if (!fit[0]) {
        int64_t s1 = largest(&p, 1, mpe > 0 && max_seq > mpe ? mpe : max_seq, -1, 1, 1);
        if (s1 >= 64) s1 = s1 / 64 * 64;
        if (s1 >= 1)
            add(fit, sizeof fit,
                "train.micro_batch=1 with train.activation_checkpointing=true and "
                "data.max_seq_len=%lld (%s)",
                (long long)s1, human(need_of(&p, s1, 1, 1), h, sizeof h));
    }
    size_t fixed = e->base_q4 + e->base_other + e->adapters + e->grads + e->optimizer;
    char reserve[96] = "";
    if (e->runtime_reserve)
        snprintf(reserve, sizeof reserve,
                 " and %s is allowed for the CUDA context, libraries and NCCL",
                 human(e->runtime_reserve, h, sizeof h));
    if (!fit[0])
        return ql_error(QL_ENOMEM,
                        "memory: the estimate for one rank is %s but the limit is %s (%s); the "
                        "model's weights, adapters and optimizer state alone take %s%s%s, so %sno "
                        "train.micro_batch, data.max_seq_len or train.activation_checkpointing "
                        "fits: use a device with more memory (or several pipeline stages, not yet "
                        "supported), a smaller model or a lower lora.r",
                        human(need, h, sizeof h), human(limit, h2, sizeof h2), what,
                        human(fixed, h3, sizeof h3),
                        without_copies ? " (without the copies of quant.dequantized_layers)" : "",
                        reserve, without_copies ? "even with quant.dequantized_layers=0 " : "");
    char acts[32], wts[32];
    return ql_error(QL_ENOMEM,
                    "memory: the estimate for one rank is %s (activations %s, weights %s) but the "
                    "limit is %s (%s). To fit, set %sone of: %s%s%s. `qlora train CONFIG "
                    "--dry-run` prints the whole estimate",
                    human(need, h, sizeof h), human(e->activations, acts, sizeof acts),
                    human(e->base_q4 + e->base_other + e->base_dense, wts, sizeof wts),
                    human(limit, h2, sizeof h2), what,
                    without_copies ? "quant.dequantized_layers=0 and " : "", fit,
                    short_[0] ? ". Not enough alone: " : "", short_);
}

size_t ql_mem_rss_peak(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* kilobytes on Linux */
}
