/* The CUDA 4-bit quantizer (ql_cuda_q4_quantize) against the host's
 * ql_q4_quantize, byte for byte: packed codes, absmax or absmax codes, nested
 * absmax, offset and map. NF4 and FP4, double quant on and off, every block
 * size bitsandbytes allows, odd element counts, ragged last blocks, an input
 * that is not 16-byte aligned; and inputs chosen to break a careless port:
 * values exactly on the NF4 / FP4 decision thresholds (and one ulp either
 * side), all-equal blocks, zeros and negative zeros, subnormals, FLT_MAX,
 * infinities and NaN, and absmax values whose double sum in index order
 * differs from a sum in any other order. Then a model loaded on the cuda
 * backend with device quantization holds the same bytes as one quantized on
 * the host (QL_QUANTIZE_ON_HOST / quantize_on_host).
 *
 * Exits 77 (skipped) when no CUDA device is visible. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda_api.h"
#include "kernels/quant4.h"
#include "model/llama.h"
#include "model/llama_impl.h"
#include "model/random_source.h"

#ifdef QL_HAVE_CUDA

const ql_backend *ql_backend_cuda_impl(void);

static ql_rng rng;

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int cases_run;

/* Downloads n bytes of a device buffer into a fresh host buffer. */
static void *fetch(const void *dev, size_t n) {
    void *h = malloc(n ? n : 1);
    if (h && n && ql_cuda_download(h, dev, n) != QL_OK) {
        free(h);
        return NULL;
    }
    return h;
}

/* Compares a device ql_q4 with a host one: shape, options, every buffer. */
static void compare_q4(const ql_q4 *d, const ql_q4 *h, const char *what) {
    CHECKF(d->type == h->type && d->rows == h->rows && d->cols == h->cols && d->n == h->n &&
               d->blocksize == h->blocksize && d->n_blocks == h->n_blocks &&
               d->double_quant == h->double_quant,
           "%s: shape or options differ", what);
    if (d->n != h->n || d->n_blocks != h->n_blocks || d->double_quant != h->double_quant) return;
    size_t pb = (size_t)ql_q4_packed_bytes(h);
    uint8_t *packed = fetch(d->packed, pb);
    CHECKF(packed != NULL, "%s: download: %s", what, ql_error_message());
    if (!packed) return;
    int64_t bad = -1, n_bad = 0;
    for (size_t i = 0; i < pb; i++)
        if (packed[i] != h->packed[i]) {
            if (bad < 0) bad = (int64_t)i;
            n_bad++;
        }
    CHECKF(n_bad == 0, "%s: %lld of %zu packed bytes differ, first %lld: got %02x want %02x", what,
           (long long)n_bad, pb, (long long)bad, bad >= 0 ? packed[bad] : 0,
           bad >= 0 ? h->packed[bad] : 0);
    free(packed);
    size_t nb = (size_t)h->n_blocks;
    if (!h->double_quant) {
        float *am = fetch(d->absmax, nb * sizeof(float));
        CHECKF(am != NULL, "%s: download: %s", what, ql_error_message());
        if (!am) return;
        bad = -1;
        n_bad = 0;
        for (size_t b = 0; b < nb; b++)
            if (f32_bits(am[b]) != f32_bits(h->absmax[b])) {
                if (bad < 0) bad = (int64_t)b;
                n_bad++;
            }
        CHECKF(n_bad == 0, "%s: %lld of %zu absmax differ, first %lld: got %a want %a", what,
               (long long)n_bad, nb, (long long)bad, bad >= 0 ? (double)am[bad] : 0.0,
               bad >= 0 ? (double)h->absmax[bad] : 0.0);
        free(am);
        return;
    }
    CHECKF(f32_bits(d->nested_offset) == f32_bits(h->nested_offset), "%s: offset %a, want %a", what,
           (double)d->nested_offset, (double)h->nested_offset);
    CHECKF(memcmp(d->nested_map, h->nested_map, sizeof h->nested_map) == 0,
           "%s: dynamic map differs", what);
    uint8_t *codes = fetch(d->absmax_q, nb);
    size_t ng = (size_t)ql_q4_nested_blocks(h);
    float *nested = fetch(d->nested_absmax, ng * sizeof(float));
    CHECKF(codes && nested, "%s: download: %s", what, ql_error_message());
    if (codes && nested) {
        bad = -1;
        n_bad = 0;
        for (size_t b = 0; b < nb; b++)
            if (codes[b] != h->absmax_q[b]) {
                if (bad < 0) bad = (int64_t)b;
                n_bad++;
            }
        CHECKF(n_bad == 0, "%s: %lld of %zu absmax codes differ, first %lld: got %u want %u", what,
               (long long)n_bad, nb, (long long)bad, bad >= 0 ? codes[bad] : 0u,
               bad >= 0 ? h->absmax_q[bad] : 0u);
        n_bad = 0;
        for (size_t g = 0; g < ng; g++)
            n_bad += f32_bits(nested[g]) != f32_bits(h->nested_absmax[g]);
        CHECKF(n_bad == 0, "%s: %lld of %zu nested absmax differ", what, (long long)n_bad, ng);
    }
    free(codes);
    free(nested);
}

