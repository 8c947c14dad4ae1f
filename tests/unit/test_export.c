/* Export, merge, eval.json and the report as library calls, in one process
 * (so that the unit run under AddressSanitizer covers them; the e2e tests
 * test_export_peft.sh, test_eval_drift.sh and test_report.sh judge the
 * results against PEFT, numpy and Python's parsers).
 *
 *   - ql_export of a PEFT-saved adapter (tests/fixtures/peft) without the
 *     model: the same keys and values (F32 kept bit for bit, BF16 widened
 *     exactly), and in bf16: each value the round-to-nearest-even of the
 *     source;
 *   - ql_export --merge --base-weights original in f32: every merged linear
 *     equals W + s·B·A computed here in double from the fixture files (W
 *     read from the model's safetensors, A and B from the adapter), other
 *     tensors copied exactly; with the 4-bit round trip (no double quant, an
 *     NF4-exact base) the same;
 *   - refusals: an existing output, a source that is not there;
 *   - eval.json written and read back; drift just above and below the
 *     threshold; ql_report_write on a small metrics.jsonl. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt/export.h"
#include "core/fsutil.h"
#include "model/peft.h"
#include "model/safetensors.h"
#include "train/eval_store.h"
#include "train/report.h"

static char fx[2048], tmp[256];

static float *tensor(const ql_st_file *f, const char *name, int64_t *n) {
    const ql_st_tensor *t = ql_st_find(f, name);
    if (!t) return NULL;
    float *v = malloc((size_t)t->numel * sizeof *v);
    if (ql_st_to_f32(f, t, v) != QL_OK) abort();
    *n = t->numel;
    return v;
}

static void export_adapter(const char *name) {
    char src[2600], out[512], a[2700], b[700];
    snprintf(src, sizeof src, "%s/peft/%s/adapter", fx, name);
    for (int bf = 0; bf < 2; bf++) {
        snprintf(out, sizeof out, "%s/%s%s", tmp, name, bf ? "_bf16" : "");
        ql_export_opts o = {.src = src, .out_dir = out, .dtype = bf ? QL_DT_BF16 : -1};
        ql_export_result r;
        ql_status st = ql_export(&o, &r);
        CHECKF(st == QL_OK, "export %s: %s", name, ql_error_message());
        if (st != QL_OK) continue;
        snprintf(a, sizeof a, "%s/%s", src, QL_PEFT_WEIGHTS);
        snprintf(b, sizeof b, "%s/%s", out, QL_PEFT_WEIGHTS);
        ql_st_file fa, fb;
        if (ql_st_open(a, &fa) != QL_OK || ql_st_open(b, &fb) != QL_OK) {
            CHECKF(0, "%s: %s", name, ql_error_message());
            continue;
        }
        CHECKF(fa.n_tensors == fb.n_tensors, "%s: %zu tensors, source %zu", name, fb.n_tensors,
               fa.n_tensors);
        int same = 1;
        for (size_t i = 0; i < fa.n_tensors; i++) {
            int64_t na = 0, nb = 0;
            float *va = tensor(&fa, fa.tensors[i].name, &na),
                  *vb = tensor(&fb, fa.tensors[i].name, &nb);
            same &= vb && na == nb && fb.tensors[i].dtype == (bf ? QL_DT_BF16 : QL_DT_F32);
            for (int64_t k = 0; same && k < na; k++)
                same &= bf ? ql_f32_to_bf16(va[k]) == ql_f32_to_bf16(vb[k]) &&
                                 vb[k] == ql_bf16_to_f32(ql_f32_to_bf16(va[k]))
                           : memcmp(&va[k], &vb[k], 4) == 0;
            free(va);
            free(vb);
        }
        CHECKF(same, "%s%s: exported values differ from PEFT's", name, bf ? " (bf16)" : "");
        ql_lora_config lc, lo;
        CHECK(ql_peft_read_config(src, &lc, NULL, 0) == QL_OK);
        CHECK(ql_peft_read_config(out, &lo, NULL, 0) == QL_OK);
        CHECKF(lc.r == lo.r && lc.alpha == lo.alpha && lc.use_rslora == lo.use_rslora &&
                   lc.targets == lo.targets,
               "%s: adapter_config.json changed meaning", name);
        ql_st_close(&fa);
        ql_st_close(&fb);
    }
}

/* The merged linears against W + s·B·A in double. */
static void export_merge(const char *name, const char *model, int original) {
    char src[2600], mdir[2600], out[512], path[3000];
    snprintf(src, sizeof src, "%s/peft/%s/adapter", fx, name);
    snprintf(mdir, sizeof mdir, "%s/llama/%s", fx, model);
    snprintf(out, sizeof out, "%s/%s_merged%d", tmp, name, original);
    ql_export_opts o = {.src = src,
                        .out_dir = out,
                        .merge = 1,
                        .dtype = QL_DT_F32,
                        .model = mdir,
                        .base_original = original};
    ql_export_result r;
    ql_status st = ql_export(&o, &r);
    CHECKF(st == QL_OK, "merge %s: %s", name, ql_error_message());
    if (st != QL_OK) return;
    /* A bare adapter directory: qlora's default 4-bit settings. */
    CHECK(!r.quant_from_run && r.double_quant == 1 && r.blocksize == 64);
    ql_st_file fw, fa, fm;
    snprintf(path, sizeof path, "%s/model.safetensors", mdir);
    CHECK(ql_st_open(path, &fw) == QL_OK);
    snprintf(path, sizeof path, "%s/%s", src, QL_PEFT_WEIGHTS);
    CHECK(ql_st_open(path, &fa) == QL_OK);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    CHECK(ql_st_open(path, &fm) == QL_OK);
    ql_lora_config lc;
    CHECK(ql_peft_read_config(src, &lc, NULL, 0) == QL_OK);
    double s = lc.use_rslora ? lc.alpha / sqrt(lc.r) : (double)lc.alpha / lc.r;
    int n_merged = 0, bad = 0;
    CHECKF(fm.n_tensors == fw.n_tensors, "%s: %zu tensors merged, model has %zu", name,
           fm.n_tensors, fw.n_tensors);
    for (size_t i = 0; i < fw.n_tensors; i++) {
        const char *tn = fw.tensors[i].name;
        int64_t nw = 0, nm = 0, na = 0, nb = 0;
        float *w = tensor(&fw, tn, &nw), *m = tensor(&fm, tn, &nm);
        if (!m || nm != nw) {
            CHECKF(0, "%s: %s missing or resized", name, tn);
            free(w);
            free(m);
            continue;
        }
        char ka[300], kb[300];
        size_t len = strlen(tn) - strlen(".weight");
        snprintf(ka, sizeof ka, "base_model.model.%.*s.lora_A.weight", (int)len, tn);
        snprintf(kb, sizeof kb, "base_model.model.%.*s.lora_B.weight", (int)len, tn);
        float *A = tensor(&fa, ka, &na), *B = tensor(&fa, kb, &nb);
        if (A && B) {
            int64_t rr = lc.r, in = na / rr, outf = nb / rr;
            n_merged++;
            /* Without double quantization the NF4-exact fixture survives
             * the round trip, so W is the file's either way; with it (the
             * default here) the round trip moves W: only `original` can be
             * checked this way, and the round trip is judged by the e2e. */
            for (int64_t e = 0; original && e < nw && !bad; e++) {
                int64_t row = e / in, col = e % in;
                double acc = 0;
                for (int64_t k = 0; k < rr; k++) acc += (double)B[row * rr + k] * A[k * in + col];
                double want = (double)w[e] + s * acc;
                if (fabs(m[e] - want) > 1e-6 * (1 + fabs(want))) {
                    CHECKF(0, "%s: %s[%lld]: %.9g, want %.9g", name, tn, (long long)e, (double)m[e],
                           want);
                    bad = 1;
                }
            }
            (void)outf;
        } else if (memcmp(w, m, (size_t)nw * 4) != 0) {
            CHECKF(0, "%s: %s (not adapted) was not copied exactly", name, tn);
        }
        free(w);
        free(m);
        free(A);
        free(B);
    }
    CHECKF(n_merged == __builtin_popcount(lc.targets) * 2, "%s: %d linears merged", name, n_merged);
    ql_st_close(&fw);
    ql_st_close(&fa);
    ql_st_close(&fm);
}

