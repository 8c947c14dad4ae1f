/* A tokenizer from GGUF metadata (shared FORMATS.md §5.4): tokens, merges,
 * token types and the pre-tokenizer name that llama.cpp's converter chose.
 * Only byte-level BPE ("gpt2") is read; the pre-tokenizer names map to the
 * tokenizer.json pipelines they stand for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_impl.h"
#include "model/gguf.h"

static int str_is(ql_gguf_str s, const char *lit) {
    return s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

static ql_status add_op(ql_tok_model *m, ql_tok_pretok_kind kind, const char *re) {
    ql_tok_pretok *op = &m->pretok[m->n_pretok++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    if (kind == QL_PT_BYTELEVEL) m->byte_level = 1;
    if (re) QL_TRY(ql_tok_regex_compile(re, strlen(re), 0, m->path, &op->re, &op->jit));
    return QL_OK;
}

/* tokenizer.ggml.pre -> the tokenizer.json pre-tokenizer it was hashed from */
static ql_status set_pre(ql_tok_model *m, ql_gguf_str pre) {
    if (str_is(pre, "gpt-2") || str_is(pre, "default")) {
        return add_op(m, QL_PT_BYTELEVEL, ql_tok_gpt2_regex);
    }
    if (str_is(pre, "smollm")) {
        QL_TRY(add_op(m, QL_PT_NUMERIC, "\\p{N}"));
        m->pretok[0].behavior = QL_SPLIT_ISOLATED;
        return add_op(m, QL_PT_BYTELEVEL, ql_tok_gpt2_regex);
    }
    if (str_is(pre, "llama-bpe") || str_is(pre, "llama3")) {
        QL_TRY(add_op(m, QL_PT_SPLIT, ql_tok_llama3_regex));
        m->ignore_merges = 1;
        return add_op(m, QL_PT_BYTELEVEL, NULL);
    }
    if (str_is(pre, "qwen2")) {
        m->norm[m->n_norm++] = (ql_tok_norm){.kind = QL_NORM_NFC};
        QL_TRY(add_op(m, QL_PT_SPLIT, ql_tok_qwen2_regex));
        return add_op(m, QL_PT_BYTELEVEL, NULL);
    }
    return ql_error(QL_EUNSUPPORTED,
                    "%s: tokenizer.ggml.pre \"%.*s\" is not supported (known: gpt-2, smollm, "
                    "llama-bpe, qwen2)",
                    m->path, (int)pre.len, pre.p);
}

