/* The real SmolLM2-135M-Instruct Q4_1 GGUF through the GGUF source, against
 * the HF directory that scripts/fetch_smollm2.sh made from the same file with
 * the independent Python converter (scripts/gguf_to_hf.py: gguf-py
 * dequantization, numpy un-permutation, bf16 rounding). Every tensor rounded
 * to bf16 must equal the converter's bits, and the config must match its
 * config.json.
 *
 * Skipped (77) unless both are in the cache: ${QL_CACHE:-~/.cache/qlora}/
 * SmolLM2-135M-Instruct.Q4_1.gguf and SmolLM2-135M-Instruct-hf/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/fsutil.h"
#include "model/gguf.h"
#include "model/hf_model.h"
#include "model/source.h"

static void compare_config(const ql_hf_config *g, const ql_hf_config *h) {
#define SAME(field)                                                                                \
    CHECKF(g->field == h->field, #field ": %g vs %g", (double)g->field, (double)h->field)
    SAME(hidden_size);
    SAME(intermediate_size);
    SAME(num_hidden_layers);
    SAME(num_attention_heads);
    SAME(num_key_value_heads);
    SAME(head_dim);
    SAME(vocab_size);
    SAME(max_position_embeddings);
    SAME(rms_norm_eps);
    SAME(rope_theta);
    SAME(rope_type);
    SAME(tie_word_embeddings);
    SAME(attention_bias);
    SAME(mlp_bias);
    SAME(torch_dtype);
#undef SAME
    CHECK(!strcmp(g->model_type, h->model_type));
    CHECK(!strcmp(g->architecture, h->architecture));
    static const char *ids[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++)
        CHECKF(json_equal(json_object_get(g->json, ids[i]), json_object_get(h->json, ids[i])), "%s",
               ids[i]);
}

int main(void) {
    const char *cache = getenv("QL_CACHE");
    char dflt[2048], gguf[4096], hf[4096];
    if (!cache) {
        snprintf(dflt, sizeof dflt, "%s/.cache/qlora", getenv("HOME") ? getenv("HOME") : "");
        cache = dflt;
    }
    snprintf(gguf, sizeof gguf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    snprintf(hf, sizeof hf, "%s/SmolLM2-135M-Instruct-hf", cache);
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/model.safetensors", hf);
    if (!ql_fs_exists(gguf) || !ql_fs_exists(marker)) {
        printf("skipped: %s or %s absent (run scripts/fetch_smollm2.sh)\n", gguf, marker);
        return 77;
    }

    ql_model_source s;
    ql_status st = ql_gguf_source_open(gguf, &s);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    ql_hf_model m;
    ql_status st2 = ql_hf_model_open(hf, &m);
    CHECKF(st2 == QL_OK, "%s", ql_error_message());
    if (st != QL_OK || st2 != QL_OK) return CHECK_DONE();

    compare_config(&s.cfg, &m.cfg);
    CHECK(!strcmp(s.tokenizer, "gpt2"));
    const ql_gguf_file *f = ql_gguf_source_file(&s);
    int64_t id;
    CHECK(f && ql_gguf_token_id(f, "eos", &id) == QL_OK && id == 2);

    size_t compared = 0;
    for (size_t i = 0; i < m.n_expected; i++) {
        const ql_hf_expected *e = &m.expected[i];
        int in_hf = ql_hf_model_find(&m, e->name, NULL) != NULL;
        CHECKF(s.has(&s, e->name) == in_hf, "%s present in one source only", e->name);
        if (!in_hf) continue;
        int64_t n = e->ndim == 2 ? e->shape[0] * e->shape[1] : e->shape[0];
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        CHECK(s.get_f32(&s, e->name, a) == QL_OK);
        CHECK(ql_hf_model_get_f32(&m, e->name, b) == QL_OK);
        int64_t bad = 0, first = -1;
        for (int64_t k = 0; k < n; k++)
            if (ql_f32_to_bf16(a[k]) != ql_f32_to_bf16(b[k])) {
                if (first < 0) first = k;
                bad++;
            }
        CHECKF(bad == 0, "%s: %lld of %lld values differ after bf16 rounding (first at %lld)",
               e->name, (long long)bad, (long long)n, (long long)first);
        compared++;
        free(a);
        free(b);
    }
    /* 30 layers x 9 tensors + embeddings + final norm; lm_head is tied. */
    CHECKF(compared == 272, "compared %zu tensors", compared);
    printf("compared %zu tensors of %s\n", compared, gguf);
    ql_hf_model_close(&m);
    s.close(&s);
    return CHECK_DONE();
}
