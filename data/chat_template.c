#include "data/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const format_names[QL_CHAT__N] = {"auto",   "chatml",  "llama3",
                                                     "llama2", "mistral", "mistral-legacy"};

const char *ql_chat_format_name(ql_chat_format f) {
    return f >= 0 && f < QL_CHAT__N ? format_names[f] : "?";
}

int ql_chat_format_parse(const char *name) {
    for (int i = 0; i < QL_CHAT__N; i++)
        if (!strcmp(name, format_names[i])) return i;
    return -1;
}

/* ---- recognising a template --------------------------------------------- */

/* The template with the spelling differences that do not change its output
 * removed: double quotes become single quotes and whitespace-control dashes
 * ({{- -}} {%- -%}) go, so one substring test covers the common spellings. */
static char *normalize(const char *s) {
    size_t n = strlen(s), o = 0;
    char *d = malloc(n + 1);
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '{' && i + 2 < n && (s[i + 1] == '{' || s[i + 1] == '%') && s[i + 2] == '-')) {
            d[o++] = s[i];
            d[o++] = s[i + 1];
            i += 2;
            continue;
        }
        if (s[i] == '-' && i + 2 < n && (s[i + 1] == '}' || s[i + 1] == '%') && s[i + 2] == '}')
            continue;
        d[o++] = s[i] == '"' ? '\'' : s[i];
    }
    d[o] = 0;
    return d;
}

/* The literal default system prompt of a ChatML template: the text of a
 * string literal '<|im_start|>system\n...<|im_end|>' (SmolLM2's and Qwen2's
 * are written so). Literals whose system text is an expression
 * ('<|im_start|>system\n' + messages[0]['content']) do not count. */
