/* tokenizer.json (and tokenizer_config.json beside it) -> the shared tables.
 * Only what can be reproduced exactly is accepted: a BPE model, the
 * normalizers, pre-tokenizers, decoders and post-processors of the
 * tokenizers listed in data/tokenizer.h. Anything else is QL_EUNSUPPORTED
 * naming the file, the field and the type found. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/fsutil.h"
#include "data/tokenizer_impl.h"

static const char *jtype(const json_t *j) {
    const char *s = json_string_value(json_object_get(j, "type"));
    return s ? s : "";
}

static int jbool(const json_t *j, const char *key, int dflt) {
    const json_t *v = json_object_get(j, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A string field (NUL-safe length); NULL when absent or not a string. */
static const char *jstr(const json_t *j, const char *key, size_t *len) {
    const json_t *v = json_object_get(j, key);
    if (!json_is_string(v)) return NULL;
    if (len) *len = json_string_length(v);
    return json_string_value(v);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static ql_status unsupported(const ql_tok_model *m, const char *field, const char *type) {
    return ql_error(QL_EUNSUPPORTED,
                    "%s: %s of type \"%s\" is not supported (qlora reproduces byte-level BPE as in "
                    "GPT-2/Llama-3/Qwen2/SmolLM2 and SentencePiece-style BPE as in "
                    "Llama-2/Mistral; see docs/tokenizer.md)",
                    m->path, field, type);
}

/* {"String": s} patterns only: a literal. */
static ql_status literal_pattern(const ql_tok_model *m, const json_t *j, const char *field,
                                 char **out, size_t *len) {
    const json_t *pat = json_object_get(j, "pattern");
    size_t n;
    const char *s = jstr(pat, "String", &n);
    if (!s) {
        if (json_object_get(pat, "Regex"))
            return unsupported(m, field, "Replace with a Regex pattern");
        return ql_error(QL_EFORMAT, "%s: %s: \"pattern\" must be {\"String\": ...}", m->path,
                        field);
    }
    *out = dup_n(s, n);
    *len = n;
    return *out ? QL_OK : ql_error(QL_ENOMEM, "%s: out of memory", m->path);
}

static ql_status parse_prepend_scheme(const ql_tok_model *m, const json_t *j, const char *field,
                                      ql_tok_prepend *out) {
    const char *s = jstr(j, "prepend_scheme", NULL);
    *out = QL_PREPEND_ALWAYS;
    if (s && !strcmp(s, "first"))
        *out = QL_PREPEND_FIRST;
    else if (s && !strcmp(s, "never"))
        *out = QL_PREPEND_NEVER;
    else if (s && strcmp(s, "always"))
        return ql_error(QL_EFORMAT, "%s: %s: prepend_scheme \"%s\" is not always/first/never",
                        m->path, field, s);
    if (!jbool(j, "add_prefix_space", 1)) *out = QL_PREPEND_NEVER;
    return QL_OK;
}

static ql_status parse_normalizer(ql_tok_model *m, const json_t *j, const char *field) {
    if (!j || json_is_null(j)) return QL_OK;
    const char *type = jtype(j);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(j, "normalizers");
        size_t i;
        const json_t *e;
        char sub[128];
        json_array_foreach(list, i, e) {
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", field, i);
            QL_TRY(parse_normalizer(m, e, sub));
        }
        return QL_OK;
    }
    if (m->n_norm == QL_TOK_MAX_NORM)
        return ql_error(QL_EUNSUPPORTED, "%s: more than %d normalizers", m->path, QL_TOK_MAX_NORM);
    ql_tok_norm *n = &m->norm[m->n_norm];
    memset(n, 0, sizeof *n);
    if (!strcmp(type, "NFC")) {
        n->kind = QL_NORM_NFC;
    } else if (!strcmp(type, "Prepend")) {
        size_t len;
        const char *s = jstr(j, "prepend", &len);
        if (!s) return ql_error(QL_EFORMAT, "%s: %s: Prepend without \"prepend\"", m->path, field);
        n->kind = QL_NORM_PREPEND;
        n->a = dup_n(s, len);
        n->a_len = len;
    } else if (!strcmp(type, "Replace")) {
        size_t len;
        const char *c = jstr(j, "content", &len);
        if (!c) return ql_error(QL_EFORMAT, "%s: %s: Replace without \"content\"", m->path, field);
        QL_TRY(literal_pattern(m, j, field, &n->a, &n->a_len));
        n->kind = QL_NORM_REPLACE;
        n->b = dup_n(c, len);
        n->b_len = len;
    } else {
        return unsupported(m, field, type);
    }
    m->n_norm++;
    return QL_OK;
}

