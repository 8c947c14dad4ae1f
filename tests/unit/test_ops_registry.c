/* The backend registry and the RoPE inverse frequencies (kernels/backend.c,
 * kernels/rope.c). inv_freq is compared with transformers' formulas as run by
 * PyTorch (tests/fixtures/ops/rope_*.inv_freq.f32): default, linear and llama3
 * scaling, to one ulp (observed: exact). */
#include <jansson.h>
#include <stdio.h>

#include "test_ops_util.h"

static void test_registry(void) {
    CHECK(ql_backend_by_name("cpu") == ql_backend_cpu());
    CHECK(ql_backend_by_name("cpu-ref") == ql_backend_cpu_ref());
    ql_error_clear();
    CHECK(ql_backend_by_name("tpu") == NULL);
    CHECK(strstr(ql_error_message(), "\"tpu\"") != NULL);
    CHECK(ql_backend_by_name(NULL) == NULL);
#ifndef QL_HAVE_CUDA
    ql_error_clear();
    CHECK(ql_backend_cuda() == NULL);
    CHECK(ql_backend_by_name("cuda") == NULL);
    CHECK(strstr(ql_error_message(), "CUDA") != NULL);
#endif
}

static int64_t ulps(float a, float b) {
    int32_t ia = (int32_t)ql_bits_from_f32(a), ib = (int32_t)ql_bits_from_f32(b);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

static void test_inv_freq(json_t *index, const char *dir, const char *case_) {
    json_t *c = json_object_get(index, case_);
    json_t *p = json_object_get(c, "params");
    ql_rope_config cfg = {(ql_rope_type)json_integer_value(json_object_get(p, "type")),
                          (float)json_number_value(json_object_get(p, "theta")),
                          1.0f,
                          1.0f,
                          4.0f,
                          8192.0f};
    if (json_object_get(p, "factor"))
        cfg.factor = (float)json_number_value(json_object_get(p, "factor"));
    if (cfg.type == QL_ROPE_LLAMA3) {
        cfg.low_freq_factor = (float)json_number_value(json_object_get(p, "low_freq_factor"));
        cfg.high_freq_factor = (float)json_number_value(json_object_get(p, "high_freq_factor"));
        cfg.original_max_position =
            (float)json_number_value(json_object_get(p, "original_max_position"));
    }
    int D = (int)json_integer_value(json_object_get(p, "dim"));
    const char *file = json_string_value(
        json_object_get(json_object_get(json_object_get(c, "tensors"), "inv_freq"), "file"));
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file ? file : "?");
    float want[256], got[256];
    FILE *f = fopen(path, "rb");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f) return;
    size_t n = fread(want, 4, (size_t)D / 2, f);
    fclose(f);
    CHECK(n == (size_t)D / 2);
    CHECK(ql_rope_inv_freq(&cfg, D, got) == QL_OK);
    int64_t worst = 0;
    for (int i = 0; i < D / 2; i++)
        worst = ulps(got[i], want[i]) > worst ? ulps(got[i], want[i]) : worst;
    CHECKF(worst <= 1, "%s: inv_freq %lld ulps from transformers/torch", case_, (long long)worst);
}

static void test_inv_freq_rules(void) {
    float inv[64];
    ql_rope_config def = {QL_ROPE_DEFAULT, 10000.0f, 1, 1, 4, 8192};
    CHECK(ql_rope_inv_freq(&def, 64, inv) == QL_OK);
    CHECK(inv[0] == 1.0f);
    CHECK(ql_rope_inv_freq(&def, 63, inv) == QL_EINVAL);
    ql_rope_config lin = {QL_ROPE_LINEAR, 10000.0f, 0.0f, 1, 4, 8192};
    CHECK(ql_rope_inv_freq(&lin, 64, inv) == QL_EINVAL);
    CHECK(strstr(ql_error_message(), "factor") != NULL);
    ql_rope_config l3 = {QL_ROPE_LLAMA3, 500000.0f, 8.0f, 4.0f, 1.0f, 8192};
    CHECK(ql_rope_inv_freq(&l3, 64, inv) == QL_EINVAL); /* low >= high */
    /* llama3 keeps high frequencies and divides low ones by the factor. */
    float base[64], scaled[64];
    ql_rope_config d3 = {QL_ROPE_DEFAULT, 500000.0f, 1, 1, 4, 8192};
    ql_rope_config s3 = {QL_ROPE_LLAMA3, 500000.0f, 8.0f, 1.0f, 4.0f, 8192};
    CHECK(ql_rope_inv_freq(&d3, 128, base) == QL_OK && ql_rope_inv_freq(&s3, 128, scaled) == QL_OK);
    CHECK(scaled[0] == base[0]);
    CHECK(scaled[63] == base[63] / 8.0f);
}

int main(void) {
    test_registry();
    test_inv_freq_rules();
    const char *src = getenv("QL_SOURCE_DIR");
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/ops", src ? src : ".");
    snprintf(path, sizeof path, "%s/index.json", dir);
    json_error_t err;
    json_t *index = json_load_file(path, 0, &err);
    CHECKF(index != NULL, "%s: %s (set QL_SOURCE_DIR)", path, err.text);
    if (index) {
        test_inv_freq(index, dir, "rope_default");
        test_inv_freq(index, dir, "rope_linear");
        test_inv_freq(index, dir, "rope_llama3");
        test_inv_freq(index, dir, "rope_smollm2");
        json_decref(index);
    }
    return CHECK_DONE();
}
