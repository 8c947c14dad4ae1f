/* The resolved configuration as YAML that ql_config_parse reads back. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/json_float.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)w < b->cap - b->len) {
            b->len += (size_t)w;
            return;
        }
        size_t cap = (b->cap + (size_t)w + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A YAML double-quoted scalar: always valid whatever the text holds. */
static void put_quoted(sbuf *b, const char *s) {
    put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(b, "\\%c", *p);
        else if (*p == '\n')
            put(b, "\\n");
        else if (*p == '\t')
            put(b, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            put(b, "\\x%02x", *p);
        else
            put(b, "%c", *p);
    }
    put(b, "\"");
}

/* Shortest digits that read back exactly, always with a '.' so that YAML
 * 1.1 readers (PyYAML) see a float: "0.0002", "32.0", "1.0e-08". */
static void put_float(sbuf *b, double x) {
    char r[QL_FLOAT_REPR_MAX];
    ql_json_float_repr(x, r);
    char *e = strchr(r, 'e');
    if (e && !strchr(r, '.'))
        put(b, "%.*s.0%s", (int)(e - r), r, e);
    else
        put(b, "%s", r);
}

static void put_choice(sbuf *b, const char *choices, int idx) {
    const char *p = choices;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) return;
    put(b, "%.*s", (int)strcspn(p, "|"), p);
}

char *ql_config_to_yaml(const ql_config *c) {
    sbuf b = {0};
    size_t n;
    const ql_cfg_key *keys = ql_config_schema(&n);
    put(&b, "# resolved by qlora: defaults filled in, command-line overrides applied\n");
    char section[64] = "";
    for (size_t i = 0; i < n; i++) {
        const ql_cfg_key *k = &keys[i];
        const char *dot = strchr(k->path, '.');
        const char *name = k->path;
        if (dot) {
            size_t sl = (size_t)(dot - k->path);
            if (strlen(section) != sl || strncmp(section, k->path, sl)) {
                snprintf(section, sizeof section, "%.*s", (int)sl, k->path);
                put(&b, "%s:\n", section);
            }
            name = dot + 1;
            put(&b, "  ");
        }
        put(&b, "%s: ", name);
        const char *field = (const char *)c + k->offset;
        switch (k->type) {
        case QL_CFG_STR: put_quoted(&b, field); break;
        case QL_CFG_INT: put(&b, "%" PRId64, *(const int64_t *)field); break;
        case QL_CFG_FLOAT: put_float(&b, *(const double *)field); break;
        case QL_CFG_BOOL: put(&b, "%s", *(const int *)field ? "true" : "false"); break;
        case QL_CFG_CHOICE: put_choice(&b, k->choices, *(const int *)field); break;
        case QL_CFG_TARGETS: {
            unsigned t = *(const unsigned *)field;
            put(&b, "[");
            int first = 1;
            for (int j = 0; j < QL_CFG_N_TARGETS; j++)
                if (t & (1u << j)) {
                    put(&b, "%s%s", first ? "" : ", ", ql_config_target_name(j));
                    first = 0;
                }
            put(&b, "]");
            break;
        }
        }
        put(&b, "\n");
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
