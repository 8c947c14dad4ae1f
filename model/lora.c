/* Projection names, the adapter table and PEFT's LoRA initialisation. */
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const proj_names[QL_N_PROJ] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};

const char *ql_proj_name(ql_proj p) { return p < QL_N_PROJ ? proj_names[p] : "?"; }

const char *ql_proj_module(ql_proj p) { return p <= QL_PROJ_O ? "self_attn" : "mlp"; }

ql_proj ql_proj_from_name(const char *name) {
    for (int p = 0; p < QL_N_PROJ; p++)
        if (name && !strcmp(name, proj_names[p])) return (ql_proj)p;
    return QL_N_PROJ;
}

void ql_proj_shape(const ql_hf_config *c, ql_proj p, int64_t *in, int64_t *out) {
    int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim,
            kv = c->num_key_value_heads * c->head_dim, im = c->intermediate_size;
    switch (p) {
    case QL_PROJ_Q: *in = h, *out = q; break;
    case QL_PROJ_K:
    case QL_PROJ_V: *in = h, *out = kv; break;
    case QL_PROJ_O: *in = q, *out = h; break;
    case QL_PROJ_GATE:
    case QL_PROJ_UP: *in = h, *out = im; break;
    default: *in = im, *out = h; break;
    }
}

void ql_adapter_peft_name(int layer, ql_proj p, int is_b, char *buf, size_t n) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             ql_proj_module(p), ql_proj_name(p), is_b ? 'B' : 'A');
}

ql_status ql_lora_config_check(const ql_lora_config *l) {
    if (l->r < 0) return ql_error(QL_EINVAL, "lora.r: must be positive, got %d", l->r);
    if (l->r == 0) return QL_OK; /* no adapters: the base model alone */
    if (!(l->alpha > 0.0f) || !isfinite(l->alpha))
        return ql_error(QL_EINVAL, "lora.alpha: must be a positive number, got %g",
                        (double)l->alpha);
    if (!(l->dropout >= 0.0f && l->dropout < 1.0f))
        return ql_error(QL_EINVAL, "lora.dropout: must be in [0, 1), got %g", (double)l->dropout);
    if (l->targets & ~QL_PROJ_ALL)
        return ql_error(QL_EINVAL,
                        "lora.targets: bit mask 0x%x names no projection (bits 0..%d "
                        "are q_proj ... down_proj)",
                        l->targets, QL_N_PROJ - 1);
    if (!l->targets)
        return ql_error(QL_EINVAL,
                        "lora.targets: matches no module of the model (expected some of q_proj, "
                        "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
    return QL_OK;
}

ql_status ql_adapters_layout(const ql_hf_config *c, const ql_lora_config *l, ql_adapters *a) {
    memset(a, 0, sizeof *a);
    QL_TRY(ql_lora_config_check(l));
    a->cfg = *l;
    a->n_heads = c->num_attention_heads;
    a->n_kv_heads = c->num_key_value_heads;
    snprintf(a->model_type, sizeof a->model_type, "%s", c->model_type);
    if (l->r == 0) return QL_OK;
    a->scale = (float)(l->use_rslora ? (double)l->alpha / sqrt((double)l->r)
                                     : (double)l->alpha / (double)l->r);
    int per_layer = 0;
    for (int p = 0; p < QL_N_PROJ; p++) per_layer += (l->targets >> p) & 1u;
    int64_t count = 2 * per_layer * c->num_hidden_layers;
    a->tensors = ql_calloc((size_t)count, sizeof *a->tensors, "LoRA adapter table");
    if (!a->tensors) return QL_ENOMEM;
    int64_t off = 0;
    for (int layer = 0; layer < c->num_hidden_layers; layer++)
        for (int p = 0; p < QL_N_PROJ; p++) {
            if (!((l->targets >> p) & 1u)) continue;
            int64_t in, out;
            ql_proj_shape(c, (ql_proj)p, &in, &out);
            for (int is_b = 0; is_b < 2; is_b++) {
                ql_adapter_tensor *t = &a->tensors[a->n_tensors++];
                ql_adapter_peft_name(layer, (ql_proj)p, is_b, t->name, sizeof t->name);
                t->layer = layer;
                t->proj = (ql_proj)p;
                t->is_b = is_b;
                t->rows = is_b ? out : l->r;
                t->cols = is_b ? l->r : in;
                t->offset = off;
                off += t->rows * t->cols;
            }
        }
    a->n = off;
    return QL_OK;
}

ql_status ql_adapters_no_place(const ql_adapters *a, const char *path, const char *tensor) {
    return ql_error(QL_EFORMAT,
                    "%s: tensor '%s' has no place in this model (a layer or module it does not "
                    "have, or LoRA settings other than r %d on these targets)",
                    path, tensor, a->cfg.r);
}

ql_status ql_adapters_set_params(ql_adapters *a, const float *host, const ql_backend *be) {
    if (be) return be->upload(a->params, host, (size_t)a->n * sizeof *host);
    memcpy(a->params, host, (size_t)a->n * sizeof *host);
    return QL_OK;
}

void ql_adapters_layout_free(ql_adapters *a) {
    free(a->tensors);
    a->tensors = NULL;
    a->n_tensors = 0;
}

void ql_adapters_init(const ql_adapters *a, uint64_t seed, float *params) {
    for (int i = 0; i < a->n_tensors; i++) {
        const ql_adapter_tensor *t = &a->tensors[i];
        float *p = params + t->offset;
        int64_t n = t->rows * t->cols;
        if (t->is_b) {
            memset(p, 0, (size_t)n * sizeof(float));
            continue;
        }
        /* kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = 1/sqrt(in). */
        float bound = (float)(1.0 / sqrt((double)t->cols));
        ql_rng r;
        ql_rng_seed_stream(&r, seed, 1 + (uint64_t)t->layer * QL_N_PROJ + (uint64_t)t->proj);
        for (int64_t e = 0; e < n; e++) p[e] = ql_rng_uniform_range(&r, -bound, bound);
    }
}

ql_status ql_adapters_match(const ql_adapters *want, const ql_adapters *given, const char *model,
                            int *at) {
    if (given->n_tensors != want->n_tensors)
        return ql_error(QL_EFORMAT,
                        "the adapter has %d tensors; model %s with r %d on these targets has %d",
                        given->n_tensors, model, want->cfg.r, want->n_tensors);
    for (int i = 0; i < want->n_tensors; i++) {
        const ql_adapter_tensor *t = &want->tensors[i];
        int j = 0;
        while (j < given->n_tensors && strcmp(given->tensors[j].name, t->name)) j++;
        if (j == given->n_tensors)
            return ql_error(QL_ENOTFOUND, "the adapter has no tensor '%s'", t->name);
        const ql_adapter_tensor *g = &given->tensors[j];
        if (g->rows != t->rows || g->cols != t->cols)
            return ql_error(QL_EFORMAT,
                            "adapter tensor '%s' is [%lld, %lld]; model %s expects [%lld, %lld]",
                            t->name, (long long)g->rows, (long long)g->cols, model,
                            (long long)t->rows, (long long)t->cols);
        if (at) at[i] = j;
    }
    return QL_OK;
}
