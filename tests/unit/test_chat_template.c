/* Chat templates: recognition of published templates (and refusal of the
 * ones whose layout is not reproduced), the default system turn, forced
 * formats, renderings and loss spans written out by hand from the templates,
 * refused conversations, and Python's strip(). */
#include <stdlib.h>
#include <string.h>

#include "data/chat_template.h"
#include "tests/check.h"

static const char *const smollm2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

/* Qwen2-Instruct: the default system prompt with an escaped newline. */
static const char *const qwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "
    "%}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif "
    "%}";

/* Qwen2.5: the first '<|im_start|>system\n' literals are followed by an
 * expression; only the last one is the default. */
static const char *const qwen25 =
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' "
    "%}{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.' }}{%- endif %}{%- else %}{%- if messages[0]['role'] == "
    "'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- "
    "else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- for message in messages "
    "%}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' "
    "}}{%- endfor %}";

static const char *const openhermes =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";

static const char *const qwen3 =
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' }}{%- if "
    "reasoning_content %}{{- '<think>\\n' + reasoning_content + '\\n</think>\\n\\n' }}{%- "
    "endif %}{{- message.content + '<|im_end|>\\n' }}{%- endfor %}";

static const char *const llama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

static const char *const llama3_no_trim =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] "
    "}}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}";

static const char *const llama31 =
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" "
    "%}{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting "
    "Knowledge Date: December 2023\\n\" }}{{- \"Today Date: \" + date_string + \"\\n\\n\" "
    "}}{{- \"<|eot_id|>\" }}";

static const char *const llama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
    "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == "
    "0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
    "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

static const char *const mistral_v1 =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
    "messages[0]['content'] %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if message['role'] == 'user' %}\n            {{- ' [INST] ' + "
    "message['content'] + ' [/INST]' }}\n    {%- elif message['role'] == 'assistant' %}\n      "
    "  {{- ' ' + message['content'] + eos_token}}\n    {%- endif %}\n{%- endfor %}\n";

static const char *const mistral_legacy =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' "
    "+ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

/* The same as mistral_legacy with double quotes and whitespace control. */
static const char *const mistral_legacy_dq =
    "{{- bos_token }}{%- for message in messages %}{%- if message[\"role\"] == \"user\" %}{{- "
    "\"[INST] \" + message[\"content\"] + \" [/INST]\" -}}{%- elif message[\"role\"] == "
    "\"assistant\" %}{{- message[\"content\"] + eos_token -}}{%- endif %}{%- endfor %}";

static const char *const mistral_v3 =
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list "
    "%}{%- for message in loop_messages %}{%- if message[\"role\"] == \"user\" %}{%- if tools "
    "is not none and (message == user_messages[-1]) %}{{- \"[AVAILABLE_TOOLS] [\" }}{%- endif "
    "%}{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}{%- endif %}{%- endfor %}";

static void expect_format(const char *name, const char *jinja, ql_chat_format want) {
    ql_chat_template t;
    ql_status st = ql_chat_template_init(&t, QL_CHAT_AUTO, jinja, "<s>", "</s>", "tok.json");
    CHECKF(st == QL_OK && t.format == want, "%s: got %s (%s), want %s", name,
           st == QL_OK ? ql_chat_format_name(t.format) : "error", ql_error_message(),
           ql_chat_format_name(want));
    ql_chat_template_free(&t);
}

static void expect_refused(const char *name, const char *jinja, const char *phrase) {
    ql_chat_template t;
    ql_status st = ql_chat_template_init(&t, QL_CHAT_AUTO, jinja, "<s>", "</s>", "tok.json");
    const char *msg = ql_error_message();
    CHECKF(st == QL_EUNSUPPORTED, "%s: recognised as %s", name,
           st == QL_OK ? ql_chat_format_name(t.format) : "?");
    CHECKF(strstr(msg, "data.chat_template") && strstr(msg, "tok.json") &&
               (!phrase || strstr(msg, phrase)),
           "%s: message '%s' should name tok.json, data.chat_template and '%s'", name, msg,
           phrase ? phrase : "");
    if (st == QL_OK) ql_chat_template_free(&t);
}

static void expect_system(const char *name, const char *jinja, const char *want) {
    ql_chat_template t;
    ql_status st = ql_chat_template_init(&t, QL_CHAT_AUTO, jinja, NULL, NULL, "tok.json");
    CHECKF(st == QL_OK, "%s: %s", name, ql_error_message());
    if (st != QL_OK) return;
    int ok = want ? t.default_system && !strcmp(t.default_system, want) : !t.default_system;
    CHECKF(ok, "%s: default system '%s', want '%s'", name,
           t.default_system ? t.default_system : "(none)", want ? want : "(none)");
    ql_chat_template_free(&t);
}

