/* Adapters saved by Hugging Face PEFT load into qlora and give PEFT's logits
 * (issue 10, check "an adapter saved by PEFT loads into qlora").
 *
 * tests/fixtures/make_peft_reference.py (transformers + PEFT, versions in
 * tests/fixtures/peft/versions.json) saved three adapters with PEFT's own
 * save_pretrained (all seven targets; rsLoRA on a tied model with three
 * targets; a non-integer lora_alpha on Qwen2 with q/k/v biases, BF16 tensors)
 * and the float32 logits transformers + PEFT compute with each, and with the
 * adapter disabled. The base models' linears are exactly representable in
 * NF4 (block 64, no double quantization), so qlora's 4-bit base equals the
 * float32 base transformers runs. qlora reads the adapter with
 * ql_peft_read_config + ql_peft_load and must match to 1e-4 relative (plus a
 * floor of 1e-5 of the largest logit for logits near zero).
 *
 * A tampered adapter must change the logits (the check can fail), and one
 * whose scaling is read wrong (rsLoRA off) must miss the reference.
 *
 * Also a tool for tests/e2e/test_export_peft.sh:
 *   unit_test_peft_reference --logits MODEL ADAPTER|- IDS.i32 BATCH SEQ OUT.f32 [--double-quant]
 *                             [--base-original]
 * writes qlora's float32 logits [BATCH, SEQ, vocab] for the ids, with the
 * adapter (read as above) or without one ("-"), the linears in 4 bits or,
 * with --base-original, as stored. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/merge.h"
#include "model/peft.h"
#include "model/source.h"

static char fixdir[2048];

static void *read_raw(const char *path, long *n_bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)(n ? n : 1));
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n_bytes = n;
    return p;
}

/* Loads MODEL (4-bit: NF4, block 64, double quantization as asked; or with
 * base_original its linears as stored, in float32) with the adapter of
 * ADAPTER (NULL: none) and computes logits of ids [batch, seq]. */
static ql_status qlora_logits_as(const char *model, const char *adapter, const int32_t *ids,
                                 int64_t batch, int64_t seq, int double_quant, int base_original,
                                 float **out, int64_t *vocab) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.base_original = base_original;
    o.quant_type = QL_QTYPE_NF4;
    o.blocksize = 64;
    o.double_quant = double_quant;
    o.lora = (ql_lora_config){.r = 0};
    o.max_batch = batch;
    o.max_seq = seq;
    o.quiet = 1;
    if (adapter) QL_TRY(ql_peft_read_config(adapter, &o.lora, NULL, 0));
    ql_llama *m = NULL;
    QL_TRY(ql_llama_load(model, &o, &m));
    ql_status st = adapter ? ql_peft_load(adapter, ql_llama_adapters(m), o.be) : QL_OK;
    *vocab = ql_llama_config(m)->vocab_size;
    int32_t *tg = malloc((size_t)(batch * seq) * sizeof *tg);
    *out = malloc((size_t)(batch * seq * *vocab) * sizeof **out);
    if (!tg || !*out) abort();
    for (int64_t i = 0; i < batch * seq; i++) tg[i] = -100;
    ql_batch b = {.batch = batch, .seq = seq, .ids = ids, .targets = tg};
    if (st == QL_OK) st = ql_llama_logits(m, &b, *out);
    free(tg);
    ql_llama_free(m);
    return st;
}

static ql_status qlora_logits(const char *model, const char *adapter, const int32_t *ids,
                              int64_t batch, int64_t seq, int double_quant, float **out,
                              int64_t *vocab) {
    return qlora_logits_as(model, adapter, ids, batch, seq, double_quant, 0, out, vocab);
}