static void refusals(void) {
    char src[2600], out[512];
    snprintf(src, sizeof src, "%s/peft/llama_all/adapter", fx);
    snprintf(out, sizeof out, "%s/llama_all", tmp); /* written above */
    ql_export_opts o = {.src = src, .out_dir = out, .dtype = -1};
    ql_export_result r;
    CHECK(ql_export(&o, &r) == QL_EINVAL && strstr(ql_error_message(), "already exists"));
    o.force = 1;
    CHECK(ql_export(&o, &r) == QL_OK);
    o.src = "/nonexistent/run";
    CHECK(ql_export(&o, &r) == QL_ENOTFOUND && strstr(ql_error_message(), "no such directory"));
}

static void eval_store(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/eval.json", tmp);
    ql_eval_summary a = {.records = 3,
                         .tokens = 40,
                         .loss = 2.0,
                         .perplexity = exp(2.0),
                         .has_base = 1,
                         .base_loss = 2.5,
                         .base_perplexity = exp(2.5)};
    snprintf(a.model, sizeof a.model, "m");
    snprintf(a.data, sizeof a.data, "d.jsonl");
    snprintf(a.data_sha256, sizeof a.data_sha256, "%064d", 7);
    CHECK(ql_eval_summary_write(p, &a) == QL_OK);
    ql_eval_summary b;
    CHECK(ql_eval_summary_read(p, &b) == QL_OK);
    CHECK(b.loss == 2.0 && b.has_base && b.base_loss == 2.5 && b.tokens == 40 && !b.adapter[0]);
    char found[512];
    CHECK(ql_eval_find(tmp, found, sizeof found) == QL_OK && !strcmp(found, p));
    ql_eval_drift d;
    ql_eval_summary now = b;
    now.loss = 2.0 * 1.05 * (1 + 1e-9);
    ql_eval_drift_check(&b, p, &now, 0.05, &d);
    CHECK(d.drifted && d.same_data);
    now.loss = 2.0 * 1.05 * (1 - 1e-9);
    ql_eval_drift_check(&b, p, &now, 0.05, &d);
    CHECK(!d.drifted);
    now.loss = NAN;
    ql_eval_drift_check(&b, p, &now, 0.05, &d);
    CHECK(d.drifted);
}