static ql_status add_pretok(ql_tok_model *m, const char *field, ql_tok_pretok **out) {
    if (m->n_pretok == QL_TOK_MAX_PRETOK)
        return ql_error(QL_EUNSUPPORTED, "%s: more than %d pre-tokenizers", m->path,
                        QL_TOK_MAX_PRETOK);
    /* Later steps would see GPT-2-mapped characters, which this code does
     * not model: byte-level mapping has to come last. */
    if (m->byte_level)
        return ql_error(QL_EUNSUPPORTED, "%s: %s follows a ByteLevel pre-tokenizer", m->path,
                        field);
    *out = &m->pretok[m->n_pretok++];
    memset(*out, 0, sizeof **out);
    return QL_OK;
}

static ql_status parse_pretok(ql_tok_model *m, const json_t *j, const char *field) {
    if (!j || json_is_null(j)) return QL_OK;
    const char *type = jtype(j);
    ql_tok_pretok *op = NULL;
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(j, "pretokenizers");
        size_t i;
        const json_t *e;
        char sub[128];
        json_array_foreach(list, i, e) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", field, i);
            QL_TRY(parse_pretok(m, e, sub));
        }
        return QL_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        QL_TRY(add_pretok(m, field, &op));
        op->kind = QL_PT_BYTELEVEL;
        op->add_prefix_space = jbool(j, "add_prefix_space", 1);
        m->byte_level = 1;
        if (jbool(j, "use_regex", 1))
            QL_TRY(ql_tok_regex_compile(ql_tok_gpt2_regex, strlen(ql_tok_gpt2_regex), 0, m->path,
                                        &op->re, &op->jit));
        return QL_OK;
    }
    if (!strcmp(type, "Split")) {
        QL_TRY(add_pretok(m, field, &op));
        op->kind = QL_PT_SPLIT;
        const json_t *pat = json_object_get(j, "pattern");
        size_t len;
        const char *s = jstr(pat, "Regex", &len);
        int literal = 0;
        if (!s) {
            s = jstr(pat, "String", &len);
            literal = 1;
        }
        if (!s)
            return ql_error(QL_EFORMAT, "%s: %s: Split needs a {\"Regex\"} or {\"String\"} pattern",
                            m->path, field);
        char where[512];
        snprintf(where, sizeof where, "%s: %s", m->path, field);
        QL_TRY(ql_tok_regex_compile(s, len, literal, where, &op->re, &op->jit));
        const char *b = jstr(j, "behavior", NULL);
        static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                                      "Contiguous"};
        int found = 0;
        for (int k = 0; k < 5 && b; k++)
            if (!strcmp(b, names[k])) op->behavior = (ql_tok_behavior)k, found = 1;
        if (!found)
            return ql_error(QL_EFORMAT, "%s: %s: unknown Split behavior \"%s\"", m->path, field,
                            b ? b : "(missing)");
        op->invert = jbool(j, "invert", 0);
        return QL_OK;
    }
    if (!strcmp(type, "Digits")) {
        QL_TRY(add_pretok(m, field, &op));
        op->kind = QL_PT_NUMERIC;
        /* char::is_numeric is the N categories, one char per match */
        QL_TRY(ql_tok_regex_compile("\\p{N}", 5, 0, m->path, &op->re, &op->jit));
        op->behavior = jbool(j, "individual_digits", 0) ? QL_SPLIT_ISOLATED : QL_SPLIT_CONTIGUOUS;
        return QL_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        QL_TRY(add_pretok(m, field, &op));
        op->kind = QL_PT_METASPACE;
        size_t len;
        const char *r = jstr(j, "replacement", &len);
        if (!r || len == 0 || len > 4)
            return ql_error(QL_EFORMAT, "%s: %s: Metaspace needs a one-char \"replacement\"",
                            m->path, field);
        memcpy(op->rep, r, len);
        op->rep_len = len;
        QL_TRY(parse_prepend_scheme(m, j, field, &op->prepend));
        op->split = jbool(j, "split", 1);
        return QL_OK;
    }
    return unsupported(m, field, type);
}

