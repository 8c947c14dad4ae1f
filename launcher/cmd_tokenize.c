/* qlora tokenize --model PATH [--no-special] [--bos-eos] TEXT|-
 * Prints the ids of TEXT (or of standard input with "-") and, one per line,
 * each id with its vocabulary piece: a quick look at what the model sees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "launcher/cli_flags.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora tokenize --model PATH [--no-special] [--bos-eos] TEXT|-\n"
               "  --model PATH    tokenizer.json, a model directory or a .gguf file\n"
               "  --no-special    treat special tokens in TEXT (<|im_start|>...) as plain text\n"
               "  --bos-eos       add BOS/EOS as the tokenizer config says\n"
               "  TEXT            the text; \"-\" reads standard input\n");
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    *len = n;
    return buf;
}

/* Pieces as a quoted string with control bytes escaped. */
static void print_piece(const char *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
}

int ql_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    unsigned flags = QL_TOK_PARSE_SPECIAL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strncmp(argv[i], "--model=", 8)) {
            model = argv[i] + 8;
        } else if (!strcmp(argv[i], "--no-special")) {
            flags &= ~QL_TOK_PARSE_SPECIAL;
        } else if (!strcmp(argv[i], "--bos-eos")) {
            flags |= QL_TOK_ADD_BOS_EOS;
        } else if (!text && (argv[i][0] != '-' || !strcmp(argv[i], "-"))) {
            text = argv[i];
        } else {
            return ql_cli_usage_error("tokenize", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return ql_cli_usage_error("tokenize", "%s", "--model is required");
    if (!text)
        return ql_cli_usage_error("tokenize", "%s", "TEXT (or - for standard input) is required");
    char *owned = NULL;
    size_t len;
    if (!strcmp(text, "-")) {
        owned = read_stdin(&len);
        if (!owned) {
            fprintf(stderr, "qlora tokenize: out of memory reading standard input\n");
            return QL_EXIT_ERROR;
        }
        text = owned;
    } else {
        len = strlen(text);
    }
    ql_tokenizer *tok;
    ql_status st = ql_tokenizer_load(model, &tok);
    if (st != QL_OK) {
        free(owned);
        return ql_report(st);
    }
    ql_ids ids = {0};
    st = ql_tokenizer_encode(tok, text, len, flags, &ids);
    if (st == QL_OK) {
        const ql_tokenizer_info *info = ql_tokenizer_info_of(tok);
        printf("%zu tokens (%s, vocabulary %d)\n", ids.n, info->kind, (int)info->vocab_size);
        for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? " " : "", (int)ids.v[i]);
        printf("\n");
        for (size_t i = 0; i < ids.n; i++) {
            size_t n = 0;
            const char *p = ql_tokenizer_piece(tok, ids.v[i], &n);
            printf("%8d  ", (int)ids.v[i]);
            print_piece(p ? p : "", n);
            printf("%s\n", ql_tokenizer_is_special(tok, ids.v[i]) ? "  (special)" : "");
        }
    }
    ql_ids_free(&ids);
    ql_tokenizer_free(tok);
    free(owned);
    return ql_report(st);
}