/* Quantizes w on the host and on the device (from a buffer `shift` floats
 * into an allocation, so shift 1 takes the unaligned path) and compares. */
static void check_w(const float *w, int64_t rows, int64_t cols, ql_qtype type, int bs, int dq,
                    int shift, const char *tag) {
    char what[200];
    snprintf(what, sizeof what, "%s: %s bs=%d dq=%d [%lld,%lld]%s", tag,
             type == QL_QTYPE_NF4 ? "nf4" : "fp4", bs, dq, (long long)rows, (long long)cols,
             shift ? " unaligned" : "");
    int64_t n = rows * cols;
    ql_q4 h;
    if (ql_q4_quantize(w, rows, cols, type, bs, dq, &h) != QL_OK) {
        CHECKF(0, "%s: host quantize: %s", what, ql_error_message());
        return;
    }
    void *dev = NULL;
    ql_status st = ql_cuda_malloc((size_t)(n + shift) * sizeof(float), &dev);
    if (st == QL_OK) st = ql_cuda_upload((float *)dev + shift, w, (size_t)n * sizeof(float));
    CHECKF(st == QL_OK, "%s: upload: %s", what, ql_error_message());
    if (st == QL_OK) {
        ql_q4 d;
        st = ql_cuda_q4_quantize((const float *)dev + shift, rows, cols, type, bs, dq, &d);
        CHECKF(st == QL_OK, "%s: %s", what, ql_error_message());
        if (st == QL_OK) {
            CHECK(ql_cuda_sync() == QL_OK);
            compare_q4(&d, &h, what);
            cases_run++;
            ql_cuda_q4_free(&d);
        }
    }
    ql_cuda_free(dev);
    ql_q4_free(&h);
}

static void check_all_types(const float *w, int64_t rows, int64_t cols, int bs, const char *tag) {
    for (int t = 0; t < 2; t++)
        for (int dq = 0; dq < 2; dq++)
            check_w(w, rows, cols, t ? QL_QTYPE_FP4 : QL_QTYPE_NF4, bs, dq, 0, tag);
}

/* Weights whose scale changes along the matrix, so absmax varies by block. */
static float *random_weights(int64_t n) {
    float *w = malloc((size_t)n * sizeof(float));
    for (int64_t e = 0; w && e < n; e++) {
        float scale = 0.01f + 0.5f * (float)((e * 7919) % 1000) / 1000.0f;
        w[e] = ql_rng_uniform_range(&rng, -1.0f, 1.0f) * scale;
    }
    return w;
}

static void check_random(void) {
    static const int bss[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};
    /* odd n below one thread's 16 elements; odd n over several tiles with
     * more than 256 blocks at small block sizes; even n not a multiple of 16;
     * a shape whose blocks straddle rows */
    static const int64_t shapes[][2] = {{1, 1}, {1, 3}, {7, 9}, {129, 257}, {3, 1234}, {96, 200}};
    for (size_t k = 0; k < sizeof bss / sizeof bss[0]; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            float *w = random_weights(rows * cols);
            check_all_types(w, rows, cols, bss[k], "random");
            free(w);
        }
    /* Many groups of 256 blocks (> 256 * 256 elements at bs = 64), and the
     * scalar load path on an unaligned input. */
    float *w = random_weights(1536 * 577);
    check_w(w, 1536, 577, QL_QTYPE_NF4, 64, 1, 0, "random large");
    check_w(w, 1536, 577, QL_QTYPE_NF4, 64, 1, 1, "random large");
    check_w(w, 129, 257, QL_QTYPE_FP4, 32, 0, 1, "random");
    check_w(w, 129, 257, QL_QTYPE_NF4, 4096, 1, 1, "random");
    free(w);
}

