#include "core/config_tree.h"

#include <stdlib.h>
#include <string.h>

#include <yaml.h>

typedef struct parse_ctx {
    yaml_parser_t p;
    const char *name;
} parse_ctx;

/* libyaml's marks are 0-based. */
static ql_status syntax_error(parse_ctx *c) {
    const yaml_parser_t *p = &c->p;
    if (p->error == YAML_MEMORY_ERROR)
        return ql_error(QL_ENOMEM, "%s: out of memory while parsing YAML", c->name);
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->context)
        return ql_error(QL_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s (%s at line %zu)", c->name,
                        p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                        p->context_mark.line + 1);
    return ql_error(QL_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s", c->name,
                    p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
}

static ql_status next_event(parse_ctx *c, yaml_event_t *e) {
    if (!yaml_parser_parse(&c->p, e)) return syntax_error(c);
    return QL_OK;
}

static ql_ynode *new_node(ql_ynode_kind kind, const yaml_event_t *e) {
    ql_ynode *n = ql_calloc(1, sizeof *n, "a YAML node");
    if (!n) return NULL;
    n->kind = kind;
    n->line = (int)e->start_mark.line + 1;
    n->col = (int)e->start_mark.column + 1;
    return n;
}

static ql_status grow(ql_ynode *n, const char *name) {
    /* One slot at a time: configuration files are small. */
    size_t k = n->n + 1;
    ql_ynode **items = realloc(n->items, k * sizeof *items);
    if (!items) return ql_error(QL_ENOMEM, "%s: out of memory for a YAML node", name);
    n->items = items;
    if (n->kind == QL_YNODE_MAP) {
        char **keys = realloc(n->keys, k * sizeof *keys);
        if (keys) n->keys = keys;
        int *kl = keys ? realloc(n->key_line, k * sizeof *kl) : NULL;
        if (kl) n->key_line = kl;
        int *kc = kl ? realloc(n->key_col, k * sizeof *kc) : NULL;
        if (kc) n->key_col = kc;
        if (!kc) return ql_error(QL_ENOMEM, "%s: out of memory for a YAML node", name);
    }
    return QL_OK;
}

static ql_status refuse(parse_ctx *c, const yaml_event_t *e, const char *what) {
    return ql_error(QL_EFORMAT, "%s:%zu:%zu: %s are not supported in a configuration file", c->name,
                    e->start_mark.line + 1, e->start_mark.column + 1, what);
}

static int has_tag(const yaml_event_t *e) {
    if (e->type == YAML_SCALAR_EVENT) return e->data.scalar.tag != NULL;
    if (e->type == YAML_MAPPING_START_EVENT) return e->data.mapping_start.tag != NULL;
    if (e->type == YAML_SEQUENCE_START_EVENT) return e->data.sequence_start.tag != NULL;
    return 0;
}

static int has_anchor(const yaml_event_t *e) {
    if (e->type == YAML_SCALAR_EVENT) return e->data.scalar.anchor != NULL;
    if (e->type == YAML_MAPPING_START_EVENT) return e->data.mapping_start.anchor != NULL;
    if (e->type == YAML_SEQUENCE_START_EVENT) return e->data.sequence_start.anchor != NULL;
    return 0;
}

/* Builds the node that starts with event *e (consumed by the caller). */
static ql_status build(parse_ctx *c, yaml_event_t *e, ql_ynode **out);

