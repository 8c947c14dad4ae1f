#include "core/json_float.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytebuf.h"

int ql_json_float_repr(double x, char buf[QL_FLOAT_REPR_MAX]) {
    if (isnan(x)) return snprintf(buf, QL_FLOAT_REPR_MAX, "nan");
    if (isinf(x)) return snprintf(buf, QL_FLOAT_REPR_MAX, x < 0 ? "-inf" : "inf");
    if (x == 0.0) return snprintf(buf, QL_FLOAT_REPR_MAX, signbit(x) ? "-0.0" : "0.0");

    /* glibc's %e is correctly rounded, so the first precision whose text reads
     * back as x gives the shortest round-tripping digits, which is what
     * Python's repr (David Gay's shortest mode) picks. */
    char sci[40];
    for (int p = 0; p <= 16; p++) {
        snprintf(sci, sizeof sci, "%.*e", p, x);
        if (strtod(sci, NULL) == x) break;
    }
    char digits[24];
    int nd = 0, neg = 0;
    const char *s = sci;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    int e10 = atoi(s + 1); /* x = d0.d1d2... * 10^e10 */
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';

    char *o = buf;
    if (neg) *o++ = '-';
    /* Python switches to exponent notation when the decimal point would sit
     * more than 16 places right of the first digit or 4 places left of it. */
    if (e10 < -4 || e10 >= 16) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        o += sprintf(o, "e%c%02d", e10 < 0 ? '-' : '+', e10 < 0 ? -e10 : e10);
    } else if (e10 < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -e10 - 1; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= e10; i++) *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > e10 + 1) {
            memcpy(o, digits + e10 + 1, (size_t)(nd - e10 - 1));
            o += nd - e10 - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = '\0';
    return (int)(o - buf);
}

typedef ql_bytebuf sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) { ql_bytebuf_put(b, s, n); }
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_indent(sbuf *b, int indent, int level) {
    sb_put(b, "\n", 1);
    for (int i = 0; i < indent * level; i++) sb_put(b, " ", 1);
}

/* Decodes one UTF-8 sequence (jansson guarantees valid UTF-8). */
static uint32_t utf8_next(const unsigned char **s) {
    const unsigned char *p = *s;
    uint32_t c = p[0];
    int extra = 0;
    if (c >= 0xf0) {
        c &= 0x07;
        extra = 3;
    } else if (c >= 0xe0) {
        c &= 0x0f;
        extra = 2;
    } else if (c >= 0xc0) {
        c &= 0x1f;
        extra = 1;
    }
    for (int i = 1; i <= extra && p[i]; i++) c = (c << 6) | (p[i] & 0x3f);
    *s = p + 1 + extra;
    return c;
}

static void put_string(sbuf *b, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    char tmp[16];
    sb_put(b, "\"", 1);
    while (s < end) {
        uint32_t c = *s;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            sb_put(b, (const char *)s, 1);
            s++;
            continue;
        }
        if (c == 0) { /* embedded NUL: jansson allows it in sized strings */
            s++;
        } else if (c < 0x80) {
            s++;
        } else {
            c = utf8_next(&s);
        }
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (c > 0xffff) {
                uint32_t v = c - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xd800 + (v >> 10),
                         0xdc00 + (v & 0x3ff));
            } else {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
            }
            sb_puts(b, tmp);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_keys(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static ql_status dump(sbuf *b, const json_t *v, int indent, int sort_keys, int level) {
    char num[QL_FLOAT_REPR_MAX + 8];
    switch (json_typeof(v)) {
    case JSON_NULL: sb_puts(b, "null"); break;
    case JSON_TRUE: sb_puts(b, "true"); break;
    case JSON_FALSE: sb_puts(b, "false"); break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        sb_puts(b, num);
        break;
    case JSON_REAL: {
        double d = json_real_value(v);
        /* json.dumps spells the non-finite values as JavaScript does. */
        if (isnan(d))
            sb_puts(b, "NaN");
        else if (isinf(d))
            sb_puts(b, d < 0 ? "-Infinity" : "Infinity");
        else {
            ql_json_float_repr(d, num);
            sb_puts(b, num);
        }
        break;
    }
    case JSON_STRING: put_string(b, json_string_value(v), json_string_length(v)); break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            sb_puts(b, "[]");
            break;
        }
        sb_put(b, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) sb_indent(b, indent, level + 1);
            QL_TRY(dump(b, json_array_get(v, i), indent, sort_keys, level + 1));
        }
        if (indent >= 0) sb_indent(b, indent, level);
        sb_put(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        if (n == 0) {
            sb_puts(b, "{}");
            break;
        }
        const char **keys = ql_malloc(n * sizeof *keys, "JSON object keys");
        if (!keys) return QL_ENOMEM;
        size_t k = 0;
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val) keys[k++] = key;
        if (sort_keys) qsort(keys, n, sizeof *keys, cmp_keys);
        sb_put(b, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) sb_indent(b, indent, level + 1);
            put_string(b, keys[i], strlen(keys[i]));
            sb_puts(b, ": ");
            ql_status st = dump(b, json_object_get(v, keys[i]), indent, sort_keys, level + 1);
            if (st != QL_OK) {
                free(keys);
                return st;
            }
        }
        free(keys);
        if (indent >= 0) sb_indent(b, indent, level);
        sb_put(b, "}", 1);
        break;
    }
    }
    return QL_OK;
}

ql_status ql_json_dumps_py(const json_t *v, int indent, int sort_keys, char **out, size_t *len) {
    sbuf b = {0};
    sb_put(&b, "", 0);
    ql_status st = dump(&b, v, indent, sort_keys, 0);
    if (st == QL_OK && b.oom) st = ql_error(QL_ENOMEM, "out of memory formatting JSON");
    if (st != QL_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    if (len) *len = b.len;
    return QL_OK;
}
