#include "data/records.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/fsutil.h"

#define IGNORE (-100)

typedef struct loader {
    const char *path;
    int64_t line;
    ql_tokenizer *tok;
    const ql_tokenizer_info *info;
    const ql_records_options *o;
    ql_records_report *rep;
    ql_token_data *d;
    int64_t cap_rec, cap_tok;
    int bad;            /* the failing record was bad (skippable) */
    ql_bad_reason why;  /* ... for this reason */
    ql_ids ids, prompt; /* one record's ids; its prompt's */
    int32_t *lab;       /* its labels */
    size_t lab_cap;
    char *buf; /* prompt + completion; token bytes */
    size_t buf_cap;
    size_t *tok_start, *tok_end; /* byte range of each id in a chat rendering (one block) */
    size_t off_cap;
    ql_chat_message *msg;
    size_t msg_cap;
    ql_chat_template tmpl;
    int tmpl_ready;
    ql_chat_text render;
    int64_t *lens; /* length of every tokenized record, for the percentiles */
    int64_t n_lens, cap_lens;
} loader;

const char *ql_bad_reason_name(ql_bad_reason r) {
    static const char *const names[QL_BAD__N] = {
        "invalid JSON", "invalid UTF-8", "missing or mixed fields",
        "wrong type",   "unknown role",  "bad conversation",
        "bad token ids"};
    return r >= 0 && r < QL_BAD__N ? names[r] : "?";
}

const char *ql_record_format_name(ql_record_format f) {
    static const char *const names[QL_REC__N] = {"input_ids", "text", "prompt/completion",
                                                 "messages"};
    return f >= 0 && f < QL_REC__N ? names[f] : "?";
}

/* A bad record: the message names file:line; the caller skips or stops. */
__attribute__((format(printf, 3, 4))) static ql_status bad(loader *L, ql_bad_reason why,
                                                           const char *fmt, ...) {
    char msg[QL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    L->bad = 1;
    L->why = why;
    return ql_error(QL_EFORMAT, "%s:%lld: %s", L->path, (long long)L->line, msg);
}

static ql_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return QL_OK;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return ql_error(QL_ENOMEM, "out of memory reading training records");
    *p = q;
    *cap = c;
    return QL_OK;
}

/* ---- output --------------------------------------------------------------- */

static ql_status reserve(loader *L, int64_t n_tok) {
    return ql_token_data_reserve(L->d, &L->cap_rec, &L->cap_tok, n_tok);
}

/* L->ids / L->lab hold one record: apply the length policy, shift, keep. */
static ql_status commit(loader *L, ql_record_format fmt) {
    ql_records_report *r = L->rep;
    ql_token_data *d = L->d;
    int64_t len = (int64_t)L->ids.n, max = L->o->max_seq_len;
    size_t cap = (size_t)L->cap_lens;
    QL_TRY(grow((void **)&L->lens, &cap, (size_t)L->n_lens + 1, sizeof *L->lens));
    L->cap_lens = (int64_t)cap;
    L->lens[L->n_lens++] = len;
    if (len > max) {
        if (L->o->on_overlength == QL_OVERLENGTH_ERROR)
            return ql_error(QL_EFORMAT,
                            "%s:%lld: the record has %lld tokens, more than max_seq_len = %lld "
                            "(data.on_overlength is error; truncate or drop let it through)",
                            L->path, (long long)L->line, (long long)len, (long long)max);
        if (L->o->on_overlength == QL_OVERLENGTH_DROP) {
            r->dropped++;
            r->tokens_dropped += len;
            return QL_OK;
        }
    }
    /* Truncate first, then shift: the last kept token predicts nothing, as
     * when a Hugging Face collator truncates input_ids and labels together. */
    int64_t n = len < max ? len : max, n_tg = 0;
    for (int64_t t = 0; t + 1 < n; t++) n_tg += L->lab[t + 1] >= 0;
    if (n_tg == 0) {
        r->no_loss++;
        return QL_OK;
    }
    QL_TRY(reserve(L, n));
    int32_t *ids = d->ids + d->off[d->n], *tg = d->targets + d->off[d->n];
    for (int64_t t = 0; t < n; t++) {
        ids[t] = L->ids.v[t];
        tg[t] = t + 1 < n ? L->lab[t + 1] : IGNORE;
        if (ids[t] > d->max_id) d->max_id = ids[t];
        if (tg[t] > d->max_id) d->max_id = tg[t];
    }
    if (n < len) {
        d->n_truncated++;
        r->truncated++;
        r->tokens_lost += len - n;
    }
    if (n > d->max_len) d->max_len = n;
    d->n_targets += n_tg;
    d->line[d->n] = L->line;
    d->off[d->n + 1] = d->off[d->n] + n;
    d->n++;
    r->kept++;
    r->kept_by[fmt]++;
    r->tokens += n;
    r->loss_tokens += n_tg;
    return QL_OK;
}