static ql_status build_children(parse_ctx *c, ql_ynode *n) {
    yaml_event_t e;
    for (;;) {
        QL_TRY(next_event(c, &e));
        if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&e);
            return QL_OK;
        }
        ql_status st = grow(n, c->name);
        if (st != QL_OK) {
            yaml_event_delete(&e);
            return st;
        }
        if (n->kind == QL_YNODE_MAP) {
            if (e.type != YAML_SCALAR_EVENT) {
                st = refuse(c, &e, "keys that are not plain strings");
                yaml_event_delete(&e);
                return st;
            }
            char *key = strdup((const char *)e.data.scalar.value);
            int kl = (int)e.start_mark.line + 1, kc = (int)e.start_mark.column + 1;
            yaml_event_delete(&e);
            if (!key) return ql_error(QL_ENOMEM, "%s: out of memory for a YAML key", c->name);
            for (size_t i = 0; i < n->n; i++)
                if (!strcmp(n->keys[i], key)) {
                    st = ql_error(QL_EFORMAT, "%s:%d:%d: duplicate key '%s' (first at line %d)",
                                  c->name, kl, kc, key, n->key_line[i]);
                    free(key);
                    return st;
                }
            n->keys[n->n] = key;
            n->key_line[n->n] = kl;
            n->key_col[n->n] = kc;
            n->items[n->n] = NULL;
            n->n++; /* counted now so that ql_ytree_free frees the key on error */
            QL_TRY(next_event(c, &e));
            st = build(c, &e, &n->items[n->n - 1]);
            yaml_event_delete(&e);
            QL_TRY(st);
        } else {
            n->items[n->n] = NULL;
            n->n++;
            st = build(c, &e, &n->items[n->n - 1]);
            yaml_event_delete(&e);
            QL_TRY(st);
        }
    }
}

static ql_status build(parse_ctx *c, yaml_event_t *e, ql_ynode **out) {
    *out = NULL;
    if (e->type == YAML_ALIAS_EVENT) return refuse(c, e, "aliases (*name)");
    if (has_anchor(e)) return refuse(c, e, "anchors (&name)");
    if (has_tag(e)) return refuse(c, e, "tags (!name)");
    if (e->type == YAML_SCALAR_EVENT) {
        ql_ynode *n = new_node(QL_YNODE_SCALAR, e);
        if (!n) return QL_ENOMEM;
        n->text = strdup((const char *)e->data.scalar.value);
        n->plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (!n->text) {
            free(n);
            return ql_error(QL_ENOMEM, "%s: out of memory for a YAML value", c->name);
        }
        *out = n;
        return QL_OK;
    }
    if (e->type == YAML_MAPPING_START_EVENT || e->type == YAML_SEQUENCE_START_EVENT) {
        ql_ynode *n =
            new_node(e->type == YAML_MAPPING_START_EVENT ? QL_YNODE_MAP : QL_YNODE_SEQ, e);
        if (!n) return QL_ENOMEM;
        *out = n;
        return build_children(c, n);
    }
    return ql_error(QL_EINTERNAL, "%s:%zu:%zu: unexpected YAML event %d", c->name,
                    e->start_mark.line + 1, e->start_mark.column + 1, (int)e->type);
}

ql_status ql_ytree_parse(const char *text, size_t len, const char *name, ql_ynode **root) {
    *root = NULL;
    parse_ctx c = {.name = name};
    if (!yaml_parser_initialize(&c.p))
        return ql_error(QL_ENOMEM, "%s: cannot initialise the YAML parser", name);
    yaml_parser_set_input_string(&c.p, (const unsigned char *)text, len);
    ql_status st = QL_OK;
    int docs = 0;
    yaml_event_t e;
    for (;;) {
        QL_TRY_GOTO(st, next_event(&c, &e), out);
        yaml_event_type_t t = e.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&e);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            st = ql_error(QL_EFORMAT,
                          "%s:%zu:%zu: a second YAML document; a configuration file holds one",
                          name, e.start_mark.line + 1, e.start_mark.column + 1);
            yaml_event_delete(&e);
            goto out;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_MAPPING_START_EVENT ||
            t == YAML_SEQUENCE_START_EVENT || t == YAML_ALIAS_EVENT) {
            st = build(&c, &e, root);
            yaml_event_delete(&e);
            if (st != QL_OK) goto out;
            continue;
        }
        yaml_event_delete(&e);
    }
    /* A document that is only a plain null ("", "~") is an empty one. */
    if (*root && ql_ynode_is_null(*root)) {
        ql_ytree_free(*root);
        *root = NULL;
    }
out:
    yaml_parser_delete(&c.p);
    if (st != QL_OK) {
        ql_ytree_free(*root);
        *root = NULL;
    }
    return st;
}

void ql_ytree_free(ql_ynode *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) {
        ql_ytree_free(n->items[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->key_line);
    free(n->key_col);
    free(n->text);
    free(n);
}

int ql_ynode_is_null(const ql_ynode *n) {
    if (!n) return 1;
    if (n->kind != QL_YNODE_SCALAR || !n->plain) return 0;
    const char *t = n->text;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}