static void test_recognise(void) {
    expect_format("smollm2", smollm2, QL_CHAT_CHATML);
    expect_format("qwen2", qwen2, QL_CHAT_CHATML);
    expect_format("qwen2.5", qwen25, QL_CHAT_CHATML);
    expect_format("openhermes", openhermes, QL_CHAT_CHATML);
    expect_format("llama3", llama3, QL_CHAT_LLAMA3);
    expect_format("llama3 without trim", llama3_no_trim, QL_CHAT_LLAMA3);
    expect_format("llama2", llama2, QL_CHAT_LLAMA2);
    expect_format("mistral v1", mistral_v1, QL_CHAT_MISTRAL);
    expect_format("mistral legacy", mistral_legacy, QL_CHAT_MISTRAL_LEGACY);
    expect_format("mistral legacy, double quotes", mistral_legacy_dq, QL_CHAT_MISTRAL_LEGACY);
    expect_refused("qwen3", qwen3, "<think>");
    expect_refused("llama3.1", llama31, "Cutting Knowledge Date");
    expect_refused("mistral v3", mistral_v3, "v3");
    expect_refused("gemma", "{{ '<start_of_turn>' + role + '\\n' }}", "not one qlora recognises");
    expect_refused("no template", NULL, "has no chat template");

    expect_system("smollm2", smollm2,
                  "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    expect_system("qwen2", qwen2, "You are a helpful assistant.");
    expect_system("qwen2.5", qwen25,
                  "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    expect_system("openhermes", openhermes, NULL);

    ql_chat_template t;
    CHECK(ql_chat_template_init(&t, QL_CHAT_LLAMA3, llama3, "<|begin_of_text|>", NULL, "x") ==
          QL_OK);
    CHECK(t.trim == 1);
    ql_chat_template_free(&t);
    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, llama3_no_trim, "<|begin_of_text|>", NULL, "x") ==
          QL_OK);
    CHECK(t.trim == 0);
    ql_chat_template_free(&t);
    /* forced: an unknown or missing template is fine, Meta's trim is the default */
    CHECK(ql_chat_template_init(&t, QL_CHAT_LLAMA3, NULL, "<|begin_of_text|>", NULL, "x") == QL_OK);
    CHECK(t.trim == 1 && t.format == QL_CHAT_LLAMA3);
    ql_chat_template_free(&t);
    CHECK(ql_chat_template_init(&t, QL_CHAT_CHATML, qwen3, NULL, NULL, "x") == QL_OK);
    CHECK(t.format == QL_CHAT_CHATML && !t.default_system);
    ql_chat_template_free(&t);
    /* formats that write bos/eos need them */
    CHECK(ql_chat_template_init(&t, QL_CHAT_LLAMA2, llama2, NULL, "</s>", "x") == QL_EUNSUPPORTED);
    CHECK(strstr(ql_error_message(), "bos_token") != NULL);
    CHECK(ql_chat_template_init(&t, QL_CHAT_MISTRAL, NULL, "<s>", NULL, "x") == QL_EUNSUPPORTED);
    CHECK(strstr(ql_error_message(), "eos_token") != NULL);

    for (int f = 0; f < QL_CHAT__N; f++)
        CHECK(ql_chat_format_parse(ql_chat_format_name((ql_chat_format)f)) == f);
    CHECK(ql_chat_format_parse("vicuna") == -1);
}

#define MSG(r, s)                                                                                  \
    { r, s, sizeof s - 1 }

/* Renders and compares text and the loss spans (as the strings they cover). */
static void expect_render(const char *name, const ql_chat_template *t, const ql_chat_message *m,
                          size_t n, const char *want, const char *const *spans, size_t n_spans) {
    ql_chat_text r = {0};
    ql_status st = ql_chat_render(t, m, n, &r);
    CHECKF(st == QL_OK, "%s: %s", name, ql_error_message());
    if (st == QL_OK) {
        CHECKF(r.len == strlen(want) && !memcmp(r.text, want, r.len), "%s:\n got '%s'\nwant '%s'",
               name, r.text, want);
        CHECKF(r.n_span == n_spans, "%s: %zu spans, want %zu", name, r.n_span, n_spans);
        for (size_t i = 0; i < r.n_span && i < n_spans; i++) {
            size_t a = r.span[2 * i], b = r.span[2 * i + 1];
            CHECKF(b - a == strlen(spans[i]) && !memcmp(r.text + a, spans[i], b - a),
                   "%s: span %zu is '%.*s', want '%s'", name, i, (int)(b - a), r.text + a,
                   spans[i]);
        }
    }
    ql_chat_text_free(&r);
}