static ql_status labels_for(loader *L, size_t n) {
    return grow((void **)&L->lab, &L->lab_cap, n ? n : 1, sizeof *L->lab);
}

/* ---- formats -------------------------------------------------------------- */

static ql_status need_tokenizer(loader *L, const char *what) {
    if (L->tok) return QL_OK;
    return ql_error(QL_EINVAL,
                    "%s:%lld: a %s record needs the model's tokenizer, and none was given "
                    "(only pre-tokenized {\"input_ids\": [...]} records can do without)",
                    L->path, (long long)L->line, what);
}

static ql_status need_eos(loader *L, const char *what) {
    if (L->info->eos_id >= 0) return QL_OK;
    return ql_error(QL_EUNSUPPORTED,
                    "%s:%lld: %s records end with the EOS token so the model learns to stop, "
                    "but the tokenizer %s has no eos_token",
                    L->path, (long long)L->line, what, L->info->path);
}

static ql_status do_tokens(loader *L, const json_t *obj) {
    const json_t *ids = json_object_get(obj, "input_ids");
    if (!json_is_array(ids))
        return bad(L, QL_BAD_TYPE, "\"input_ids\" must be a list of token ids, got %s",
                   ql_json_kind(ids));
    size_t len = json_array_size(ids);
    if (len == 0) return bad(L, QL_BAD_TOKENS, "\"input_ids\" is empty");
    const json_t *labels = json_object_get(obj, "labels");
    if (labels && json_is_null(labels)) labels = NULL;
    if (labels && !json_is_array(labels))
        return bad(L, QL_BAD_TYPE, "\"labels\" must be a list, got %s", ql_json_kind(labels));
    if (labels && json_array_size(labels) != len)
        return bad(L, QL_BAD_TOKENS, "\"labels\" has %zu entries but \"input_ids\" has %zu",
                   json_array_size(labels), len);
    int64_t vocab = L->tok ? L->info->vocab_size : INT32_MAX;
    L->ids.n = 0;
    QL_TRY(ql_ids_reserve(&L->ids, len));
    QL_TRY(labels_for(L, len));
    for (size_t t = 0; t < len; t++) {
        const json_t *v = json_array_get(ids, t);
        if (!json_is_integer(v))
            return bad(L, QL_BAD_TYPE, "input_ids[%zu]: expected a token id (an integer), got %s",
                       t, ql_json_kind(v));
        json_int_t x = json_integer_value(v);
        if (x < 0 || x >= vocab)
            return bad(L, QL_BAD_TOKENS, "input_ids[%zu] = %lld is not a token id (0..%lld)", t,
                       (long long)x, (long long)vocab - 1);
        L->ids.v[L->ids.n++] = (int32_t)x;
        L->lab[t] = (int32_t)x;
    }
    for (size_t t = 0; labels && t < len; t++) {
        const json_t *v = json_array_get(labels, t);
        if (!json_is_integer(v))
            return bad(L, QL_BAD_TYPE, "labels[%zu]: expected a token id or -100, got %s", t,
                       ql_json_kind(v));
        json_int_t x = json_integer_value(v);
        if ((x < 0 && x != IGNORE) || x >= vocab)
            return bad(L, QL_BAD_TOKENS, "labels[%zu] = %lld is neither a token id nor -100", t,
                       (long long)x);
        L->lab[t] = (int32_t)x;
    }
    return commit(L, QL_REC_TOKENS);
}

static ql_status get_string(loader *L, const json_t *obj, const char *key, const char **s,
                            size_t *n) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return bad(L, QL_BAD_FIELDS, "the record has no \"%s\"", key);
    if (!json_is_string(v))
        return bad(L, QL_BAD_TYPE, "\"%s\" must be a string, got %s", key, ql_json_kind(v));
    *s = json_string_value(v);
    *n = json_string_length(v);
    return QL_OK;
}

/* [BOS] text [EOS], BOS as the tokenizer's config says; EOS always (TRL
 * appends eos_token unless the text already ends with it). */
