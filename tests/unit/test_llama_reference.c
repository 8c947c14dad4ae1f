/* The whole Llama-family model (model/llama.h) against an independent
 * reference: tiny random models and the logits, mean loss and LoRA gradients
 * of a packed batch computed in float64 by PyTorch
 * (tests/fixtures/make_llama_reference.py, versions and a cross-check against
 * transformers in tests/fixtures/llama/versions.json).
 *
 * The fixtures' linear weights are exactly representable in NF4 (block 64, no
 * double quant), so quantizing them on load is lossless and any difference is
 * the model's float32 arithmetic or a bug. Tolerances: logits 1e-4 relative
 * (plus an absolute floor of 1e-5 of the largest logit, for logits near
 * zero), mean loss 1e-5 relative, each LoRA gradient tensor 1e-4 of its
 * largest element. Backends cpu-ref and cpu, the latter also with activation
 * checkpointing. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "model/llama.h"

static char fixdir[1024];

/* A raw little-endian array named in a model's index entry; 4-byte elements. */
static void *load_raw(json_t *model, const char *what, int64_t *n_out) {
    json_t *t = json_object_get(json_object_get(model, "tensors"), what);
    const char *file = json_string_value(json_object_get(t, "file"));
    if (!file) {
        fprintf(stderr, "index.json: no tensor \"%s\"\n", what);
        abort();
    }
    int64_t n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "shape"), i, d) n *= json_integer_value(d);
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", fixdir, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        abort();
    }
    void *buf = calloc((size_t)n + 1, 4);
    size_t got = fread(buf, 4, (size_t)n, f);
    fclose(f);
    if (!buf || (int64_t)got != n) {
        fprintf(stderr, "fixture %s: read %zu of %lld elements\n", path, got, (long long)n);
        abort();
    }
    if (n_out) *n_out = n;
    return buf;
}

static int64_t jint(json_t *o, const char *key) {
    return json_integer_value(json_object_get(o, key));
}

/* max |got - want| <= tol · max |want| over one tensor; reports the worst element. */
static void check_scaled(const float *got, const float *want, int64_t n, double tol,
                         const char *what) {
    double scale = 0.0, worst = -1.0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d) || d > worst) {
            worst = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    CHECKF(worst <= tol * scale,
           "%s: max |diff| %.3g at element %lld (got %.9g, want %.9g), limit %.3g = %g x max|ref| "
           "%.4g",
           what, worst, (long long)at, (double)got[at], (double)want[at], tol * scale, tol, scale);
}

typedef struct fixture {
    const char *name;
    json_t *entry;
    ql_batch batch;
    int32_t *ids, *targets, *pos, *doc;
    float *logits, *params, *grads;
    int64_t n_logits, n_params;
} fixture;

static void fixture_load(fixture *fx, const char *name, json_t *entry) {
    memset(fx, 0, sizeof *fx);
    fx->name = name;
    fx->entry = entry;
    fx->ids = load_raw(entry, "ids", NULL);
    fx->targets = load_raw(entry, "targets", NULL);
    fx->pos = load_raw(entry, "pos", NULL);
    fx->doc = load_raw(entry, "doc", NULL);
    fx->logits = load_raw(entry, "logits", &fx->n_logits);
    fx->params = load_raw(entry, "lora_params", &fx->n_params);
    fx->grads = load_raw(entry, "lora_grads", NULL);
    fx->batch = (ql_batch){
        jint(entry, "batch"), jint(entry, "seq"), fx->ids, fx->targets, fx->pos, fx->doc};
}

static void fixture_free(fixture *fx) {
    free(fx->ids);
    free(fx->targets);
    free(fx->pos);
    free(fx->doc);
    free(fx->logits);
    free(fx->params);
    free(fx->grads);
}

/* Copies the fixture's A/B into the model's adapters by PEFT name; 0 if the
 * tables do not match one to one. */
