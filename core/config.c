/* Resolving a configuration: YAML tree + overrides + defaults -> ql_config. */
#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config_tree.h"
#include "core/fsutil.h"
#include "kernels/nf4.h"

#define LOC_MAX 600

/* Where the value of each key came from, for messages. */
typedef struct resolve_ctx {
    const char *name;
    size_t n_keys;
    const ql_cfg_key *keys;
    const ql_ynode **val; /* [n_keys] the node that wins, or NULL */
    char (*loc)[LOC_MAX]; /* [n_keys] "cfg.yaml:3:7" or "command line" */
    ql_config *c;
} resolve_ctx;

static int key_index(const resolve_ctx *r, const char *path) {
    for (size_t i = 0; i < r->n_keys; i++)
        if (!strcmp(r->keys[i].path, path)) return (int)i;
    return -1;
}

/* "lora" is a section when some key starts with "lora.". */
static int is_section(const resolve_ctx *r, const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < r->n_keys; i++)
        if (!strncmp(r->keys[i].path, path, n) && r->keys[i].path[n] == '.') return 1;
    return 0;
}

static ql_status unknown_key(const char *where, const char *path) {
    const char *s = ql_config_suggest(path);
    if (s) return ql_error(QL_EINVAL, "%s: unknown key '%s' (did you mean '%s'?)", where, path, s);
    return ql_error(QL_EINVAL, "%s: unknown key '%s'", where, path);
}

/* "r, alpha, dropout, targets, use_rslora" */
static void section_keys(const resolve_ctx *r, const char *sec, char *buf, size_t cap) {
    size_t n = strlen(sec), used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->n_keys; i++) {
        const char *p = r->keys[i].path;
        if (strncmp(p, sec, n) || p[n] != '.') continue;
        int w = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", p + n + 1);
        if (w < 0 || (size_t)w >= cap - used) break;
        used += (size_t)w;
    }
}

static const char *kind_name(const ql_ynode *n) {
    if (n->kind == QL_YNODE_MAP) return "a mapping";
    if (n->kind == QL_YNODE_SEQ) return "a list";
    return "a value";
}

static ql_status walk(resolve_ctx *r, const ql_ynode *map, const char *prefix) {
    for (size_t i = 0; i < map->n; i++) {
        char path[256], where[LOC_MAX];
        snprintf(where, sizeof where, "%s:%d:%d", r->name, map->key_line[i], map->key_col[i]);
        int w = snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", map->keys[i]);
        if (w < 0 || (size_t)w >= sizeof path)
            return ql_error(QL_EINVAL, "%s: unknown key '%.200s...'", where, path);
        const ql_ynode *v = map->items[i];
        int k = key_index(r, path);
        if (k >= 0) {
            r->val[k] = v;
            snprintf(r->loc[k], LOC_MAX, "%s:%d:%d", r->name, v ? v->line : map->key_line[i],
                     v ? v->col : map->key_col[i]);
            continue;
        }
        if (is_section(r, path)) {
            if (ql_ynode_is_null(v)) continue; /* "lora:" with every key commented out */
            if (v->kind != QL_YNODE_MAP) {
                char keys[300];
                section_keys(r, path, keys, sizeof keys);
                return ql_error(QL_EINVAL, "%s: '%s' is a section: expected its keys (%s), got %s",
                                where, path, keys, kind_name(v));
            }
            QL_TRY(walk(r, v, path));
            continue;
        }
        return unknown_key(where, path);
    }
    return QL_OK;
}

/* ---- typed values --------------------------------------------------------------- */

static ql_status bad(const resolve_ctx *r, int k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ql_status bad(const resolve_ctx *r, int k, const char *fmt, ...) {
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ql_error(QL_EINVAL, "%s: %s: %s", r->loc[k], r->keys[k].path, what);
}

static ql_status want_scalar(const resolve_ctx *r, int k, const ql_ynode *v, const char *type) {
    if (ql_ynode_is_null(v)) return bad(r, k, "expected %s, got nothing", type);
    if (v->kind != QL_YNODE_SCALAR) return bad(r, k, "expected %s, got %s", type, kind_name(v));
    return QL_OK;
}

static int parse_int(const char *s, int64_t *out) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = x;
    return 0;
}

