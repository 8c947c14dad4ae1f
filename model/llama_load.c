/* Loading a Llama-family model: configuration checks, frozen weights (4-bit
 * linears, fp32 norms, act_dtype embeddings), the LoRA adapters and the
 * activation buffers, all sized once so that a step allocates nothing. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "kernels/cuda_api.h"
#include "model/llama_impl.h"
#include "model/source.h"

/* Logit elements per lm_head chunk: about 32 MB of float32 logits whatever
 * the vocab on the CPU. A device backend takes 8x wider chunks (128 MB of
 * bf16): the lm_head GEMM of a 128k vocabulary then has about 500 rows, not
 * 65, which tensor cores run far closer to their rate. model/llama_mem.c
 * sizes the same chunk. */
#define LOGIT_BUDGET ((int64_t)1 << 23)
#define LOGIT_BUDGET_DEVICE ((int64_t)1 << 26)

/* Set to anything but "" or "0". */
static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

int64_t ql_llama_logit_rows(const ql_llama_options *o, ql_dtype act_dtype, int64_t vocab) {
    int64_t cap = o->max_batch * o->max_seq;
    int64_t budget = act_dtype == QL_DT_F32 ? LOGIT_BUDGET : LOGIT_BUDGET_DEVICE;
    int64_t rows = o->logit_rows > 0 ? o->logit_rows : budget / vocab;
    if (rows < 1) rows = 1;
    if (rows > cap) rows = cap;
    return rows;
}

void ql_llama_options_default(ql_llama_options *o) {
    memset(o, 0, sizeof *o);
    o->be = ql_backend_cpu();
    o->quant_type = QL_QTYPE_NF4;
    o->blocksize = 64;
    o->double_quant = 1;
    o->lora.r = 16;
    o->lora.alpha = 32.0f;
    o->lora.dropout = 0.0f;
    o->lora.use_rslora = 0;
    o->lora.targets = QL_PROJ_ALL;
    o->seed = 1234;
    o->checkpoint_activations = 0;
    o->max_batch = 1;
    o->max_seq = 512;
    o->lend_dequantized = 1;
}

ql_status ql_llama_alloc(ql_llama *m, size_t bytes, const char *what, void **out) {
    *out = NULL;
    if (m->n_allocs == m->cap_allocs) {
        size_t cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
        void **na = realloc(m->allocs, cap * sizeof *na);
        if (!na) return ql_error(QL_ENOMEM, "out of memory (buffer list)");
        m->allocs = na;
        m->cap_allocs = cap;
    }
    ql_status st = m->be->alloc(bytes ? bytes : 1, out);
    if (st != QL_OK)
        return ql_error_wrap(st, "allocating %s (%zu bytes) on backend %s: ", what, bytes,
                             m->be->name);
    m->allocs[m->n_allocs++] = *out;
    m->backend_bytes += bytes;
    return QL_OK;
}

static size_t q4_bytes(const ql_q4 *q) {
    size_t b = (size_t)ql_q4_packed_bytes(q);
    if (q->double_quant)
        b += (size_t)q->n_blocks + (size_t)ql_q4_nested_blocks(q) * sizeof(float) + 256 * 4;
    else
        b += (size_t)q->n_blocks * sizeof(float);
    return b;
}

/* ------------------------------------------------------------ config checks */

static const char *config_where(const ql_model_source *s, char *buf, size_t n) {
    if (s->kind == QL_SOURCE_GGUF)
        snprintf(buf, n, "%s", s->path);
    else
        snprintf(buf, n, "%s/config.json", s->path);
    return buf;
}

