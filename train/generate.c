/* Generation driver (train/generate.h): prompts, continuous batching over
 * the KV cache's slots, sampling, stop rules and incremental decoding. */
#include "train/generate.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_generate.h"

void ql_gen_config_default(ql_gen_config *c) {
    *c = (ql_gen_config){.max_new_tokens = 128,
                         .sampling = {.temperature = 0.0, .top_k = 0, .top_p = 1.0},
                         .seed = 1234,
                         .use_adapters = 1,
                         .batch = 1};
}

const char *ql_gen_stop_name(ql_gen_stop s) {
    switch (s) {
    case QL_GEN_EOS: return "eos";
    case QL_GEN_LENGTH: return "length";
    case QL_GEN_DEDENT: return "dedent";
    case QL_GEN_CONTEXT: return "context";
    }
    return "?";
}

/* ------------------------------------------------------------------ prompts */

static char *piece_copy(const ql_tokenizer *tok, int32_t id) {
    size_t n;
    const char *s = id >= 0 ? ql_tokenizer_piece(tok, id, &n) : NULL;
    return s ? strndup(s, n) : NULL;
}

ql_status ql_gen_render_chat(ql_tokenizer *tok, const ql_chat_message *msgs, size_t n,
                             ql_chat_format format, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    if (n == 0) return ql_error(QL_EINVAL, "generation: a conversation with no message");
    if (msgs[n - 1].role == QL_ROLE_ASSISTANT)
        return ql_error(QL_EINVAL, "generation: the conversation already ends with the "
                                   "assistant's turn; the last message must be the user's");
    const ql_tokenizer_info *in = ql_tokenizer_info_of(tok);
    char *b = piece_copy(tok, in->bos_id), *e = piece_copy(tok, in->eos_id);
    ql_chat_template t = {0};
    ql_chat_text r = {0};
    ql_chat_message *all = ql_malloc((n + 1) * sizeof *all, "conversation");
    ql_status st = all ? QL_OK : QL_ENOMEM;
    if (st == QL_OK) st = ql_chat_template_init(&t, format, in->chat_template, b, e, in->path);
    if (st == QL_OK) {
        memcpy(all, msgs, n * sizeof *all);
        /* ChatML and Llama-3 open the assistant's turn with a header that
         * add_generation_prompt writes: render an empty assistant turn and
         * cut where its content would begin. Llama-2 and Mistral prompts end
         * at " [/INST]" and their templates add nothing for generation. */
        int header = t.format == QL_CHAT_CHATML || t.format == QL_CHAT_LLAMA3;
        if (header) all[n] = (ql_chat_message){.role = QL_ROLE_ASSISTANT, .content = "", .len = 0};
        st = ql_chat_render(&t, all, header ? n + 1 : n, &r);
        if (st == QL_OK) {
            size_t cut = header ? r.span[2 * (r.n_span - 1)] : r.len;
            *text = strndup(r.text, cut);
            *len = cut;
            if (!*text) st = ql_error(QL_ENOMEM, "out of memory");
        }
    }
    free(all);
    free(b);
    free(e);
    ql_chat_text_free(&r);
    ql_chat_template_free(&t);
    return st;
}

ql_status ql_gen_prompt_messages(ql_tokenizer *tok, const ql_chat_message *msgs, size_t n,
                                 ql_chat_format format, ql_ids *out) {
    char *text;
    size_t len;
    QL_TRY(ql_gen_render_chat(tok, msgs, n, format, &text, &len));
    /* The template writes BOS itself where the model wants one. */
    ql_status st = ql_tokenizer_encode(tok, text, len, QL_TOK_PARSE_SPECIAL, out);
    free(text);
    return st;
}