static int parse_float(const char *s, double *out) {
    /* strtod would also take "nan", "inf" and hex floats; a config has no use
     * for them. */
    if (!*s || strspn(s, "0123456789+-.eE") != strlen(s)) return -1;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (*end || !isfinite(x) || (errno == ERANGE && fabs(x) > 1.0)) return -1;
    *out = x;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *const t[] = {"true", "yes", "on"}, *const f[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(s, t[i])) return *out = 1, 0;
        if (!strcasecmp(s, f[i])) return *out = 0, 0;
    }
    return -1;
}

/* Index of `s` in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *s) {
    size_t n = strlen(s);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, s, n)) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

/* "cosine, linear, constant" and the closest choice to `s` (or ""). */
static void describe_choices(const char *choices, const char *s, char *list, size_t cap, char *near,
                             size_t near_cap) {
    size_t used = 0;
    int best = 3;
    near[0] = list[0] = '\0';
    for (const char *p = choices;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        char one[64];
        snprintf(one, sizeof one, "%.*s", (int)len, p);
        int w = snprintf(list + used, cap - used, "%s%s", used ? ", " : "", one);
        if (w > 0 && (size_t)w < cap - used) used += (size_t)w;
        int d = ql_config_edit_distance(s, one);
        if (d < best) {
            best = d;
            snprintf(near, near_cap, "%s", one);
        }
        if (!bar) break;
        p = bar + 1;
    }
}

static ql_status bad_choice(const resolve_ctx *r, int k, const char *choices, const char *text) {
    char list[300], near[64];
    describe_choices(choices, text, list, sizeof list, near, sizeof near);
    if (*near)
        return bad(r, k, "expected one of %s, got '%s' (did you mean '%s'?)", list, text, near);
    return bad(r, k, "expected one of %s, got '%s'", list, text);
}

static void fmt_bound(double x, char *buf, size_t n) { snprintf(buf, n, "%g", x); }

static ql_status check_range(const resolve_ctx *r, int k, double x, const char *text) {
    const ql_cfg_key *key = &r->keys[k];
    int lo_bad = key->min_open ? !(x > key->min) : !(x >= key->min);
    int hi_bad = key->max_open ? !(x < key->max) : !(x <= key->max);
    if (!lo_bad && !hi_bad) return QL_OK;
    char lo[32], hi[32];
    fmt_bound(key->min, lo, sizeof lo);
    fmt_bound(key->max, hi, sizeof hi);
    if (isinf(key->max) || key->max >= 1e15)
        return bad(r, k, "must be %s %s, got %s", key->min_open ? ">" : ">=", lo, text);
    return bad(r, k, "must be in %c%s, %s%c, got %s", key->min_open ? '(' : '[', lo, hi,
               key->max_open ? ')' : ']', text);
}

static void warn(ql_config *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(ql_config *c, const char *fmt, ...) {
    size_t used = strlen(c->warnings);
    if (used + 2 >= sizeof c->warnings) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->warnings + used, sizeof c->warnings - used - 1, fmt, ap);
    va_end(ap);
    strcat(c->warnings, "\n");
}