static ql_status parse_decoder(ql_tok_model *m, const json_t *j, const char *field) {
    if (!j || json_is_null(j)) return QL_OK;
    const char *type = jtype(j);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(j, "decoders");
        size_t i;
        const json_t *e;
        char sub[128];
        json_array_foreach(list, i, e) {
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", field, i);
            QL_TRY(parse_decoder(m, e, sub));
        }
        return QL_OK;
    }
    if (m->n_dec == QL_TOK_MAX_DEC)
        return ql_error(QL_EUNSUPPORTED, "%s: more than %d decoders", m->path, QL_TOK_MAX_DEC);
    ql_tok_dec *d = &m->dec[m->n_dec];
    memset(d, 0, sizeof *d);
    size_t len;
    if (!strcmp(type, "ByteLevel")) {
        d->kind = QL_DEC_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d->kind = QL_DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->kind = QL_DEC_FUSE;
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(j, "replacement", &len);
        if (!r || len == 0)
            return ql_error(QL_EFORMAT, "%s: %s: Metaspace needs a \"replacement\"", m->path,
                            field);
        d->kind = QL_DEC_METASPACE;
        d->a = dup_n(r, len);
        d->a_len = len;
        QL_TRY(parse_prepend_scheme(m, j, field, &d->prepend));
    } else if (!strcmp(type, "Replace")) {
        const char *c = jstr(j, "content", &len);
        if (!c) return ql_error(QL_EFORMAT, "%s: %s: Replace without \"content\"", m->path, field);
        d->kind = QL_DEC_REPLACE;
        d->b = dup_n(c, len);
        d->b_len = len;
        QL_TRY(literal_pattern(m, j, field, &d->a, &d->a_len));
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(j, "content", &len);
        if (!c || !len)
            return ql_error(QL_EFORMAT, "%s: %s: Strip needs a one-char \"content\"", m->path,
                            field);
        d->kind = QL_DEC_STRIP;
        d->a = dup_n(c, len);
        d->a_len = len;
        d->start = (int)json_integer_value(json_object_get(j, "start"));
        d->stop = (int)json_integer_value(json_object_get(j, "stop"));
    } else {
        return unsupported(m, field, type);
    }
    m->n_dec++;
    return QL_OK;
}

static ql_status template_id(ql_tok_model *m, const json_t *specials, const char *name,
                             const char *field, int32_t *ids, int *n) {
    const json_t *ent = json_object_get(specials, name);
    const json_t *list = json_object_get(ent, "ids");
    if (!json_is_array(list))
        return ql_error(QL_EFORMAT, "%s: %s: special token \"%s\" has no ids", m->path, field,
                        name);
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e) {
        if (*n == QL_TOK_MAX_TEMPLATE)
            return ql_error(QL_EUNSUPPORTED, "%s: %s: template too long", m->path, field);
        ids[(*n)++] = (int32_t)json_integer_value(e);
    }
    return QL_OK;
}

static ql_status parse_post(ql_tok_model *m, const json_t *j, const char *field) {
    if (!j || json_is_null(j)) return QL_OK;
    const char *type = jtype(j);
    if (!strcmp(type, "ByteLevel")) return QL_OK; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(j, "processors");
        size_t i;
        const json_t *e;
        char sub[128];
        json_array_foreach(list, i, e) {
            snprintf(sub, sizeof sub, "%s.processors[%zu]", field, i);
            QL_TRY(parse_post(m, e, sub));
        }
        return QL_OK;
    }
    if (strcmp(type, "TemplateProcessing")) return unsupported(m, field, type);
    const json_t *single = json_object_get(j, "single"),
                 *specials = json_object_get(j, "special_tokens");
    size_t i;
    const json_t *e;
    int seen_a = 0;
    m->n_prefix = m->n_suffix = 0;
    json_array_foreach(single, i, e) {
        const json_t *sp = json_object_get(e, "SpecialToken");
        if (sp) {
            const char *name = jstr(sp, "id", NULL);
            if (!name)
                return ql_error(QL_EFORMAT, "%s: %s.single[%zu]: SpecialToken without id", m->path,
                                field, i);
            if (seen_a)
                QL_TRY(template_id(m, specials, name, field, m->suffix, &m->n_suffix));
            else
                QL_TRY(template_id(m, specials, name, field, m->prefix, &m->n_prefix));
        } else if (json_object_get(e, "Sequence")) {
            seen_a = 1;
        }
    }
    return QL_OK;
}

