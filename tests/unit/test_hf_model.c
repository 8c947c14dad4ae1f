/* config.json parsing, the HF model-directory loader and its checks, the
 * bitsandbytes 4-bit serialization (FORMATS §8 vector B) and the round trip
 * quantize -> write -> load -> dequantize. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "kernels/quant4.h"
#include "model/bnb4.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/hf_quantize.h"
#include "model/safetensors.h"

static char root[] = "/tmp/ql_test_hf_XXXXXX";

static const char *pth(const char *a, const char *b) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s%s%s", root, a, b ? "/" : "", b ? b : "");
    return buf[k];
}

static void put_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

static int has(const char *needle) {
    const char *m = ql_error_message();
    if (strstr(m, needle)) return 1;
    fprintf(stderr, "  message lacks '%s': %s\n", needle, m);
    return 0;
}

/* --------------------------------------------------------------- config */

static ql_status parse(const char *text, ql_hf_config *c) {
    return ql_hf_config_parse(text, strlen(text), "dir/config.json", c);
}

#define BASE                                                                                       \
    "\"hidden_size\":8,\"intermediate_size\":12,\"num_hidden_layers\":1,\"num_attention_heads\":"  \
    "2,\"vocab_size\":5"

static void test_config(void) {
    ql_hf_config c;
    CHECK(parse("{" BASE "}", &c) == QL_OK);
    CHECK(c.num_key_value_heads == 2 && c.head_dim == 4 && c.max_position_embeddings == 2048);
    CHECK(c.rms_norm_eps == 1e-6 && c.rope_theta == 10000.0 && c.rope_type == QL_ROPE_DEFAULT);
    CHECK(!c.tie_word_embeddings && !c.dtype_known && !c.quant.present);
    CHECK(!strcmp(c.model_type, "llama"));
    ql_hf_config_free(&c);

    static const char *req[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "vocab_size"};
    for (size_t i = 0; i < 5; i++) {
        char text[512] = "{", want[128];
        static const char *kv[] = {"\"hidden_size\":8", "\"intermediate_size\":12",
                                   "\"num_hidden_layers\":1", "\"num_attention_heads\":2",
                                   "\"vocab_size\":5"};
        int first = 1;
        for (size_t j = 0; j < 5; j++)
            if (j != i) {
                strcat(text, first ? "" : ",");
                strcat(text, kv[j]);
                first = 0;
            }
        strcat(text, "}");
        CHECK(parse(text, &c) == QL_EFORMAT);
        snprintf(want, sizeof want, "dir/config.json: missing field '%s' (integer)", req[i]);
        CHECK(has(want));
    }
    CHECK(parse("{\"hidden_size\":\"8\",\"intermediate_size\":12,\"num_hidden_layers\":1,"
                "\"num_attention_heads\":2,\"vocab_size\":5}",
                &c) == QL_EFORMAT);
    CHECK(has("field 'hidden_size' must be an integer, got a string"));
    CHECK(parse("{" BASE ",\"num_key_value_heads\":3}", &c) == QL_EFORMAT);
    CHECK(has("num_key_value_heads"));
    CHECK(parse("{" BASE ",\"model_type\":\"gpt2\"}", &c) == QL_EUNSUPPORTED);
    CHECK(has("model_type 'gpt2'"));
    CHECK(parse("{" BASE ",\"torch_dtype\":\"int8\"}", &c) == QL_EUNSUPPORTED);
    CHECK(has("'torch_dtype'"));
    CHECK(parse("{" BASE ",\"rms_norm_eps\":\"x\"}", &c) == QL_EFORMAT);
    CHECK(has("'rms_norm_eps' must be a number"));
    CHECK(parse("[1]", &c) == QL_EFORMAT);
    CHECK(parse("{" BASE ",}", &c) == QL_EFORMAT);
    CHECK(has("dir/config.json: not valid JSON"));

    CHECK(
        parse("{" BASE ",\"head_dim\":16,\"num_key_value_heads\":1,\"rope_theta\":500000.0,"
              "\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
              "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
              "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"model_type\":\"llama\"}",
              &c) == QL_OK);
    CHECK(c.head_dim == 16 && c.num_key_value_heads == 1 && c.rope_theta == 500000.0);
    CHECK(c.rope_type == QL_ROPE_LLAMA3 && c.rope_factor == 32.0 && c.rope_low_freq_factor == 1.0 &&
          c.rope_high_freq_factor == 4.0 && c.rope_original_max_position_embeddings == 8192);
    CHECK(c.tie_word_embeddings && c.dtype_known && c.torch_dtype == QL_DT_BF16);
    ql_hf_config_free(&c);

    CHECK(parse("{" BASE ",\"rope_scaling\":{\"type\":\"linear\"}}", &c) == QL_EFORMAT);
    CHECK(has("missing field 'rope_scaling.factor' (number)"));
    CHECK(parse("{" BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}}", &c) ==
          QL_EFORMAT);
    CHECK(has("rope_scaling.low_freq_factor"));

    /* transformers v5 */
    CHECK(parse("{" BASE ",\"dtype\":\"float16\",\"rope_parameters\":{\"rope_type\":\"linear\","
                "\"factor\":2.0,\"rope_theta\":100000.0}}",
                &c) == QL_OK);
    CHECK(c.rope_type == QL_ROPE_LINEAR && c.rope_factor == 2.0 && c.rope_theta == 100000.0);
    CHECK(c.torch_dtype == QL_DT_F16);
    ql_hf_config_free(&c);

    CHECK(parse("{" BASE ",\"model_type\":\"qwen2\",\"quantization_config\":{\"quant_method\":"
                "\"bitsandbytes\",\"load_in_4bit\":true,\"bnb_4bit_quant_type\":\"nf4\","
                "\"bnb_4bit_use_double_quant\":true,\"bnb_4bit_compute_dtype\":\"bfloat16\"}}",
                &c) == QL_OK);
    CHECK(c.qkv_bias && c.quant.present && c.quant.type == QL_QTYPE_NF4 && c.quant.double_quant &&
          c.quant.compute_dtype == QL_DT_BF16);
    ql_hf_config_free(&c);
    CHECK(parse("{" BASE ",\"quantization_config\":{\"quant_method\":\"gptq\"}}", &c) ==
          QL_EUNSUPPORTED);
    CHECK(has("quant_method 'gptq'"));
}