static void test_render(void) {
    ql_chat_template t;
    const ql_chat_message conv[] = {
        MSG(QL_ROLE_SYSTEM, "Be brief. "), MSG(QL_ROLE_USER, " Hi\n"),
        MSG(QL_ROLE_ASSISTANT, " Hello "), MSG(QL_ROLE_USER, "Bye"),
        MSG(QL_ROLE_ASSISTANT, ""),
    };

    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, smollm2, NULL, NULL, "x") == QL_OK);
    static const char *const chatml_spans[] = {" Hello <|im_end|>", "<|im_end|>"};
    expect_render("chatml, system given", &t, conv, 5,
                  "<|im_start|>system\nBe brief. <|im_end|>\n<|im_start|>user\n Hi\n<|im_end|>\n"
                  "<|im_start|>assistant\n Hello <|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                  "<|im_start|>assistant\n<|im_end|>\n",
                  chatml_spans, 2);
    expect_render("chatml, default system", &t, conv + 1, 2,
                  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n<|im_start|>user\n Hi\n<|im_end|>\n"
                  "<|im_start|>assistant\n Hello <|im_end|>\n",
                  chatml_spans, 1);
    ql_chat_template_free(&t);

    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, llama3, "<|begin_of_text|>", "<|eot_id|>", "x") ==
          QL_OK);
    static const char *const llama3_spans[] = {"Hello<|eot_id|>", "<|eot_id|>"};
    expect_render("llama3", &t, conv, 5,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe "
                  "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>",
                  llama3_spans, 2);
    ql_chat_template_free(&t);

    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, llama2, "<s>", "</s>", "x") == QL_OK);
    static const char *const llama2_spans[] = {"Hello </s>", " </s>"};
    expect_render("llama2", &t, conv, 5,
                  "<s>[INST] <<SYS>>\nBe brief. \n<</SYS>>\n\n Hi [/INST] Hello </s>"
                  "<s>[INST] Bye [/INST]  </s>",
                  llama2_spans, 2);
    /* an all-blank first user turn strips the blank lines after <</SYS>> too */
    const ql_chat_message blank[] = {MSG(QL_ROLE_SYSTEM, "S"), MSG(QL_ROLE_USER, " \n "),
                                     MSG(QL_ROLE_ASSISTANT, "A")};
    static const char *const blank_spans[] = {"A </s>"};
    expect_render("llama2 blank user", &t, blank, 3,
                  "<s>[INST] <<SYS>>\nS\n<</SYS>> [/INST] A </s>", blank_spans, 1);
    ql_chat_template_free(&t);

    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, mistral_v1, "<s>", "</s>", "x") == QL_OK);
    static const char *const mistral_spans[] = {" Hello </s>", "</s>"};
    expect_render("mistral", &t, conv, 5,
                  "<s> [INST] Be brief. \n\n Hi\n [/INST]  Hello </s> [INST] Bye [/INST] </s>",
                  mistral_spans, 2);
    ql_chat_template_free(&t);

    CHECK(ql_chat_template_init(&t, QL_CHAT_AUTO, mistral_legacy, "<s>", "</s>", "x") == QL_OK);
    expect_render("mistral legacy", &t, conv + 1, 4,
                  "<s>[INST]  Hi\n [/INST] Hello </s>[INST] Bye [/INST]</s>", mistral_spans, 2);
    /* no system turn in this format */
    ql_chat_text r = {0};
    CHECK(ql_chat_render(&t, conv, 5, &r) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "messages[0]") &&
               strstr(ql_error_message(), "no system turn"),
           "%s", ql_error_message());
    ql_chat_template_free(&t);

    /* roles must alternate in the [INST] formats */
    CHECK(ql_chat_template_init(&t, QL_CHAT_LLAMA2, NULL, "<s>", "</s>", "x") == QL_OK);
    const ql_chat_message twice[] = {MSG(QL_ROLE_USER, "a"), MSG(QL_ROLE_USER, "b")};
    CHECK(ql_chat_render(&t, twice, 2, &r) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "messages[1] is user") &&
               strstr(ql_error_message(), "alternate"),
           "%s", ql_error_message());
    const ql_chat_message late[] = {MSG(QL_ROLE_USER, "a"), MSG(QL_ROLE_ASSISTANT, "b"),
                                    MSG(QL_ROLE_SYSTEM, "c")};
    CHECK(ql_chat_render(&t, late, 3, &r) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "messages[2]") &&
               strstr(ql_error_message(), "only allowed as the first"),
           "%s", ql_error_message());
    const ql_chat_message first_assistant[] = {MSG(QL_ROLE_ASSISTANT, "a")};
    CHECK(ql_chat_render(&t, first_assistant, 1, &r) == QL_EFORMAT);
    CHECK(ql_chat_render(&t, conv, 0, &r) == QL_EFORMAT);
    ql_chat_template_free(&t);
    ql_chat_text_free(&r);
}

static void test_strip(void) {
    size_t a, b;
    /* tab, NBSP (C2 A0), ideographic space (E3 80 80), U+2028 (E2 80 A8) */
    const char s[] = "\t\xC2\xA0x y\xE3\x80\x80\xE2\x80\xA8";
    ql_chat_strip(s, sizeof s - 1, &a, &b);
    CHECK(a == 3 && b == 6);
    ql_chat_strip("   ", 3, &a, &b);
    CHECK(a == 3 && b == 0);
    ql_chat_strip("", 0, &a, &b);
    CHECK(a == 0 && b == 0);
    /* U+200B (zero width space) is not whitespace to Python */
    ql_chat_strip("\xE2\x80\x8Bx", 4, &a, &b);
    CHECK(a == 0 && b == 0);
    ql_chat_strip("x\x1f", 2, &a, &b);
    CHECK(a == 0 && b == 1);
}

int main(void) {
    test_recognise();
    test_render();
    test_strip();
    return CHECK_DONE();
}