static ql_status set_targets(const resolve_ctx *r, int k, const ql_ynode *v, unsigned *out) {
    const char *type = "a list of module names";
    if (ql_ynode_is_null(v)) return bad(r, k, "expected %s, got nothing", type);
    if (v->kind == QL_YNODE_MAP) return bad(r, k, "expected %s, got a mapping", type);
    /* A scalar is a comma-separated list, as "--lora.targets=q_proj,v_proj". */
    char *one_copy = NULL;
    const char **names;
    size_t n;
    if (v->kind == QL_YNODE_SCALAR) {
        one_copy = strdup(v->text);
        names = calloc(strlen(v->text) + 1, sizeof *names);
        if (!one_copy || !names) {
            free(one_copy);
            free(names);
            return ql_error(QL_ENOMEM, "out of memory for lora.targets");
        }
        n = 0;
        for (char *save = NULL, *t = strtok_r(one_copy, ", ", &save); t;
             t = strtok_r(NULL, ", ", &save))
            names[n++] = t;
    } else {
        names = calloc(v->n + 1, sizeof *names);
        if (!names) return ql_error(QL_ENOMEM, "out of memory for lora.targets");
        n = v->n;
        for (size_t i = 0; i < n; i++) {
            const ql_ynode *it = v->items[i];
            if (ql_ynode_is_null(it) || it->kind != QL_YNODE_SCALAR) {
                free(names);
                return bad(r, k, "item %zu: expected a module name, got %s", i + 1,
                           ql_ynode_is_null(it) ? "nothing" : kind_name(it));
            }
            names[i] = it->text;
        }
    }
    ql_status st = QL_OK;
    unsigned set = 0;
    for (size_t i = 0; i < n && st == QL_OK; i++) {
        if (!strcmp(names[i], "all-linear")) {
            set = (1u << QL_CFG_N_TARGETS) - 1u;
            continue;
        }
        int found = -1, best = 3, near = -1;
        for (int t = 0; t < QL_CFG_N_TARGETS; t++) {
            if (!strcmp(names[i], ql_config_target_name(t))) found = t;
            int d = ql_config_edit_distance(names[i], ql_config_target_name(t));
            if (d < best) best = d, near = t;
        }
        if (found >= 0) {
            set |= 1u << found;
        } else if (near >= 0) {
            st = bad(r, k,
                     "unknown module '%s' (did you mean '%s'?); expected q_proj, k_proj, v_proj, "
                     "o_proj, gate_proj, up_proj, down_proj or all-linear",
                     names[i], ql_config_target_name(near));
        } else {
            st = bad(r, k,
                     "unknown module '%s'; expected q_proj, k_proj, v_proj, o_proj, gate_proj, "
                     "up_proj, down_proj or all-linear",
                     names[i]);
        }
    }
    if (st == QL_OK && !set) st = bad(r, k, "expected at least one module");
    free(names);
    free(one_copy);
    if (st == QL_OK) *out = set;
    return st;
}

static ql_status set_value(resolve_ctx *r, int k, const ql_ynode *v) {
    const ql_cfg_key *key = &r->keys[k];
    char *field = (char *)r->c + key->offset;
    switch (key->type) {
    case QL_CFG_STR: {
        QL_TRY(want_scalar(r, k, v, "a string"));
        if (key->choices && choice_index(key->choices, v->text) < 0)
            return bad_choice(r, k, key->choices, v->text);
        if (strlen(v->text) >= key->size)
            return bad(r, k, "longer than %zu characters", key->size - 1);
        memcpy(field, v->text, strlen(v->text) + 1);
        return QL_OK;
    }
    case QL_CFG_INT: {
        QL_TRY(want_scalar(r, k, v, "an integer"));
        int64_t x;
        if (parse_int(v->text, &x)) return bad(r, k, "expected an integer, got '%s'", v->text);
        QL_TRY(check_range(r, k, (double)x, v->text));
        *(int64_t *)field = x;
        return QL_OK;
    }
    case QL_CFG_FLOAT: {
        QL_TRY(want_scalar(r, k, v, "a number"));
        double x;
        if (parse_float(v->text, &x)) return bad(r, k, "expected a number, got '%s'", v->text);
        QL_TRY(check_range(r, k, x, v->text));
        if ((key->warn_min != 0 || key->warn_max != 0) && (x < key->warn_min || x > key->warn_max))
            warn(r->c, "%s: warning: %s = %s is far outside the usual range %g..%g", r->loc[k],
                 key->path, v->text, key->warn_min, key->warn_max);
        *(double *)field = x;
        return QL_OK;
    }
    case QL_CFG_BOOL: {
        QL_TRY(want_scalar(r, k, v, "true or false"));
        if (parse_bool(v->text, (int *)field))
            return bad(r, k, "expected true or false, got '%s'", v->text);
        return QL_OK;
    }
    case QL_CFG_CHOICE: {
        char list[300], near[64];
        describe_choices(key->choices, "", list, sizeof list, near, sizeof near);
        char type[320];
        snprintf(type, sizeof type, "one of %s", list);
        QL_TRY(want_scalar(r, k, v, type));
        int i = choice_index(key->choices, v->text);
        if (i < 0) return bad_choice(r, k, key->choices, v->text);
        *(int *)field = i;
        return QL_OK;
    }
    case QL_CFG_TARGETS: return set_targets(r, k, v, (unsigned *)field);
    }
    return ql_error(QL_EINTERNAL, "config key %s has no type", key->path);
}