/* ------------------------------------------------ a tiny model on disk */

#define H 8
#define IM 12
#define V 5
#define HEADS 2
#define KV 1
#define HD 4
static const char *cfg_text =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"vocab_size\": 5, \"model_type\": \"llama\", \"rms_norm_eps\": 1e-05, "
    "\"torch_dtype\": \"float32\", \"tie_word_embeddings\": false}";

typedef struct tensor {
    const char *name;
    int64_t r, c; /* c == 0: 1-D */
    int linear;
    float *w;
} tensor;

static tensor model_t[] = {
    {"lm_head.weight", V, H, 0, NULL},
    {"model.embed_tokens.weight", V, H, 0, NULL},
    {"model.layers.0.input_layernorm.weight", H, 0, 0, NULL},
    {"model.layers.0.mlp.down_proj.weight", H, IM, 1, NULL},
    {"model.layers.0.mlp.gate_proj.weight", IM, H, 1, NULL},
    {"model.layers.0.mlp.up_proj.weight", IM, H, 1, NULL},
    {"model.layers.0.post_attention_layernorm.weight", H, 0, 0, NULL},
    {"model.layers.0.self_attn.k_proj.weight", KV *HD, H, 1, NULL},
    {"model.layers.0.self_attn.o_proj.weight", H, HEADS *HD, 1, NULL},
    {"model.layers.0.self_attn.q_proj.weight", HEADS *HD, H, 1, NULL},
    {"model.layers.0.self_attn.v_proj.weight", KV *HD, H, 1, NULL},
    {"model.norm.weight", H, 0, 0, NULL},
};
#define NT (sizeof model_t / sizeof *model_t)

static int64_t numel(const tensor *t) { return t->r * (t->c ? t->c : 1); }

static void make_weights(void) {
    uint32_t s = 12345;
    for (size_t i = 0; i < NT; i++) {
        model_t[i].w = malloc((size_t)numel(&model_t[i]) * sizeof(float));
        for (int64_t e = 0; e < numel(&model_t[i]); e++) {
            s = s * 1664525u + 1013904223u;
            model_t[i].w[e] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1.0f + (float)(e % 7));
        }
    }
}