static int set_adapters(const fixture *fx, ql_adapters *ad, const ql_backend *be) {
    json_t *list = json_object_get(fx->entry, "adapters");
    CHECKF(ad->n_tensors == (int)json_array_size(list), "%s: %d adapter tensors, fixture has %zu",
           fx->name, ad->n_tensors, json_array_size(list));
    CHECKF(ad->n == fx->n_params, "%s: %lld adapter parameters, fixture has %lld", fx->name,
           (long long)ad->n, (long long)fx->n_params);
    double want_scale = json_number_value(json_object_get(fx->entry, "lora_alpha")) /
                        (double)jint(fx->entry, "lora_r");
    CHECKF(fabs(ad->scale - want_scale) < 1e-7, "%s: LoRA scale %g, want %g", fx->name,
           (double)ad->scale, want_scale);
    int ok = ad->n_tensors == (int)json_array_size(list) && ad->n == fx->n_params;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        json_t *shape = json_object_get(e, "shape");
        int64_t rows = json_integer_value(json_array_get(shape, 0));
        int64_t cols = json_integer_value(json_array_get(shape, 1));
        const ql_adapter_tensor *t = NULL;
        for (int k = 0; k < ad->n_tensors; k++)
            if (strcmp(ad->tensors[k].name, name) == 0) t = &ad->tensors[k];
        CHECKF(t != NULL, "%s: the model has no adapter tensor %s", fx->name, name);
        if (!t) {
            ok = 0;
            continue;
        }
        CHECKF(t->rows == rows && t->cols == cols, "%s: %s is [%lld, %lld], want [%lld, %lld]",
               fx->name, name, (long long)t->rows, (long long)t->cols, (long long)rows,
               (long long)cols);
        if (t->rows != rows || t->cols != cols || t->offset < 0 ||
            t->offset + rows * cols > ad->n) {
            ok = 0;
            continue;
        }
        CHECK(be->upload(ad->params + t->offset, fx->params + jint(e, "offset"),
                         (size_t)(rows * cols) * sizeof(float)) == QL_OK);
    }
    return ok;
}

/* The model's gradients rearranged into the fixture's layout. */
static float *grads_in_fixture_order(const fixture *fx, const ql_adapters *ad,
                                     const ql_backend *be) {
    float *host = calloc((size_t)ad->n, sizeof(float));
    float *out = calloc((size_t)fx->n_params, sizeof(float));
    if (!host || !out) abort();
    CHECK(be->download(host, ad->grads, (size_t)ad->n * sizeof(float)) == QL_OK);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(fx->entry, "adapters"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        for (int k = 0; k < ad->n_tensors; k++)
            if (strcmp(ad->tensors[k].name, name) == 0)
                memcpy(out + jint(e, "offset"), host + ad->tensors[k].offset,
                       (size_t)(ad->tensors[k].rows * ad->tensors[k].cols) * sizeof(float));
    }
    free(host);
    return out;
}

static void zero_grads(ql_adapters *ad, const ql_backend *be) {
    float *z = calloc((size_t)ad->n, sizeof(float));
    if (!z) abort();
    CHECK(be->upload(ad->grads, z, (size_t)ad->n * sizeof(float)) == QL_OK);
    free(z);
}

