/* A YAML document as a small tree of mappings, sequences and scalars, each
 * node remembering where it was written, so that configuration errors can
 * name file:line:column. Parsed with libyaml; anchors/aliases, tags and
 * multiple documents are refused (a configuration has no use for them and
 * they make "where was this value written" ambiguous). */
#ifndef QL_CONFIG_TREE_H
#define QL_CONFIG_TREE_H

#include <stddef.h>

#include "core/status.h"

typedef enum ql_ynode_kind { QL_YNODE_SCALAR, QL_YNODE_MAP, QL_YNODE_SEQ } ql_ynode_kind;

typedef struct ql_ynode ql_ynode;
struct ql_ynode {
    ql_ynode_kind kind;
    int line, col; /* 1-based */
    /* scalar */
    char *text;
    int plain; /* written without quotes: "~", "null" and "" then mean null */
    /* map (keys[i] -> items[i]) and seq (items[i]) */
    size_t n;
    char **keys;
    int *key_line, *key_col;
    ql_ynode **items;
};

/* Parses `len` bytes of YAML. `name` prefixes messages ("cfg.yaml:3:7: ...").
 * An empty document gives *root = NULL. */
ql_status ql_ytree_parse(const char *text, size_t len, const char *name, ql_ynode **root);
void ql_ytree_free(ql_ynode *n);

/* A plain scalar that YAML reads as null: "", "~", "null", "Null", "NULL". */
int ql_ynode_is_null(const ql_ynode *n);

#endif