static int logits_tool(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr,
                "usage: %s --logits MODEL ADAPTER|- IDS.i32 BATCH SEQ OUT.f32 "
                "[--double-quant] [--base-original]\n",
                argv[0]);
        return 2;
    }
    long nb;
    int32_t *ids = read_raw(argv[4], &nb);
    int64_t batch = atoll(argv[5]), seq = atoll(argv[6]), vocab = 0;
    if (!ids || nb != (long)(batch * seq * 4)) {
        fprintf(stderr, "%s: expected %lld int32 ids\n", argv[4], (long long)(batch * seq));
        return 1;
    }
    float *lg = NULL;
    int dq = 0, original = 0;
    for (int i = 8; i < argc; i++) {
        if (!strcmp(argv[i], "--double-quant"))
            dq = 1;
        else if (!strcmp(argv[i], "--base-original"))
            original = 1;
        else {
            fprintf(stderr, "%s: unknown flag %s\n", argv[0], argv[i]);
            return 2;
        }
    }
    ql_status st = qlora_logits_as(argv[2], strcmp(argv[3], "-") ? argv[3] : NULL, ids, batch, seq,
                                   dq, original, &lg, &vocab);
    if (st != QL_OK) {
        fprintf(stderr, "error: %s\n", ql_error_message());
        return 1;
    }
    FILE *f = fopen(argv[7], "wb");
    size_t n = (size_t)(batch * seq * vocab);
    int ok = f && fwrite(lg, sizeof *lg, n, f) == n;
    if (f) ok &= fclose(f) == 0;
    free(lg);
    free(ids);
    return ok ? 0 : 1;
}

/* max |a - b| / max |b|: the figure the "1e-4 relative" refers to. */
static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

static void run_merged(const char *name, const char *model, const char *adapter, const int32_t *ids,
                       int64_t batch, int64_t seq);
static void run_gguf_adapter(const char *name, const char *model, const char *adapter,
                             const int32_t *ids, int64_t batch, int64_t seq, int rslora);

static double absmax_of(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static void run_case(const char *name, json_t *c, const int32_t *ids, int64_t batch, int64_t seq) {
    char model[2600], adapter[2600], path[2600], what[256];
    snprintf(model, sizeof model, "%s/%s", fixdir, json_string_value(json_object_get(c, "model")));
    snprintf(adapter, sizeof adapter, "%s/peft/%s/adapter", fixdir, name);

    /* The configuration as PEFT wrote it, read the way qlora reads it. */
    ql_lora_config lc;
    char base[256];
    ql_status st = ql_peft_read_config(adapter, &lc, base, sizeof base);
    CHECKF(st == QL_OK, "%s: ql_peft_read_config: %s", name, ql_error_message());
    if (st != QL_OK) return;
    CHECKF(lc.r == json_integer_value(json_object_get(c, "r")), "%s: r %d", name, lc.r);
    CHECKF(lc.alpha == (float)json_number_value(json_object_get(c, "lora_alpha")),
           "%s: lora_alpha %g", name, (double)lc.alpha);
    CHECKF(lc.use_rslora == json_is_true(json_object_get(c, "use_rslora")), "%s: use_rslora", name);
    unsigned want = 0;
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(c, "targets"), i, t) {
        want |= 1u << ql_proj_from_name(json_string_value(t));
    }
    CHECKF(lc.targets == want, "%s: targets %#x, want %#x", name, lc.targets, want);

    for (int with = 0; with < 2; with++) {
        float *lg = NULL, *ref;
        int64_t vocab = 0;
        long nb;
        snprintf(path, sizeof path, "%s/peft/ref/%s.%s.f32", fixdir, name,
                 with ? "logits" : "base");
        ref = read_raw(path, &nb);
        CHECKF(ref != NULL, "%s: cannot read", path);
        if (!ref) return;
        st = qlora_logits(model, with ? adapter : NULL, ids, batch, seq, 0, &lg, &vocab);
        CHECKF(st == QL_OK, "%s: %s", name, ql_error_message());
        if (st == QL_OK) {
            int64_t n = batch * seq * vocab;
            CHECKF(nb == (long)(n * 4), "%s: %ld bytes, want %lld", path, nb, (long long)n * 4);
            snprintf(what, sizeof what, "%s logits %s adapter vs transformers+PEFT", name,
                     with ? "with" : "without");
            if (nb == (long)(n * 4)) {
                CHECK_CLOSE(lg, ref, n, 1e-5 * absmax_of(ref, n), 1e-4, what);
                printf("%-18s %-15s max|diff|/max|ref| %.2e\n", name,
                       with ? "with adapter" : "base", rel_diff(lg, ref, n));
            }
        }
        free(lg);
        free(ref);
    }
    run_merged(name, model, adapter, ids, batch, seq);
    run_gguf_adapter(name, model, adapter, ids, batch, seq, lc.use_rslora);
}