/* Writes the model into root/<name>; `skip`/`reshape` break one tensor. */
static void write_model(const char *name, const char *skip, const char *reshape,
                        const char *extra) {
    ql_fs_remove_tree(pth(name, NULL));
    char *d = strdup(pth(name, NULL));
    ql_fs_is_dir(d);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
    CHECK(system(cmd) == 0);
    put_text(pth(name, "config.json"), cfg_text);
    ql_st_entry e[NT + 1];
    size_t n = 0;
    for (size_t i = 0; i < NT; i++) {
        if (skip && !strcmp(model_t[i].name, skip)) continue;
        ql_st_entry *x = &e[n++];
        memset(x, 0, sizeof *x);
        x->name = model_t[i].name;
        x->dtype = QL_DT_F32;
        x->ndim = model_t[i].c ? 2 : 1;
        x->shape[0] = model_t[i].r;
        x->shape[1] = model_t[i].c;
        if (reshape && !strcmp(model_t[i].name, reshape)) {
            x->shape[0] = model_t[i].c;
            x->shape[1] = model_t[i].r;
        }
        x->data = model_t[i].w;
        x->nbytes = (uint64_t)numel(&model_t[i]) * 4;
    }
    static const float one = 1.0f;
    if (extra)
        e[n++] = (ql_st_entry){
            .name = extra, .dtype = QL_DT_F32, .ndim = 1, .shape = {1}, .data = &one, .nbytes = 4};
    CHECK(ql_st_write(pth(name, "model.safetensors"), e, n) == QL_OK);
    free(d);
}

static void test_load_plain(void) {
    write_model("plain", NULL, NULL, NULL);
    ql_hf_model m;
    CHECK(ql_hf_model_open(pth("plain", NULL), &m) == QL_OK);
    CHECK(m.n_refs == NT && !m.sharded && m.cfg.torch_dtype == QL_DT_F32);
    float buf[IM * H];
    CHECK(ql_hf_model_get_f32(&m, "model.layers.0.mlp.up_proj.weight", buf) == QL_OK);
    CHECK(!memcmp(buf, model_t[5].w, sizeof buf));
    ql_q4 q;
    CHECK(ql_hf_model_get_q4(&m, "model.layers.0.mlp.up_proj.weight", &q, NULL) == QL_EFORMAT);
    CHECK(has("not a bitsandbytes 4-bit weight"));
    ql_hf_model_close(&m);

    write_model("wrong_shape", NULL, "model.layers.0.mlp.up_proj.weight", NULL);
    CHECK(ql_hf_model_open(pth("wrong_shape", NULL), &m) == QL_EFORMAT);
    CHECK(has("wrong_shape/model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight': shape "
              "[8, 12], expected [intermediate_size, hidden_size] = [12, 8]"));

    write_model("missing", "model.norm.weight", NULL, NULL);
    CHECK(ql_hf_model_open(pth("missing", NULL), &m) == QL_EFORMAT);
    CHECK(has("missing/model.safetensors: missing tensor 'model.norm.weight'"));

    write_model("extra", NULL, NULL, "model.layers.7.foo");
    CHECK(ql_hf_model_open(pth("extra", NULL), &m) == QL_EFORMAT);
    CHECK(has("unexpected tensor 'model.layers.7.foo'"));

    write_model("inv_freq", NULL, NULL, "model.layers.0.self_attn.rotary_emb.inv_freq");
    CHECK(ql_hf_model_open(pth("inv_freq", NULL), &m) == QL_OK);
    ql_hf_model_close(&m);

    write_model("nocfg", NULL, NULL, NULL);
    remove(pth("nocfg", "config.json"));
    CHECK(ql_hf_model_open(pth("nocfg", NULL), &m) == QL_ENOTFOUND);
    CHECK(has("nocfg/config.json"));

    write_model("nofile", NULL, NULL, NULL);
    remove(pth("nofile", "model.safetensors"));
    CHECK(ql_hf_model_open(pth("nofile", NULL), &m) == QL_ENOTFOUND);
    CHECK(has("no model.safetensors or model.safetensors.index.json"));
}

