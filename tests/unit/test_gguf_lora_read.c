/* llama.cpp LoRA adapters as input (model/gguf_lora.h: --adapter FILE.gguf,
 * lora.init_adapter, qlora export FILE.gguf). Adapters are written here with
 * qlora's GGUF writer in the layout convert_lora_to_gguf.py uses (FORMATS
 * §5, docs/export.md), for the tiny Llama fixture (4 query heads, 2 KV heads
 * of 16): the configuration read back (r, alpha, targets; no alpha means a
 * scale of 1, as llama.cpp reads it), the values with the q/k lora_b rows
 * put back into Hugging Face's order by this test's own statement of the
 * converter's permutation, and every kind of file qlora must refuse, each
 * with its message. The converter's own files are checked against PEFT and
 * llama.cpp in test_peft_reference.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_lora.h"
#include "model/gguf_write.h"
#include "model/hf_config.h"
#include "model/lora.h"
#include "model/peft.h"
#include "model/source.h"

static char dir[] = "/tmp/ql_gguf_lora_XXXXXX";
static ql_hf_config cfg;

/* What to write. */
typedef struct spec {
    const char *arch, *type, *adapter_type;
    float alpha; /* < 0: no adapter.lora.alpha */
    int alora;   /* add adapter.alora.invocation_tokens */
    int r;
    int odd_rank_layer; /* >= 0: this layer's v_proj gets rank r + 1 */
    int drop_v_layer;   /* >= 0: no v_proj in this layer */
    int drop_k_b;       /* 1: layer 0 lacks attn_k's lora_b */
    int layers;         /* layers written (the fixture has 2) */
    const char *extra;  /* one more tensor of this name, [r, 64] */
} spec;

static spec good(void) {
    return (spec){.arch = "llama",
                  .type = "adapter",
                  .adapter_type = "lora",
                  .alpha = 6.0f,
                  .r = 2,
                  .odd_rank_layer = -1,
                  .drop_v_layer = -1,
                  .layers = 2};
}

static const char *const gguf_proj[QL_N_PROJ] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                 "ffn_gate", "ffn_up", "ffn_down"};

/* Value e of tensor (layer, p, is_b): distinct everywhere, exact in f32. */
static float value(int layer, int p, int is_b, int64_t e) {
    return (float)((layer * 7 + p) * 2 + is_b) + (float)e / 1024.0f;
}