static ql_status parse_model(ql_tok_model *m, const json_t *model) {
    const char *type = jtype(model);
    if (!json_is_object(model)) return ql_error(QL_EFORMAT, "%s: no \"model\" object", m->path);
    if (*type ? strcmp(type, "BPE") != 0 : !json_object_get(model, "merges"))
        return unsupported(m, "model", *type ? type : "(untyped, without merges)");
    const json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return unsupported(m, "model.dropout", "BPE dropout (random segmentation)");
    static const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        size_t len = 0;
        if (jstr(model, affixes[k], &len) && len)
            return ql_error(QL_EUNSUPPORTED, "%s: model.%s is not supported", m->path, affixes[k]);
    }
    m->byte_fallback = jbool(model, "byte_fallback", 0);
    m->fuse_unk = jbool(model, "fuse_unk", 0);
    m->ignore_merges = jbool(model, "ignore_merges", 0);

    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return ql_error(QL_EFORMAT, "%s: model.vocab must be an object", m->path);
    QL_TRY(ql_tok_smap_init(&m->vocab, json_object_size(vocab)));
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return ql_error(QL_EFORMAT, "%s: model.vocab[\"%s\"] is not a token id", m->path, key);
        QL_TRY(ql_tok_set_piece(m, (int32_t)json_integer_value(v), key, strlen(key)));
    }

    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges))
        return ql_error(QL_EFORMAT, "%s: model.merges must be an array", m->path);
    QL_TRY(ql_tok_pmap_init(&m->merges, json_array_size(merges)));
    size_t i;
    const json_t *e;
    uint32_t rank = 0;
    json_array_foreach(merges, i, e) {
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(e)) {
            const char *s = json_string_value(e);
            size_t n = json_string_length(e);
            if (n >= 8 && !memcmp(s, "#version", 8)) continue;
            const char *sp = memchr(s, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
                return ql_error(QL_EFORMAT, "%s: model.merges[%zu] \"%s\" is not \"left right\"",
                                m->path, i, s);
            a = s;
            na = (size_t)(sp - s);
            b = sp + 1;
            nb = n - na - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0));
            na = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1));
            nb = json_string_length(json_array_get(e, 1));
        } else {
            return ql_error(QL_EFORMAT,
                            "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", m->path,
                            i);
        }
        QL_TRY(ql_tok_add_merge(m, a, na, b, nb, rank++, "model.merges"));
    }

    size_t ulen;
    const char *unk = jstr(model, "unk_token", &ulen);
    if (unk) {
        m->unk_id = ql_tok_smap_get(&m->vocab, m->pool, unk, ulen);
        if (m->unk_id < 0)
            return ql_error(QL_EFORMAT, "%s: model.unk_token \"%s\" is not in the vocabulary",
                            m->path, unk);
        m->info.unk_id = m->unk_id;
    }
    return QL_OK;
}

static ql_status parse_added(ql_tok_model *m, const json_t *list) {
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e) {
        size_t n;
        const char *content = jstr(e, "content", &n);
        const json_t *id = json_object_get(e, "id");
        if (!content || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT32_MAX)
            return ql_error(QL_EFORMAT, "%s: added_tokens[%zu] needs \"id\" and \"content\"",
                            m->path, i);
        int special = jbool(e, "special", 0);
        QL_TRY(ql_tok_add_added(m, (int32_t)json_integer_value(id), content, n, special,
                                jbool(e, "normalized", !special), jbool(e, "lstrip", 0),
                                jbool(e, "rstrip", 0), jbool(e, "single_word", 0)));
    }
    return QL_OK;
}

/* tokenizer_config.json writes tokens as "..." or {"content": "...", ...}. */
static const char *config_token(const json_t *cfg, const char *key, size_t *len) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

static ql_status config_token_id(ql_tok_model *m, const char *cfg_path, const json_t *cfg,
                                 const char *key, int32_t *id) {
    size_t n;
    const char *s = config_token(cfg, key, &n);
    if (!s) return QL_OK;
    for (size_t i = 0; i < m->n_added; i++)
        if (m->added[i].len == n && !memcmp(m->pool + m->added[i].off, s, n)) {
            *id = m->added[i].id;
            return QL_OK;
        }
    int32_t v = ql_tok_smap_get(&m->vocab, m->pool, s, n);
    if (v < 0)
        return ql_error(QL_EFORMAT, "%s: %s \"%s\" is not a token of %s", cfg_path, key, s,
                        m->path);
    *id = v;
    return QL_OK;
}

