/* Token ids against Hugging Face `tokenizers` (fixtures made by
 * tests/fixtures/make_tokenizer_reference.py; versions in
 * tests/fixtures/tokenizer/versions.json): every document of about 1.1 MB of
 * text through SmolLM2's tokenizer (tokenizer.json and the GGUF), a
 * Llama-3-style, a Qwen2-style (NFC) and two SentencePiece-style tokenizers;
 * decode(encode(x))
 * equals the text (or HF's own decode where that differs); special-token
 * parsing off and the BOS/EOS template on a few chat-shaped documents; for
 * the byte-level tokenizers, the pre-tokenizer's pieces of the generated
 * stress documents (every Unicode space, digits of many scripts, emoji)
 * equal pre_tokenize_str's, since equal ids alone can hide a regex
 * difference that BPE happens to smooth over.
 * The SmolLM2 parts are skipped without the model cache
 * (${QL_CACHE:-~/.cache/qlora}); the others always run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/tokenizer.h"
#include "data/tokenizer_impl.h" /* the pre-tokenizer piece hook */

typedef struct blob {
    unsigned char *p;
    size_t n, at;
} blob;

static int read_gz(const char *path, blob *b) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    FILE *f = popen(cmd, "r");
    if (!f) return 0;
    size_t cap = 1 << 20;
    b->p = malloc(cap);
    b->n = b->at = 0;
    size_t got;
    while (b->p && (got = fread(b->p + b->n, 1, cap - b->n, f)) > 0) {
        b->n += got;
        if (b->n == cap) b->p = realloc(b->p, cap *= 2);
    }
    int rc = pclose(f);
    return b->p && rc == 0 && b->n > 0;
}

static int take(blob *b, void *out, size_t n) {
    if (b->at + n > b->n) return 0;
    memcpy(out, b->p + b->at, n);
    b->at += n;
    return 1;
}

static uint32_t u32(blob *b) {
    uint32_t v = 0;
    if (!take(b, &v, 4)) {
        fprintf(stderr, "fixture truncated\n");
        exit(1);
    }
    return v;
}

typedef struct doc {
    const char *p;
    size_t n;
} doc;

typedef struct rec {
    int kind;
    uint32_t doc, n;
    const unsigned char *payload;
} rec;

static void show_diff(ql_tokenizer *t, const char *what, uint32_t d, const int32_t *got, size_t ng,
                      const uint32_t *want, size_t nw) {
    size_t i = 0;
    while (i < ng && i < nw && got[i] == (int32_t)want[i]) i++;
    fprintf(stderr, "  %s doc %u: %zu ids, want %zu; first difference at %zu:\n", what, d, ng, nw,
            i);
    for (size_t k = i >= 3 ? i - 3 : 0; k < i + 4; k++) {
        size_t l1 = 0, l2 = 0;
        const char *a = k < ng ? ql_tokenizer_piece(t, got[k], &l1) : NULL;
        const char *b = k < nw ? ql_tokenizer_piece(t, (int32_t)want[k], &l2) : NULL;
        fprintf(stderr, "    [%zu] got %d '%.*s'  want %d '%.*s'\n", k, k < ng ? (int)got[k] : -1,
                (int)l1, a ? a : "", k < nw ? (int)want[k] : -1, (int)l2, b ? b : "");
    }
}

typedef struct pieces {
    const char *base;
    uint32_t *v; /* start, end pairs */
    size_t n, cap;
} pieces;

static ql_status collect(void *ctx, const char *p, size_t n) {
    pieces *ps = ctx;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 1024;
        ps->v = realloc(ps->v, 2 * ps->cap * sizeof *ps->v);
    }
    ps->v[2 * ps->n] = (uint32_t)(p - ps->base);
    ps->v[2 * ps->n + 1] = (uint32_t)(p - ps->base + n);
    ps->n++;
    return QL_OK;
}

/* The pieces our pre-tokenizers cut from the whole document (no added-token
 * split, as pre_tokenize_str) against HF's byte offsets. */
static int same_pieces(ql_tokenizer *t, const doc *d, const rec *r, const char *name) {
    pieces ps = {d->p, NULL, 0, 0};
    t->piece_hook = collect;
    t->piece_ctx = &ps;
    ql_status st = ql_tok_pretokenize(t, 0, d->p, d->n, 1, NULL);
    t->piece_hook = NULL;
    int ok = st == QL_OK && ps.n == r->n && (!r->n || !memcmp(ps.v, r->payload, 8 * (size_t)r->n));
    if (!ok) {
        size_t i = 0;
        while (i < ps.n && i < r->n && !memcmp(ps.v + 2 * i, r->payload + 8 * i, 8)) i++;
        uint32_t w[2] = {0, 0};
        if (i < r->n) memcpy(w, r->payload + 8 * i, 8);
        fprintf(stderr, "  %s doc %u: %zu pieces, want %u; piece %zu is [%u,%u), want [%u,%u)\n",
                name, r->doc, ps.n, r->n, i, i < ps.n ? ps.v[2 * i] : 0,
                i < ps.n ? ps.v[2 * i + 1] : 0, w[0], w[1]);
    }
    free(ps.v);
    return ok;
}

