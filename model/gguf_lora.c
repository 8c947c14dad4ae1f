/* llama.cpp LoRA adapter files (model/gguf_lora.h). */
#include "model/gguf_lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_write.h"
#include "model/hf_config.h"
#include "model/source.h"

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

ql_status ql_gguf_lora_base_of(const char *model, ql_gguf_lora_base *b) {
    memset(b, 0, sizeof *b);
    ql_hf_config c;
    QL_TRY(ql_model_config_load(model, &c));
    b->n_heads = c.num_attention_heads;
    b->n_kv_heads = c.num_key_value_heads;
    ql_status st = QL_OK;
    if (ends_with(model, ".gguf")) {
        /* The base llama.cpp will load is this file: its architecture, as is. */
        ql_gguf_file f;
        ql_gguf_str a;
        st = ql_gguf_open(model, &f);
        if (st == QL_OK) st = ql_gguf_get_str(&f, "general.architecture", &a);
        if (st == QL_OK)
            snprintf(b->arch, sizeof b->arch, "%.*s",
                     (int)(a.len < sizeof b->arch ? a.len : sizeof b->arch - 1), a.p);
        ql_gguf_close(&f);
    } else {
        /* convert_hf_to_gguf.py writes LlamaForCausalLM and MistralForCausalLM
         * as "llama", Qwen2ForCausalLM as "qwen2". */
        snprintf(b->arch, sizeof b->arch, "%s", strcmp(c.model_type, "qwen2") ? "llama" : "qwen2");
    }
    ql_hf_config_free(&c);
    /* As model/gguf_source.c reads them: llama and mistral GGUFs hold Q/K in
     * the interleaved RoPE order, qwen2 in Hugging Face's. */
    b->permute_qk = strcmp(b->arch, "qwen2") != 0;
    return st;
}

/* Row h*D + 2i + j of the result is row h*D + j*D/2 + i of `w` (the inverse
 * of model/gguf_source.c's un-permutation). */
ql_status ql_gguf_permute_qk_rows(float *w, int64_t rows, int64_t cols, int64_t heads,
                                  const char *what) {
    if (heads < 1 || rows % heads || (rows / heads) % 2)
        return ql_error(QL_EFORMAT, "%s: %lld rows cannot be split into %lld heads of an even size",
                        what, (long long)rows, (long long)heads);
    int64_t d = rows / heads, half = d / 2;
    float *tmp = ql_malloc((size_t)(d * cols) * sizeof *tmp, "a head of lora_B");
    if (!tmp) return QL_ENOMEM;
    for (int64_t h = 0; h < heads; h++) {
        float *head = w + h * d * cols;
        memcpy(tmp, head, (size_t)(d * cols) * sizeof *tmp);
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(head + (2 * i + j) * cols, tmp + (j * half + i) * cols,
                       (size_t)cols * sizeof *tmp);
    }
    free(tmp);
    return QL_OK;
}

/* "blk.N.attn_q.weight" for a PEFT key, as the converter derives it: drop
 * "base_model.model." and ".lora_X.weight", add ".weight", map to GGUF. */
static ql_status base_name(const ql_adapter_tensor *t, char *out, size_t cap) {
    static const char prefix[] = "base_model.model.";
    const char *s = t->name;
    char hf[QL_ADAPTER_NAME_MAX + 8];
    if (strncmp(s, prefix, sizeof prefix - 1) || !strstr(s, ".lora_"))
        return ql_error(QL_EFORMAT, "adapter tensor '%s' is not a PEFT LoRA key", s);
    s += sizeof prefix - 1;
    snprintf(hf, sizeof hf, "%.*s.weight", (int)(strstr(s, ".lora_") - s), s);
    if (!ql_gguf_name_of(hf, out, cap))
        return ql_error(QL_EFORMAT, "adapter tensor '%s': '%s' has no GGUF name", t->name, hf);
    return QL_OK;
}

static uint32_t ggml_type_of(ql_dtype d) {
    return d == QL_DT_F16 ? QL_GGML_F16 : d == QL_DT_BF16 ? QL_GGML_BF16 : QL_GGML_F32;
}

ql_status ql_gguf_lora_save(const char *path, const ql_adapters *a, const float *host,
                            const ql_gguf_lora_base *b, ql_dtype dtype) {
    if (dtype != QL_DT_F32 && dtype != QL_DT_F16 && dtype != QL_DT_BF16)
        return ql_error(QL_EINVAL, "a GGUF adapter's dtype must be f32, f16 or bf16");
    if (!(a->cfg.alpha > 0))
        return ql_error(QL_EINVAL,
                        "lora_alpha is %g: llama.cpp reads an alpha of 0 as no scaling, so this "
                        "adapter cannot be written as GGUF",
                        (double)a->cfg.alpha);
    const size_t n = (size_t)(a->n ? a->n : 1), esz = ql_dtype_size(dtype);
    float *work = ql_malloc(n * sizeof *work, "the GGUF adapter");
    void *conv = NULL;
    if (!work) return QL_ENOMEM;
    memcpy(work, host, (size_t)a->n * sizeof *work);
    ql_gguf_writer w = {0};
    ql_status st = QL_OK;
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        if (!b->permute_qk || !t->is_b || (t->proj != QL_PROJ_Q && t->proj != QL_PROJ_K)) continue;
        st = ql_gguf_permute_qk_rows(work + t->offset, t->rows, t->cols,
                                     t->proj == QL_PROJ_Q ? b->n_heads : b->n_kv_heads, t->name);
    }
    if (st == QL_OK && dtype != QL_DT_F32) {
        if (!(conv = ql_malloc(n * esz, "the converted GGUF adapter")))
            st = QL_ENOMEM;
        else if (ql_dtype_from_f32(dtype, work, conv, (size_t)a->n) != 0)
            st = ql_error(QL_EINTERNAL, "cannot convert the adapter to dtype %d", (int)dtype);
    }
    const double alpha =
        a->cfg.use_rslora ? (double)a->cfg.alpha * sqrt((double)a->cfg.r) : (double)a->cfg.alpha;
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "general.architecture", b->arch);
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "general.type", "adapter");
    if (st == QL_OK) st = ql_gguf_writer_add_str(&w, "adapter.type", "lora");
    if (st == QL_OK) st = ql_gguf_writer_add_f32(&w, "adapter.lora.alpha", (float)alpha);
    for (int i = 0; st == QL_OK && i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        char base[160], name[176];
        st = base_name(t, base, sizeof base);
        if (st != QL_OK) break;
        snprintf(name, sizeof name, "%s.lora_%c", base, t->is_b ? 'b' : 'a');
        const int64_t ne[2] = {t->cols, t->rows}; /* row-major [rows, cols] */
        const void *data = conv ? (const void *)((const char *)conv + (size_t)t->offset * esz)
                                : (const void *)(work + t->offset);
        st = ql_gguf_writer_add_tensor(&w, name, 2, ne, ggml_type_of(dtype), data,
                                       (uint64_t)(t->rows * t->cols) * esz);
    }
    if (st == QL_OK) st = ql_gguf_writer_save(&w, path);
    ql_gguf_writer_free(&w);
    free(conv);
    free(work);
    return st;
}