/* The merged model (qlora export --merge, float32) loaded with its linears as
 * stored (--base-weights original) must give what transformers gives after
 * PEFT's merge_and_unload. The merged linears are no longer NF4-exact, so
 * loading them the default way (rounded to 4 bits) must miss: the rounding
 * is larger than the update, which the check must be able to see. */
static void run_merged(const char *name, const char *model, const char *adapter, const int32_t *ids,
                       int64_t batch, int64_t seq) {
    char dir[] = "/tmp/ql_peft_merged_XXXXXX", out[600], path[2600], what[256];
    if (!mkdtemp(dir)) {
        CHECKF(0, "mkdtemp: %s", dir);
        return;
    }
    snprintf(out, sizeof out, "%s/merged", dir);
    ql_merge_opts mo = {.model = model,
                        .adapter_dir = adapter,
                        .out_dir = out,
                        .dtype = QL_DT_F32,
                        .qtype = QL_QTYPE_NF4,
                        .blocksize = 64,
                        .double_quant = 0};
    ql_merge_stats ms;
    ql_status st = ql_merge_write(&mo, &ms);
    CHECKF(st == QL_OK, "%s: merge: %s", name, ql_error_message());
    long nb = 0;
    snprintf(path, sizeof path, "%s/peft/ref/%s.merged.f32", fixdir, name);
    float *ref = read_raw(path, &nb);
    CHECKF(ref != NULL, "%s: cannot read", path);
    for (int original = 1; st == QL_OK && ref && original >= 0; original--) {
        float *lg = NULL;
        int64_t vocab = 0;
        ql_status ls = qlora_logits_as(out, NULL, ids, batch, seq, 0, original, &lg, &vocab);
        CHECKF(ls == QL_OK, "%s merged: %s", name, ql_error_message());
        int64_t n = batch * seq * vocab;
        if (ls == QL_OK && nb == (long)(n * 4)) {
            double r = rel_diff(lg, ref, n);
            if (original) {
                snprintf(what, sizeof what,
                         "%s merged, --base-weights original vs transformers merge_and_unload",
                         name);
                CHECK_CLOSE(lg, ref, n, 1e-5 * absmax_of(ref, n), 1e-4, what);
            } else {
                CHECKF(r > 1e-3,
                       "%s merged, rounded to 4 bits: still within %.2e of the merged "
                       "reference; the check could not tell the two loads apart",
                       name, r);
            }
            printf("%-18s %-15s max|diff|/max|ref| %.2e\n", name,
                   original ? "merged, orig." : "merged, 4-bit", r);
        } else if (ls == QL_OK) {
            CHECKF(0, "%s: %ld bytes, want %lld", path, nb, (long long)n * 4);
        }
        free(lg);
    }
    free(ref);
    ql_fs_remove_tree(dir);
}

/* The adapter as llama.cpp's convert_lora_to_gguf.py wrote it from PEFT's
 * (tests/fixtures/gguf_lora, made by make_gguf_lora_reference.py): qlora
 * reads it (--adapter FILE.gguf) into PEFT's values bit for bit, the Q/K
 * rows the converter permuted put back, and gives transformers + PEFT's
 * logits. The converter writes an rsLoRA adapter's lora_alpha unchanged,
 * which llama.cpp scales by alpha / r: read as llama.cpp reads it, that
 * file must miss PEFT's logits (index.json records 0.93 in llama.cpp). */