/* Every NF4 code, threshold and FP4 literal the encoders compare against,
 * exactly and one ulp either side, in blocks whose absmax is 1 (x * r = x) or
 * 2 (r = 0.5, still exact), with both signs. */
static void check_thresholds(void) {
    static const uint32_t nf4_t[15] = QL_NF4_THRESHOLD_BITS;
    static const uint32_t nf4_c[16] = QL_NF4_BITS;
    static const float fp4_t[] = {0.29166667f, 0.583333f,   0.8333333f, 0.4166667f,
                                  0.0859375f,  0.20833333f, 0.00260417f};
    float vals[256];
    int nv = 0;
    for (int k = 0; k < 15; k++) vals[nv++] = bits_f32(nf4_t[k]);
    for (int k = 0; k < 16; k++) vals[nv++] = bits_f32(nf4_c[k]);
    for (size_t k = 0; k < sizeof fp4_t / sizeof fp4_t[0]; k++) {
        vals[nv++] = fp4_t[k];
        vals[nv++] = -fp4_t[k];
    }
    int base = nv;
    for (int k = 0; k < base; k++)
        for (int dir = 0; dir < 2; dir++) {
            float v = nextafterf(vals[k], dir ? INFINITY : -INFINITY);
            if (fabsf(v) <= 1.0f) vals[nv++] = v;
        }
    for (int scale = 1; scale <= 2; scale++) {
        for (int bs = 32; bs <= 256; bs *= 2) {
            int64_t n = 4 * (int64_t)nv + 5; /* odd, ragged last block */
            float *w = malloc((size_t)n * sizeof(float));
            for (int64_t e = 0; e < n; e++) {
                /* every block holds +-1 so its absmax is exactly `scale` */
                float v = e % bs == 0 ? 1.0f : (e % bs == 1 ? -1.0f : vals[e % nv]);
                w[e] = v * (float)scale;
            }
            check_all_types(w, 1, n, bs, scale == 1 ? "thresholds" : "thresholds x2");
            free(w);
        }
    }
}

/* Blocks of one repeated value, zeros, negative zeros, subnormals, extremes,
 * infinities and NaN. The host defines what these give (fmaxf drops NaN;
 * 1/0 = inf and 0 * inf = NaN encode as code 0); the device must agree. */
static void check_special(void) {
    const int bs = 64;
    const int64_t nb = 24, n = nb * bs - 7;
    float *w = malloc((size_t)n * sizeof(float));
    for (int64_t e = 0; e < n; e++) {
        int64_t b = e / bs, i = e % bs;
        float r = ql_rng_uniform_range(&rng, -1.0f, 1.0f);
        float v;
        switch (b) {
        case 0: v = 0.3f; break;                        /* all equal */
        case 1: v = -0.3f; break;                       /* all equal, negative */
        case 2: v = 0.0f; break;                        /* zeros: absmax 0 */
        case 3: v = -0.0f; break;                       /* negative zeros */
        case 4: v = i & 1 ? -0.0f : 0.0f; break;        /* both zeros */
        case 5: v = r * 1e-40f; break;                  /* subnormal */
        case 6: v = i == 3 ? 1e-45f : 0.0f; break;      /* the smallest subnormal */
        case 7: v = r * FLT_MAX; break;                 /* huge */
        case 8: v = i == 0 ? FLT_MAX : r; break;        /* FLT_MAX and ordinary */
        case 9: v = i == 5 ? NAN : r; break;            /* one NaN */
        case 10: v = NAN; break;                        /* all NaN */
        case 11: v = r * 1e30f; break;                  /* large */
        case 12: v = r * 1e-30f; break;                 /* tiny */
        case 13: v = i == 0 ? 1.0f : r * 1e-38f; break; /* huge spread in one block */
        default: v = r * (float)(b + 1) * 0.01f; break;
        }
        w[e] = v;
    }
    check_all_types(w, 1, n, bs, "special");
    check_all_types(w, 11, 139, 32, "special"); /* n = 11 * 139 */
    /* Infinities: absmax inf, r = 0, inf * 0 = NaN; with double quant the
     * offset is inf as well. */
    float *wi = malloc((size_t)n * sizeof(float));
    memcpy(wi, w, (size_t)n * sizeof(float));
    wi[16 * bs + 2] = INFINITY;
    wi[17 * bs + 9] = -INFINITY;
    check_all_types(wi, 1, n, bs, "infinities");
    free(wi);
    /* all zeros and all NaN: the double-quant offset, the nested absmax and
     * its reciprocal all degenerate */
    for (int64_t e = 0; e < n; e++) w[e] = 0.0f;
    check_all_types(w, 1, n, bs, "all zero");
    for (int64_t e = 0; e < n; e++) w[e] = NAN;
    check_all_types(w, 1, n, bs, "all NaN");
    for (int64_t e = 0; e < n; e++) w[e] = 0.25f;
    check_all_types(w, 1, n, bs, "all equal");
    free(w);
}

