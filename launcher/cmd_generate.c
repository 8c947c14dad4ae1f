/* qlora generate --model PATH [--adapter DIR] (--prompt TEXT | --prompts FILE)
 * [flags]: text from the model (and adapter), streamed to stdout as it comes
 * (docs/generate.md). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "data/tokenizer.h"
#include "launcher/cli_flags.h"
#include "launcher/commands.h"
#include "launcher/infer_model.h"
#include "train/generate.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: qlora generate --model PATH [--adapter DIR] (--prompt TEXT | --prompts FILE)\n"
        "                      [flags]\n"
        "\n"
        "Generates text with a KV cache, for the base model or with a LoRA adapter, and\n"
        "streams it to standard output as it comes. Statistics go to standard error.\n"
        "\n"
        "flags:\n"
        "  --model PATH          Hugging Face directory, bitsandbytes 4-bit directory or .gguf\n"
        "  --adapter DIR         a PEFT adapter directory, a run directory holding adapter/,\n"
        "                        or a llama.cpp LoRA adapter FILE.gguf\n" QL_CLI_BASE_WEIGHTS_HELP
        "  --prompt TEXT         one prompt (\"-\": read it from standard input)\n"
        "  --prompts FILE        JSONL, one prompt per line: {\"prompt\": ...}, {\"text\": ...}\n"
        "                        or {\"messages\": [...]} (a conversation ending in a user turn)\n"
        "  --max-new-tokens N    at most N new tokens per prompt (default 128)\n"
        "  --temperature T       0: greedy (default); > 0: sample from softmax(logits / T)\n"
        "  --top-k K             sample among the K most likely tokens (default 0: all)\n"
        "  --top-p P             sample among the most likely tokens holding probability P\n"
        "                        (default 1: all)\n"
        "  --seed S              sampling seed (default 1234); prompt i uses stream i of it\n"
        "  --chat, --no-chat     wrap each prompt in the model's chat template as a user turn\n"
        "                        and add the assistant header (default: --chat when the\n"
        "                        tokenizer has a chat template); --no-chat feeds the text as\n"
        "                        qlora train feeds a \"prompt\" (BOS if the tokenizer adds one)\n"
        "  --chat-template NAME  auto (default), chatml, llama3, llama2, mistral, mistral-legacy\n"
        "  --stop-at-dedent      end a completion before a line that starts at column 0 (code:\n"
        "                        the function body is over)\n"
        "  --batch N             prompts decoded together (default 1); with N > 1 the\n"
        "                        completions are printed, whole, once all have ended\n"
        "  --output FILE         also write one JSON line per prompt: index, prompt,\n"
        "                        completion, prompt_tokens, new_tokens, stop, ids\n"
        "  --backend NAME        cpu (default), cpu-ref, cuda, or auto (cuda\n"
        "                        when a GPU is seen)\n"
        "  --quiet               no model summary or statistics on stderr\n"
        "  --help                this text\n"
        "\n"
        "A completion ends at the tokenizer's eos or the chat template's end-of-turn token\n"
        "(not printed), at --max-new-tokens, or with --stop-at-dedent at a dedent.\n"
        "\n"
        "exit status: 0 done, 1 error (the message says which), 2 bad command line\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ql_cli_usage_error("generate", fmt, arg);
}

typedef struct gen_args {
    const char *model, *adapter, *prompt, *prompts, *output, *backend, *chat_template;
    int chat; /* -1 auto */
    int quiet, stop_at_dedent, base_original;
    ql_gen_config gc;
} gen_args;