static ql_status check_config(const ql_model_source *s, const ql_llama_options *o) {
    const ql_hf_config *c = &s->cfg;
    char where[4200];
    config_where(s, where, sizeof where);
    static const char *const archs[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                        "Qwen2ForCausalLM"};
    if (c->architecture[0]) {
        int ok = 0;
        for (size_t i = 0; i < sizeof archs / sizeof *archs; i++)
            ok |= !strcmp(c->architecture, archs[i]);
        if (!ok)
            return ql_error(QL_EUNSUPPORTED,
                            "%s: architectures[0] is '%s'; supported are LlamaForCausalLM, "
                            "MistralForCausalLM and Qwen2ForCausalLM",
                            where, c->architecture);
    }
    if (c->rope_type == QL_ROPE_OTHER)
        return ql_error(QL_EUNSUPPORTED,
                        "%s: rope_scaling type '%s' is not supported (default, linear and llama3 "
                        "are)",
                        where, c->rope_type_name);
    if (c->head_dim % 2)
        return ql_error(QL_EUNSUPPORTED, "%s: head_dim %" PRId64 " must be even for RoPE", where,
                        c->head_dim);
    if (c->json) {
        const json_t *act = json_object_get(c->json, "hidden_act");
        if (act && !json_is_null(act) &&
            (!json_is_string(act) || strcmp(json_string_value(act), "silu")))
            return ql_error(QL_EUNSUPPORTED,
                            "%s: field 'hidden_act' is %s%s%s; only 'silu' is "
                            "supported",
                            where, json_is_string(act) ? "'" : "",
                            json_is_string(act) ? json_string_value(act) : "not a string",
                            json_is_string(act) ? "'" : "");
        /* Sliding-window attention is not implemented; it changes nothing while
         * every row fits in the window. */
        const json_t *sw = json_object_get(c->json, "sliding_window");
        int used = json_is_integer(sw);
        if (!strcmp(c->model_type, "qwen2"))
            used = used && json_is_true(json_object_get(c->json, "use_sliding_window"));
        if (used && json_integer_value(sw) < o->max_seq)
            return ql_error(QL_EUNSUPPORTED,
                            "%s: field 'sliding_window' is %" PRId64 ", below the sequence "
                            "length %" PRId64 "; sliding-window attention is not implemented",
                            where, (int64_t)json_integer_value(sw), o->max_seq);
    }
    return QL_OK;
}

static ql_status check_options(const ql_llama_options *o) {
    if (!o->be) return ql_error(QL_EINVAL, "model: no backend given");
    if (o->max_batch <= 0 || o->max_seq <= 0)
        return ql_error(QL_EINVAL,
                        "model: batch capacity %" PRId64 " x %" PRId64 " must be positive",
                        o->max_batch, o->max_seq);
    if (!ql_q4_blocksize_ok(o->blocksize))
        return ql_error(QL_EINVAL,
                        "model: quantization block size %d is not one bitsandbytes "
                        "allows (64 ... 4096, powers of two)",
                        o->blocksize);
    if (o->quant_type != QL_QTYPE_NF4 && o->quant_type != QL_QTYPE_FP4)
        return ql_error(QL_EINVAL, "model: quant_type must be nf4 or fp4");
    if (o->base_original && !o->be->dense_upload)
        return ql_error(QL_EUNSUPPORTED,
                        "model: backend %s holds linears in 4 bits only; the base weights as "
                        "stored (quant.type none, --base-weights original) need a backend that "
                        "can hold them (cpu, cpu-ref, cuda)",
                        o->be->name);
    return ql_lora_config_check(&o->lora);
}

/* -------------------------------------------------------------------- names */

static const char *linear_name(int layer, ql_proj p, const char *what, char *buf, size_t n) {
    snprintf(buf, n, "model.layers.%d.%s.%s.%s", layer, ql_proj_module(p), ql_proj_name(p), what);
    return buf;
}

static int has_bias(const ql_hf_config *c, ql_proj p) {
    if (p <= QL_PROJ_V) return c->qkv_bias || c->attention_bias;
    if (p == QL_PROJ_O) return c->attention_bias;
    return c->mlp_bias;
}

