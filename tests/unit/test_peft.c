/* PEFT adapter save/load on a hand-made adapter table: the exact
 * adapter_config.json, a bit-exact round trip, BF16/F16 files, and each
 * mismatch named by its key. `test_peft --write DIR` writes the hand-made
 * adapter for tests/e2e/check_peft.py (which reads it with PyPI safetensors). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/fsutil.h"
#include "model/peft.h"
#include "model/safetensors.h"

/* Two layers, hidden 8, q_proj 8 -> 8 and v_proj 8 -> 4 (GQA-like), r 4. */
typedef struct hand {
    ql_adapters a;
    ql_adapter_tensor t[2 * QL_N_PROJ * 2]; /* room for every target of both layers */
    float *p;
} hand;

static void make(hand *h, int r, unsigned targets, float seed) {
    memset(h, 0, sizeof *h);
    h->a.cfg = (ql_lora_config){.r = r, .alpha = 16, .dropout = 0.05f, .targets = targets};
    h->a.scale = 16.0f / (float)r;
    int64_t off = 0;
    int k = 0;
    for (int layer = 0; layer < 2; layer++)
        for (int proj = 0; proj < QL_N_PROJ; proj++) {
            if (!(targets & (1u << proj))) continue;
            const char *name = proj == QL_PROJ_Q   ? "q_proj"
                               : proj == QL_PROJ_K ? "k_proj"
                                                   : "v_proj";
            int64_t out = proj == QL_PROJ_Q ? 8 : 4;
            for (int is_b = 0; is_b < 2; is_b++) {
                ql_adapter_tensor *t = &h->t[k++];
                snprintf(t->name, sizeof t->name,
                         "base_model.model.model.layers.%d.self_attn.%s.lora_%c.weight", layer,
                         name, is_b ? 'B' : 'A');
                t->layer = layer;
                t->proj = (ql_proj)proj;
                t->is_b = is_b;
                t->rows = is_b ? out : r;
                t->cols = is_b ? r : 8;
                t->offset = off;
                off += t->rows * t->cols;
            }
        }
    h->a.tensors = h->t;
    h->a.n_tensors = k;
    h->a.n = off;
    h->p = calloc((size_t)off, sizeof(float));
    /* values a bf16 holds exactly: (i - 40) / 64 * seed with seed a power of two */
    for (int64_t i = 0; i < off; i++) h->p[i] = (float)(i % 81 - 40) / 64.0f * seed;
    h->a.params = h->p;
}

static const unsigned QV = (1u << QL_PROJ_Q) | (1u << QL_PROJ_V);

static char *read_text(const char *dir, const char *name) {
    char *p = ql_fs_join(dir, name), *text = NULL;
    size_t len;
    if (ql_fs_read_file(p, &text, &len) != QL_OK) text = NULL;
    free(p);
    return text;
}

/* Nothing but the final directory beside it (no .tmp-/.old- leftovers). */
static int only_entry(const char *parent, const char *name) {
    DIR *d = opendir(parent);
    if (!d) return 0;
    int ok = 1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strcmp(e->d_name, name)) ok = 0;
    closedir(d);
    return ok;
}

static const char *expected_config = "{\n"
                                     "  \"alpha_pattern\": {},\n"
                                     "  \"base_model_name_or_path\": \"models/tiny\",\n"
                                     "  \"bias\": \"none\",\n"
                                     "  \"fan_in_fan_out\": false,\n"
                                     "  \"inference_mode\": true,\n"
                                     "  \"init_lora_weights\": true,\n"
                                     "  \"layers_pattern\": null,\n"
                                     "  \"layers_to_transform\": null,\n"
                                     "  \"lora_alpha\": 16,\n"
                                     "  \"lora_dropout\": 0.05,\n"
                                     "  \"modules_to_save\": null,\n"
                                     "  \"peft_type\": \"LORA\",\n"
                                     "  \"r\": 4,\n"
                                     "  \"rank_pattern\": {},\n"
                                     "  \"revision\": null,\n"
                                     "  \"target_modules\": [\n"
                                     "    \"q_proj\",\n"
                                     "    \"v_proj\"\n"
                                     "  ],\n"
                                     "  \"task_type\": \"CAUSAL_LM\",\n"
                                     "  \"use_dora\": false,\n"
                                     "  \"use_rslora\": false\n"
                                     "}";