static ql_status default_system(const char *jinja, char **out) {
    static const char head[] = "<|im_start|>system";
    static const char tail[] = "<|im_end|>";
    *out = NULL;
    for (const char *p = strstr(jinja, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n')
            q++;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *end = strstr(q, tail);
        if (!end) continue;
        char *text = malloc((size_t)(end - q) + 1);
        if (!text) return ql_error(QL_ENOMEM, "out of memory");
        size_t o = 0;
        int literal = 1;
        for (const char *c = q; c < end && literal; c++) {
            if (*c == '\\' && c + 1 < end) {
                c++;
                text[o++] = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c == 'r' ? '\r' : *c;
            } else if (strchr("'\"{}", *c)) {
                literal = 0;
            } else {
                text[o++] = *c;
            }
        }
        if (!literal) {
            free(text);
            continue;
        }
        text[o] = 0;
        *out = text;
        return QL_OK;
    }
    return QL_OK;
}

/* QL_CHAT_AUTO when unrecognised; *why says what was seen. */
static ql_chat_format recognise(const char *norm, const char **why) {
    *why = NULL;
    if (strstr(norm, "<|im_start|>") && strstr(norm, "<|im_end|>")) {
        if (strstr(norm, "<think>")) {
            *why = "a ChatML template with <think> reasoning blocks (Qwen3-style), whose "
                   "assistant turns are rewritten";
            return QL_CHAT_AUTO;
        }
        return QL_CHAT_CHATML;
    }
    if (strstr(norm, "<|start_header_id|>") && strstr(norm, "<|end_header_id|>") &&
        strstr(norm, "<|eot_id|>")) {
        if (strstr(norm, "Cutting Knowledge Date")) {
            *why = "a Llama-3.1-style template, which writes a dated system header "
                   "(Cutting Knowledge Date / Today Date) into every conversation";
            return QL_CHAT_AUTO;
        }
        return QL_CHAT_LLAMA3;
    }
    if (strstr(norm, "[INST]") && strstr(norm, "[/INST]")) {
        if (strstr(norm, "<<SYS>>")) {
            if (strstr(norm, "bos_token + '[INST] '") && strstr(norm, "content.strip()") &&
                strstr(norm, "content.strip() + ' ' + eos_token"))
                return QL_CHAT_LLAMA2;
            *why = "a Llama-2 [INST] <<SYS>> variant that differs from Meta's template";
            return QL_CHAT_AUTO;
        }
        if (strstr(norm, "[AVAILABLE_TOOLS]") || strstr(norm, "[SYSTEM_PROMPT]") ||
            strstr(norm, "user_messages[-1]")) {
            *why = "a Mistral v3+ template (control-token [INST], system prompt before the "
                   "last user turn)";
            return QL_CHAT_AUTO;
        }
        if (strstr(norm, "' [INST] '") && strstr(norm, "' ' + message['content'] + eos_token"))
            return QL_CHAT_MISTRAL;
        if (strstr(norm, "'[INST] ' + message['content'] + ' [/INST]'") &&
            strstr(norm, "message['content'] + eos_token"))
            return QL_CHAT_MISTRAL_LEGACY;
        *why = "an [INST] template that matches neither Llama-2's nor Mistral's";
        return QL_CHAT_AUTO;
    }
    return QL_CHAT_AUTO;
}

static const char *const suggest =
    "set data.chat_template to chatml, llama3, llama2, mistral or mistral-legacy to choose the "
    "format (docs/data.md, \"Chat templates\")";

ql_status ql_chat_template_init(ql_chat_template *t, ql_chat_format format, const char *jinja,
                                const char *bos, const char *eos, const char *where) {
    memset(t, 0, sizeof *t);
    if (format < 0 || format >= QL_CHAT__N)
        return ql_error(QL_EINVAL, "chat template format %d is not one of the known ones",
                        (int)format);
    ql_chat_format seen = QL_CHAT_AUTO;
    const char *why = NULL;
    char *norm = NULL;
    if (jinja) {
        norm = normalize(jinja);
        if (!norm) return ql_error(QL_ENOMEM, "out of memory");
        seen = recognise(norm, &why);
    }
    if (format == QL_CHAT_AUTO) {
        if (!jinja) {
            free(norm);
            return ql_error(QL_EUNSUPPORTED,
                            "%s has no chat template, so \"messages\" records cannot be laid "
                            "out; %s",
                            where, suggest);
        }
        if (seen == QL_CHAT_AUTO) {
            free(norm);
            if (!why)
                return ql_error(QL_EUNSUPPORTED,
                                "the chat template of %s is not one qlora recognises (ChatML, "
                                "Llama-3, Llama-2 or Mistral [INST]); %s",
                                where, suggest);
            return ql_error(QL_EUNSUPPORTED,
                            "the chat template of %s is %s, which qlora does not reproduce; %s",
                            where, why, suggest);
        }
        format = seen;
    }
    t->format = format;
    /* Meta's Llama-3 template trims; a same-format template without trim
     * (some fine-tunes) keeps the content as it is. */
    t->trim = format == QL_CHAT_LLAMA3 && !(seen == QL_CHAT_LLAMA3 && !strstr(norm, "trim"));
    free(norm);
    ql_status st = QL_OK;
    if (format == QL_CHAT_CHATML && jinja) st = default_system(jinja, &t->default_system);
    if (st == QL_OK && format != QL_CHAT_CHATML) {
        /* Jinja would print a missing token as "None"; say so instead. */
        if (!bos)
            st = ql_error(QL_EUNSUPPORTED,
                          "the %s chat format starts with bos_token, but %s has none",
                          format_names[format], where);
        else if (!eos && format != QL_CHAT_LLAMA3)
            st = ql_error(QL_EUNSUPPORTED,
                          "the %s chat format ends assistant turns with eos_token, but %s has "
                          "none",
                          format_names[format], where);
    }
    if (st == QL_OK && bos && !(t->bos = strdup(bos))) st = ql_error(QL_ENOMEM, "out of memory");
    if (st == QL_OK && eos && !(t->eos = strdup(eos))) st = ql_error(QL_ENOMEM, "out of memory");
    if (st != QL_OK) ql_chat_template_free(t);
    return st;
}

void ql_chat_template_free(ql_chat_template *t) {
    free(t->default_system);
    free(t->bos);
    free(t->eos);
    memset(t, 0, sizeof *t);
}

/* ---- rendering ------------------------------------------------------------ */

/* Decodes one UTF-8 sequence at s (valid UTF-8 assumed: jansson checked it). */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *len) {
    uint32_t c = s[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (k > n) k = n;
    if (k == 2) c &= 0x1F;
    if (k == 3) c &= 0x0F;
    if (k == 4) c &= 0x07;
    for (size_t i = 1; i < k; i++) c = (c << 6) | (s[i] & 0x3F);
    *len = k;
    return c;
}

static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

void ql_chat_strip(const char *s, size_t len, size_t *lead, size_t *trail) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, k;
    while (a < len && py_space(utf8_at(u + a, len - a, &k))) a += k;
    /* Walk forward to find where the trailing run starts: UTF-8 cannot be
     * decoded backwards without looking at continuation bytes anyway. */
    size_t last_non_space_end = a;
    for (size_t i = a; i < len; i += k)
        if (!py_space(utf8_at(u + i, len - i, &k))) last_non_space_end = i + k;
    *lead = a;
    *trail = len - last_non_space_end;
}