/* Two shards plus an index, written by hand. */
static void write_sharded(const char *name, const char *index_extra, int drop_second) {
    ql_fs_remove_tree(pth(name, NULL));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", pth(name, NULL));
    CHECK(system(cmd) == 0);
    put_text(pth(name, "config.json"), cfg_text);
    ql_st_entry e[NT];
    char idx[8192] = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
    for (size_t i = 0; i < NT; i++) {
        ql_st_entry *x = &e[i];
        memset(x, 0, sizeof *x);
        x->name = model_t[i].name;
        x->dtype = QL_DT_F32;
        x->ndim = model_t[i].c ? 2 : 1;
        x->shape[0] = model_t[i].r;
        x->shape[1] = model_t[i].c;
        x->data = model_t[i].w;
        x->nbytes = (uint64_t)numel(&model_t[i]) * 4;
        char item[300];
        snprintf(item, sizeof item, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                 i ? ", " : "", model_t[i].name, i < NT / 2 ? 1 : 2);
        strcat(idx, item);
    }
    if (index_extra) strcat(idx, index_extra);
    strcat(idx, "}}");
    put_text(pth(name, "model.safetensors.index.json"), idx);
    CHECK(ql_st_write(pth(name, "model-00001-of-00002.safetensors"), e, NT / 2) == QL_OK);
    if (!drop_second)
        CHECK(ql_st_write(pth(name, "model-00002-of-00002.safetensors"), e + NT / 2, NT - NT / 2) ==
              QL_OK);
}

static void test_load_sharded(void) {
    ql_hf_model m;
    write_sharded("sharded", NULL, 0);
    CHECK(ql_hf_model_open(pth("sharded", NULL), &m) == QL_OK);
    CHECK(m.sharded && m.n_files == 2 && m.n_refs == NT);
    float buf[H];
    CHECK(ql_hf_model_get_f32(&m, "model.norm.weight", buf) == QL_OK);
    CHECK(!memcmp(buf, model_t[NT - 1].w, sizeof buf));
    ql_hf_model_close(&m);

    write_sharded("shard_missing", NULL, 1);
    CHECK(ql_hf_model_open(pth("shard_missing", NULL), &m) == QL_ENOTFOUND);
    CHECK(has("model.safetensors.index.json: shard file 'model-00002-of-00002.safetensors'"));
    CHECK(has("is missing"));

    write_sharded("tensor_missing",
                  ", \"model.layers.0.foo\": \"model-00001-of-00002.safetensors\"", 0);
    CHECK(ql_hf_model_open(pth("tensor_missing", NULL), &m) == QL_EFORMAT);
    CHECK(has("tensor 'model.layers.0.foo' is mapped to shard 'model-00001-of-00002.safetensors', "
              "which does not contain it"));

    write_sharded("escape", ", \"x\": \"../etc/passwd\"", 0);
    CHECK(ql_hf_model_open(pth("escape", NULL), &m) == QL_EFORMAT);
    CHECK(has("weight_map['x']"));
}

/* ---------------------------------------------- bitsandbytes 4-bit files */

/* FORMATS §8 vector B. */
static void test_vector_b(void) {
    float w[4 * 128];
    for (int e = 0; e < 512; e++) w[e] = (float)(sin(0.37 * e) * (1 + (e / 64) * 0.5));
    ql_q4 q;
    CHECK(ql_q4_quantize(w, 4, 128, QL_QTYPE_NF4, 64, 1, &q) == QL_OK);
    ql_bnb4_entries b;
    CHECK(ql_bnb4_make_entries("model.layers.0.self_attn.q_proj.weight", &q, QL_DT_F32, &b) ==
          QL_OK);
    CHECK(b.n == 6);
    const char *want = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", "
                       "\"shape\": [4, 128], \"nested_blocksize\": 256, \"nested_dtype\": "
                       "\"float32\", \"nested_offset\": 2.7464749813079834}";
    CHECKF(!strcmp(b.blob, want), "blob %s", b.blob);
    static const char *names[6] = {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.weight.absmax",
        "model.layers.0.self_attn.q_proj.weight.quant_map",
        "model.layers.0.self_attn.q_proj.weight.nested_absmax",
        "model.layers.0.self_attn.q_proj.weight.nested_quant_map",
        "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4"};
    for (int i = 0; i < 6; i++) CHECKF(!strcmp(b.e[i].name, names[i]), "%s", b.e[i].name);
    CHECK(b.e[0].dtype == QL_DT_U8 && b.e[0].ndim == 2 && b.e[0].shape[0] == 256 &&
          b.e[0].shape[1] == 1);
    CHECK(b.e[1].dtype == QL_DT_U8 && b.e[1].shape[0] == 8);
    CHECK(b.e[3].dtype == QL_DT_F32 && b.e[3].shape[0] == 1);
    CHECK(b.e[5].dtype == QL_DT_U8 && b.e[5].shape[0] == (int64_t)strlen(want));
    static const uint8_t codes[8] = {0, 20, 40, 61, 194, 214, 234, 254};
    CHECK(!memcmp(b.e[1].data, codes, 8));
    ql_bnb4_entries_free(&b);
    ql_q4_free(&q);

    /* without double quant: F32 absmax, no nested keys, short blob */
    CHECK(ql_q4_quantize(w, 4, 128, QL_QTYPE_FP4, 128, 0, &q) == QL_OK);
    CHECK(ql_bnb4_make_entries("p.weight", &q, QL_DT_BF16, &b) == QL_OK);
    CHECK(b.n == 4);
    CHECK(!strcmp(b.blob, "{\"quant_type\": \"fp4\", \"blocksize\": 128, \"dtype\": \"bfloat16\", "
                          "\"shape\": [4, 128]}"));
    CHECK(!strcmp(b.e[3].name, "p.weight.quant_state.bitsandbytes__fp4"));
    CHECK(b.e[1].dtype == QL_DT_F32 && b.e[1].shape[0] == 4);
    ql_bnb4_entries_free(&b);
    ql_q4_free(&q);
}