static void report(void) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/run", tmp);
    CHECK(ql_fs_mkdirs(dir) == QL_OK);
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    const char *m = "{\"step\": 1, \"loss\": 3.0, \"tokens\": 10, \"elapsed_s\": 1.0}\n"
                    "{\"step\": 2, \"loss\": null, \"tokens\": 10, \"elapsed_s\": 2.0, "
                    "\"skipped\": 1}\n"
                    "{\"step\": 2, \"eval_loss\": 2.9}\n"
                    "{\"step\": 3, \"loss\": 2.0, \"tokens\": 10, \"elapsed_s\": 3.0}\n"
                    "{\"step\": 4, \"lo";
    CHECK(ql_fs_write_atomic(p, m, strlen(m)) == QL_OK);
    ql_report_info info;
    ql_status st = ql_report_write(dir, &info);
    CHECKF(st == QL_OK, "report: %s", ql_error_message());
    CHECK(info.train_points == 2 && info.eval_points == 1 && info.first_step == 1 &&
          info.last_step == 3 && info.first_loss == 3.0 && info.last_loss == 2.0 &&
          info.last_eval_loss == 2.9 && info.skipped_lines == 1);
    snprintf(p, sizeof p, "%s/report.html", dir);
    char *html = NULL;
    size_t len = 0;
    CHECK(ql_fs_read_file(p, &html, &len) == QL_OK && strstr(html, "<svg") &&
          strstr(html, "class=\"train\"") && !strstr(html, "<script"));
    free(html);
    snprintf(p, sizeof p, "%s/loss.png", dir);
    CHECK(ql_fs_exists(p));
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(fx, sizeof fx, "%s/tests/fixtures", src ? src : ".");
    snprintf(tmp, sizeof tmp, "/tmp/ql_test_export_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    export_adapter("llama_all");
    export_adapter("qwen2_bf16");
    export_merge("llama_tied_rslora", "llama_tied", 1);
    export_merge("qwen2_bf16", "qwen2", 1);
    export_merge("llama_all", "llama", 0);
    refusals();
    eval_store();
    report();
    ql_fs_remove_tree(tmp);
    return CHECK_DONE();
}