ql_status ql_gen_prompt_text(ql_tokenizer *tok, const char *text, size_t len, int chat,
                             ql_chat_format format, ql_ids *out) {
    if (chat) {
        ql_chat_message msg = {.role = QL_ROLE_USER, .content = text, .len = len};
        return ql_gen_prompt_messages(tok, &msg, 1, format, out);
    }
    const ql_tokenizer_info *in = ql_tokenizer_info_of(tok);
    if (in->add_bos && in->bos_id >= 0) QL_TRY(ql_ids_push(out, in->bos_id));
    return ql_tokenizer_encode(tok, text, len, QL_TOK_PARSE_SPECIAL, out);
}

int ql_gen_end_ids(const ql_tokenizer *tok, int32_t *ids, int cap) {
    static const char *const ends[] = {"<|im_end|>", "<|eot_id|>",    "<|end_of_text|>",
                                       "</s>",       "<|endoftext|>", "<|end|>"};
    int n = 0;
    int32_t eos = ql_tokenizer_info_of(tok)->eos_id;
    if (eos >= 0 && n < cap) ids[n++] = eos;
    for (size_t i = 0; i < sizeof ends / sizeof *ends && n < cap; i++) {
        int32_t id = ql_tokenizer_piece_id(tok, ends[i], strlen(ends[i]));
        if (id < 0 || id == eos || !ql_tokenizer_is_special(tok, id)) continue;
        ids[n++] = id;
    }
    return n;
}

/* --------------------------------------------------------- one sequence */

typedef struct seq {
    int64_t prompt; /* index into prompts, -1: slot free */
    ql_ids gen;     /* generated ids (end token excluded) */
    ql_rng rng;
    size_t emitted; /* bytes of text given to the stream */
    char *text;     /* the latest decoding of gen */
    size_t len;
    int done;
    ql_gen_stop stop;
    int32_t next; /* the token to feed at the next step */
} seq;

/* The byte where a completion ends under stop_at_dedent: the start of the
 * first non-blank line beginning at column 0, or len when there is none. The
 * first line is the one the prompt's last line continues, so it never counts. */
static size_t dedent_cut(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\n' || i + 1 >= len) continue;
        char c = s[i + 1];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return i + 1;
    }
    return len;
}

/* Decodes the whole of gen again (decoders such as SentencePiece's treat the
 * first token specially, so pieces are not decoded one by one) and works out
 * how much text is final: all of it once done; otherwise not a trailing
 * U+FFFD (an incomplete UTF-8 sequence whose next bytes may follow), and with
 * stop_at_dedent only whole lines. */
static ql_status refresh(seq *q, const ql_tokenizer *tok, const ql_gen_config *c,
                         size_t *final_len) {
    free(q->text);
    q->text = NULL;
    QL_TRY(ql_tokenizer_decode(tok, q->gen.v, q->gen.n, QL_TOK_SKIP_SPECIAL, &q->text, &q->len));
    if (c->stop_at_dedent) {
        size_t cut = dedent_cut(q->text, q->len);
        if (cut < q->len) {
            q->len = cut;
            q->text[cut] = '\0';
            q->done = 1;
            q->stop = QL_GEN_DEDENT;
        }
    }
    size_t fin = q->len;
    if (!q->done) {
        if (fin >= 3 && !memcmp(q->text + fin - 3, "\xEF\xBF\xBD", 3)) fin -= 3;
        if (c->stop_at_dedent) {
            /* A line is final once the next one has begun with something. */
            while (fin > 0 && q->text[fin - 1] != '\n') fin--;
        }
    }
    *final_len = fin;
    return QL_OK;
}

static void emit(seq *q, size_t fin, ql_gen_stream stream, void *ctx) {
    if (fin <= q->emitted) return;
    if (stream) stream(ctx, q->prompt, q->text + q->emitted, fin - q->emitted);
    q->emitted = fin;
}

/* ------------------------------------------------------------------ the loop */