/* Every tensor must be present before anything large is allocated. */
static ql_status check_present(const ql_model_source *s) {
    const ql_hf_config *c = &s->cfg;
    char name[256];
    static const char *const fixed[] = {"model.embed_tokens.weight", "model.norm.weight"};
    for (int i = 0; i < 2; i++)
        if (!s->has(s, fixed[i]))
            return ql_error(QL_EFORMAT, "%s: missing tensor '%s'", s->path, fixed[i]);
    if (!c->tie_word_embeddings && !s->has(s, "lm_head.weight"))
        return ql_error(QL_EFORMAT,
                        "%s: missing tensor 'lm_head.weight' (the config does not tie word "
                        "embeddings)",
                        s->path);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l,
                     k ? "post_attention_layernorm" : "input_layernorm");
            if (!s->has(s, name))
                return ql_error(QL_EFORMAT, "%s: missing tensor '%s'", s->path, name);
        }
        for (int p = 0; p < QL_N_PROJ; p++) {
            for (int b = 0; b < 1 + has_bias(c, (ql_proj)p); b++)
                if (!s->has(s,
                            linear_name(l, (ql_proj)p, b ? "bias" : "weight", name, sizeof name)))
                    return ql_error(QL_EFORMAT, "%s: missing tensor '%s'", s->path, name);
        }
    }
    return QL_OK;
}

/* ------------------------------------------------------------------ weights */

static ql_status upload_f32(ql_llama *m, const ql_model_source *s, const char *name, int64_t n,
                            float *host, float **out) {
    QL_TRY(s->get_f32(s, name, host));
    QL_TRY(ql_llama_alloc(m, (size_t)n * sizeof(float), name, (void **)out));
    QL_TRY(m->be->upload(*out, host, (size_t)n * sizeof(float)));
    m->base_params += n;
    return QL_OK;
}

/* A matrix the backend reads as activations (embeddings, lm_head). */
static ql_status upload_act(ql_llama *m, const ql_model_source *s, const char *name, int64_t n,
                            ql_act **out) {
    float *host = ql_malloc((size_t)n * sizeof(float), name);
    if (!host) return QL_ENOMEM;
    ql_status st = s->get_f32(s, name, host);
    void *conv = host;
    if (st == QL_OK && m->be->act_dtype != QL_DT_F32) {
        conv = ql_malloc((size_t)n * m->esz, name);
        if (!conv)
            st = QL_ENOMEM;
        else if (ql_dtype_from_f32(m->be->act_dtype, host, conv, (size_t)n) != 0)
            st = ql_error(QL_EINTERNAL, "%s: cannot convert to %s", name,
                          ql_dtype_name(m->be->act_dtype));
    }
    if (st == QL_OK) st = ql_llama_alloc(m, (size_t)n * m->esz, name, out);
    if (st == QL_OK) st = m->be->upload(*out, conv, (size_t)n * m->esz);
    if (conv != host) free(conv);
    free(host);
    m->base_params += n;
    return st;
}

/* A host 4-bit matrix to the backend; hq is freed. */
static ql_status upload_q4(ql_llama *m, ql_q4 *hq, ql_q4 *dst) {
    double t0 = ql_clock_s();
    ql_status st = m->be->q4_upload(hq, dst);
    m->upload_s += ql_clock_s() - t0;
    ql_q4_free(hq);
    return st;
}

static ql_status load_linear(ql_llama *m, const ql_model_source *s, int layer, ql_proj p,
                             float *host, ql_q4 *dst) {
    char name[256];
    linear_name(layer, p, "weight", name, sizeof name);
    int64_t in, out;
    ql_proj_shape(&m->cfg, p, &in, &out);
    ql_q4 hq;
    ql_status st;
    const char *doing = "uploading";
    double t0 = ql_clock_s();
    if (s->is_q4 && s->is_q4(s, name)) {
        QL_TRY(s->get_q4(s, name, &hq));
        m->read_s += ql_clock_s() - t0;
        if (hq.rows != out || hq.cols != in) {
            ql_q4_free(&hq);
            return ql_error(QL_EFORMAT,
                            "%s: tensor '%s' is [%" PRId64 ", %" PRId64
                            "] in 4-bit, expected [%" PRId64 ", %" PRId64 "]",
                            s->path, name, hq.rows, hq.cols, out, in);
        }
        st = upload_q4(m, &hq, dst);
    } else {
        QL_TRY(s->get_f32(s, name, host));
        double t1 = ql_clock_s();
        m->read_s += t1 - t0;
        if (m->opt.base_original) {
            st = m->be->dense_upload(host, out, in, ql_llama_proj_rank(m, layer, p), dst);
            m->upload_s += ql_clock_s() - t1;
            if (st == QL_OK) {
                m->backend_bytes +=
                    m->be->act_dtype == QL_DT_F32
                        ? (size_t)(in * out) * sizeof(float)
                        : (size_t)ql_q4_dense_elems(out, in, ql_llama_proj_rank(m, layer, p)) * 2;
                m->base_params += in * out;
                m->float_linears++;
                return QL_OK;
            }
        } else if (m->be->q4_quantize_upload && !m->opt.quantize_on_host) {
            /* The host ql_q4 is never built: the float32 matrix goes to the
             * device and is quantized there, to the same bytes. */
            doing = "quantizing on the device";
            st = m->be->q4_quantize_upload(host, out, in, m->opt.quant_type, m->opt.blocksize,
                                           m->opt.double_quant, dst);
            m->gpu_quantize_s += ql_clock_s() - t1;
        } else {
            QL_TRY(ql_q4_quantize(host, out, in, m->opt.quant_type, m->opt.blocksize,
                                  m->opt.double_quant, &hq));
            m->quantize_s += ql_clock_s() - t1;
            st = upload_q4(m, &hq, dst);
        }
    }
    if (st != QL_OK) {
        memset(dst, 0, sizeof *dst);
        return ql_error_wrap(st, "%s '%s' on backend %s: ", doing, name, m->be->name);
    }
    m->backend_bytes += q4_bytes(dst);
    m->base_params += in * out;
    return QL_OK;
}