static int same_ids(const ql_ids *got, const rec *r) {
    if (got->n != r->n) return 0;
    for (size_t i = 0; i < r->n; i++) {
        uint32_t w;
        memcpy(&w, r->payload + 4 * i, 4);
        if (got->v[i] != (int32_t)w) return 0;
    }
    return 1;
}

static void check_tokenizer(const char *name, const char *load_path, const char *ref_path,
                            const doc *docs, uint32_t n_docs, int check_decode) {
    blob b;
    if (!read_gz(ref_path, &b)) {
        CHECKF(0, "cannot read %s", ref_path);
        return;
    }
    char magic[6];
    CHECK(take(&b, magic, 6) && !memcmp(magic, "QLTR1\n", 6));
    ql_tokenizer *t;
    ql_status st = ql_tokenizer_load(load_path, &t);
    CHECKF(st == QL_OK, "%s: %s", load_path, ql_error_message());
    if (st != QL_OK) {
        free(b.p);
        return;
    }
    /* HF's decode where it differs from the text, by document */
    rec *dec = calloc(n_docs, sizeof *dec), *norm = calloc(n_docs, sizeof *norm);
    size_t bad_enc = 0, bad_dec = 0, bad_pre = 0, n_pieces = 0, n_ids = 0, bytes = 0;
    size_t n_rec[7] = {0}, shown = 0;
    ql_ids ids = {0};
    size_t save = b.at;
    for (int pass = 0; pass < 2; pass++) {
        b.at = save;
        for (;;) {
            rec r;
            unsigned char kind;
            if (!take(&b, &kind, 1)) break;
            r.kind = kind;
            r.doc = u32(&b);
            r.n = u32(&b);
            if (r.kind == 0) break;
            r.payload = b.p + b.at;
            b.at += r.kind == 4 || r.kind == 6 ? r.n : (r.kind == 5 ? 8 : 4) * (size_t)r.n;
            if (r.doc >= n_docs || b.at > b.n) {
                CHECKF(0, "%s: bad record", ref_path);
                break;
            }
            if (pass == 0) {
                if (r.kind == 4) dec[r.doc] = r;
                if (r.kind == 6) norm[r.doc] = r;
                continue;
            }
            if (r.kind == 6) continue;
            n_rec[r.kind]++;
            if (r.kind == 4) continue;
            if (r.kind == 5) {
                bad_pre += !same_pieces(t, &docs[r.doc], &r, name);
                n_pieces += r.n;
                continue;
            }
            unsigned flags = r.kind == 2   ? 0
                             : r.kind == 3 ? QL_TOK_PARSE_SPECIAL | QL_TOK_ADD_BOS_EOS
                                           : QL_TOK_PARSE_SPECIAL;
            const doc *d = &docs[r.doc];
            ids.n = 0;
            st = ql_tokenizer_encode(t, d->p, d->n, flags, &ids);
            CHECKF(st == QL_OK, "%s doc %u: %s", name, r.doc, ql_error_message());
            if (!same_ids(&ids, &r)) {
                bad_enc++;
                if (shown++ < 5) {
                    uint32_t *w = malloc(4 * (size_t)r.n + 4);
                    memcpy(w, r.payload, 4 * (size_t)r.n);
                    static const char *kinds[] = {"", "encode", "no-special", "bos/eos"};
                    char what[96];
                    snprintf(what, sizeof what, "%s %s", name, kinds[r.kind]);
                    show_diff(t, what, r.doc, ids.v, ids.n, w, r.n);
                    free(w);
                }
            }
            if (r.kind != 1) continue;
            n_ids += ids.n;
            bytes += d->n;
            if (!check_decode) continue;
            char *text;
            size_t len;
            st = ql_tokenizer_decode(t, ids.v, ids.n, 0, &text, &len);
            CHECKF(st == QL_OK, "%s doc %u decode: %s", name, r.doc, ql_error_message());
            if (st != QL_OK) continue;
            const char *want = dec[r.doc].kind ? (const char *)dec[r.doc].payload : d->p;
            size_t want_n = dec[r.doc].kind ? dec[r.doc].n : d->n;
            if (len != want_n || memcmp(text, want, len)) {
                bad_dec++;
                if (bad_dec <= 3)
                    fprintf(stderr, "  %s doc %u: decode gives %zu bytes, want %zu\n", name, r.doc,
                            len, want_n);
            }
            free(text);
        }
    }
    CHECKF(n_rec[1] == n_docs, "%s: %zu documents in %s, want %u", name, n_rec[1], ref_path,
           n_docs);
    CHECKF(bad_enc == 0, "%s: %zu of %zu id sequences differ from tokenizers'", name, bad_enc,
           n_rec[1] + n_rec[2] + n_rec[3]);
    CHECKF(bad_dec == 0, "%s: decode differs on %zu documents", name, bad_dec);
    CHECKF(bad_pre == 0, "%s: pre-tokenizer pieces differ on %zu of %zu documents", name, bad_pre,
           n_rec[5]);
    if (n_rec[5])
        printf("%-14s pre-tokenizer pieces of %zu generated documents (%zu pieces): %s\n", name,
               n_rec[5], n_pieces, bad_pre ? "MISMATCH" : "all equal");
    printf("%-14s %zu documents, %zu bytes, %zu ids (+%zu no-special, %zu bos/eos sequences), "
           "%zu HF decodes differ from the text: %s\n",
           name, n_rec[1], bytes, n_ids, n_rec[2], n_rec[3], n_rec[4],
           bad_enc || bad_dec ? "MISMATCH" : "all equal");
    /* an NFC normalizer: its output on every document (the text itself
     * where tokenizers' normalize_str left it unchanged) */
    if (t->m->n_norm == 1 && t->m->norm[0].kind == QL_NORM_NFC) {
        ql_tok_buf out = {0}, tmp = {0};
        size_t bad = 0, changed = 0;
        for (uint32_t i = 0; i < n_docs; i++) {
            const char *want = norm[i].kind ? (const char *)norm[i].payload : docs[i].p;
            size_t want_n = norm[i].kind ? norm[i].n : docs[i].n;
            changed += norm[i].kind != 0;
            st = ql_tok_normalize(t->m, docs[i].p, docs[i].n, &out, &tmp);
            if (st != QL_OK || out.n != want_n || (want_n && memcmp(out.p, want, want_n))) {
                if (bad++ < 3) fprintf(stderr, "  %s doc %u: NFC differs\n", name, i);
            }
        }
        CHECKF(bad == 0, "%s: NFC output differs on %zu documents", name, bad);
        printf("%-14s NFC of %u documents (%zu changed by it): %s\n", name, n_docs, changed,
               bad ? "MISMATCH" : "all equal");
        ql_tok_buf_free(&out);
        ql_tok_buf_free(&tmp);
    }
    ql_ids_free(&ids);
    free(dec);
    free(norm);
    ql_tokenizer_free(t);
    free(b.p);
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    char dir[4096], path[4200], ref[4200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizer", src ? src : ".");
    snprintf(path, sizeof path, "%s/docs.bin.gz", dir);
    blob b;
    if (!read_gz(path, &b)) {
        fprintf(stderr, "cannot read %s (set QL_SOURCE_DIR)\n", path);
        return 1;
    }
    char magic[6];
    CHECK(take(&b, magic, 6) && !memcmp(magic, "QLTD1\n", 6));
    uint32_t n_docs = u32(&b);
    doc *docs = calloc(n_docs, sizeof *docs);
    for (uint32_t i = 0; i < n_docs; i++) {
        docs[i].n = u32(&b);
        docs[i].p = (const char *)b.p + b.at;
        b.at += docs[i].n;
        CHECK(b.at <= b.n);
    }

    static const char *trained[] = {"llama3_style", "qwen2_style", "sp_legacy", "sp_metaspace"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, trained[i]); /* as a model directory */
        snprintf(ref, sizeof ref, "%s/%s.ref.gz", dir, trained[i]);
        check_tokenizer(trained[i], path, ref, docs, n_docs, 1);
    }

    /* the same tokenizers read from GGUF metadata (llama-bpe, qwen2) */
    static const char *ggufs[] = {"llama3_style", "qwen2_style"};
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(path, sizeof path, "%s/%s.gguf", dir, ggufs[i]);
        snprintf(ref, sizeof ref, "%s/%s.ref.gz", dir, ggufs[i]);
        snprintf(name, sizeof name, "%s-gguf", ggufs[i]);
        check_tokenizer(name, path, ref, docs, n_docs, 1);
    }

    const char *cache = getenv("QL_CACHE");
    char dflt[4096];
    if (!cache) {
        snprintf(dflt, sizeof dflt, "%s/.cache/qlora", getenv("HOME") ? getenv("HOME") : "");
        cache = dflt;
    }
    snprintf(ref, sizeof ref, "%s/smollm2.ref.gz", dir);
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct-hf/tokenizer.json", cache);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        check_tokenizer("smollm2", path, ref, docs, n_docs, 1);
    } else {
        printf("smollm2: skipped (no %s)\n", path);
    }
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    f = fopen(path, "rb");
    if (f) {
        fclose(f);
        check_tokenizer("smollm2-gguf", path, ref, docs, n_docs, 1);
    } else {
        printf("smollm2-gguf: skipped (no %s)\n", path);
    }
    free(docs);
    free(b.p);
    return CHECK_DONE();
}
