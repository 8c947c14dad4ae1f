/* Chat templates for {"messages": [...]} records: the handful of formats the
 * Llama family uses, written out in C instead of a Jinja interpreter, and
 * recognised from the model's chat_template string (docs/data.md, "Chat
 * templates").
 *
 * A rendering is the exact text Hugging Face's apply_chat_template(messages,
 * add_generation_prompt=False) gives for the same template, plus the byte
 * spans that get loss: each assistant turn's content and its end-of-turn
 * token (what a {% generation %} block around them would mark). */
#ifndef QL_CHAT_TEMPLATE_H
#define QL_CHAT_TEMPLATE_H

#include <stddef.h>

#include "core/status.h"

typedef enum ql_chat_format {
    QL_CHAT_AUTO = 0,       /* recognise it from the tokenizer's chat_template */
    QL_CHAT_CHATML,         /* SmolLM2, Qwen2: <|im_start|>role\n...<|im_end|>\n */
    QL_CHAT_LLAMA3,         /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    QL_CHAT_LLAMA2,         /* <s>[INST] <<SYS>>...<</SYS>> user [/INST] answer </s> */
    QL_CHAT_MISTRAL,        /* <s> [INST] system\n\nuser [/INST] answer</s> (mistralai v1) */
    QL_CHAT_MISTRAL_LEGACY, /* <s>[INST] user [/INST]answer</s> (no system turn) */
    QL_CHAT__N
} ql_chat_format;

/* "auto", "chatml", "llama3", "llama2", "mistral", "mistral-legacy": the
 * values of the data.chat_template key, in enum order. */
const char *ql_chat_format_name(ql_chat_format f);
/* The format of a name, or -1. */
int ql_chat_format_parse(const char *name);

typedef enum ql_chat_role { QL_ROLE_SYSTEM, QL_ROLE_USER, QL_ROLE_ASSISTANT } ql_chat_role;

typedef struct ql_chat_message {
    ql_chat_role role;
    const char *content; /* UTF-8, `len` bytes */
    size_t len;
} ql_chat_message;

typedef struct ql_chat_template {
    ql_chat_format format;
    int trim;             /* LLAMA3: content | trim (Meta's template does) */
    char *default_system; /* CHATML: the system turn written when messages[0] is
                             not one (SmolLM2, Qwen2); NULL: none */
    char *bos, *eos;      /* the token strings the template writes (bos_token, eos_token) */
} ql_chat_template;

/* Picks the template: `format` QL_CHAT_AUTO recognises `jinja` (NULL when the
 * tokenizer has none); another format is used as asked, taking the details
 * (default system turn, trim) from `jinja` when it is of that format. `bos`
 * and `eos` are the tokenizer's token strings (NULL when it has none).
 * `where` names the tokenizer in messages. An unrecognised or missing
 * template with QL_CHAT_AUTO is QL_EUNSUPPORTED with a message that suggests
 * the data.chat_template key. */
ql_status ql_chat_template_init(ql_chat_template *t, ql_chat_format format, const char *jinja,
                                const char *bos, const char *eos, const char *where);
void ql_chat_template_free(ql_chat_template *t);

/* One rendering: text and loss spans [span[2i], span[2i+1]). Zero-initialize;
 * ql_chat_render reuses the buffers; free with ql_chat_text_free. */
typedef struct ql_chat_text {
    char *text;
    size_t len, cap;
    size_t *span;
    size_t n_span, cap_span; /* n_span counts spans, not bounds */
} ql_chat_text;

/* Renders n messages. A conversation the template refuses (Llama-2 and
 * Mistral: roles that do not alternate user/assistant after an optional
 * first system message) is QL_EFORMAT with a message naming the message
 * index, without a file name (the caller prefixes file:line). */
ql_status ql_chat_render(const ql_chat_template *t, const ql_chat_message *m, size_t n,
                         ql_chat_text *out);
void ql_chat_text_free(ql_chat_text *r);

/* Python's str.strip() whitespace (what Jinja's trim and .strip() remove):
 * the bytes of the leading and trailing whitespace of s[0..len). */
void ql_chat_strip(const char *s, size_t len, size_t *lead, size_t *trail);

#endif