/* The backend's dequantized copy of a linear, laid out for its LoRA rank. */
static ql_status keep_dequantized(ql_llama *m, int layer, ql_proj p, ql_q4 *w) {
    const int64_t r = ql_llama_proj_rank(m, layer, p);
    ql_mem_stats before, after;
    m->be->mem_stats(&before);
    ql_status st = m->be->q4_keep_dequantized(w, r);
    if (st != QL_OK) {
        char name[256];
        linear_name(layer, p, "weight", name, sizeof name);
        return ql_error_wrap(st, "'%s' on backend %s (quant.dequantized_layers): ", name,
                             m->be->name);
    }
    m->be->mem_stats(&after);
    m->backend_bytes += after.in_use - before.in_use;
    m->dense_bytes += after.in_use - before.in_use;
    return QL_OK;
}

static ql_status load_weights(ql_llama *m, const ql_model_source *s) {
    const ql_hf_config *c = &m->cfg;
    int64_t biggest = 0;
    for (int p = 0; p < QL_N_PROJ; p++) {
        int64_t in, out;
        ql_proj_shape(c, (ql_proj)p, &in, &out);
        if (in * out > biggest) biggest = in * out;
    }
    float *host = ql_malloc((size_t)biggest * sizeof(float), "weight staging buffer");
    if (!host) return QL_ENOMEM;
    ql_status st = QL_OK;
    m->layers = ql_calloc((size_t)m->L, sizeof *m->layers, "layer table");
    if (!m->layers) {
        free(host);
        return QL_ENOMEM;
    }
    char name[256];
    for (int l = 0; l < m->L && st == QL_OK; l++) {
        ql_llama_layer *L = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        QL_TRY_GOTO(st, upload_f32(m, s, name, m->d, host, &L->norm_in), out);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        QL_TRY_GOTO(st, upload_f32(m, s, name, m->d, host, &L->norm_post), out);
        for (int p = 0; p < QL_N_PROJ; p++) {
            QL_TRY_GOTO(st, load_linear(m, s, l, (ql_proj)p, host, &L->w[p]), out);
            if (l < m->opt.dequantized_layers && m->be->q4_keep_dequantized && L->w[p].packed)
                QL_TRY_GOTO(st, keep_dequantized(m, l, (ql_proj)p, &L->w[p]), out);
            if (has_bias(c, (ql_proj)p)) {
                int64_t in, n;
                ql_proj_shape(c, (ql_proj)p, &in, &n);
                linear_name(l, (ql_proj)p, "bias", name, sizeof name);
                QL_TRY_GOTO(st, upload_f32(m, s, name, n, host, &L->bias[p]), out);
            }
        }
    }
    QL_TRY_GOTO(st, upload_f32(m, s, "model.norm.weight", m->d, host, &m->norm_f), out);
    QL_TRY_GOTO(st, upload_act(m, s, "model.embed_tokens.weight", m->V * m->d, &m->embed), out);
    if (c->tie_word_embeddings)
        m->lm_head = m->embed;
    else
        QL_TRY_GOTO(st, upload_act(m, s, "lm_head.weight", m->V * m->d, &m->lm_head), out);
out:
    free(host);
    return st;
}