static int q4_equal(const ql_q4 *a, const ql_q4 *b) {
    if (a->type != b->type || a->rows != b->rows || a->cols != b->cols ||
        a->blocksize != b->blocksize || a->double_quant != b->double_quant)
        return 0;
    if (memcmp(a->packed, b->packed, (size_t)ql_q4_packed_bytes(a))) return 0;
    if (!a->double_quant) return !memcmp(a->absmax, b->absmax, (size_t)a->n_blocks * 4);
    return !memcmp(a->absmax_q, b->absmax_q, (size_t)a->n_blocks) &&
           !memcmp(a->nested_absmax, b->nested_absmax, (size_t)ql_q4_nested_blocks(a) * 4) &&
           !memcmp(a->nested_map, b->nested_map, sizeof a->nested_map) &&
           ql_bits_from_f32(a->nested_offset) == ql_bits_from_f32(b->nested_offset);
}

static void round_trip(ql_qtype type, int dq, int bs, uint64_t shard) {
    write_model("rt_src", NULL, NULL, NULL);
    ql_quantize_opts o = {.model_dir = pth("rt_src", NULL),
                          .out_dir = pth("rt_out", NULL),
                          .type = type,
                          .double_quant = dq,
                          .blocksize = bs,
                          .force = 1,
                          .max_shard_bytes = shard};
    ql_quantize_stats s;
    CHECKF(ql_hf_quantize(&o, &s) == QL_OK, "%s", ql_error_message());
    CHECK(s.n_quantized == 7 && s.n_kept == 5);
    CHECK(shard ? s.n_shards > 1 : s.n_shards == 1);
    ql_hf_model m;
    CHECKF(ql_hf_model_open(pth("rt_out", NULL), &m) == QL_OK, "%s", ql_error_message());
    CHECK(m.cfg.quant.present && m.cfg.quant.type == type && m.cfg.quant.double_quant == dq);
    CHECK(m.sharded == (shard != 0));
    for (size_t i = 0; i < NT; i++) {
        const tensor *t = &model_t[i];
        if (!t->linear) {
            float buf[V * H];
            CHECK(ql_hf_model_get_f32(&m, t->name, buf) == QL_OK);
            CHECK(!memcmp(buf, t->w, (size_t)numel(t) * 4));
            continue;
        }
        ql_q4 got, want;
        ql_dtype dt = QL_DT_COUNT;
        CHECKF(ql_hf_model_get_q4(&m, t->name, &got, &dt) == QL_OK, "%s", ql_error_message());
        CHECK(dt == QL_DT_F32);
        CHECK(ql_q4_quantize(t->w, t->r, t->c, type, bs, dq, &want) == QL_OK);
        CHECKF(q4_equal(&got, &want), "%s differs after the round trip", t->name);
        float *a = malloc((size_t)numel(t) * 4), *b = malloc((size_t)numel(t) * 4);
        ql_q4_dequantize(&got, a);
        ql_q4_dequantize(&want, b);
        CHECK(!memcmp(a, b, (size_t)numel(t) * 4));
        free(a);
        free(b);
        ql_q4_free(&got);
        ql_q4_free(&want);
    }
    ql_hf_model_close(&m);
}

