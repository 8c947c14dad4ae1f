/* The LoRA adapter table (model/lora.h): projection names, PEFT keys and
 * shapes (FORMATS §3.3), the flat layout, the scale (alpha / r, rsLoRA
 * alpha / sqrt(r)) and PEFT's initialisation (A ~ U(±1/sqrt(in)), B = 0),
 * with every A drawn from its own stream so it does not depend on which other
 * tensors exist. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/lora.h"

/* SmolLM2-135M's shapes. */
static ql_hf_config smol(void) {
    ql_hf_config c;
    memset(&c, 0, sizeof c);
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 30;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.head_dim = 64;
    c.vocab_size = 49152;
    return c;
}

static void test_names(void) {
    static const char *names[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                  "gate_proj", "up_proj", "down_proj"};
    for (int p = 0; p < QL_N_PROJ; p++) {
        CHECK(!strcmp(ql_proj_name((ql_proj)p), names[p]));
        CHECK(ql_proj_from_name(names[p]) == (ql_proj)p);
        CHECK(!strcmp(ql_proj_module((ql_proj)p), p < 4 ? "self_attn" : "mlp"));
    }
    CHECK(ql_proj_from_name("lm_head") == QL_N_PROJ);
    CHECK(ql_proj_from_name("q_pro") == QL_N_PROJ);
    CHECK(ql_proj_from_name(NULL) == QL_N_PROJ);
    char buf[QL_ADAPTER_NAME_MAX];
    ql_adapter_peft_name(3, QL_PROJ_Q, 0, buf, sizeof buf);
    CHECK(!strcmp(buf, "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"));
    ql_adapter_peft_name(29, QL_PROJ_DOWN, 1, buf, sizeof buf);
    CHECK(!strcmp(buf, "base_model.model.model.layers.29.mlp.down_proj.lora_B.weight"));
}

static void test_layout(void) {
    ql_hf_config c = smol();
    ql_lora_config l = {.r = 16, .alpha = 32.0f, .targets = QL_PROJ_ALL};
    ql_adapters a;
    CHECK(ql_adapters_layout(&c, &l, &a) == QL_OK);
    CHECK(a.n_tensors == 30 * 14 && a.scale == 2.0f && !a.params && !a.grads);
    /* FORMATS §3.3 shapes, in order: layer, projection, A then B, packed. */
    int64_t in[7] = {576, 576, 576, 576, 576, 576, 1536},
            out[7] = {576, 192, 192, 576, 1536, 1536, 576};
    int64_t off = 0, per_layer = 0;
    for (int p = 0; p < 7; p++) per_layer += 16 * (in[p] + out[p]);
    int ok = 1;
    for (int i = 0; i < a.n_tensors; i++) {
        const ql_adapter_tensor *t = &a.tensors[i];
        int layer = i / 14, p = (i % 14) / 2, is_b = i % 2;
        char want[QL_ADAPTER_NAME_MAX];
        ql_adapter_peft_name(layer, (ql_proj)p, is_b, want, sizeof want);
        ok &= t->layer == layer && t->proj == (ql_proj)p && t->is_b == is_b;
        ok &= !strcmp(t->name, want) && t->offset == off;
        ok &= is_b ? (t->rows == out[p] && t->cols == 16) : (t->rows == 16 && t->cols == in[p]);
        off += t->rows * t->cols;
    }
    CHECK(ok);
    CHECK(a.n == off && a.n == 30 * per_layer && a.n == 4884480);
    ql_adapters_layout_free(&a);

    /* rsLoRA, a subset of targets. */
    l = (ql_lora_config){
        .r = 8, .alpha = 16.0f, .use_rslora = 1, .targets = (1u << QL_PROJ_V) | (1u << QL_PROJ_UP)};
    CHECK(ql_adapters_layout(&c, &l, &a) == QL_OK);
    CHECK(a.scale == (float)(16.0 / sqrt(8.0)) && a.n_tensors == 30 * 4);
    CHECK(a.tensors[0].proj == QL_PROJ_V && a.tensors[2].proj == QL_PROJ_UP);
    CHECK(a.tensors[3].rows == 1536 && a.tensors[3].cols == 8);
    ql_adapters_layout_free(&a);

    /* r = 0: no adapters. */
    l = (ql_lora_config){.r = 0};
    CHECK(ql_adapters_layout(&c, &l, &a) == QL_OK && a.n == 0 && a.n_tensors == 0);
    ql_adapters_layout_free(&a);
}