static int parse_args(int argc, char **argv, gen_args *a) {
    *a = (gen_args){.backend = "cpu", .chat = -1, .chat_template = "auto", .base_original = -1};
    ql_gen_config_default(&a->gc);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
        if (!strcmp(s, "--quiet")) {
            a->quiet = 1;
            continue;
        }
        if (!strcmp(s, "--chat") || !strcmp(s, "--no-chat")) {
            a->chat = s[2] == 'c';
            continue;
        }
        if (!strcmp(s, "--stop-at-dedent")) {
            a->gc.stop_at_dedent = 1;
            continue;
        }
        static const char *const valued[] = {
            "--model",       "--adapter", "--prompt",  "--prompts",     "--max-new-tokens",
            "--temperature", "--top-k",   "--top-p",   "--seed",        "--chat-template",
            "--batch",       "--output",  "--backend", "--base-weights"};
        const char *val = NULL;
        int which =
            ql_cli_valued_flag(argc, argv, &i, valued, sizeof valued / sizeof *valued, &val);
        if (which == QL_CLI_NO_VALUE) return bad_usage("%s needs a value", s);
        if (which < 0) return bad_usage("unknown flag '%s'", s);
        double v;
        switch (which) {
        case 0: a->model = val; break;
        case 1: a->adapter = val; break;
        case 2: a->prompt = val; break;
        case 3: a->prompts = val; break;
        case 4:
            if (ql_cli_number(val, 0, 1e9, 0, &v) || v != (double)(int64_t)v)
                return bad_usage("--max-new-tokens must be an integer >= 0, not '%s'", val);
            a->gc.max_new_tokens = (int64_t)v;
            break;
        case 5:
            if (ql_cli_number(val, 0, 1e6, 0, &v))
                return bad_usage("--temperature must be a number >= 0, not '%s'", val);
            a->gc.sampling.temperature = v;
            break;
        case 6:
            if (ql_cli_number(val, 0, 1e9, 0, &v) || v != (double)(int64_t)v)
                return bad_usage("--top-k must be an integer >= 0, not '%s'", val);
            a->gc.sampling.top_k = (int64_t)v;
            break;
        case 7:
            if (ql_cli_number(val, 0, 1, 0, &v) || v <= 0)
                return bad_usage("--top-p must be in (0, 1], not '%s'", val);
            a->gc.sampling.top_p = v;
            break;
        case 8:
            if (ql_cli_number(val, 0, 1.8e19, 0, &v))
                return bad_usage("--seed must be an integer >= 0, not '%s'", val);
            a->gc.seed = strtoull(val, NULL, 10);
            break;
        case 9:
            if (ql_chat_format_parse(val) < 0)
                return bad_usage("--chat-template must be auto, chatml, llama3, llama2, mistral "
                                 "or mistral-legacy, not '%s'",
                                 val);
            a->chat_template = val;
            break;
        case 10:
            if (ql_cli_number(val, 1, 256, 0, &v) || v != (double)(int)v)
                return bad_usage("--batch must be an integer from 1 to 256, not '%s'", val);
            a->gc.batch = (int)v;
            break;
        case 11: a->output = val; break;
        case 12: a->backend = val; break;
        case 13:
            if (ql_cli_base_weights(val, &a->base_original))
                return bad_usage(QL_CLI_BASE_WEIGHTS_BAD, val);
            break;
        }
    }
    if (!a->model) return bad_usage("%s is required", "--model");
    if (!a->prompt == !a->prompts) return bad_usage("%s", "give one of --prompt and --prompts");
    return -1;
}

/* ------------------------------------------------------------------ prompts */

typedef struct prompt_set {
    ql_ids *ids;
    char **shown; /* the prompt as given (text, or the messages as JSON) */
    int64_t n, cap;
} prompt_set;

static void prompts_free(prompt_set *p) {
    for (int64_t i = 0; i < p->n; i++) {
        ql_ids_free(&p->ids[i]);
        free(p->shown[i]);
    }
    free(p->ids);
    free(p->shown);
}