/* A blob padded with NULs (seen in the wild) still loads. */
static void test_padded_blob(void) {
    round_trip(QL_QTYPE_NF4, 1, 64, 0);
    ql_hf_model m;
    CHECK(ql_hf_model_open(pth("rt_out", NULL), &m) == QL_OK);
    /* rebuild the file with one blob padded */
    ql_st_entry *e = calloc(m.n_refs, sizeof *e);
    char *padded = NULL;
    const char *bn = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
    for (size_t i = 0; i < m.n_refs; i++) {
        const ql_st_tensor *t = m.refs[i].t;
        e[i] = (ql_st_entry){.name = t->name,
                             .dtype = t->dtype,
                             .ndim = t->ndim,
                             .data = t->data,
                             .nbytes = t->end - t->begin};
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        if (!strcmp(t->name, bn)) {
            padded = calloc(1, (size_t)t->numel + 5);
            memcpy(padded, t->data, (size_t)t->numel);
            e[i].data = padded;
            e[i].shape[0] += 5;
            e[i].nbytes += 5;
        }
    }
    CHECK(padded != NULL);
    CHECK(ql_st_write(pth("rt_out", "model.safetensors"), e, m.n_refs) == QL_OK);
    ql_hf_model_close(&m);
    free(padded);
    free(e);
    CHECK(ql_hf_model_open(pth("rt_out", NULL), &m) == QL_OK);
    ql_q4 q;
    CHECK(ql_hf_model_get_q4(&m, "model.layers.0.mlp.up_proj.weight", &q, NULL) == QL_OK);
    ql_q4_free(&q);
    ql_hf_model_close(&m);
}

static void test_quantize_refusals(void) {
    write_model("src", NULL, NULL, NULL);
    ql_quantize_opts o = {.model_dir = pth("src", NULL),
                          .out_dir = pth("src", NULL),
                          .type = QL_QTYPE_NF4,
                          .double_quant = 1,
                          .blocksize = 64,
                          .force = 1};
    ql_quantize_stats s;
    CHECK(ql_hf_quantize(&o, &s) == QL_EINVAL);
    CHECK(has("would replace the model directory"));
    CHECK(ql_fs_exists(pth("src", "model.safetensors")));
    o.out_dir = root; /* a parent of the model */
    CHECK(ql_hf_quantize(&o, &s) == QL_EINVAL);
    o.out_dir = pth("q", NULL);
    o.force = 0;
    o.blocksize = 100;
    CHECK(ql_hf_quantize(&o, &s) == QL_EINVAL);
    CHECK(has("--blocksize 100"));
    o.blocksize = 64;
    CHECK(ql_hf_quantize(&o, &s) == QL_OK);
    CHECK(ql_hf_quantize(&o, &s) == QL_EINVAL);
    CHECK(has("already exists"));
    /* quantizing a quantized model */
    o.model_dir = pth("q", NULL);
    o.out_dir = pth("qq", NULL);
    CHECK(ql_hf_quantize(&o, &s) == QL_EINVAL);
    CHECK(has("already bitsandbytes 4-bit"));
    CHECK(!ql_fs_exists(pth("qq", NULL)));
    /* a failure after the temp dir exists leaves nothing behind */
    write_model("bad", NULL, "model.layers.0.mlp.down_proj.weight", NULL);
    char *qq = strdup(pth("qq", NULL)), *bad = strdup(pth("bad", NULL));
    o.out_dir = qq;
    o.model_dir = bad;
    CHECKF(ql_hf_quantize(&o, &s) == QL_EFORMAT, "%s", ql_error_message());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q 'qq'", root);
    CHECK(system(cmd) != 0);
    free(qq);
    free(bad);
}

int main(void) {
    if (!mkdtemp(root)) return 1;
    make_weights();
    test_config();
    test_load_plain();
    test_load_sharded();
    test_vector_b();
    round_trip(QL_QTYPE_NF4, 1, 64, 0);
    round_trip(QL_QTYPE_NF4, 0, 32, 0);
    round_trip(QL_QTYPE_FP4, 1, 4096, 0);
    round_trip(QL_QTYPE_FP4, 0, 128, 600);
    test_padded_blob();
    test_quantize_refusals();
    ql_fs_remove_tree(root);
    for (size_t i = 0; i < NT; i++) free(model_t[i].w);
    return CHECK_DONE();
}