static ql_status put(ql_chat_text *r, const char *s, size_t n) {
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1) cap *= 2;
        char *p = realloc(r->text, cap);
        if (!p) return ql_error(QL_ENOMEM, "out of memory for a chat rendering");
        r->text = p;
        r->cap = cap;
    }
    memcpy(r->text + r->len, s, n);
    r->len += n;
    r->text[r->len] = 0;
    return QL_OK;
}

static ql_status puts_(ql_chat_text *r, const char *s) { return put(r, s, strlen(s)); }

static ql_status add_span(ql_chat_text *r, size_t a, size_t b) {
    if (r->n_span + 1 > r->cap_span) {
        size_t cap = r->cap_span ? r->cap_span * 2 : 16;
        size_t *p = realloc(r->span, cap * 2 * sizeof *p);
        if (!p) return ql_error(QL_ENOMEM, "out of memory for loss spans");
        r->span = p;
        r->cap_span = cap;
    }
    r->span[2 * r->n_span] = a;
    r->span[2 * r->n_span + 1] = b;
    r->n_span++;
    return QL_OK;
}

static const char *role_name(ql_chat_role r) {
    return r == QL_ROLE_SYSTEM ? "system" : r == QL_ROLE_USER ? "user" : "assistant";
}

/* content, stripped as Python's .strip() when `strip`. */
static ql_status put_content(ql_chat_text *r, const ql_chat_message *m, int strip) {
    size_t a = 0, b = 0;
    if (strip) ql_chat_strip(m->content, m->len, &a, &b);
    return put(r, m->content + a, m->len - a - b);
}

static ql_status render_chatml(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                               ql_chat_text *r) {
    if (t->default_system && m[0].role != QL_ROLE_SYSTEM) {
        QL_TRY(puts_(r, "<|im_start|>system\n"));
        QL_TRY(puts_(r, t->default_system));
        QL_TRY(puts_(r, "<|im_end|>\n"));
    }
    for (size_t i = 0; i < n; i++) {
        QL_TRY(puts_(r, "<|im_start|>"));
        QL_TRY(puts_(r, role_name(m[i].role)));
        QL_TRY(puts_(r, "\n"));
        size_t a = r->len;
        QL_TRY(put_content(r, &m[i], 0));
        QL_TRY(puts_(r, "<|im_end|>"));
        if (m[i].role == QL_ROLE_ASSISTANT) QL_TRY(add_span(r, a, r->len));
        QL_TRY(puts_(r, "\n"));
    }
    return QL_OK;
}

static ql_status render_llama3(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                               ql_chat_text *r) {
    QL_TRY(puts_(r, t->bos));
    for (size_t i = 0; i < n; i++) {
        QL_TRY(puts_(r, "<|start_header_id|>"));
        QL_TRY(puts_(r, role_name(m[i].role)));
        QL_TRY(puts_(r, "<|end_header_id|>\n\n"));
        size_t a = r->len;
        QL_TRY(put_content(r, &m[i], t->trim));
        QL_TRY(puts_(r, "<|eot_id|>"));
        if (m[i].role == QL_ROLE_ASSISTANT) QL_TRY(add_span(r, a, r->len));
    }
    return QL_OK;
}

/* Llama-2 and both Mistral layouts: an optional leading system message, then
 * user/assistant strictly alternating, as their templates' raise_exception
 * demands. */