/* ------------------------------------------------------------------ adapters */

static ql_status setup_adapters(ql_llama *m) {
    QL_TRY(ql_adapters_layout(&m->cfg, &m->opt.lora, &m->ad));
    m->adapter_of = ql_malloc((size_t)(m->L * QL_N_PROJ) * sizeof(int), "adapter index");
    if (!m->adapter_of) return QL_ENOMEM;
    for (int64_t i = 0; i < m->L * QL_N_PROJ; i++) m->adapter_of[i] = -1;
    for (int i = 0; i < m->ad.n_tensors; i++)
        if (!m->ad.tensors[i].is_b)
            m->adapter_of[m->ad.tensors[i].layer * QL_N_PROJ + m->ad.tensors[i].proj] = i;
    size_t bytes = (size_t)m->ad.n * sizeof(float);
    QL_TRY(ql_llama_alloc(m, bytes, "LoRA parameters", (void **)&m->ad.params));
    QL_TRY(ql_llama_alloc(m, bytes, "LoRA gradients", (void **)&m->ad.grads));
    float *host = ql_calloc((size_t)(m->ad.n ? m->ad.n : 1), sizeof(float), "LoRA init");
    if (!host) return QL_ENOMEM;
    ql_adapters_init(&m->ad, m->opt.seed, host);
    ql_status st = m->be->upload(m->ad.params, host, bytes);
    memset(host, 0, bytes);
    if (st == QL_OK) st = m->be->upload(m->ad.grads, host, bytes);
    free(host);
    /* Stream 0 of the seed; the adapters' own streams start at 1. */
    ql_rng_seed_stream(&m->rng, m->opt.seed, 0);
    return st;
}

/* --------------------------------------------------------------- activations */

static ql_status act_buf(ql_llama *m, int64_t per_token, const char *what, ql_act **out) {
    return ql_llama_alloc(m, (size_t)(m->cap * per_token) * m->esz, what, out);
}

static ql_status f32_buf(ql_llama *m, int64_t per_token, const char *what, float **out) {
    return ql_llama_alloc(m, (size_t)(m->cap * per_token) * sizeof(float), what, (void **)out);
}

/* With checkpointing on the dequant path, a buffer per projection for the
 * dequantized copy a layer's weights are lent while the layer runs
 * (llama_step.c), so its recomputed forward pass and its backward pass
 * share one dequantize pass; unless every layer keeps a copy of its own. */
static ql_status setup_lending(ql_llama *m) {
    if (!m->opt.lend_dequantized || !m->opt.checkpoint_activations || !m->be->q4_lend_dequantized ||
        m->float_linears || m->opt.dequantized_layers >= m->L ||
        ql_cuda_q4_path_for(m->cap) != QL_CUDA_Q4_DEQUANT_BLAS)
        return QL_OK;
    for (int p = 0; p < QL_N_PROJ; p++) {
        const ql_q4 *w = &m->layers[0].w[p];
        const int64_t r = ql_llama_proj_rank(m, 0, (ql_proj)p); /* as in every layer */
        const size_t bytes = (size_t)ql_q4_dense_elems(w->rows, w->cols, r) * 2; /* bf16 */
        QL_TRY(
            ql_llama_alloc(m, bytes, "a layer's linears, dequantized while it runs", &m->lend[p]));
        m->lend_bytes += bytes;
    }
    return QL_OK;
}