static void test_check(void) {
    ql_lora_config good = {.r = 4, .alpha = 8.0f, .dropout = 0.1f, .targets = QL_PROJ_ALL};
    CHECK(ql_lora_config_check(&good) == QL_OK);
    ql_lora_config l = good;
    l.targets = 0;
    CHECK(ql_lora_config_check(&l) == QL_EINVAL && strstr(ql_error_message(), "lora.targets"));
    l = good;
    l.r = -1;
    CHECK(ql_lora_config_check(&l) == QL_EINVAL && strstr(ql_error_message(), "lora.r"));
    l = good;
    l.alpha = NAN;
    CHECK(ql_lora_config_check(&l) == QL_EINVAL && strstr(ql_error_message(), "lora.alpha"));
    l = good;
    l.dropout = -0.5f;
    CHECK(ql_lora_config_check(&l) == QL_EINVAL && strstr(ql_error_message(), "lora.dropout"));
}

static void test_init(void) {
    ql_hf_config c = smol();
    c.num_hidden_layers = 3;
    ql_lora_config all = {.r = 8, .alpha = 16.0f, .targets = QL_PROJ_ALL};
    ql_lora_config some = {.r = 8, .alpha = 16.0f, .targets = 1u << QL_PROJ_DOWN};
    ql_adapters a, b;
    CHECK(ql_adapters_layout(&c, &all, &a) == QL_OK);
    CHECK(ql_adapters_layout(&c, &some, &b) == QL_OK);
    float *pa = malloc((size_t)a.n * 4), *pb = malloc((size_t)b.n * 4),
          *pc = malloc((size_t)a.n * 4);
    ql_adapters_init(&a, 1234, pa);
    ql_adapters_init(&b, 1234, pb);
    ql_adapters_init(&a, 1235, pc);
    for (int i = 0; i < a.n_tensors; i++) {
        const ql_adapter_tensor *t = &a.tensors[i];
        const float *p = pa + t->offset;
        int64_t n = t->rows * t->cols;
        double bound = 1.0 / sqrt((double)t->cols), mn = 1e9, mx = -1e9, sum = 0, sq = 0;
        int zero = 1;
        for (int64_t e = 0; e < n; e++) {
            mn = fmin(mn, p[e]), mx = fmax(mx, p[e]), sum += p[e], sq += (double)p[e] * p[e];
            zero &= p[e] == 0.0f;
        }
        if (t->is_b) {
            CHECKF(zero, "%s is not zero", t->name);
            continue;
        }
        /* Uniform on (-b, b): inside, reaching near both ends, mean 0, variance b²/3. */
        CHECKF(mn >= -bound && mx < bound && mn < -0.99 * bound && mx > 0.99 * bound,
               "%s: range [%g, %g], bound %g", t->name, mn, mx, bound);
        CHECKF(fabs(sum / n) < 0.05 * bound, "%s: mean %g", t->name, sum / n);
        CHECKF(fabs(sq / n / (bound * bound / 3) - 1) < 0.05, "%s: variance off", t->name);
        CHECKF(memcmp(p, pc + t->offset, (size_t)n * 4) != 0, "%s: another seed, same values",
               t->name);
    }
    /* down_proj's A of layer 2 is the same whichever other tensors exist. */
    const ql_adapter_tensor *ta = &a.tensors[2 * 14 + 12], *tb = &b.tensors[2 * 2];
    CHECK(ta->layer == 2 && ta->proj == QL_PROJ_DOWN && !ta->is_b);
    CHECK(tb->layer == 2 && tb->proj == QL_PROJ_DOWN && !tb->is_b);
    CHECK(!memcmp(pa + ta->offset, pb + tb->offset, (size_t)(ta->rows * ta->cols) * 4));
    free(pa), free(pb), free(pc);
    ql_adapters_layout_free(&a);
    ql_adapters_layout_free(&b);
}

int main(void) {
    test_names();
    test_layout();
    test_check();
    test_init();
    return CHECK_DONE();
}