static ql_status do_text(loader *L, const json_t *obj) {
    const char *s = NULL;
    size_t n = 0;
    QL_TRY(get_string(L, obj, "text", &s, &n));
    QL_TRY(need_tokenizer(L, "\"text\""));
    QL_TRY(need_eos(L, "\"text\""));
    L->ids.n = 0;
    if (L->info->add_bos) QL_TRY(ql_ids_push(&L->ids, L->info->bos_id));
    QL_TRY(ql_tokenizer_encode(L->tok, s, n, QL_TOK_PARSE_SPECIAL, &L->ids));
    if (L->ids.n == 0 || L->ids.v[L->ids.n - 1] != L->info->eos_id)
        QL_TRY(ql_ids_push(&L->ids, L->info->eos_id));
    QL_TRY(labels_for(L, L->ids.n));
    memcpy(L->lab, L->ids.v, L->ids.n * sizeof *L->lab);
    return commit(L, QL_REC_TEXT);
}

/* TRL's prompt-completion rule: tokenize prompt + completion as one text,
 * and the first len(tokenize(prompt)) tokens are the prompt. */
static ql_status do_prompt(loader *L, const json_t *obj) {
    const char *p = NULL, *c = NULL;
    size_t np = 0, nc = 0;
    QL_TRY(get_string(L, obj, "prompt", &p, &np));
    QL_TRY(get_string(L, obj, "completion", &c, &nc));
    QL_TRY(need_tokenizer(L, "prompt/completion"));
    QL_TRY(need_eos(L, "prompt/completion"));
    QL_TRY(grow((void **)&L->buf, &L->buf_cap, np + nc + 1, 1));
    memcpy(L->buf, p, np);
    memcpy(L->buf + np, c, nc);
    L->ids.n = L->prompt.n = 0;
    if (L->info->add_bos) {
        QL_TRY(ql_ids_push(&L->ids, L->info->bos_id));
        QL_TRY(ql_ids_push(&L->prompt, L->info->bos_id));
    }
    QL_TRY(ql_tokenizer_encode(L->tok, p, np, QL_TOK_PARSE_SPECIAL, &L->prompt));
    QL_TRY(ql_tokenizer_encode(L->tok, L->buf, np + nc, QL_TOK_PARSE_SPECIAL, &L->ids));
    if (L->ids.n == 0 || L->ids.v[L->ids.n - 1] != L->info->eos_id)
        QL_TRY(ql_ids_push(&L->ids, L->info->eos_id));
    size_t k = L->prompt.n;
    if (k > L->ids.n || memcmp(L->prompt.v, L->ids.v, k * sizeof *L->ids.v))
        L->rep->prompt_merged++;
    QL_TRY(labels_for(L, L->ids.n));
    for (size_t t = 0; t < L->ids.n; t++) L->lab[t] = t < k ? IGNORE : L->ids.v[t];
    return commit(L, QL_REC_PROMPT);
}

/* ---- chat: line tokens up with the rendered text -------------------------- */

/* GPT-2's byte <-> character table, inverted: the byte a vocabulary
 * character stands for, or -1 for a character outside the table. */
static int bytelevel_byte(uint32_t c) {
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return (int)c;
    if (c >= 0x100 && c <= 0x143) {
        int k = (int)(c - 0x100), b;
        for (b = 0; b < 256; b++) {
            int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            if (!self && k-- == 0) return b;
        }
    }
    return -1;
}

static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *k) {
    uint32_t c = s[0];
    size_t m = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (m > n) m = n;
    if (m == 2) c &= 0x1F;
    if (m == 3) c &= 0x0F;
    if (m == 4) c &= 0x07;
    for (size_t i = 1; i < m; i++) c = (c << 6) | (s[i] & 0x3F);
    *k = m;
    return c;
}

/* The text bytes a non-special token stands for, into L->buf. */
static ql_status token_bytes(loader *L, int32_t id, size_t *len) {
    size_t n;
    const char *piece = ql_tokenizer_piece(L->tok, id, &n);
    if (!piece) return ql_error(QL_EINTERNAL, "token %d has no piece", id);
    QL_TRY(grow((void **)&L->buf, &L->buf_cap, n + 1, 1));
    const unsigned char *u = (const unsigned char *)piece;
    int byte_level = !strcmp(L->info->kind, "byte-level BPE");
    if (!byte_level && n == 6 && !memcmp(piece, "<0x", 3) && piece[5] == '>') {
        L->buf[0] = (char)strtol(piece + 3, NULL, 16); /* SentencePiece byte fallback */
        *len = 1;
        return QL_OK;
    }
    size_t o = 0, k;
    for (size_t i = 0; i < n; i += k) {
        uint32_t c = utf8_next(u + i, n - i, &k);
        int b = byte_level ? bytelevel_byte(c) : c == 0x2581 ? ' ' : -1;
        if (b >= 0) {
            L->buf[o++] = (char)b;
        } else {
            memcpy(L->buf + o, u + i, k);
            o += k;
        }
    }
    *len = o;
    return QL_OK;
}