static ql_status setup_activations(ql_llama *m) {
    m->xs = ql_calloc((size_t)m->L + 1, sizeof *m->xs, "residual stream");
    m->n_acts = m->opt.checkpoint_activations ? 1 : (int)m->L;
    m->acts = ql_calloc((size_t)m->n_acts, sizeof *m->acts, "activation table");
    if (!m->xs || !m->acts) return QL_ENOMEM;
    for (int64_t l = 0; l <= m->L; l++) QL_TRY(act_buf(m, m->d, "residual stream", &m->xs[l]));
    for (int i = 0; i < m->n_acts; i++) {
        ql_llama_acts *a = &m->acts[i];
        QL_TRY(act_buf(m, m->qdim, "queries", &a->q));
        QL_TRY(act_buf(m, m->kvdim, "keys", &a->k));
        QL_TRY(act_buf(m, m->kvdim, "values", &a->v));
        QL_TRY(act_buf(m, m->qdim, "attention output", &a->ao));
        QL_TRY(act_buf(m, m->d, "attention residual", &a->h));
        QL_TRY(act_buf(m, m->inter, "gate", &a->g));
        QL_TRY(act_buf(m, m->inter, "up", &a->u));
        QL_TRY(f32_buf(m, m->H, "attention lse", &a->lse));
        QL_TRY(f32_buf(m, 1, "rmsnorm rstd", &a->rstd1));
        QL_TRY(f32_buf(m, 1, "rmsnorm rstd", &a->rstd2));
        for (int p = 0; p < QL_N_PROJ; p++)
            if (ql_llama_proj_rank(m, 0, (ql_proj)p) > 0) /* same targets in every layer */
                QL_TRY(f32_buf(m, m->ad.cfg.r, "LoRA x·Aᵀ", &a->xa[p]));
    }
    QL_TRY(act_buf(m, m->d, "norm output", &m->n1));
    QL_TRY(act_buf(m, m->d, "norm output", &m->n2));
    QL_TRY(act_buf(m, m->inter, "SwiGLU output", &m->s));
    QL_TRY(act_buf(m, m->d, "projection output", &m->o));
    QL_TRY(act_buf(m, m->d, "final norm", &m->fnorm));
    QL_TRY(f32_buf(m, 1, "final rstd", &m->rstd_f));
    QL_TRY(f32_buf(m, 1, "token losses", &m->losses));
    m->logit_rows = ql_llama_logit_rows(&m->opt, m->be->act_dtype, m->V);
    QL_TRY(ql_llama_alloc(m, (size_t)(m->logit_rows * m->V) * m->esz, "logits", &m->logits));

    QL_TRY(act_buf(m, m->d, "gradient", &m->dy));
    QL_TRY(act_buf(m, m->d, "gradient", &m->dx));
    QL_TRY(act_buf(m, m->d, "gradient", &m->dh));
    QL_TRY(act_buf(m, m->d, "gradient", &m->t1));
    QL_TRY(act_buf(m, m->d, "gradient", &m->t2));
    QL_TRY(act_buf(m, m->inter, "gradient", &m->ds));
    QL_TRY(act_buf(m, m->inter, "gradient", &m->dg));
    QL_TRY(act_buf(m, m->inter, "gradient", &m->du));
    QL_TRY(act_buf(m, m->qdim, "gradient", &m->dao));
    QL_TRY(act_buf(m, m->qdim, "gradient", &m->dq));
    QL_TRY(act_buf(m, m->kvdim, "gradient", &m->dk));
    QL_TRY(act_buf(m, m->kvdim, "gradient", &m->dv));

    size_t ib = (size_t)m->cap * sizeof(int32_t);
    QL_TRY(ql_llama_alloc(m, 4 * ib, "token ids, targets, positions and documents",
                          (void **)&m->batch_dev));
    m->h_batch = ql_calloc(4 * (size_t)m->cap, sizeof(int32_t), "the batch's staging");
    m->h_losses = ql_malloc((size_t)m->cap * sizeof(float), "token losses");
    if (!m->h_batch || !m->h_losses) return QL_ENOMEM;
    return QL_OK;
}

/* ------------------------------------------------------------------- public */