typedef struct gen {
    ql_llama *m;
    const ql_tokenizer *tok;
    const ql_gen_config *c;
    ql_llama_kv *kv;
    ql_sampler sampler;
    float *logits; /* [batch, V] */
    int64_t V, max_pos;
    int32_t end_ids[8];
    int n_end;
    seq *seqs; /* [batch] */
    ql_gen_stream stream;
    void *ctx;
    ql_gen_output *out;
} gen;

static int is_end(const gen *g, int32_t id) {
    for (int i = 0; i < g->n_end; i++)
        if (g->end_ids[i] == id) return 1;
    return 0;
}

/* The token sampled from `logits` joins sequence q (or ends it). */
static ql_status take(gen *g, int slot, const float *logits) {
    seq *q = &g->seqs[slot];
    int32_t id;
    QL_TRY(ql_sample(&g->sampler, logits, &g->c->sampling, &q->rng, &id));
    if (is_end(g, id)) {
        q->done = 1;
        q->stop = QL_GEN_EOS;
    } else {
        QL_TRY(ql_ids_push(&q->gen, id));
        q->next = id;
        if ((int64_t)q->gen.n >= g->c->max_new_tokens) {
            q->done = 1;
            q->stop = QL_GEN_LENGTH;
        } else if (g->max_pos > 0 && ql_llama_kv_length(g->kv, slot) + 1 >= g->max_pos) {
            q->done = 1;
            q->stop = QL_GEN_CONTEXT;
        }
    }
    size_t fin;
    QL_TRY(refresh(q, g->tok, g->c, &fin));
    emit(q, fin, g->stream, g->ctx);
    return QL_OK;
}

/* Sequence q is over: its output is kept and the slot freed. */
static ql_status finish(gen *g, int slot) {
    seq *q = &g->seqs[slot];
    ql_gen_output *o = &g->out[q->prompt];
    o->text = q->text ? q->text : strdup("");
    o->len = q->text ? q->len : 0;
    q->text = NULL; /* o owns it now */
    if (!o->text) return ql_error(QL_ENOMEM, "out of memory");
    o->new_tokens = (int64_t)q->gen.n;
    o->ids = ql_malloc((q->gen.n ? q->gen.n : 1) * sizeof *o->ids, "generated ids");
    if (!o->ids) return QL_ENOMEM;
    if (q->gen.n) memcpy(o->ids, q->gen.v, q->gen.n * sizeof *o->ids);
    o->stop = q->stop;
    if (g->c->on_done) g->c->on_done(g->c->done_ctx, q->prompt, o);
    q->gen.n = 0;
    q->prompt = -1;
    return QL_OK;
}

/* Prompt i into a free slot: prefill, then its first token. */
static ql_status start(gen *g, int slot, int64_t i, const ql_ids *prompt) {
    seq *q = &g->seqs[slot];
    q->prompt = i;
    q->gen.n = 0;
    q->emitted = 0;
    q->done = 0;
    q->stop = QL_GEN_LENGTH;
    free(q->text);
    q->text = NULL;
    q->len = 0;
    ql_rng_seed_stream(&q->rng, g->c->seed, g->c->first_stream + (uint64_t)i);
    g->out[i].prompt_tokens = (int64_t)prompt->n;
    if (prompt->n == 0)
        return ql_error(QL_EINVAL, "generation: prompt %" PRId64 " has no tokens", i);
    if (g->c->max_new_tokens <= 0) {
        q->done = 1;
        return QL_OK;
    }
    QL_TRY(ql_llama_kv_reset(g->kv, slot, (int64_t)prompt->n + g->c->max_new_tokens));
    float *lg = g->logits + (size_t)slot * (size_t)g->V;
    QL_TRY(ql_llama_kv_prefill(g->kv, slot, prompt->v, (int64_t)prompt->n, lg));
    return take(g, slot, lg);
}