static void run_gguf_adapter(const char *name, const char *model, const char *adapter,
                             const int32_t *ids, int64_t batch, int64_t seq, int rslora) {
    char gguf[2600], path[2600], what[256];
    snprintf(gguf, sizeof gguf, "%s/gguf_lora/%s.gguf", fixdir, name);
    ql_lora_config lp, lg;
    char found[2600];
    CHECKF(ql_peft_find(gguf, found, sizeof found) == QL_OK && !strcmp(found, gguf),
           "%s: ql_peft_find on the GGUF file: %s", name, ql_error_message());
    ql_status st = ql_peft_read_config(adapter, &lp, NULL, 0);
    if (st == QL_OK) st = ql_peft_read_config(gguf, &lg, NULL, 0);
    CHECKF(st == QL_OK, "%s: %s", name, ql_error_message());
    if (st != QL_OK) return;
    CHECKF(lg.r == lp.r && lg.alpha == lp.alpha && lg.targets == lp.targets && !lg.use_rslora &&
               lg.dropout == 0.0f,
           "%s: GGUF config r %d alpha %g targets %#x rslora %d; PEFT's r %d alpha %g targets %#x",
           name, lg.r, (double)lg.alpha, lg.targets, lg.use_rslora, lp.r, (double)lp.alpha,
           lp.targets);

    /* The values: both files into one layout (host memory). */
    ql_hf_config hc;
    st = ql_model_config_load(model, &hc);
    CHECKF(st == QL_OK, "%s: %s", model, ql_error_message());
    if (st != QL_OK) return;
    ql_adapters a;
    CHECK(ql_adapters_layout(&hc, &lp, &a) == QL_OK);
    float *pv = malloc((size_t)a.n * sizeof *pv), *gv = malloc((size_t)a.n * sizeof *gv);
    if (!pv || !gv) abort();
    a.params = pv;
    CHECKF(ql_peft_load(adapter, &a, NULL) == QL_OK, "%s: %s", name, ql_error_message());
    a.params = gv;
    st = ql_peft_load(gguf, &a, NULL);
    CHECKF(st == QL_OK, "%s: loading the GGUF adapter: %s", name, ql_error_message());
    CHECKF(st == QL_OK && !memcmp(pv, gv, (size_t)a.n * sizeof *pv),
           "%s: the GGUF adapter's values are not PEFT's", name);
    free(pv);
    free(gv);
    ql_adapters_layout_free(&a);
    ql_hf_config_free(&hc);

    long nb = 0;
    snprintf(path, sizeof path, "%s/peft/ref/%s.logits.f32", fixdir, name);
    float *ref = read_raw(path, &nb), *lg_ = NULL;
    int64_t vocab = 0;
    st = ref ? qlora_logits(model, gguf, ids, batch, seq, 0, &lg_, &vocab) : QL_EIO;
    CHECKF(st == QL_OK, "%s: logits with the GGUF adapter: %s", name, ql_error_message());
    int64_t n = batch * seq * vocab;
    if (st == QL_OK && nb == (long)(n * 4)) {
        double r = rel_diff(lg_, ref, n);
        if (!rslora) {
            snprintf(what, sizeof what, "%s: the converter's GGUF adapter vs transformers+PEFT",
                     name);
            CHECK_CLOSE(lg_, ref, n, 1e-5 * absmax_of(ref, n), 1e-4, what);
        } else {
            CHECKF(r > 1e-2,
                   "%s: the converter's rsLoRA file gives PEFT's logits (%.2e): its "
                   "alpha was not read as llama.cpp reads it",
                   name, r);
        }
        /* llama.cpp itself ran this file against the same logits
         * (index.json's converter_err): qlora must read it the same way. */
        snprintf(path, sizeof path, "%s/gguf_lora/index.json", fixdir);
        json_error_t err;
        json_t *gi = json_load_file(path, 0, &err);
        double lc_err = json_number_value(
            json_object_get(json_object_get(json_object_get(gi, "cases"), name), "converter_err"));
        CHECKF(gi && lc_err > 0 && fabs(r - lc_err) <= fmax(1e-5, 0.01 * lc_err),
               "%s: qlora's reading of the GGUF adapter misses PEFT by %.3e, llama.cpp's by %.3e",
               name, r, lc_err);
        json_decref(gi);
        printf("%-18s %-15s max|diff|/max|ref| %.2e (llama.cpp: %.2e)\n", name, "GGUF adapter", r,
               lc_err);
    }
    free(lg_);
    free(ref);
}