static ql_status misaligned(loader *L, size_t pos) {
    return ql_error(QL_EUNSUPPORTED,
                    "%s:%lld: cannot line the tokens of the chat rendering up with its text "
                    "(at byte %zu); the loss mask would be guessed, so the record is refused "
                    "(a tokenizer feature docs/data.md lists as unsupported)",
                    L->path, (long long)L->line, pos);
}

/* Byte ranges of the ids of `text`. Special tokens match their content;
 * between two of them the tokens spell the text, except that a
 * SentencePiece tokenizer may have put one "▁" in front of the stretch. */
static ql_status align(loader *L, const char *text, size_t n) {
    const int32_t *ids = L->ids.v;
    size_t m = L->ids.n, pos = 0;
    QL_TRY(grow((void **)&L->tok_start, &L->off_cap, 2 * m, sizeof(size_t)));
    L->tok_end = L->tok_start + m;
    for (size_t i = 0; i < m;) {
        if (ql_tokenizer_is_special(L->tok, ids[i])) {
            size_t k;
            const char *s = ql_tokenizer_piece(L->tok, ids[i], &k);
            if (!s || k > n - pos || memcmp(text + pos, s, k)) return misaligned(L, pos);
            L->tok_start[i] = pos;
            L->tok_end[i] = pos += k;
            i++;
            continue;
        }
        size_t j = i, total = 0, k;
        while (j < m && !ql_tokenizer_is_special(L->tok, ids[j])) {
            QL_TRY(token_bytes(L, ids[j], &k));
            total += k;
            j++;
        }
        size_t stop = n;
        if (j < m) {
            const char *s = ql_tokenizer_piece(L->tok, ids[j], &k);
            char *hit = s ? memmem(text + pos, n - pos, s, k) : NULL;
            if (!hit) return misaligned(L, pos);
            stop = (size_t)(hit - text);
        }
        if (total < stop - pos || total > stop - pos + 1) return misaligned(L, pos);
        size_t extra = total - (stop - pos);
        for (; i < j; i++) {
            QL_TRY(token_bytes(L, ids[i], &k));
            size_t skip = 0;
            if (extra) {
                if (L->buf[0] != ' ') return misaligned(L, pos);
                skip = 1;
                extra = 0;
            }
            if (memcmp(text + pos, L->buf + skip, k - skip)) return misaligned(L, pos);
            L->tok_start[i] = pos;
            L->tok_end[i] = pos += k - skip;
        }
        if (pos != stop) return misaligned(L, pos);
    }
    if (pos != n) return misaligned(L, pos);
    return QL_OK;
}

/* HF's assistant mask: the token holding a span's first byte through the
 * one holding its last byte. */
static void mark_spans(loader *L, const ql_chat_text *r) {
    size_t m = L->ids.n, k = 0;
    for (size_t t = 0; t < m; t++) L->lab[t] = IGNORE;
    for (size_t s = 0; s < r->n_span; s++) {
        size_t a = r->span[2 * s], b = r->span[2 * s + 1];
        while (k < m && L->tok_end[k] <= a) k++;
        for (; k < m && L->tok_start[k] < b; k++) L->lab[k] = L->ids.v[k];
    }
}

static char *piece_copy(loader *L, int32_t id) {
    size_t n;
    const char *s = id >= 0 ? ql_tokenizer_piece(L->tok, id, &n) : NULL;
    return s ? strndup(s, n) : NULL;
}

static ql_status chat_template(loader *L) {
    if (L->tmpl_ready) return QL_OK;
    const ql_tokenizer_info *in = L->info;
    char *b = piece_copy(L, in->bos_id), *e = piece_copy(L, in->eos_id);
    ql_status st = QL_OK;
    if ((in->bos_id >= 0 && !b) || (in->eos_id >= 0 && !e))
        st = ql_error(QL_ENOMEM, "out of memory");
    if (st == QL_OK)
        st =
            ql_chat_template_init(&L->tmpl, L->o->chat_template, in->chat_template, b, e, in->path);
    free(b);
    free(e);
    if (st != QL_OK)
        return ql_error_wrap(st, "%s:%lld: \"messages\" record: ", L->path, (long long)L->line);
    L->tmpl_ready = 1;
    snprintf(L->rep->chat_template, sizeof L->rep->chat_template, "%s",
             ql_chat_format_name(L->tmpl.format));
    return QL_OK;
}