static ql_status run(gen *g, const ql_ids *prompts, int64_t n) {
    const int B = g->c->batch;
    int64_t next = 0, done = 0;
    int *slots = ql_malloc((size_t)B * sizeof *slots, "step slots");
    int32_t *ids = ql_malloc((size_t)B * sizeof *ids, "step tokens");
    ql_status st = slots && ids ? QL_OK : QL_ENOMEM;
    while (st == QL_OK && done < n) {
        /* Fill free slots, finishing sequences that end at once. */
        for (int s = 0; s < B && st == QL_OK; s++) {
            while (st == QL_OK && g->seqs[s].prompt < 0 && next < n) {
                st = start(g, s, next, &prompts[next]);
                next++;
                if (st == QL_OK && g->seqs[s].done) {
                    st = finish(g, s);
                    done++;
                }
            }
        }
        int k = 0;
        for (int s = 0; s < B; s++)
            if (g->seqs[s].prompt >= 0) {
                slots[k] = s;
                ids[k++] = g->seqs[s].next;
            }
        if (st != QL_OK || k == 0) break;
        st = ql_llama_kv_step(g->kv, k, slots, ids, g->logits);
        for (int j = 0; j < k && st == QL_OK; j++) {
            st = take(g, slots[j], g->logits + (size_t)j * (size_t)g->V);
            if (st == QL_OK && g->seqs[slots[j]].done) {
                st = finish(g, slots[j]);
                done++;
            }
        }
    }
    free(slots);
    free(ids);
    return st;
}

ql_status ql_generate(ql_llama *m, const ql_tokenizer *tok, const ql_ids *prompts, int64_t n,
                      const ql_gen_config *c, ql_gen_stream stream, void *ctx, ql_gen_output *out) {
    memset(out, 0, (size_t)n * sizeof *out);
    if (n <= 0) return QL_OK;
    if (c->batch < 1) return ql_error(QL_EINVAL, "generation: batch must be at least 1");
    int B = (int64_t)c->batch < n ? c->batch : (int)n;
    ql_gen_config cc = *c;
    cc.batch = B;
    gen g = {.m = m,
             .tok = tok,
             .c = &cc,
             .V = ql_llama_config(m)->vocab_size,
             .max_pos = ql_llama_config(m)->max_position_embeddings,
             .stream = stream,
             .ctx = ctx,
             .out = out};
    g.n_end = ql_gen_end_ids(tok, g.end_ids, 8);
    int64_t longest = 1;
    for (int64_t i = 0; i < n; i++)
        if ((int64_t)prompts[i].n > longest) longest = (int64_t)prompts[i].n;
    ql_status st = ql_llama_kv_create(m, B, longest < 256 ? longest : 256, &g.kv);
    if (st == QL_OK) st = ql_sampler_init(&g.sampler, g.V);
    if (st == QL_OK) {
        ql_llama_kv_use_adapters(g.kv, c->use_adapters);
        g.logits = ql_malloc((size_t)B * (size_t)g.V * sizeof(float), "logits");
        g.seqs = ql_calloc((size_t)B, sizeof *g.seqs, "sequences");
        if (!g.logits || !g.seqs) st = QL_ENOMEM;
    }
    if (g.seqs)
        for (int s = 0; s < B; s++) g.seqs[s].prompt = -1;
    if (st == QL_OK) st = run(&g, prompts, n);
    if (g.seqs)
        for (int s = 0; s < B; s++) {
            ql_ids_free(&g.seqs[s].gen);
            free(g.seqs[s].text);
        }
    free(g.seqs);
    free(g.logits);
    ql_sampler_free(&g.sampler);
    ql_llama_kv_free(g.kv);
    if (st != QL_OK) {
        ql_gen_outputs_free(out, n);
        memset(out, 0, (size_t)n * sizeof *out);
    }
    return st;
}

void ql_gen_outputs_free(ql_gen_output *out, int64_t n) {
    if (!out) return;
    for (int64_t i = 0; i < n; i++) {
        free(out[i].text);
        free(out[i].ids);
        out[i].text = NULL;
        out[i].ids = NULL;
    }
}