static void run(const fixture *fx, const char *backend, int checkpoint) {
    char tag[128], what[512], path[2200];
    snprintf(tag, sizeof tag, "%s [%s%s]", fx->name, backend, checkpoint ? ", checkpointing" : "");
    snprintf(path, sizeof path, "%s/%s", fixdir,
             json_string_value(json_object_get(fx->entry, "dir")));

    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = ql_backend_by_name(backend);
    CHECKF(o.be != NULL, "%s: backend: %s", tag, ql_error_message());
    if (!o.be) return;
    o.quant_type = QL_QTYPE_NF4;
    o.blocksize = 64;
    o.double_quant = 0;
    o.lora.r = (int)jint(fx->entry, "lora_r");
    o.lora.alpha = (float)json_number_value(json_object_get(fx->entry, "lora_alpha"));
    o.lora.dropout = 0.0f;
    o.lora.use_rslora = 0;
    o.lora.targets = QL_PROJ_ALL;
    o.checkpoint_activations = checkpoint;
    o.max_batch = fx->batch.batch;
    o.max_seq = fx->batch.seq;
    o.quiet = 1;

    ql_llama *m = NULL;
    ql_status st = ql_llama_load(path, &o, &m);
    CHECKF(st == QL_OK, "%s: ql_llama_load: %s", tag, ql_error_message());
    if (st != QL_OK) return;
    ql_adapters *ad = ql_llama_adapters(m);
    if (!set_adapters(fx, ad, o.be)) {
        ql_llama_free(m);
        return;
    }
    zero_grads(ad, o.be);

    /* Logits. */
    float *logits = calloc((size_t)fx->n_logits, sizeof(float));
    if (!logits) abort();
    st = ql_llama_logits(m, &fx->batch, logits);
    CHECKF(st == QL_OK, "%s: ql_llama_logits: %s", tag, ql_error_message());
    double absmax = json_number_value(json_object_get(fx->entry, "logits_absmax"));
    snprintf(what, sizeof what, "%s logits", tag);
    double logit_diff = 0.0;
    if (st == QL_OK) {
        CHECK_CLOSE(logits, fx->logits, fx->n_logits, 1e-5 * absmax, 1e-4, what);
        for (int64_t k = 0; k < fx->n_logits; k++)
            logit_diff = fmax(logit_diff, fabs((double)logits[k] - (double)fx->logits[k]));
    }

    /* Loss alone: no gradient may move. */
    double loss_sum = 0.0;
    int64_t n_targets = 0;
    int64_t want_targets = jint(fx->entry, "n_targets");
    double want_loss = json_number_value(json_object_get(fx->entry, "loss"));
    st = ql_llama_forward_backward(m, &fx->batch, 0, 1.0f, &loss_sum, &n_targets);
    CHECKF(st == QL_OK, "%s: forward: %s", tag, ql_error_message());
    CHECKF(n_targets == want_targets, "%s: %lld targets, want %lld", tag, (long long)n_targets,
           (long long)want_targets);
    CHECKF(fabs(loss_sum / (double)want_targets - want_loss) <= 1e-5 * want_loss,
           "%s: forward-only mean loss %.9g, want %.9g", tag, loss_sum / (double)want_targets,
           want_loss);
    float *g0 = grads_in_fixture_order(fx, ad, o.be);
    int moved = 0;
    for (int64_t i = 0; i < fx->n_params; i++) moved += g0[i] != 0.0f;
    CHECKF(moved == 0, "%s: forward without backward changed %d gradient elements", tag, moved);
    free(g0);

    /* Loss and gradients of the mean loss. */
    st = ql_llama_forward_backward(m, &fx->batch, 1, 1.0f / (float)want_targets, &loss_sum,
                                   &n_targets);
    CHECKF(st == QL_OK, "%s: forward_backward: %s", tag, ql_error_message());
    CHECKF(n_targets == want_targets, "%s: %lld targets, want %lld", tag, (long long)n_targets,
           (long long)want_targets);
    double loss = loss_sum / (double)want_targets;
    CHECKF(fabs(loss - want_loss) <= 1e-5 * want_loss, "%s: mean loss %.9g, want %.9g (rel %.2g)",
           tag, loss, want_loss, fabs(loss - want_loss) / want_loss);

    float *g = grads_in_fixture_order(fx, ad, o.be);
    size_t i;
    json_t *e;
    double worst_rel = 0.0;
    json_array_foreach(json_object_get(fx->entry, "adapters"), i, e) {
        int64_t off = jint(e, "offset");
        json_t *shape = json_object_get(e, "shape");
        int64_t n = json_integer_value(json_array_get(shape, 0)) *
                    json_integer_value(json_array_get(shape, 1));
        double scale = 0.0, d = 0.0;
        for (int64_t k = 0; k < n; k++) {
            scale = fmax(scale, fabs((double)fx->grads[off + k]));
            d = fmax(d, fabs((double)g[off + k] - (double)fx->grads[off + k]));
        }
        if (scale > 0) worst_rel = fmax(worst_rel, d / scale);
        snprintf(what, sizeof what, "%s grad %s", tag,
                 json_string_value(json_object_get(e, "name")));
        check_scaled(g + off, fx->grads + off, n, 1e-4, what);
    }
    printf("%-34s max |logit diff| %.1e, loss %.9f (ref %.9f), grad diff <= %.1e of max\n", tag,
           logit_diff, loss, want_loss, worst_rel);

    /* A second pass accumulates: the gradients double. */
    st = ql_llama_forward_backward(m, &fx->batch, 1, 1.0f / (float)want_targets, &loss_sum,
                                   &n_targets);
    CHECK(st == QL_OK);
    float *g2 = grads_in_fixture_order(fx, ad, o.be);
    for (int64_t k = 0; k < fx->n_params; k++) g[k] *= 2.0f;
    snprintf(what, sizeof what, "%s gradients after two passes", tag);
    check_scaled(g2, g, fx->n_params, 1e-6, what);

    free(g);
    free(g2);
    free(logits);
    ql_llama_free(m);
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(fixdir, sizeof fixdir, "%s/tests/fixtures/llama", src ? src : ".");
    char path[1200];
    snprintf(path, sizeof path, "%s/index.json", fixdir);
    json_error_t err;
    json_t *index = json_load_file(path, 0, &err);
    if (!index) {
        printf("SKIP: %s: %s (fixtures missing: run tests/fixtures/make_llama_reference.py, "
               "or set QL_SOURCE_DIR to the repository root)\n",
               path, err.text);
        return 77;
    }
    json_t *models = json_object_get(index, "models");
    const char *name;
    json_t *entry;
    json_object_foreach(models, name, entry) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s/config.json", fixdir,
                 json_string_value(json_object_get(entry, "dir")));
        if (stat(path, &sb) != 0) {
            printf("SKIP: fixture directory missing: %s (run "
                   "tests/fixtures/make_llama_reference.py)\n",
                   path);
            json_decref(index);
            return 77;
        }
    }
    CHECKF(json_object_size(models) >= 5, "index.json lists %zu models", json_object_size(models));

    json_object_foreach(models, name, entry) {
        fixture fx;
        fixture_load(&fx, name, entry);
        run(&fx, "cpu-ref", 0);
        run(&fx, "cpu", 0);
        run(&fx, "cpu", 1);
        fixture_free(&fx);
    }
    json_decref(index);
    return CHECK_DONE();
}