/* Checks that involve more than one key. */
static ql_status cross_checks(resolve_ctx *r) {
    ql_config *c = r->c;
    int k = key_index(r, "train.micro_batch");
    if (c->train.micro_batch > c->train.global_batch)
        return ql_error(QL_EINVAL,
                        "%s: train.micro_batch (%lld) must not exceed "
                        "train.global_batch (%lld)",
                        r->loc[k], (long long)c->train.micro_batch,
                        (long long)c->train.global_batch);
    k = key_index(r, "quant.blocksize");
    if (!ql_q4_blocksize_ok(c->quant.blocksize))
        return bad(r, k, "must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096, got %lld",
                   (long long)c->quant.blocksize);
    k = key_index(r, "data.valid_fraction");
    if (c->data.valid[0] && c->data.valid_fraction > 0)
        return ql_error(QL_EINVAL,
                        "%s: data.valid_fraction (%g) and data.valid (%s, %s) are both set: "
                        "the validation set comes from one of them",
                        r->loc[k], c->data.valid_fraction, c->data.valid,
                        r->loc[key_index(r, "data.valid")]);
    k = key_index(r, "train.warmup_steps");
    if (c->train.warmup_steps > c->train.steps)
        warn(c,
             "%s: warning: train.warmup_steps (%lld) exceeds train.steps (%lld): the learning "
             "rate never reaches train.lr",
             r->loc[k], (long long)c->train.warmup_steps, (long long)c->train.steps);
    return QL_OK;
}

int ql_config_split_override(const char *arg, char *buf, ql_cfg_override *o) {
    if (strncmp(arg, "--", 2) != 0) return -1;
    strcpy(buf, arg + 2);
    char *eq = strchr(buf, '=');
    if (!eq || eq == buf) return -1;
    *eq = '\0';
    o->key = buf;
    o->value = eq + 1;
    return 0;
}