/* absmax = 1, 2^-24, then 2^-60 in every other block. In index order the
 * double sum is exactly 1 + 2^-24 (each 2^-60 is below half an ulp and is
 * lost), and divided by a power of two that is a tie between two floats,
 * which rounds to even: 2^-12. Summing the small ones first (any parallel
 * order) gives more than the tie and the next float up. */
static void check_mean_order(void) {
    const int bs = 64;
    const int64_t nb = 4096, n = nb * bs;
    float *w = malloc((size_t)n * sizeof(float));
    for (int64_t e = 0; e < n; e++) {
        int64_t b = e / bs, i = e % bs;
        float amax = b == 0 ? 1.0f : b == 1 ? ldexpf(1.0f, -24) : ldexpf(1.0f, -60);
        w[e] = i == 7 ? -amax : amax * ql_rng_uniform_range(&rng, -1.0f, 1.0f);
    }
    ql_q4 h;
    CHECK(ql_q4_quantize(w, 1, n, QL_QTYPE_NF4, bs, 1, &h) == QL_OK);
    double small = 0.0;
    for (int64_t b = 2; b < nb; b++) small += ldexp(1.0, -60);
    float other = (float)((small + (1.0 + ldexp(1.0, -24))) / (double)nb);
    CHECKF(h.nested_offset == ldexpf(1.0f, -12) && other != h.nested_offset,
           "the host's mean should be order-sensitive here: %a vs %a", (double)h.nested_offset,
           (double)other);
    ql_q4_free(&h);
    check_all_types(w, 1, n, bs, "mean order");
    /* The same spread within the 53 bits a parallel sum may use exactly. */
    for (int64_t e = 0; e < n; e++) {
        int64_t b = e / bs;
        if (b >= 2 && e % bs == 7)
            w[e] = -ldexpf(1.0f, -30);
        else if (b >= 2)
            w[e] = ldexpf(1.0f, -31);
    }
    check_all_types(w, 1, n, bs, "mean exact");
    free(w);
}

/* An absmax whose scaled value (absmax - offset) * (1 / nested) falls on the
 * other side of a dynamic-map midpoint than (absmax - offset) / nested would:
 * a device port that divides instead of multiplying by the reciprocal, as
 * the host does, gets a different code. Found by search on the host. */
static void check_nested_rounding(void) {
    const int bs = 32;
    const int64_t nb = 512, n = nb * bs;
    float amax[512], map[256];
    for (int i = 0; i < 256; i++) map[i] = ql_dynmap_value((unsigned)i);
    for (int64_t b = 0; b < nb; b++) amax[b] = ql_rng_uniform_range(&rng, 0.1f, 0.2f);
    amax[0] = 0.5f; /* the group's largest |absmax - offset| */
    int found = 0;
    for (int c = 200; c < 254 && !found; c++) {
        float mid = (map[c] + map[c + 1]) * 0.5f;
        float off = ql_q4_absmax_mean(amax, nb);
        float start = off + mid * (0.5f - off);
        float a = start;
        for (int k = 0; k < 64 && !found; k++, a = nextafterf(a, INFINITY)) {
            amax[5] = a;
            off = ql_q4_absmax_mean(amax, nb);
            float a2 = 0.0f;
            for (int b = 0; b < QL_NESTED_BLOCKSIZE; b++) a2 = fmaxf(a2, fabsf(amax[b] - off));
            float d = amax[5] - off;
            found = ql_dynmap_encode(map, d * (1.0f / a2)) != ql_dynmap_encode(map, d / a2);
        }
        a = start;
        for (int k = 0; k < 64 && !found; k++, a = nextafterf(a, -INFINITY)) {
            amax[5] = a;
            off = ql_q4_absmax_mean(amax, nb);
            float a2 = 0.0f;
            for (int b = 0; b < QL_NESTED_BLOCKSIZE; b++) a2 = fmaxf(a2, fabsf(amax[b] - off));
            float d = amax[5] - off;
            found = ql_dynmap_encode(map, d * (1.0f / a2)) != ql_dynmap_encode(map, d / a2);
        }
    }
    CHECKF(found, "no absmax found whose code depends on multiply vs divide");
    float *w = malloc((size_t)n * sizeof(float));
    for (int64_t e = 0; e < n; e++)
        w[e] = e % bs == 3 ? amax[e / bs] : amax[e / bs] * ql_rng_uniform_range(&rng, -1.0f, 1.0f);
    check_w(w, 1, n, QL_QTYPE_NF4, bs, 1, 0, "nested rounding");
    free(w);
}