static ql_status prompts_add(prompt_set *p, char *shown, ql_ids **ids) {
    if (p->n == p->cap) {
        int64_t cap = p->cap ? 2 * p->cap : 16;
        ql_ids *ni = realloc(p->ids, (size_t)cap * sizeof *ni);
        if (ni) p->ids = ni;
        char **ns = realloc(p->shown, (size_t)cap * sizeof *ns);
        if (ns) p->shown = ns;
        if (!ni || !ns) {
            free(shown);
            return ql_error(QL_ENOMEM, "out of memory for prompts");
        }
        p->cap = cap;
    }
    memset(&p->ids[p->n], 0, sizeof *p->ids);
    p->shown[p->n] = shown;
    *ids = &p->ids[p->n++];
    return QL_OK;
}

static ql_status messages_prompt(ql_tokenizer *tok, const json_t *msgs, ql_chat_format fmt,
                                 const char *where, ql_ids *out) {
    size_t n = json_array_size(msgs);
    if (n == 0) return ql_error(QL_EFORMAT, "%s: \"messages\" must be a non-empty list", where);
    ql_chat_message *m = ql_calloc(n, sizeof *m, "messages");
    if (!m) return QL_ENOMEM;
    ql_status st = QL_OK;
    for (size_t i = 0; i < n && st == QL_OK; i++) {
        const json_t *e = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(e, "role"));
        const json_t *c = json_object_get(e, "content");
        if (!role || !json_is_string(c)) {
            st = ql_error(QL_EFORMAT,
                          "%s: messages[%zu] must be {\"role\": ..., \"content\": \"...\"}", where,
                          i);
            break;
        }
        m[i].role = !strcmp(role, "system")      ? QL_ROLE_SYSTEM
                    : !strcmp(role, "assistant") ? QL_ROLE_ASSISTANT
                                                 : QL_ROLE_USER;
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
            st = ql_error(QL_EFORMAT,
                          "%s: messages[%zu].role is \"%s\"; the roles are system, user and "
                          "assistant",
                          where, i, role);
        m[i].content = json_string_value(c);
        m[i].len = json_string_length(c);
    }
    if (st == QL_OK) st = ql_gen_prompt_messages(tok, m, n, fmt, out);
    if (st != QL_OK && strncmp(ql_error_message(), where, strlen(where)))
        ql_error_wrap(st, "%s: ", where);
    free(m);
    return st;
}