/* The check must be able to fail: a changed adapter value and a scaling read
 * wrong (rsLoRA ignored) each move the logits well beyond the tolerance. */
static void run_negative(const int32_t *ids, int64_t batch, int64_t seq) {
    char model[2600], adapter[2600], path[2600];
    snprintf(model, sizeof model, "%s/llama/llama_tied", fixdir);
    snprintf(adapter, sizeof adapter, "%s/peft/llama_tied_rslora/adapter", fixdir);
    snprintf(path, sizeof path, "%s/peft/ref/llama_tied_rslora.logits.f32", fixdir);
    long nb;
    float *ref = read_raw(path, &nb);
    if (!ref) return;
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.blocksize = 64;
    o.double_quant = 0;
    o.max_batch = batch;
    o.max_seq = seq;
    o.quiet = 1;
    CHECK(ql_peft_read_config(adapter, &o.lora, NULL, 0) == QL_OK);
    int32_t tg[256];
    for (int k = 0; k < 256; k++) tg[k] = -100;
    ql_batch b = {.batch = batch, .seq = seq, .ids = ids, .targets = tg};
    for (int variant = 0; variant < 2; variant++) {
        ql_llama_options ov = o;
        if (variant == 1) ov.lora.use_rslora = 0; /* alpha/r instead of alpha/sqrt(r) */
        ql_llama *m = NULL;
        if (ql_llama_load(model, &ov, &m) != QL_OK) {
            CHECKF(0, "load: %s", ql_error_message());
            break;
        }
        ql_adapters *a = ql_llama_adapters(m);
        CHECK(ql_peft_load(adapter, a, ov.be) == QL_OK);
        if (variant == 0) a->params[a->tensors[1].offset] += 0.5f; /* one lora_B value */
        int64_t n = batch * seq * ql_llama_config(m)->vocab_size;
        float *lg = malloc((size_t)n * sizeof *lg);
        CHECK(ql_llama_logits(m, &b, lg) == QL_OK);
        double r = rel_diff(lg, ref, n);
        CHECKF(r > 1e-3, "%s: logits still within %.2e of the reference",
               variant ? "rsLoRA ignored" : "a changed lora_B value", r);
        free(lg);
        ql_llama_free(m);
    }
    free(ref);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--logits")) return logits_tool(argc, argv);
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(fixdir, sizeof fixdir, "%s/tests/fixtures", src ? src : ".");
    char path[2200];
    snprintf(path, sizeof path, "%s/peft/index.json", fixdir);
    json_error_t err;
    json_t *idx = json_load_file(path, 0, &err);
    if (!idx) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return 1;
    }
    int64_t batch = json_integer_value(json_object_get(idx, "batch")),
            seq = json_integer_value(json_object_get(idx, "seq"));
    snprintf(path, sizeof path, "%s/peft/ref/ids.i32", fixdir);
    long nb;
    int32_t *ids = read_raw(path, &nb);
    CHECK(ids != NULL && nb == (long)(batch * seq * 4));
    if (ids && nb == (long)(batch * seq * 4)) {
        const char *name;
        json_t *c;
        json_object_foreach(json_object_get(idx, "cases"), name, c) {
            run_case(name, c, ids, batch, seq);
        }
        run_negative(ids, batch, seq);
    }
    free(ids);
    json_decref(idx);
    return CHECK_DONE();
}