static void check_errors(void) {
    void *dev = NULL;
    CHECK(ql_cuda_malloc(64 * sizeof(float), &dev) == QL_OK);
    CHECK(ql_cuda_memset(dev, 0, 64 * sizeof(float), NULL) == QL_OK);
    ql_q4 d;
    ql_status st = ql_cuda_q4_quantize(dev, 1, 64, QL_QTYPE_NF4, 48, 1, &d);
    CHECKF(st == QL_EINVAL && strstr(ql_error_message(), "block size 48"), "got %s: %s",
           ql_status_name(st), ql_error_message());
    CHECK(d.packed == NULL && d.absmax_q == NULL);
    st = ql_cuda_q4_quantize(dev, 0, 64, QL_QTYPE_NF4, 64, 1, &d);
    CHECKF(st == QL_EINVAL && strstr(ql_error_message(), "shape"), "got %s: %s", ql_status_name(st),
           ql_error_message());
    st = ql_cuda_q4_quantize(dev, 1, 64, (ql_qtype)7, 64, 1, &d);
    CHECKF(st == QL_EINVAL && strstr(ql_error_message(), "quant type"), "got %s: %s",
           ql_status_name(st), ql_error_message());
    st = ql_cuda_q4_quantize(NULL, 1, 64, QL_QTYPE_NF4, 64, 1, &d);
    CHECKF(st == QL_EINVAL, "got %s: %s", ql_status_name(st), ql_error_message());
    ql_cuda_free(dev);
    CHECK(ql_cuda_sync() == QL_OK);
}

/* --- a model loaded on the cuda backend ---------------------------------------- */

static void config(ql_hf_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
    c->hidden_size = 96;
    c->intermediate_size = 197; /* gate/up/down: a ragged last block */
    c->num_hidden_layers = 2;
    c->num_attention_heads = 3;
    c->num_key_value_heads = 1;
    c->head_dim = 32;
    c->vocab_size = 300;
    c->max_position_embeddings = 256;
    c->rms_norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    c->rope_type = QL_ROPE_DEFAULT;
    snprintf(c->rope_type_name, sizeof c->rope_type_name, "default");
}

static ql_llama *load(const ql_backend *be, ql_qtype type, int bs, int dq, int on_host) {
    ql_hf_config c;
    config(&c);
    ql_model_source src;
    ql_random_source_opts ro = {.seed = 3, .std = 0.05f};
    if (ql_random_source_open(&c, &ro, &src) != QL_OK) return NULL;
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.quant_type = type;
    o.blocksize = bs;
    o.double_quant = dq;
    o.quantize_on_host = on_host;
    o.max_batch = 1;
    o.max_seq = 16;
    o.quiet = 1;
    ql_llama *m = NULL;
    ql_status st = ql_llama_load_source(&src, &o, &m);
    CHECKF(st == QL_OK, "model load: %s", ql_error_message());
    ql_model_source_close(&src);
    return m;
}

/* A downloaded copy of a device ql_q4, with host buffers. */
static int download_q4(const ql_q4 *d, ql_q4 *h) {
    *h = *d;
    h->owns = 1;
    h->absmax = NULL;
    h->absmax_q = NULL;
    h->nested_absmax = NULL;
    h->packed = fetch(d->packed, (size_t)ql_q4_packed_bytes(d));
    if (d->double_quant) {
        h->absmax_q = fetch(d->absmax_q, (size_t)d->n_blocks);
        h->nested_absmax = fetch(d->nested_absmax, (size_t)ql_q4_nested_blocks(d) * 4);
        return h->packed && h->absmax_q && h->nested_absmax;
    }
    h->absmax = fetch(d->absmax, (size_t)d->n_blocks * 4);
    return h->packed && h->absmax;
}