static ql_status read_prompts(const gen_args *a, ql_tokenizer *tok, int chat, ql_chat_format fmt,
                              prompt_set *p) {
    if (a->prompt) {
        char *text = NULL;
        size_t len = 0;
        if (!strcmp(a->prompt, "-")) {
            size_t cap = 1 << 16;
            text = malloc(cap);
            while (text) {
                size_t got = fread(text + len, 1, cap - len - 1, stdin);
                len += got;
                if (got == 0) break;
                if (len + 1 == cap) {
                    char *nt = realloc(text, cap *= 2);
                    if (!nt) free(text);
                    text = nt;
                }
            }
            if (text) text[len] = '\0';
        } else {
            text = strdup(a->prompt);
            len = text ? strlen(text) : 0;
        }
        if (!text) return ql_error(QL_ENOMEM, "out of memory");
        ql_ids *ids;
        QL_TRY(prompts_add(p, text, &ids));
        return ql_gen_prompt_text(tok, text, len, chat, fmt, ids);
    }
    FILE *f = fopen(a->prompts, "r");
    if (!f) return ql_error(QL_EIO, "%s: cannot open: %s", a->prompts, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long long no = 0;
    ql_status st = QL_OK;
    while (st == QL_OK && (got = getline(&line, &cap, f)) >= 0) {
        no++;
        size_t k = 0;
        while (k < (size_t)got &&
               (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r'))
            k++;
        if (k == (size_t)got) continue;
        char where[4200];
        snprintf(where, sizeof where, "%s:%lld", a->prompts, no);
        json_error_t e;
        json_t *o = json_loadb(line, (size_t)got, 0, &e);
        if (!json_is_object(o)) {
            st = ql_error(QL_EFORMAT, "%s: not a JSON object (%s)", where,
                          o ? "another JSON value" : e.text);
            json_decref(o);
            break;
        }
        const json_t *pr = json_object_get(o, "prompt"), *tx = json_object_get(o, "text"),
                     *ms = json_object_get(o, "messages");
        const json_t *t = json_is_string(pr) ? pr : json_is_string(tx) ? tx : NULL;
        ql_ids *ids;
        if (t) {
            char *shown = strndup(json_string_value(t), json_string_length(t));
            st = shown ? prompts_add(p, shown, &ids) : ql_error(QL_ENOMEM, "out of memory");
            if (st == QL_OK)
                st = ql_gen_prompt_text(tok, json_string_value(t), json_string_length(t), chat, fmt,
                                        ids);
        } else if (json_is_array(ms)) {
            char *shown = json_dumps(ms, JSON_COMPACT | JSON_ENSURE_ASCII);
            st = shown ? prompts_add(p, shown, &ids) : ql_error(QL_ENOMEM, "out of memory");
            if (st == QL_OK) st = messages_prompt(tok, ms, fmt, where, ids);
        } else {
            st = ql_error(QL_EFORMAT,
                          "%s: a prompt record needs a string \"prompt\" or \"text\", or a list "
                          "\"messages\"",
                          where);
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (st == QL_OK && p->n == 0) st = ql_error(QL_EFORMAT, "%s: no prompts", a->prompts);
    return st;
}

/* ---------------------------------------------------------------- streaming */

typedef struct stream_ctx {
    int64_t current; /* the prompt being printed, -1 none */
    int whole;       /* batch > 1: print completions whole at the end instead */
} stream_ctx;

static void on_text(void *ctx, int64_t prompt, const char *text, size_t len) {
    stream_ctx *s = ctx;
    if (s->whole) return;
    s->current = prompt;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static ql_status write_output(const gen_args *a, const prompt_set *p, const ql_gen_output *out) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) return ql_error(QL_ENOMEM, "out of memory");
    ql_status st = QL_OK;
    for (int64_t i = 0; i < p->n && st == QL_OK; i++) {
        json_t *o = json_pack("{s:I, s:s, s:s%, s:I, s:I, s:s}", "index", (json_int_t)i, "prompt",
                              p->shown[i], "completion", out[i].text, out[i].len, "prompt_tokens",
                              (json_int_t)out[i].prompt_tokens, "new_tokens",
                              (json_int_t)out[i].new_tokens, "stop", ql_gen_stop_name(out[i].stop));
        json_t *ids = o ? json_array() : NULL;
        for (int64_t k = 0; ids && k < out[i].new_tokens; k++)
            json_array_append_new(ids, json_integer(out[i].ids[k]));
        if (o && ids) json_object_set_new(o, "ids", ids);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(o);
        if (!s) {
            st = ql_error(QL_ENOMEM, "out of memory writing %s", a->output);
            break;
        }
        size_t n = strlen(s);
        if (len + n + 2 > cap) {
            while (len + n + 2 > cap) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(s);
                st = ql_error(QL_ENOMEM, "out of memory writing %s", a->output);
                break;
            }
            buf = nb;
        }
        memcpy(buf + len, s, n);
        len += n;
        buf[len++] = '\n';
        free(s);
    }
    if (st == QL_OK) st = ql_fs_write_atomic(a->output, buf, len);
    free(buf);
    return st;
}

int ql_cmd_generate(int argc, char **argv) {
    gen_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    const ql_backend *be = ql_backend_by_name(a.backend);
    if (!be) return ql_report(ql_error_wrap(QL_EUNSUPPORTED, "--backend: "));
    ql_tokenizer *tok = NULL;
    ql_status st = ql_tokenizer_load(a.model, &tok);
    if (st != QL_OK) return ql_report(ql_error_wrap(st, "the model's tokenizer: "));
    const ql_tokenizer_info *ti = ql_tokenizer_info_of(tok);
    ql_chat_format fmt = (ql_chat_format)ql_chat_format_parse(a.chat_template);
    int chat = a.chat >= 0 ? a.chat : (ti->chat_template != NULL || fmt != QL_CHAT_AUTO);
    prompt_set p = {0};
    st = read_prompts(&a, tok, chat, fmt, &p);
    ql_llama *m = NULL;
    char adir[4096];
    ql_infer_base how = {0};
    ql_lora_config lc;
    if (st == QL_OK)
        st = ql_infer_load(a.model, a.adapter, be, a.quiet, a.base_original, &m, adir, sizeof adir,
                           &lc, &how);
    if (st == QL_OK && (int64_t)ti->vocab_size > ql_llama_config(m)->vocab_size)
        st = ql_error(QL_EINVAL, "%s: the tokenizer has %d ids but the model only %lld", a.model,
                      ti->vocab_size, (long long)ql_llama_config(m)->vocab_size);
    if (st != QL_OK) {
        prompts_free(&p);
        ql_llama_free(m);
        ql_tokenizer_free(tok);
        return ql_report(st);
    }
    if (!a.quiet) {
        char smp[128];
        ql_sampling_describe(&a.gc.sampling, smp, sizeof smp);
        fprintf(stderr, "generate: %lld prompt%s, %s, at most %lld new tokens, %s%s%s\n",
                (long long)p.n, p.n == 1 ? "" : "s", smp, (long long)a.gc.max_new_tokens,
                chat ? "chat template" : "no chat template", a.adapter ? ", adapter " : "",
                a.adapter ? adir : "");
    }
    ql_gen_output *out = ql_calloc((size_t)p.n, sizeof *out, "outputs");
    stream_ctx sc = {.current = -1, .whole = a.gc.batch > 1};
    double t0 = ql_now();
    if (!out) {
        st = QL_ENOMEM;
    } else if (sc.whole) {
        st = ql_generate(m, tok, p.ids, p.n, &a.gc, on_text, &sc, out);
        for (int64_t i = 0; i < p.n && st == QL_OK; i++) {
            if (p.n > 1) printf("### %lld\n", (long long)i + 1);
            fwrite(out[i].text, 1, out[i].len, stdout);
            printf("\n");
        }
    } else {
        /* One prompt at a time, streamed; each its own generate call so the
         * header of the next prompt waits for the previous one. */
        for (int64_t i = 0; i < p.n && st == QL_OK; i++) {
            if (p.n > 1) {
                printf("### %lld\n", (long long)i + 1);
                fflush(stdout);
            }
            ql_gen_config one = a.gc;
            one.first_stream = (uint64_t)i; /* sampling stream i, as with --batch N */
            st = ql_generate(m, tok, &p.ids[i], 1, &one, on_text, &sc, &out[i]);
            printf("\n");
            fflush(stdout);
        }
    }
    double secs = ql_now() - t0;
    int64_t total = 0;
    for (int64_t i = 0; st == QL_OK && i < p.n; i++) total += out[i].new_tokens;
    if (st == QL_OK && !a.quiet) {
        for (int64_t i = 0; i < p.n; i++)
            fprintf(stderr, "[%lld] %lld prompt tokens, %lld new, stop: %s\n", (long long)i + 1,
                    (long long)out[i].prompt_tokens, (long long)out[i].new_tokens,
                    ql_gen_stop_name(out[i].stop));
        fprintf(stderr, "generate: %lld tokens in %.2f s (%.1f tokens/s)\n", (long long)total, secs,
                secs > 0 ? (double)total / secs : 0.0);
    }
    if (st == QL_OK && a.output) st = write_output(&a, &p, out);
    if (out) ql_gen_outputs_free(out, p.n);
    free(out);
    prompts_free(&p);
    ql_llama_free(m);
    ql_tokenizer_free(tok);
    return st == QL_OK ? QL_EXIT_OK : ql_report(st);
}