static void test_round_trip(const char *root) {
    hand h, g;
    make(&h, 4, QV, 1.0f);
    char *dir = ql_fs_join(root, "adapter");
    CHECKF(ql_peft_save(dir, &h.a, NULL, "models/tiny") == QL_OK, "%s", ql_error_message());
    CHECK(only_entry(root, "adapter"));
    char *cfg = read_text(dir, QL_PEFT_CONFIG);
    CHECKF(cfg && !strcmp(cfg, expected_config), "adapter_config.json:\n%s", cfg ? cfg : "");
    free(cfg);

    /* tensors: F32, PEFT keys, shapes [r, in] / [out, r], "format": "pt" */
    char *wp = ql_fs_join(dir, QL_PEFT_WEIGHTS);
    ql_st_file f;
    CHECK(ql_st_open(wp, &f) == QL_OK);
    CHECK(f.n_tensors == 8 && f.format && !strcmp(f.format, "pt"));
    const ql_st_tensor *t =
        ql_st_find(&f, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    CHECK(t && t->dtype == QL_DT_F32 && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == 4);
    t = ql_st_find(&f, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    CHECK(t && t->shape[0] == 4 && t->shape[1] == 8 && !memcmp(t->data, h.p, 32 * sizeof(float)));
    ql_st_close(&f);

    /* back into a zeroed table of the same layout: bit for bit */
    make(&g, 4, QV, 1.0f);
    memset(g.p, 0, (size_t)g.a.n * sizeof(float));
    CHECKF(ql_peft_load(dir, &g.a, NULL) == QL_OK, "%s", ql_error_message());
    CHECK(!memcmp(g.p, h.p, (size_t)h.a.n * sizeof(float)));
    free(g.p);

    /* the configuration back */
    ql_lora_config lc;
    char base[256];
    CHECKF(ql_peft_read_config(dir, &lc, base, sizeof base) == QL_OK, "%s", ql_error_message());
    CHECK(lc.r == 4 && lc.alpha == 16.0f && lc.dropout == 0.05f && lc.targets == QV &&
          !lc.use_rslora && !strcmp(base, "models/tiny"));

    /* saving again replaces the directory, atomically */
    make(&g, 4, QV, 2.0f);
    CHECK(ql_peft_save(dir, &g.a, NULL, "models/tiny") == QL_OK);
    CHECK(only_entry(root, "adapter"));
    memset(h.p, 0, (size_t)h.a.n * sizeof(float));
    CHECK(ql_peft_load(dir, &h.a, NULL) == QL_OK && !memcmp(g.p, h.p, (size_t)h.a.n * 4));
    free(g.p);

    /* finding the adapter from a run directory or itself */
    char found[4096];
    CHECK(ql_peft_find(root, found, sizeof found) == QL_OK && !strcmp(found, dir));
    CHECK(ql_peft_find(dir, found, sizeof found) == QL_OK && !strcmp(found, dir));
    char *nowhere = ql_fs_join(root, "nowhere");
    CHECK(ql_peft_find(nowhere, found, sizeof found) == QL_ENOTFOUND);
    free(nowhere);
    free(wp);
    free(dir);
    free(h.p);
}

static void test_mismatch(const char *root) {
    char *dir = ql_fs_join(root, "adapter");
    char want[1024];
    hand g;
    /* a different rank: the first tensor's shape is named */
    make(&g, 2, QV, 1.0f);
    CHECK(ql_peft_load(dir, &g.a, NULL) == QL_EFORMAT);
    snprintf(want, sizeof want,
             "%s/adapter_model.safetensors: tensor "
             "'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [4, 8], "
             "expected [2, 8]",
             dir);
    CHECKF(!strcmp(ql_error_message(), want), "%s", ql_error_message());
    free(g.p);
    /* the model targets k_proj too: missing key */
    make(&g, 4, QV | (1u << QL_PROJ_K), 1.0f);
    CHECK(ql_peft_load(dir, &g.a, NULL) == QL_ENOTFOUND);
    snprintf(want, sizeof want,
             "%s/adapter_model.safetensors: missing tensor "
             "'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight' (the adapter does "
             "not cover the model's targets: r 4, 12 tensors expected)",
             dir);
    CHECKF(!strcmp(ql_error_message(), want), "%s", ql_error_message());
    free(g.p);
    /* the model targets only q_proj: v_proj's tensors have no place */
    make(&g, 4, 1u << QL_PROJ_Q, 1.0f);
    CHECK(ql_peft_load(dir, &g.a, NULL) == QL_EFORMAT);
    snprintf(want, sizeof want,
             "%s/adapter_model.safetensors: tensor "
             "'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight' has no place in "
             "this model (a layer or module it does not have, or LoRA settings other than r 4 on "
             "these targets)",
             dir);
    CHECKF(!strcmp(ql_error_message(), want), "%s", ql_error_message());
    free(g.p);
    free(dir);
}

/* Adapters saved in BF16 or F16 (as PEFT does without autocast) load as F32. */
static void test_half(const char *root) {
    hand h, g;
    make(&h, 4, QV, 0.5f);
    char *dir = ql_fs_join(root, "half");
    CHECK(ql_peft_save(dir, &h.a, NULL, "") == QL_OK);
    for (int dt = 0; dt < 2; dt++) {
        ql_dtype d = dt ? QL_DT_F16 : QL_DT_BF16;
        ql_st_entry e[8];
        uint16_t *half = calloc((size_t)h.a.n, 2);
        ql_dtype_from_f32(d, h.p, half, (size_t)h.a.n);
        for (int i = 0; i < h.a.n_tensors; i++) {
            const ql_adapter_tensor *t = &h.t[i];
            e[i] = (ql_st_entry){.name = t->name,
                                 .dtype = d,
                                 .ndim = 2,
                                 .shape = {t->rows, t->cols},
                                 .data = half + t->offset,
                                 .nbytes = (uint64_t)(t->rows * t->cols) * 2};
        }
        char *wp = ql_fs_join(dir, QL_PEFT_WEIGHTS);
        CHECK(ql_st_write(wp, e, (size_t)h.a.n_tensors) == QL_OK);
        make(&g, 4, QV, 0.5f);
        memset(g.p, 0, (size_t)g.a.n * 4);
        CHECKF(ql_peft_load(dir, &g.a, NULL) == QL_OK, "%s", ql_error_message());
        CHECK(!memcmp(g.p, h.p, (size_t)h.a.n * 4)); /* every value is exact in both */
        free(g.p);
        free(wp);
        free(half);
    }
    /* base_model "" is written as null */
    char *cfg = read_text(dir, QL_PEFT_CONFIG);
    CHECK(cfg && strstr(cfg, "\"base_model_name_or_path\": null,"));
    free(cfg);
    free(dir);
    free(h.p);
}

static void write_config(const char *dir, const char *text) {
    char *p = ql_fs_join(dir, QL_PEFT_CONFIG);
    CHECK(ql_fs_write_atomic(p, text, strlen(text)) == QL_OK);
    free(p);
}

static void test_config_refused(const char *root) {
    char *dir = ql_fs_join(root, "cfgs");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"peft_type\": \"IA3\", \"r\": 4}", "\"peft_type\" is IA3; only \"LORA\" is supported"},
        {"{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"q_proj\"]}",
         "\"r\": expected an integer >= 1"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true, \"target_modules\": "
         "[\"q_proj\"]}",
         "\"use_dora\": DoRA is not supported"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"bias\": \"all\", \"target_modules\": [\"q_proj\"]}",
         "\"bias\": training biases is not supported"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"modules_to_save\": [\"lm_head\"], "
         "\"target_modules\": [\"q_proj\"]}",
         "\"modules_to_save\": saving full modules is not supported"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": \".*proj\"}",
         "\"target_modules\": expected a non-empty list of module names (or \"all-linear\"); "
         "regular expressions are not supported"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\", \"lm_head\"]}",
         "\"target_modules\"[1] = lm_head: qlora trains adapters on q_proj, k_proj, v_proj, "
         "o_proj, gate_proj, up_proj and down_proj only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_config(dir, cases[i].json);
        ql_lora_config lc;
        char want[1200];
        snprintf(want, sizeof want, "%s/adapter_config.json: %s", dir, cases[i].msg);
        CHECK(ql_peft_read_config(dir, &lc, NULL, 0) != QL_OK);
        CHECKF(!strcmp(ql_error_message(), want), "case %zu: %s", i, ql_error_message());
    }
    /* minimal: defaults for what is left out (lora_alpha 8 as PeftConfig), all-linear */
    write_config(dir, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"all-linear\", "
                      "\"use_rslora\": true, \"some_future_key\": 1}");
    ql_lora_config lc;
    char base[8] = "x";
    CHECK(ql_peft_read_config(dir, &lc, base, sizeof base) == QL_OK);
    CHECK(lc.r == 8 && lc.alpha == 8.0f && lc.dropout == 0 && lc.targets == QL_PROJ_ALL &&
          lc.use_rslora && base[0] == '\0');
    free(dir);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write")) {
        hand h;
        make(&h, 4, QV, 1.0f);
        ql_status st = ql_peft_save(argv[2], &h.a, NULL, "models/tiny");
        if (st != QL_OK) fprintf(stderr, "%s\n", ql_error_message());
        free(h.p);
        return st == QL_OK ? 0 : 1;
    }
    char root[] = "/tmp/ql_test_peft_XXXXXX";
    if (!mkdtemp(root)) return 1;
    test_round_trip(root);
    test_mismatch(root);
    test_half(root);
    test_config_refused(root);
    ql_fs_remove_tree(root);
    return CHECK_DONE();
}