static void check_model(const ql_backend *be, ql_qtype type, int bs, int dq) {
    char what[160];
    snprintf(what, sizeof what, "model %s bs=%d dq=%d", type == QL_QTYPE_NF4 ? "nf4" : "fp4", bs,
             dq);
    ql_llama *dev_q = load(be, type, bs, dq, 0);
    ql_llama *host_q = load(be, type, bs, dq, 1);
    /* The environment variable forces the host path as the option does. */
    setenv("QL_QUANTIZE_ON_HOST", "1", 1);
    ql_llama *env_q = load(be, type, bs, dq, 0);
    unsetenv("QL_QUANTIZE_ON_HOST");
    if (!dev_q || !host_q || !env_q) goto out;
    ql_llama_load_info a, b, e;
    ql_llama_load_stats(dev_q, &a);
    ql_llama_load_stats(host_q, &b);
    ql_llama_load_stats(env_q, &e);
    CHECKF(a.gpu_quantize_s > 0.0 && a.quantize_s == 0.0 && a.upload_s == 0.0,
           "%s: device path timing: gpu %g host %g upload %g", what, a.gpu_quantize_s, a.quantize_s,
           a.upload_s);
    CHECKF(b.gpu_quantize_s == 0.0 && b.quantize_s > 0.0, "%s: host path timing: gpu %g host %g",
           what, b.gpu_quantize_s, b.quantize_s);
    CHECKF(e.gpu_quantize_s == 0.0 && e.quantize_s > 0.0,
           "%s: QL_QUANTIZE_ON_HOST=1 timing: gpu %g host %g", what, e.gpu_quantize_s,
           e.quantize_s);
    CHECKF(a.backend_bytes == b.backend_bytes, "%s: backend bytes %zu vs %zu", what,
           a.backend_bytes, b.backend_bytes);
    for (int64_t l = 0; l < dev_q->L; l++)
        for (int p = 0; p < QL_N_PROJ; p++) {
            char w2[220];
            snprintf(w2, sizeof w2, "%s layer %lld %s", what, (long long)l,
                     ql_proj_name((ql_proj)p));
            ql_q4 ref;
            if (!download_q4(&host_q->layers[l].w[p], &ref)) {
                CHECKF(0, "%s: download: %s", w2, ql_error_message());
                ql_q4_free(&ref);
                continue;
            }
            compare_q4(&dev_q->layers[l].w[p], &ref, w2);
            ql_q4_free(&ref);
        }
out:
    ql_llama_free(dev_q);
    ql_llama_free(host_q);
    ql_llama_free(env_q);
}

int main(void) {
    if (ql_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    ql_cuda_device_info info;
    if (ql_cuda_get_device_info(0, &info) == QL_OK)
        printf("device 0: %s (sm_%d%d, %d SMs)\n", info.name, info.cc_major, info.cc_minor,
               info.sm_count);
    ql_rng_seed(&rng, 0x9e3779b97f4a7c15ull);
    unsetenv("QL_QUANTIZE_ON_HOST");

    check_random();
    check_thresholds();
    check_special();
    check_mean_order();
    check_nested_rounding();
    check_errors();
    printf("%d quantizations compared\n", cases_run);

    /* The table itself, not ql_backend_cuda() (kernels/backend.c), which the
     * nvcc-only build of tests/gpu/run.sh does not have. */
    const ql_backend *be = ql_backend_cuda_impl();
    CHECKF(be && be->q4_quantize_upload, "the cuda backend has no q4_quantize_upload: %s",
           be ? "NULL op" : ql_error_message());
    if (be && be->q4_quantize_upload) {
        check_model(be, QL_QTYPE_NF4, 64, 1);
        check_model(be, QL_QTYPE_FP4, 128, 0);
    }
    /* The CPU backends quantize on the host. */
    CHECK(ql_backend_cpu()->q4_quantize_upload == NULL);
    CHECK(ql_backend_cpu_ref()->q4_quantize_upload == NULL);
    return CHECK_DONE();
}
#else
int main(void) {
    printf("built without the CUDA backend: skipped\n");
    return 77;
}
#endif