static ql_status do_messages(loader *L, const json_t *obj) {
    const json_t *msgs = json_object_get(obj, "messages");
    if (!json_is_array(msgs))
        return bad(L, QL_BAD_TYPE, "\"messages\" must be a list of {\"role\", \"content\"}, got %s",
                   ql_json_kind(msgs));
    size_t n = json_array_size(msgs);
    if (n == 0) return bad(L, QL_BAD_FIELDS, "\"messages\" is empty");
    QL_TRY(grow((void **)&L->msg, &L->msg_cap, n, sizeof *L->msg));
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(msgs, i), *role, *content;
        if (!json_is_object(m))
            return bad(L, QL_BAD_TYPE,
                       "messages[%zu] must be an object {\"role\", \"content\"}, "
                       "got %s",
                       i, ql_json_kind(m));
        if (!(role = json_object_get(m, "role")))
            return bad(L, QL_BAD_FIELDS, "messages[%zu] has no \"role\"", i);
        if (!json_is_string(role))
            return bad(L, QL_BAD_TYPE, "messages[%zu].role must be a string, got %s", i,
                       ql_json_kind(role));
        if (!(content = json_object_get(m, "content")))
            return bad(L, QL_BAD_FIELDS, "messages[%zu] has no \"content\"", i);
        if (!json_is_string(content))
            return bad(L, QL_BAD_TYPE, "messages[%zu].content must be a string, got %s", i,
                       ql_json_kind(content));
        const char *r = json_string_value(role);
        if (!strcmp(r, "system"))
            L->msg[i].role = QL_ROLE_SYSTEM;
        else if (!strcmp(r, "user"))
            L->msg[i].role = QL_ROLE_USER;
        else if (!strcmp(r, "assistant"))
            L->msg[i].role = QL_ROLE_ASSISTANT;
        else
            return bad(L, QL_BAD_ROLE,
                       "messages[%zu].role is \"%.64s\"; the roles are system, user and assistant",
                       i, r);
        L->msg[i].content = json_string_value(content);
        L->msg[i].len = json_string_length(content);
    }
    QL_TRY(need_tokenizer(L, "\"messages\""));
    QL_TRY(chat_template(L));
    ql_status st = ql_chat_render(&L->tmpl, L->msg, n, &L->render);
    if (st == QL_EFORMAT) {
        L->bad = 1;
        L->why = QL_BAD_CONVERSATION;
        return ql_error_wrap(st, "%s:%lld: ", L->path, (long long)L->line);
    }
    QL_TRY(st);
    L->ids.n = 0;
    QL_TRY(
        ql_tokenizer_encode(L->tok, L->render.text, L->render.len, QL_TOK_PARSE_SPECIAL, &L->ids));
    QL_TRY(align(L, L->render.text, L->render.len));
    QL_TRY(labels_for(L, L->ids.n));
    mark_spans(L, &L->render);
    return commit(L, QL_REC_MESSAGES);
}

/* ---- one line ------------------------------------------------------------- */

static ql_status do_line(loader *L, const char *s, size_t n) {
    json_error_t err;
    json_t *obj = json_loadb(s, n, 0, &err);
    if (!obj) {
        if (strstr(err.text, "unable to decode byte"))
            return bad(L, QL_BAD_UTF8, "invalid UTF-8 at column %d (%s)", err.column, err.text);
        return bad(L, QL_BAD_JSON, "invalid JSON at column %d: %s", err.column,
                   ql_jsonl_error_text(err.text));
    }
    ql_status st;
    if (!json_is_object(obj)) {
        st = bad(L, QL_BAD_FIELDS,
                 "expected a JSON object ({\"text\": ...}, {\"prompt\": ..., \"completion\": "
                 "...}, {\"messages\": [...]} or {\"input_ids\": [...]}), got %s",
                 ql_json_kind(obj));
        json_decref(obj);
        return st;
    }
    int has_ids = json_object_get(obj, "input_ids") != NULL;
    int has_text = json_object_get(obj, "text") != NULL;
    int has_pc = json_object_get(obj, "prompt") || json_object_get(obj, "completion");
    int has_msgs = json_object_get(obj, "messages") != NULL;
    int kinds = has_ids + has_text + has_pc + has_msgs;
    if (kinds == 0)
        st = bad(L, QL_BAD_FIELDS,
                 "the record has none of the fields \"text\", \"prompt\" + \"completion\", "
                 "\"messages\" or \"input_ids\"");
    else if (kinds > 1)
        st = bad(L, QL_BAD_FIELDS, "the record mixes formats (%s%s%s%s); give exactly one",
                 has_ids ? "\"input_ids\" " : "", has_text ? "\"text\" " : "",
                 has_pc ? "\"prompt\"/\"completion\" " : "", has_msgs ? "\"messages\"" : "");
    else if (has_ids)
        st = do_tokens(L, obj);
    else if (has_text)
        st = do_text(L, obj);
    else if (has_pc)
        st = do_prompt(L, obj);
    else
        st = do_messages(L, obj);
    json_decref(obj);
    return st;
}