static ql_status read_config(ql_tok_model *m, const char *dir) {
    char *jinja = ql_fs_join(dir, "chat_template.jinja");
    char *cfg_path = ql_fs_join(dir, "tokenizer_config.json");
    ql_status st = QL_OK;
    json_t *cfg = NULL;
    int has_bos_flag = 0, has_eos_flag = 0;
    if (!jinja || !cfg_path) {
        st = QL_ENOMEM;
        goto done;
    }
    if (ql_fs_exists(cfg_path)) {
        json_error_t err;
        cfg = json_load_file(cfg_path, JSON_ALLOW_NUL, &err);
        if (!cfg) {
            st = ql_error(QL_EFORMAT, "%s:%d:%d: %s", cfg_path, err.line, err.column, err.text);
            goto done;
        }
        QL_TRY_GOTO(st, config_token_id(m, cfg_path, cfg, "bos_token", &m->info.bos_id), done);
        QL_TRY_GOTO(st, config_token_id(m, cfg_path, cfg, "eos_token", &m->info.eos_id), done);
        QL_TRY_GOTO(st, config_token_id(m, cfg_path, cfg, "pad_token", &m->info.pad_id), done);
        QL_TRY_GOTO(st, config_token_id(m, cfg_path, cfg, "unk_token", &m->info.unk_id), done);
        const json_t *ab = json_object_get(cfg, "add_bos_token");
        const json_t *ae = json_object_get(cfg, "add_eos_token");
        if (json_is_boolean(ab)) has_bos_flag = 1, m->info.add_bos = json_is_true(ab);
        if (json_is_boolean(ae)) has_eos_flag = 1, m->info.add_eos = json_is_true(ae);
        const json_t *ct = json_object_get(cfg, "chat_template");
        if (json_is_array(ct)) {
            /* [{"name": ..., "template": ...}]: the "default" one */
            size_t i;
            const json_t *e, *pick = json_array_get(ct, 0);
            json_array_foreach(ct, i, e) {
                const char *name = jstr(e, "name", NULL);
                if (name && !strcmp(name, "default")) pick = e;
            }
            ct = json_object_get(pick, "template");
        }
        if (json_is_string(ct)) m->chat_template = strdup(json_string_value(ct));
    }
    if (ql_fs_exists(jinja)) {
        char *text;
        size_t len;
        QL_TRY_GOTO(st, ql_fs_read_file(jinja, &text, &len), done);
        free(m->chat_template);
        m->chat_template = text;
    }
    /* Without a config the post-processor's template says what is added. */
    if (m->info.bos_id < 0 && m->n_prefix == 1) m->info.bos_id = m->prefix[0];
    if (m->info.eos_id < 0 && m->n_suffix == 1) m->info.eos_id = m->suffix[0];
    if (has_bos_flag) {
        if (m->info.add_bos && m->info.bos_id < 0) {
            st = ql_error(QL_EFORMAT, "%s: add_bos_token is true but there is no bos_token",
                          cfg_path);
            goto done;
        }
        m->n_prefix = m->info.add_bos;
        m->prefix[0] = m->info.bos_id;
    } else {
        m->info.add_bos = m->n_prefix > 0;
    }
    if (has_eos_flag) {
        if (m->info.add_eos && m->info.eos_id < 0) {
            st = ql_error(QL_EFORMAT, "%s: add_eos_token is true but there is no eos_token",
                          cfg_path);
            goto done;
        }
        m->n_suffix = m->info.add_eos;
        m->suffix[0] = m->info.eos_id;
    } else {
        m->info.add_eos = m->n_suffix > 0;
    }
    m->info.chat_template = m->chat_template;
done:
    json_decref(cfg);
    free(jinja);
    free(cfg_path);
    return st;
}

ql_status ql_tok_load_json(const char *json_path, const char *config_dir, ql_tok_model **out) {
    ql_tok_model *m;
    QL_TRY(ql_tok_model_new(json_path, &m));
    json_error_t err;
    json_t *root = json_load_file(json_path, JSON_ALLOW_NUL, &err);
    ql_status st = QL_OK;
    if (!root) {
        st = ql_error(QL_EFORMAT, "%s:%d:%d: %s", json_path, err.line, err.column, err.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        st = ql_error(QL_EFORMAT, "%s: not a tokenizer.json (the top level is not an object)",
                      json_path);
        goto fail;
    }
    QL_TRY_GOTO(st, parse_model(m, json_object_get(root, "model")), fail);
    QL_TRY_GOTO(st, parse_added(m, json_object_get(root, "added_tokens")), fail);
    QL_TRY_GOTO(st, parse_normalizer(m, json_object_get(root, "normalizer"), "normalizer"), fail);
    QL_TRY_GOTO(st, parse_pretok(m, json_object_get(root, "pre_tokenizer"), "pre_tokenizer"), fail);
    QL_TRY_GOTO(st, parse_decoder(m, json_object_get(root, "decoder"), "decoder"), fail);
    QL_TRY_GOTO(st, parse_post(m, json_object_get(root, "post_processor"), "post_processor"), fail);
    QL_TRY_GOTO(st, ql_tok_model_finish(m), fail);
    QL_TRY_GOTO(st, read_config(m, config_dir), fail);
    json_decref(root);
    *out = m;
    return QL_OK;
fail:
    json_decref(root);
    ql_tok_model_unref(m);
    return st;
}