static ql_status init_shapes(ql_llama *m, const ql_model_source *s) {
    const ql_hf_config *c = &s->cfg;
    m->cfg = *c;
    m->cfg.json = NULL;
    m->kind = s->kind;
    snprintf(m->path, sizeof m->path, "%s", s->path);
    m->d = c->hidden_size;
    m->inter = c->intermediate_size;
    m->H = c->num_attention_heads;
    m->KV = c->num_key_value_heads;
    m->D = c->head_dim;
    m->V = c->vocab_size;
    m->L = c->num_hidden_layers;
    m->qdim = m->H * m->D;
    m->kvdim = m->KV * m->D;
    m->eps = (float)c->rms_norm_eps;
    m->esz = ql_dtype_size(m->be->act_dtype);
    m->cap = m->opt.max_batch * m->opt.max_seq;

    ql_rope_config rc = {.type = c->rope_type,
                         .theta = (float)c->rope_theta,
                         .factor = (float)c->rope_factor,
                         .low_freq_factor = (float)c->rope_low_freq_factor,
                         .high_freq_factor = (float)c->rope_high_freq_factor,
                         .original_max_position = (float)c->rope_original_max_position_embeddings};
    float *inv = ql_malloc((size_t)(m->D / 2) * sizeof(float), "RoPE frequencies");
    if (!inv) return QL_ENOMEM;
    ql_status st = ql_rope_inv_freq(&rc, (int)m->D, inv);
    if (st != QL_OK) {
        free(inv);
        char where[4200];
        return ql_error_wrap(st, "%s: ", config_where(s, where, sizeof where));
    }
    st = ql_llama_alloc(m, (size_t)(m->D / 2) * sizeof(float), "RoPE frequencies",
                        (void **)&m->inv_freq);
    if (st == QL_OK) st = m->be->upload(m->inv_freq, inv, (size_t)(m->D / 2) * sizeof(float));
    free(inv);
    return st;
}

ql_status ql_llama_load_source(ql_model_source *src, const ql_llama_options *o, ql_llama **out) {
    *out = NULL;
    QL_TRY(check_options(o));
    double t0 = ql_clock_s();
    ql_status st = check_config(src, o);
    if (st == QL_OK) st = check_present(src);
    ql_llama *m = NULL;
    if (st == QL_OK && !(m = ql_calloc(1, sizeof *m, "model"))) st = QL_ENOMEM;
    if (st == QL_OK) {
        m->be = o->be;
        m->opt = *o;
        if (env_flag("QL_QUANTIZE_ON_HOST")) m->opt.quantize_on_host = 1;
        st = init_shapes(m, src);
    }
    if (st == QL_OK) st = setup_adapters(m);
    if (st == QL_OK) st = load_weights(m, src);
    if (st == QL_OK) st = setup_activations(m);
    if (st == QL_OK) st = setup_lending(m);
    /* The uploads are synchronous copies, but a device may still be
     * clearing a buffer: the load time includes everything. */
    if (st == QL_OK) st = m->be->sync();
    if (st != QL_OK) {
        ql_llama_free(m);
        return st;
    }
    m->load_s = ql_clock_s() - t0;
    if (!o->quiet) ql_llama_describe(m, stderr);
    *out = m;
    return QL_OK;
}

ql_status ql_llama_load(const char *path, const ql_llama_options *o, ql_llama **out) {
    *out = NULL;
    QL_TRY(check_options(o));
    ql_model_source src;
    QL_TRY(ql_model_source_open(path, &src));
    ql_status st = ql_llama_load_source(&src, o, out);
    ql_model_source_close(&src);
    return st;
}

void ql_llama_load_stats(const ql_llama *m, ql_llama_load_info *i) {
    i->total_s = m->load_s;
    i->read_s = m->read_s;
    i->quantize_s = m->quantize_s;
    i->gpu_quantize_s = m->gpu_quantize_s;
    i->upload_s = m->upload_s;
    i->backend_bytes = m->backend_bytes;
}

void ql_llama_free(ql_llama *m) {
    if (!m) return;
    if (m->layers)
        for (int64_t l = 0; l < m->L; l++)
            for (int p = 0; p < QL_N_PROJ; p++)
                if (m->layers[l].w[p].packed || m->layers[l].w[p].dense)
                    m->be->q4_free(&m->layers[l].w[p]);
    for (size_t i = 0; i < m->n_allocs; i++) m->be->free(m->allocs[i]);
    free(m->allocs);
    free(m->layers);
    free(m->xs);
    free(m->acts);
    free(m->adapter_of);
    free(m->h_batch);
    free(m->h_losses);
    ql_adapters_layout_free(&m->ad);
    free(m);
}