/* ---- the file ------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void percentiles(ql_records_report *r, int64_t *len, int64_t n) {
    if (n == 0) return;
    qsort(len, (size_t)n, sizeof *len, cmp_i64);
    /* nearest rank: the smallest length with at least p% of records <= it */
    const int pct[3] = {50, 90, 99};
    int64_t *out[3] = {&r->len_p50, &r->len_p90, &r->len_p99};
    for (int i = 0; i < 3; i++) {
        int64_t rank = (pct[i] * n + 99) / 100;
        *out[i] = len[rank > 0 ? rank - 1 : 0];
    }
    r->len_max = len[n - 1];
}

static void loader_free(loader *L) {
    ql_ids_free(&L->ids);
    ql_ids_free(&L->prompt);
    free(L->lab);
    free(L->buf);
    free(L->tok_start);
    free(L->msg);
    free(L->lens);
    ql_chat_template_free(&L->tmpl);
    ql_chat_text_free(&L->render);
}

ql_status ql_records_load(const char *path, ql_tokenizer *tok, const ql_records_options *o,
                          ql_token_data *out, ql_records_report *rep) {
    ql_records_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    memset(out, 0, sizeof *out);
    rep->max_seq_len = o->max_seq_len;
    if (o->max_seq_len < 2) return ql_error(QL_EINVAL, "%s: max_seq_len must be >= 2", path);
    out->path = strdup(path);
    if (!out->path) return ql_error(QL_ENOMEM, "out of memory");
    loader L = {.path = path, .tok = tok, .o = o, .rep = rep, .d = out};
    if (tok) L.info = ql_tokenizer_info_of(tok);
    char *text = NULL;
    size_t len = 0;
    ql_status st = ql_fs_read_file(path, &text, &len);
    if (st == QL_OK) st = reserve(&L, 0);
    size_t pos = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3; /* a UTF-8 byte order mark */
    for (L.line = 1; st == QL_OK && pos < len; L.line++) {
        char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - pos;
        if (n && text[pos + n - 1] == '\r') n--;
        size_t blank = 0;
        while (blank < n && strchr(" \t", text[pos + blank])) blank++;
        if (blank < n) {
            rep->read++;
            L.bad = 0;
            st = do_line(&L, text + pos, n);
            if (st != QL_OK && L.bad && o->on_bad_record == QL_ON_BAD_SKIP) {
                rep->skipped++;
                rep->skipped_by[L.why]++;
                if (!rep->first_skip[0])
                    snprintf(rep->first_skip, sizeof rep->first_skip, "%s", ql_error_message());
                ql_error_clear();
                st = QL_OK;
            }
        }
        pos = end + 1;
    }
    if (st == QL_OK && rep->read == 0)
        st = ql_error(QL_EFORMAT, "%s: no records (the file is empty or only blank lines)", path);
    if (st == QL_OK && rep->kept == 0)
        st = ql_error(QL_EFORMAT,
                      "%s: none of the %lld records is usable: %lld skipped as bad, %lld "
                      "dropped for length, %lld without a token that has loss%s%s",
                      path, (long long)rep->read, (long long)rep->skipped, (long long)rep->dropped,
                      (long long)rep->no_loss, rep->first_skip[0] ? "; the first skipped: " : "",
                      rep->first_skip);
    percentiles(rep, L.lens, L.n_lens);
    free(text);
    loader_free(&L);
    if (st != QL_OK) ql_jsonl_tokens_free(out);
    return st;
}