ql_status ql_tok_load_gguf(const char *path, ql_tok_model **out) {
    ql_gguf_file f;
    QL_TRY(ql_gguf_open(path, &f));
    ql_tok_model *m = NULL;
    ql_gguf_str *tokens = NULL, *merges = NULL;
    int64_t *types = NULL;
    uint64_t n_tok = 0, n_merge = 0, n_types = 0;
    ql_status st = ql_tok_model_new(path, &m);
    if (st != QL_OK) goto done;

    ql_gguf_str model;
    QL_TRY_GOTO(st, ql_gguf_get_str(&f, "tokenizer.ggml.model", &model), done);
    if (!str_is(model, "gpt2")) {
        st = ql_error(QL_EUNSUPPORTED,
                      "%s: tokenizer.ggml.model \"%.*s\" is not supported: only byte-level BPE "
                      "(\"gpt2\") is read from GGUF; use the model's tokenizer.json",
                      path, (int)model.len, model.p);
        goto done;
    }
    QL_TRY_GOTO(st, ql_gguf_get_str_array(&f, "tokenizer.ggml.tokens", &tokens, &n_tok), done);
    if (n_tok > INT32_MAX) {
        st = ql_error(QL_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                      (unsigned long long)n_tok);
        goto done;
    }
    if (ql_gguf_find_kv(&f, "tokenizer.ggml.token_type")) {
        QL_TRY_GOTO(st, ql_gguf_get_int_array(&f, "tokenizer.ggml.token_type", &types, &n_types),
                    done);
        if (n_types != n_tok) {
            st = ql_error(QL_EFORMAT, "%s: tokenizer.ggml.token_type has %llu entries, tokens %llu",
                          path, (unsigned long long)n_types, (unsigned long long)n_tok);
            goto done;
        }
    }
    QL_TRY_GOTO(st, ql_tok_smap_init(&m->vocab, n_tok), done);
    for (uint64_t i = 0; i < n_tok; i++)
        QL_TRY_GOTO(st, ql_tok_set_piece(m, (int32_t)i, tokens[i].p, tokens[i].len), done);
    QL_TRY_GOTO(st, ql_gguf_get_str_array(&f, "tokenizer.ggml.merges", &merges, &n_merge), done);
    QL_TRY_GOTO(st, ql_tok_pmap_init(&m->merges, n_merge), done);
    for (uint64_t i = 0; i < n_merge; i++) {
        const char *s = merges[i].p, *sp = memchr(s, ' ', merges[i].len);
        if (!sp) {
            st = ql_error(QL_EFORMAT, "%s: tokenizer.ggml.merges[%llu] is not \"left right\"", path,
                          (unsigned long long)i);
            goto done;
        }
        size_t na = (size_t)(sp - s);
        QL_TRY_GOTO(st,
                    ql_tok_add_merge(m, s, na, sp + 1, merges[i].len - na - 1, (uint32_t)i,
                                     "tokenizer.ggml.merges"),
                    done);
    }
    /* control tokens are HF's special added tokens; user-defined ones are
     * non-special added tokens */
    for (uint64_t i = 0; i < n_types; i++) {
        if (types[i] != 3 && types[i] != 4) continue;
        QL_TRY_GOTO(st,
                    ql_tok_add_added(m, (int32_t)i, tokens[i].p, tokens[i].len, types[i] == 3,
                                     types[i] == 4, 0, 0, 0),
                    done);
    }
    ql_gguf_str pre = {"gpt-2", 5};
    if (ql_gguf_find_kv(&f, "tokenizer.ggml.pre"))
        QL_TRY_GOTO(st, ql_gguf_get_str(&f, "tokenizer.ggml.pre", &pre), done);
    QL_TRY_GOTO(st, set_pre(m, pre), done);
    m->dec[m->n_dec++] = (ql_tok_dec){.kind = QL_DEC_BYTELEVEL};
    QL_TRY_GOTO(st, ql_tok_model_finish(m), done);

    int64_t id;
    QL_TRY_GOTO(st, ql_gguf_token_id(&f, "bos", &id), done);
    m->info.bos_id = (int32_t)id;
    QL_TRY_GOTO(st, ql_gguf_token_id(&f, "eos", &id), done);
    m->info.eos_id = (int32_t)id;
    QL_TRY_GOTO(st, ql_gguf_token_id(&f, "padding", &id), done);
    m->info.pad_id = (int32_t)id;
    QL_TRY_GOTO(st, ql_gguf_token_id(&f, "unknown", &id), done);
    m->info.unk_id = (int32_t)id;
    if (ql_gguf_find_kv(&f, "tokenizer.ggml.add_bos_token"))
        QL_TRY_GOTO(st, ql_gguf_get_bool(&f, "tokenizer.ggml.add_bos_token", &m->info.add_bos),
                    done);
    if (ql_gguf_find_kv(&f, "tokenizer.ggml.add_eos_token"))
        QL_TRY_GOTO(st, ql_gguf_get_bool(&f, "tokenizer.ggml.add_eos_token", &m->info.add_eos),
                    done);
    if ((m->info.add_bos && m->info.bos_id < 0) || (m->info.add_eos && m->info.eos_id < 0)) {
        st = ql_error(QL_EFORMAT, "%s: add_%s_token is true but there is no %s_token_id", path,
                      m->info.add_bos && m->info.bos_id < 0 ? "bos" : "eos",
                      m->info.add_bos && m->info.bos_id < 0 ? "bos" : "eos");
        goto done;
    }
    m->n_prefix = m->info.add_bos;
    m->prefix[0] = m->info.bos_id;
    m->n_suffix = m->info.add_eos;
    m->suffix[0] = m->info.eos_id;
    if (ql_gguf_find_kv(&f, "tokenizer.chat_template")) {
        ql_gguf_str ct;
        QL_TRY_GOTO(st, ql_gguf_get_str(&f, "tokenizer.chat_template", &ct), done);
        m->chat_template = malloc(ct.len + 1);
        if (!m->chat_template) {
            st = ql_error(QL_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        memcpy(m->chat_template, ct.p, ct.len);
        m->chat_template[ct.len] = 0;
        m->info.chat_template = m->chat_template;
    }
done:
    free(tokens);
    free(merges);
    free(types);
    ql_gguf_close(&f);
    if (st != QL_OK) {
        ql_tok_model_unref(m);
        return st;
    }
    *out = m;
    return QL_OK;
}