static char *write_spec(const spec *s, const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    ql_gguf_writer w = {0};
    CHECK(ql_gguf_writer_add_str(&w, "general.architecture", s->arch) == QL_OK);
    CHECK(ql_gguf_writer_add_str(&w, "general.type", s->type) == QL_OK);
    CHECK(ql_gguf_writer_add_str(&w, "adapter.type", s->adapter_type) == QL_OK);
    if (s->alpha >= 0) CHECK(ql_gguf_writer_add_f32(&w, "adapter.lora.alpha", s->alpha) == QL_OK);
    if (s->alora) CHECK(ql_gguf_writer_add_u32(&w, "adapter.alora.invocation_tokens", 7) == QL_OK);
    float *bufs[64];
    int nb = 0;
    char names[64][96];
    for (int l = 0; l < s->layers; l++)
        for (int p = 0; p < QL_N_PROJ; p++) {
            if (p == QL_PROJ_V && l == s->drop_v_layer) continue;
            int64_t in, out;
            ql_proj_shape(&cfg, (ql_proj)p, &in, &out);
            const int r = s->r + (p == QL_PROJ_V && l == s->odd_rank_layer);
            for (int is_b = 0; is_b < 2; is_b++) {
                if (is_b && p == QL_PROJ_K && l == 0 && s->drop_k_b) continue;
                const int64_t rows = is_b ? out : r, cols = is_b ? r : in;
                float *v = malloc((size_t)(rows * cols) * sizeof *v);
                for (int64_t e = 0; e < rows * cols; e++) v[e] = value(l, p, is_b, e);
                snprintf(names[nb], sizeof names[nb], "blk.%d.%s.weight.lora_%c", l, gguf_proj[p],
                         is_b ? 'b' : 'a');
                const int64_t ne[2] = {cols, rows};
                CHECK(ql_gguf_writer_add_tensor(&w, names[nb], 2, ne, QL_GGML_F32, v,
                                                (uint64_t)(rows * cols) * 4) == QL_OK);
                bufs[nb++] = v;
            }
        }
    float extra[2 * 64] = {0};
    if (s->extra) {
        const int64_t ne[2] = {64, 2};
        CHECK(ql_gguf_writer_add_tensor(&w, s->extra, 2, ne, QL_GGML_F32, extra, sizeof extra) ==
              QL_OK);
    }
    CHECK(ql_gguf_writer_save(&w, path) == QL_OK);
    ql_gguf_writer_free(&w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return path;
}

/* read_config must fail with `want` in the message. */
static void refused(const spec *s, const char *name, const char *want) {
    const char *path = write_spec(s, name);
    ql_lora_config lc;
    ql_status st = ql_peft_read_config(path, &lc, NULL, 0);
    CHECKF(st != QL_OK && strstr(ql_error_message(), want), "%s: want '%s', got: %s", name, want,
           st == QL_OK ? "accepted" : ql_error_message());
}

/* Loads `path` (configuration as read) into the fixture's layout; the
 * result, or NULL with the error left set. */
static float *load(const char *path, ql_lora_config *lc, ql_adapters *a) {
    CHECK(ql_peft_read_config(path, lc, NULL, 0) == QL_OK);
    CHECK(ql_adapters_layout(&cfg, lc, a) == QL_OK);
    float *v = calloc((size_t)a->n, sizeof *v);
    a->params = v;
    if (ql_peft_load(path, a, NULL) != QL_OK) {
        free(v);
        return NULL;
    }
    return v;
}

static void test_good(void) {
    spec s = good();
    const char *path = write_spec(&s, "good");
    char found[600];
    CHECK(ql_peft_find(path, found, sizeof found) == QL_OK && !strcmp(found, path));
    ql_lora_config lc;
    ql_adapters a;
    float *v = load(path, &lc, &a);
    CHECKF(v != NULL, "good: %s", ql_error_message());
    CHECKF(lc.r == 2 && lc.alpha == 6.0f && !lc.use_rslora && lc.targets == QL_PROJ_ALL &&
               lc.dropout == 0.0f,
           "good: r %d alpha %g rslora %d targets %#x", lc.r, (double)lc.alpha, lc.use_rslora,
           lc.targets);
    /* The converter's order: GGUF row h*D + 2i + j is HF row h*D + j*D/2 + i. */
    const int64_t D = 16, half = D / 2;
    int64_t wrong = 0;
    for (int i = 0; v && i < a.n_tensors; i++) {
        const ql_adapter_tensor *t = &a.tensors[i];
        const int qk = t->is_b && (t->proj == QL_PROJ_Q || t->proj == QL_PROJ_K);
        for (int64_t row = 0; row < t->rows; row++) {
            int64_t src = row; /* the file's row holding HF row `row` */
            if (qk) {
                const int64_t h = row / D, k = row % D, j = k / half, ii = k % half;
                src = h * D + 2 * ii + j;
            }
            for (int64_t c = 0; c < t->cols; c++)
                wrong += v[t->offset + row * t->cols + c] !=
                         value(t->layer, t->proj, t->is_b, src * t->cols + c);
        }
    }
    CHECKF(v && wrong == 0, "good: %lld values not where the converter's order puts them",
           (long long)wrong);
    free(v);
    ql_adapters_layout_free(&a);

    /* qwen2: no permutation; on a llama base refused (rows for another RoPE). */
    s.arch = "qwen2";
    path = write_spec(&s, "qwen2");
    v = load(path, &lc, &a);
    CHECKF(!v && strstr(ql_error_message(), "an adapter for a qwen2 model (general.architecture), "
                                            "but the base is llama"),
           "qwen2 adapter on a llama base: %s", v ? "accepted" : ql_error_message());
    free(v);
    ql_adapters_layout_free(&a);

    /* No alpha: llama.cpp scales by 1, i.e. alpha = r. */
    s = good();
    s.alpha = -1;
    path = write_spec(&s, "noalpha");
    CHECK(ql_peft_read_config(path, &lc, NULL, 0) == QL_OK && lc.alpha == 2.0f);
    /* Adapters on some projections, the same in every layer. */
    s = good();
    s.drop_v_layer = 0;
    s.layers = 1;
    path = write_spec(&s, "nov");
    CHECKF(ql_peft_read_config(path, &lc, NULL, 0) == QL_OK &&
               lc.targets == (QL_PROJ_ALL & ~(1u << QL_PROJ_V)),
           "no v_proj: targets %#x", lc.targets);
    /* ... but one layer of a two-layer model is missing: load names it. */
    v = load(path, &lc, &a);
    CHECKF(!v && strstr(ql_error_message(), "missing tensor 'blk.1.attn_q.weight.lora_a'"),
           "one layer of two: %s", v ? "accepted" : ql_error_message());
    free(v);
    ql_adapters_layout_free(&a);
    /* More layers than the model: the extra ones have no place. */
    s = good();
    s.layers = 3;
    path = write_spec(&s, "three");
    v = load(path, &lc, &a);
    CHECKF(!v && strstr(ql_error_message(), "'blk.2.attn_q.weight.lora_a' has no place in this "
                                            "model"),
           "three layers on two: %s", v ? "accepted" : ql_error_message());
    free(v);
    ql_adapters_layout_free(&a);
}

static void test_refused(void) {
    spec s = good();
    s.type = "model";
    refused(&s, "model", "general.type is 'model', expected 'adapter'");
    s = good();
    s.adapter_type = "control_vector";
    refused(&s, "cvec", "adapter.type is 'control_vector', expected 'lora'");
    s = good();
    s.alora = 1;
    refused(&s, "alora", "an activated LoRA (adapter.alora.invocation_tokens)");
    s = good();
    s.arch = "gemma";
    refused(&s, "gemma", "general.architecture 'gemma': qlora reads adapters of llama");
    s = good();
    s.odd_rank_layer = 1;
    refused(&s, "rank", "tensor 'blk.1.attn_v.weight.lora_a' has rank 3, others 2");
    s = good();
    s.drop_v_layer = 1;
    refused(&s, "mixed", "v_proj is adapted in layer 0 but not in layer 1");
    s = good();
    s.drop_k_b = 1;
    refused(&s, "nob", "'blk.0.attn_k.weight.lora_b' is missing (it has the lora_a)");
    s = good();
    s.extra = "token_embd.weight.lora_a";
    refused(&s, "embd", "tensor 'token_embd.weight.lora_a' is not the lora_a or lora_b of a layer");
    s = good();
    s.extra = "blk.900.attn_q.weight.lora_a";
    refused(&s, "far", "tensor 'blk.900.attn_q.weight.lora_a': layer 900 of a file of 29 tensors");
    s = good();
    s.extra = "blk.99999999999.attn_q.weight.lora_a";
    refused(&s, "huge", "is not the lora_a or lora_b of a layer");
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    const char *src = getenv("QL_SOURCE_DIR");
    char model[1024];
    snprintf(model, sizeof model, "%s/tests/fixtures/llama/llama", src ? src : ".");
    if (ql_model_config_load(model, &cfg) != QL_OK) {
        fprintf(stderr, "%s: %s\n", model, ql_error_message());
        return 1;
    }
    test_good();
    test_refused();
    ql_hf_config_free(&cfg);
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