const ql_hf_config *ql_llama_config(const ql_llama *m) { return &m->cfg; }
ql_adapters *ql_llama_adapters(ql_llama *m) { return &m->ad; }
ql_rng *ql_llama_rng(ql_llama *m) { return &m->rng; }

static const char *kind_name(ql_source_kind k) {
    return k == QL_SOURCE_GGUF     ? "GGUF"
           : k == QL_SOURCE_BNB4   ? "bitsandbytes 4-bit"
           : k == QL_SOURCE_RANDOM ? "random weights"
                                   : "HF";
}

void ql_llama_describe(const ql_llama *m, FILE *f) {
    const ql_hf_config *c = &m->cfg;
    fprintf(f, "model: %s (%s)\n", m->path, kind_name(m->kind));
    fprintf(f,
            "  %s (%s): %" PRId64 " layers, hidden %" PRId64 ", intermediate %" PRId64
            ", heads %" PRId64 "/%" PRId64 " x %" PRId64 ", vocab %" PRId64
            "%s, RoPE %s theta %g\n",
            c->architecture[0] ? c->architecture : "?", c->model_type, m->L, m->d, m->inter, m->H,
            m->KV, m->D, m->V, c->tie_word_embeddings ? " (tied)" : "", c->rope_type_name,
            c->rope_theta);
    const int64_t n_linears = m->L * QL_N_PROJ;
    fprintf(f, "  parameters: %.2fM base (%s), %.3fM trainable", m->base_params / 1e6,
            m->float_linears == 0 ? "linears in 4-bit"
            : m->float_linears == n_linears
                ? (m->be->act_dtype == QL_DT_F32 ? "linears in float32 as stored, not quantized"
                                                 : "linears as stored, in bf16, not quantized")
                : "linears as stored: float32, or 4-bit where the "
                  "file holds them in 4 bits",
            m->ad.n / 1e6);
    if (m->ad.cfg.r > 0) {
        fprintf(f, " (LoRA r %d, alpha %g%s, scale %g, dropout %g, on", m->ad.cfg.r,
                (double)m->ad.cfg.alpha, m->ad.cfg.use_rslora ? ", rsLoRA" : "",
                (double)m->ad.scale, (double)m->ad.cfg.dropout);
        for (int p = 0; p < QL_N_PROJ; p++)
            if ((m->ad.cfg.targets >> p) & 1u) fprintf(f, " %s", ql_proj_name((ql_proj)p));
        fputc(')', f);
    }
    fprintf(f, "\n  backend %s: %.1f MiB (capacity %" PRId64 " x %" PRId64 " tokens%s)\n",
            m->be->name, (double)m->backend_bytes / (1024.0 * 1024.0), m->opt.max_batch,
            m->opt.max_seq, m->opt.checkpoint_activations ? ", activation checkpointing" : "");
    if (m->dense_bytes)
        fprintf(f, "  kept dequantized: the linears of %" PRId64 " layers, %.1f MiB\n",
                m->opt.dequantized_layers < m->L ? m->opt.dequantized_layers : m->L,
                (double)m->dense_bytes / (1024.0 * 1024.0));
    if (m->lend_bytes)
        fprintf(f,
                "  dequantized while a layer runs (checkpointing): one layer's linears, "
                "%.1f MiB\n",
                (double)m->lend_bytes / (1024.0 * 1024.0));
    /* Quantization runs on the device when the backend can (the float32
     * upload is counted there), else on the host (OpenMP) followed by one
     * upload of the 4-bit weight; the split says which part a large model
     * waits for. */
    fprintf(f, "  loaded in %.1f s: reading %.1f s", m->load_s, m->read_s);
    if (m->quantize_s > 0) fprintf(f, ", quantizing on the host %.1f s", m->quantize_s);
    if (m->gpu_quantize_s > 0)
        fprintf(f, ", quantizing on the GPU %.1f s (float32 upload included)", m->gpu_quantize_s);
    fprintf(f, ", copying to the backend %.1f s\n", m->upload_s);
}
