/* Text generation over the KV cache (model/llama_generate.h): prompts built
 * as training builds them (raw text with the tokenizer's BOS, or a chat
 * rendering ending in the assistant header), decoded a token at a time for
 * up to `batch` prompts together, with streaming of the text as it comes
 * (docs/generate.md). */
#ifndef QL_GENERATE_H
#define QL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "train/sample.h"

/* The ids of a prompt. chat = 0: BOS when the tokenizer adds one, then the
 * text (special-token strings in it become their ids), as qlora train
 * tokenizes a "prompt"; chat = 1: the text as one user message rendered with
 * the model's chat template (`format`, QL_CHAT_AUTO to recognise it) and the
 * assistant header that add_generation_prompt=True appends. Appends to out. */
ql_status ql_gen_prompt_text(ql_tokenizer *tok, const char *text, size_t len, int chat,
                             ql_chat_format format, ql_ids *out);
/* The same for a conversation (its last message is not the assistant's). */
ql_status ql_gen_prompt_messages(ql_tokenizer *tok, const ql_chat_message *msgs, size_t n,
                                 ql_chat_format format, ql_ids *out);
/* The rendered text of a generation prompt (malloc'd) for n messages. */
ql_status ql_gen_render_chat(ql_tokenizer *tok, const ql_chat_message *msgs, size_t n,
                             ql_chat_format format, char **text, size_t *len);

/* Why a sequence ended. */
typedef enum ql_gen_stop {
    QL_GEN_EOS,     /* an end token (eos, or the chat template's end of turn) */
    QL_GEN_LENGTH,  /* max_new_tokens */
    QL_GEN_DEDENT,  /* stop_at_dedent: a line began at column 0 */
    QL_GEN_CONTEXT, /* the model's max_position_embeddings */
} ql_gen_stop;
const char *ql_gen_stop_name(ql_gen_stop s); /* "eos", "length", "dedent", "context" */

struct ql_gen_output;

typedef struct ql_gen_config {
    int64_t max_new_tokens;
    ql_sampling sampling;
    uint64_t seed;         /* prompt i samples from stream first_stream + i of the seed, */
    uint64_t first_stream; /* whatever the batching */
    /* Code completion: end the completion before the first line that starts
     * at column 0 (the function body is over), as HumanEval's stop words do. */
    int stop_at_dedent;
    int use_adapters; /* 0: the base model even when adapters are loaded */
    int batch;        /* prompts decoded together (>= 1) */
    /* Called as each prompt's completion ends (progress); may be NULL. */
    void (*on_done)(void *ctx, int64_t prompt, const struct ql_gen_output *o);
    void *done_ctx;
} ql_gen_config;

/* Defaults: 128 new tokens, greedy, seed 1234, adapters on, batch 1. */
void ql_gen_config_default(ql_gen_config *c);

typedef struct ql_gen_output {
    char *text; /* the completion (malloc'd, NUL-terminated), end token left out */
    size_t len;
    int32_t *ids; /* its new_tokens token ids (malloc'd; with stop_at_dedent, some of
                     the last may lie past the end of text) */
    int64_t prompt_tokens, new_tokens;
    ql_gen_stop stop;
} ql_gen_output;

/* Called with each new piece of a prompt's text as soon as it is final
 * (complete UTF-8; with stop_at_dedent, complete lines). The pieces of one
 * prompt concatenate to its output text. */
typedef void (*ql_gen_stream)(void *ctx, int64_t prompt, const char *text, size_t len);

/* Generates for n prompts (token ids). out[n] is filled (free with
 * ql_gen_outputs_free). stream may be NULL. */
ql_status ql_generate(ql_llama *m, const ql_tokenizer *tok, const ql_ids *prompts, int64_t n,
                      const ql_gen_config *c, ql_gen_stream stream, void *ctx, ql_gen_output *out);
void ql_gen_outputs_free(ql_gen_output *out, int64_t n);

/* The token ids that end a generation for this tokenizer: eos, and the
 * end-of-turn tokens of the chat formats (<|im_end|>, <|eot_id|>,
 * <|end_of_text|>, </s>, <|endoftext|>) where they are special tokens.
 * Returns how many were written (at most cap). */
int ql_gen_end_ids(const ql_tokenizer *tok, int32_t *ids, int cap);

#endif
