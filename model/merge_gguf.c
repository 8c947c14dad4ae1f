/* A merged model as one GGUF file (model/merge.h): what llama.cpp and the
 * tools built on it load without an adapter.
 *
 * Only from a GGUF base, whose file supplies everything llama.cpp needs that
 * qlora does not model: the tokenizer and the rest of the metadata are copied
 * entry for entry (general.file_type set to the new type), and so is every
 * tensor the merge does not change, in its stored type (embeddings, norms,
 * rope_freqs; with base_original also the untargeted linears). The other
 * linears are merged in float32 (model/merge.c) and written in gguf_type with
 * q/k rows permuted back into the file's order. */
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_lora.h"
#include "model/gguf_write.h"
#include "model/merge_impl.h"

typedef struct gguf_merge {
    merge_ctx *c;
    ql_gguf_lora_base base;        /* the architecture's Q/K order and head counts */
    const ql_hf_expected **exp_of; /* per source tensor: its HF tensor, NULL if copied */
    int n_merged;
    int layers_done; /* counted: the file's tensors need not come in layer order */
} gguf_merge;

/* llama.cpp's LLAMA_FTYPE for a file whose linears are `type`. */
static uint32_t file_type_of(uint32_t type) {
    switch (type) {
    case QL_GGML_F32: return 0;
    case QL_GGML_F16: return 1;
    case QL_GGML_Q8_0: return 7;
    default: return 32; /* BF16 */
    }
}

static ql_status fill_linear(void *ctx, size_t index, void *dst) {
    gguf_merge *g = ctx;
    merge_ctx *c = g->c;
    const ql_hf_expected *e = g->exp_of[index];
    const int64_t rows = e->shape[0], cols = e->shape[1], n = rows * cols;
    int merged;
    if (c->o->cancel && *c->o->cancel)
        return ql_error(QL_EIO, "interrupted by a signal; no output written");
    QL_TRY(ql_merge_tensor_f32(c, e, c->buf, &merged));
    g->n_merged += merged;
    int layer = -1;
    char mod[32] = "", proj[32] = "";
    if (sscanf(e->name, "model.layers.%d.%31[^.].%31[^.].weight", &layer, mod, proj) != 3)
        layer = -1;
    if (g->base.permute_qk && (!strcmp(proj, "q_proj") || !strcmp(proj, "k_proj")))
        QL_TRY(ql_gguf_permute_qk_rows(
            c->buf, rows, cols, proj[0] == 'q' ? g->base.n_heads : g->base.n_kv_heads, e->name));
    switch (c->o->gguf_type) {
    case QL_GGML_F32: memcpy(dst, c->buf, (size_t)n * sizeof(float)); break;
    case QL_GGML_Q8_0: ql_gguf_quantize_q8_0(c->buf, n, dst); break;
    default:
        ql_dtype_from_f32(c->o->gguf_type == QL_GGML_F16 ? QL_DT_F16 : QL_DT_BF16, c->buf, dst,
                          (size_t)n);
    }
    if (c->o->progress && layer >= 0 && !strcmp(proj, "down_proj"))
        fprintf(c->o->progress, "export: %d of %lld layers merged\n", ++g->layers_done,
                (long long)c->src.cfg.num_hidden_layers);
    return QL_OK;
}

ql_status ql_merge_write_gguf(merge_ctx *c, ql_merge_stats *s) {
    const ql_merge_opts *o = c->o;
    const ql_gguf_file *f = ql_gguf_source_file(&c->src);
    if (!f)
        return ql_error(QL_EUNSUPPORTED,
                        "%s is not a GGUF file: a merged GGUF takes its tokenizer and metadata "
                        "from a GGUF base; export --merge to a directory and convert that with "
                        "llama.cpp's convert_hf_to_gguf.py",
                        o->model);
    gguf_merge g = {.c = c};
    QL_TRY(ql_gguf_lora_base_of(o->model, &g.base));
    g.exp_of = ql_calloc(f->n_tensors ? f->n_tensors : 1, sizeof *g.exp_of, "the tensor map");
    int64_t biggest = 1;
    ql_status st = g.exp_of ? QL_OK : QL_ENOMEM;
    for (size_t i = 0; st == QL_OK && i < c->n_exp; i++) {
        const ql_hf_expected *e = &c->exp[i];
        int layer;
        ql_proj p;
        if (!e->is_linear || (o->base_original && !ql_merge_targeted(c, e, &layer, &p))) continue;
        char name[160];
        const ql_gguf_tensor *t =
            ql_gguf_name_of(e->name, name, sizeof name) ? ql_gguf_find_tensor(f, name) : NULL;
        if (!t) {
            st = ql_error(QL_EINTERNAL, "%s: no GGUF tensor for '%s'", o->model, e->name);
            break;
        }
        if (o->gguf_type == QL_GGML_Q8_0 && e->shape[1] % 32)
            st = ql_error(QL_EINVAL,
                          "%s: '%s' has %lld columns, not a multiple of Q8_0's 32; "
                          "use --dtype f16",
                          o->model, e->name, (long long)e->shape[1]);
        g.exp_of[t - f->tensors] = e;
        if (ql_merge_numel(e) > biggest) biggest = ql_merge_numel(e);
    }
    if (st == QL_OK && !(c->buf = ql_malloc((size_t)biggest * sizeof(float), "the staging buffer")))
        st = QL_ENOMEM;

    /* The base's general.alignment, if it has one, is copied below: the
     * file must then be laid out by it. */
    ql_gguf_writer w = {.alignment = f->alignment};
    int file_type_set = 0;
    for (size_t i = 0; st == QL_OK && i < f->n_kv; i++) {
        if (strcmp(f->kvs[i].key, "general.file_type")) {
            st = ql_gguf_writer_copy_kv(&w, &f->kvs[i]);
        } else {
            st = ql_gguf_writer_add_u32(&w, "general.file_type", file_type_of(o->gguf_type));
            file_type_set = 1;
        }
    }
    if (st == QL_OK && !file_type_set)
        st = ql_gguf_writer_add_u32(&w, "general.file_type", file_type_of(o->gguf_type));
    for (size_t i = 0; st == QL_OK && i < f->n_tensors; i++) {
        const ql_gguf_tensor *t = &f->tensors[i];
        if (!g.exp_of[i]) {
            st = ql_gguf_writer_add_tensor(&w, t->name, t->n_dims, t->ne, t->type, t->data,
                                           t->nbytes);
            s->n_copied++;
            continue;
        }
        int64_t block;
        uint64_t bsize;
        ql_gguf_type_size(o->gguf_type, &block, &bsize);
        st = ql_gguf_writer_add_tensor_fill(&w, t->name, t->n_dims, t->ne, o->gguf_type,
                                            (uint64_t)(t->numel / block) * bsize, fill_linear, &g,
                                            i);
    }
    if (st == QL_OK) st = ql_gguf_writer_save(&w, o->out_dir);
    for (size_t i = 0; st == QL_OK && i < w.n_tensors; i++) s->bytes += w.tensors[i].nbytes;
    s->n_tensors = (int)f->n_tensors;
    s->n_merged = g.n_merged;
    s->n_shards = 1;
    s->tokenizer_missing = 0;
    ql_gguf_writer_free(&w);
    free(g.exp_of);
    return st;
}