static ql_status check_alternation(const ql_chat_message *m, size_t n, size_t first,
                                   int system_allowed) {
    for (size_t i = first; i < n; i++) {
        int want_user = (i - first) % 2 == 0;
        if (m[i].role == QL_ROLE_SYSTEM)
            return ql_error(QL_EFORMAT,
                            "messages[%zu]: a system message is only allowed as the first "
                            "message%s",
                            i, system_allowed ? "" : " (and this chat format has no system turn)");
        if ((m[i].role == QL_ROLE_USER) != want_user)
            return ql_error(QL_EFORMAT,
                            "messages[%zu] is %s, but this chat format needs roles that "
                            "alternate user/assistant/user/... after an optional system message",
                            i, role_name(m[i].role));
    }
    return QL_OK;
}

static ql_status render_llama2(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                               ql_chat_text *r) {
    size_t first = m[0].role == QL_ROLE_SYSTEM;
    QL_TRY(check_alternation(m, n, first, 1));
    for (size_t i = first; i < n; i++) {
        if (m[i].role == QL_ROLE_USER) {
            QL_TRY(puts_(r, t->bos));
            QL_TRY(puts_(r, "[INST] "));
            if (i == first && first) {
                /* '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + user is
                 * stripped as a whole: an all-blank user turn takes the
                 * blank lines after <</SYS>> with it. */
                size_t a = r->len, lead, trail;
                QL_TRY(puts_(r, "<<SYS>>\n"));
                QL_TRY(put(r, m[0].content, m[0].len));
                QL_TRY(puts_(r, "\n<</SYS>>\n\n"));
                QL_TRY(put(r, m[i].content, m[i].len));
                ql_chat_strip(r->text + a, r->len - a, &lead, &trail);
                r->len -= trail;
                r->text[r->len] = 0;
            } else {
                QL_TRY(put_content(r, &m[i], 1));
            }
            QL_TRY(puts_(r, " [/INST]"));
        } else {
            QL_TRY(puts_(r, " "));
            size_t a = r->len;
            QL_TRY(put_content(r, &m[i], 1));
            QL_TRY(puts_(r, " "));
            QL_TRY(puts_(r, t->eos));
            QL_TRY(add_span(r, a, r->len));
        }
    }
    return QL_OK;
}

static ql_status render_mistral(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                                ql_chat_text *r) {
    int legacy = t->format == QL_CHAT_MISTRAL_LEGACY;
    size_t first = !legacy && m[0].role == QL_ROLE_SYSTEM;
    QL_TRY(check_alternation(m, n, first, !legacy));
    QL_TRY(puts_(r, t->bos));
    for (size_t i = first; i < n; i++) {
        if (m[i].role == QL_ROLE_USER) {
            QL_TRY(puts_(r, legacy ? "[INST] " : " [INST] "));
            if (i == first && first) {
                QL_TRY(put(r, m[0].content, m[0].len));
                QL_TRY(puts_(r, "\n\n"));
            }
            QL_TRY(put_content(r, &m[i], 0));
            QL_TRY(puts_(r, " [/INST]"));
        } else {
            if (!legacy) QL_TRY(puts_(r, " "));
            size_t a = r->len;
            QL_TRY(put_content(r, &m[i], 0));
            QL_TRY(puts_(r, t->eos));
            QL_TRY(add_span(r, a, r->len));
        }
    }
    return QL_OK;
}

ql_status ql_chat_render(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                         ql_chat_text *out) {
    out->len = 0;
    out->n_span = 0;
    QL_TRY(put(out, "", 0));
    if (n == 0) return ql_error(QL_EFORMAT, "\"messages\" is empty");
    switch (t->format) {
    case QL_CHAT_CHATML: return render_chatml(t, m, n, out);
    case QL_CHAT_LLAMA3: return render_llama3(t, m, n, out);
    case QL_CHAT_LLAMA2: return render_llama2(t, m, n, out);
    case QL_CHAT_MISTRAL:
    case QL_CHAT_MISTRAL_LEGACY: return render_mistral(t, m, n, out);
    default: break;
    }
    return ql_error(QL_EINTERNAL, "chat template format %d cannot render", (int)t->format);
}

void ql_chat_text_free(ql_chat_text *r) {
    free(r->text);
    free(r->span);
    memset(r, 0, sizeof *r);
}