ql_status ql_config_parse(const char *text, size_t len, const char *name, const ql_cfg_override *ov,
                          size_t n_ov, ql_config *c) {
    memset(c, 0, sizeof *c);
    resolve_ctx r = {.name = name, .c = c};
    r.keys = ql_config_schema(&r.n_keys);
    r.val = calloc(r.n_keys, sizeof *r.val);
    r.loc = calloc(r.n_keys, sizeof *r.loc);
    ql_ynode *root = NULL, **ov_roots = calloc(n_ov + 1, sizeof *ov_roots),
             **def_roots = calloc(r.n_keys, sizeof *def_roots);
    ql_status st = QL_OK;
    if (!r.val || !r.loc || !ov_roots || !def_roots) {
        st = ql_error(QL_ENOMEM, "out of memory resolving the configuration");
        goto out;
    }
    if (text) {
        QL_TRY_GOTO(st, ql_ytree_parse(text, len, name, &root), out);
        if (root && root->kind != QL_YNODE_MAP) {
            st = ql_error(QL_EINVAL,
                          "%s:%d:%d: expected keys such as 'model:' at the top level, "
                          "got %s",
                          name, root->line, root->col, kind_name(root));
            goto out;
        }
        if (root) QL_TRY_GOTO(st, walk(&r, root, ""), out);
    }
    for (size_t i = 0; i < n_ov; i++) {
        int k = key_index(&r, ov[i].key);
        if (k < 0) {
            if (is_section(&r, ov[i].key)) {
                char keys[300];
                section_keys(&r, ov[i].key, keys, sizeof keys);
                st = ql_error(QL_EINVAL,
                              "command line: '%s' is a section: set its keys, e.g. --%s.%.*s=...",
                              ov[i].key, ov[i].key, (int)strcspn(keys, ","), keys);
            } else {
                st = unknown_key("command line", ov[i].key);
            }
            goto out;
        }
        if (r.keys[k].type == QL_CFG_STR) {
            /* Paths and names are taken as typed: "--model=a: b" is a string,
             * not a YAML mapping. */
            /* A key whose default is "" is emptied by --key= or --key="" (the
             * shell's quotes kept: --key='""'); for the others an empty value
             * is nothing, an error. */
            const char *v = ov[i].value;
            const int emptiable = r.keys[k].def && !strcmp(r.keys[k].def, "\"\"");
            if (emptiable && (!strcmp(v, "\"\"") || !strcmp(v, "''"))) v = "";
            ov_roots[i] = ql_calloc(1, sizeof *ov_roots[i], "an override");
            if (ov_roots[i]) ov_roots[i]->text = strdup(v);
            if (!ov_roots[i] || !ov_roots[i]->text) {
                st = ql_error(QL_ENOMEM, "out of memory for an override");
                goto out;
            }
            ov_roots[i]->kind = QL_YNODE_SCALAR;
            ov_roots[i]->plain = !*v && !emptiable;
        } else {
            char vname[300];
            snprintf(vname, sizeof vname, "command line --%s", ov[i].key);
            QL_TRY_GOTO(st, ql_ytree_parse(ov[i].value, strlen(ov[i].value), vname, &ov_roots[i]),
                        out);
        }
        static const ql_ynode empty = {.kind = QL_YNODE_SCALAR, .text = "", .plain = 1};
        r.val[k] = ov_roots[i] ? ov_roots[i] : &empty;
        snprintf(r.loc[k], LOC_MAX, "command line");
    }
    /* What the user wrote is checked before what they left out. */
    for (size_t k = 0; k < r.n_keys; k++)
        if (r.val[k]) QL_TRY_GOTO(st, set_value(&r, (int)k, r.val[k]), out);
    for (size_t k = 0; k < r.n_keys; k++) {
        if (r.val[k]) continue;
        if (!r.keys[k].def) {
            st = ql_error(QL_EINVAL, "%s: missing required key '%s' (%s)",
                          text ? name : "command line", r.keys[k].path, r.keys[k].doc);
            goto out;
        }
        QL_TRY_GOTO(st,
                    ql_ytree_parse(r.keys[k].def, strlen(r.keys[k].def), "default", &def_roots[k]),
                    out);
        snprintf(r.loc[k], LOC_MAX, "default");
        QL_TRY_GOTO(st, set_value(&r, (int)k, def_roots[k]), out);
    }
    for (size_t k = 0; k < r.n_keys; k++)
        if (r.val[k]) c->given[k / 64] |= UINT64_C(1) << (k % 64);
    st = cross_checks(&r);
out:
    ql_ytree_free(root);
    for (size_t i = 0; ov_roots && i < n_ov; i++) ql_ytree_free(ov_roots[i]);
    for (size_t k = 0; def_roots && k < r.n_keys; k++) ql_ytree_free(def_roots[k]);
    free(ov_roots);
    free(def_roots);
    free(r.val);
    free(r.loc);
    return st;
}

int ql_config_given(const ql_config *c, const char *key) {
    size_t n;
    const ql_cfg_key *keys = ql_config_schema(&n);
    for (size_t k = 0; k < n; k++)
        if (!strcmp(keys[k].path, key)) return (int)((c->given[k / 64] >> (k % 64)) & 1u);
    return 0;
}

ql_status ql_config_load(const char *path, const ql_cfg_override *ov, size_t n_ov, ql_config *c) {
    char *text = NULL;
    size_t len = 0;
    QL_TRY(ql_fs_read_file(path, &text, &len));
    ql_status st = ql_config_parse(text, len, path, ov, n_ov, c);
    free(text);
    return st;
}
