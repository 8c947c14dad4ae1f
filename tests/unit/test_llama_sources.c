/* Model sources through ql_llama_load: a bitsandbytes 4-bit directory (made by
 * ql_hf_quantize from the tiny model) is used as stored, so its logits equal
 * bit for bit those of the F32 directory quantized on load with the same
 * options, whatever quantization the options ask for; quantizing on load with
 * other options gives other logits. With r = 0 there are no adapters and the
 * logits are those of freshly initialised ones (B = 0). Also the source
 * dispatcher's errors. */
#include "model/hf_quantize.h"
#include "model/source.h"
#include "test_llama_util.h"

#define T 20
#define V 50

static float *logits_of(const char *dir, ql_qtype type, int dq, int bs, int r,
                        ql_source_kind *kind) {
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.quant_type = type;
    o.double_quant = dq;
    o.blocksize = bs;
    o.max_seq = T;
    o.quiet = 1;
    o.lora.r = r;
    ql_llama *m;
    ql_status st = ql_llama_load(dir, &o, &m);
    CHECKF(st == QL_OK, "load %s: %s", dir, ql_error_message());
    if (st != QL_OK) return NULL;
    ql_model_source s;
    CHECK(ql_model_source_open(dir, &s) == QL_OK);
    *kind = s.kind;
    ql_model_source_close(&s);
    int32_t ids[T];
    for (int t = 0; t < T; t++) ids[t] = (t * 7 + 3) % V;
    ql_batch b = {.batch = 1, .seq = T, .ids = ids, .targets = ids};
    float *l = malloc(T * V * sizeof(float));
    CHECK(ql_llama_logits(m, &b, l) == QL_OK);
    /* A training call works with or without adapters. */
    double loss;
    int64_t n;
    CHECK(ql_llama_forward_backward(m, &b, 1, 1.0f, &loss, &n) == QL_OK && n == T);
    if (!r) CHECK(ql_llama_adapters(m)->n == 0 && ql_llama_adapters(m)->n_tensors == 0);
    ql_llama_free(m);
    return l;
}

int main(void) {
    tl_spec spec = tl_default();
    spec.vocab = V;
    const char *root = tl_tmpdir("sources");
    char hf[300], bnb[300];
    snprintf(hf, sizeof hf, "%s/hf", root);
    snprintf(bnb, sizeof bnb, "%s/bnb", root);
    CHECK(tl_write_model(hf, &spec) == 0);
    ql_quantize_opts qo = {
        .model_dir = hf, .out_dir = bnb, .type = QL_QTYPE_NF4, .double_quant = 1, .blocksize = 64};
    ql_quantize_stats qs;
    ql_status st = ql_hf_quantize(&qo, &qs);
    CHECKF(st == QL_OK, "quantize: %s", ql_error_message());

    ql_source_kind k1, k2, k3, k4;
    float *a = logits_of(hf, QL_QTYPE_NF4, 1, 64, 16, &k1);
    float *b = logits_of(bnb, QL_QTYPE_NF4, 1, 64, 16, &k2);
    float *c = logits_of(bnb, QL_QTYPE_FP4, 0, 128, 16, &k3); /* options ignored: used as stored */
    float *d = logits_of(hf, QL_QTYPE_FP4, 0, 128, 16, &k4);
    float *e = logits_of(hf, QL_QTYPE_NF4, 1, 64, 0, &k4); /* r = 0: the base model */
    CHECK(k1 == QL_SOURCE_HF && k2 == QL_SOURCE_BNB4 && k3 == QL_SOURCE_BNB4);
    if (a && b && c && d) {
        CHECKF(!memcmp(a, b, T * V * sizeof(float)), "bnb-4bit logits differ from NF4 on load");
        CHECKF(!memcmp(b, c, T * V * sizeof(float)), "bnb-4bit was requantized");
        CHECKF(memcmp(a, d, T * V * sizeof(float)) != 0, "FP4 on load gives the NF4 logits");
        /* B = 0 at initialisation: the adapters change nothing. */
        CHECK_CLOSE(e, a, T * V, 0.0, 0.0, "no adapters vs fresh adapters");
    }
    free(a), free(b), free(c), free(d), free(e);

    /* The dispatcher. */
    ql_model_source s;
    CHECK(ql_model_source_open("", &s) == QL_EINVAL);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", hf);
    CHECK(ql_model_source_open(path, &s) == QL_EUNSUPPORTED);
    CHECK(strstr(ql_error_message(), "not a model directory") != NULL);
    snprintf(path, sizeof path, "%s/missing.gguf", root);
    CHECK(ql_model_source_open(path, &s) == QL_ENOTFOUND);
    CHECK(strstr(ql_error_message(), "missing.gguf") != NULL);
    ql_fs_remove_tree(root);
    return CHECK_DONE();
}
