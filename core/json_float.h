/* JSON text the way Python writes it.
 *
 * bitsandbytes stores its quant state as `json.dumps(dict)` and transformers
 * writes config.json with `json.dumps(..., indent=2, sort_keys=True)`. To
 * produce those bytes from C, floats must be printed as Python's repr does
 * (shortest digits that round-trip) and the separators must match. */
#ifndef QL_JSON_FLOAT_H
#define QL_JSON_FLOAT_H

#include <stddef.h>

#include <jansson.h>

#include "core/status.h"

/* Longest text ql_json_float_repr can produce, with the NUL. */
#define QL_FLOAT_REPR_MAX 32

/* Python's repr(float(x)) into buf: "0.1", "123.0", "1e-05", "2.5e-07",
 * "1e+16", "inf", "nan". Returns the length written. */
int ql_json_float_repr(double x, char buf[QL_FLOAT_REPR_MAX]);

/* Serializes `v` like Python's json.dumps: indent < 0 gives the one-line form
 * with ", " and ": " separators; indent >= 0 puts every item on its own line
 * with "," and ": ". sort_keys sorts object keys by code point, otherwise the
 * object's own order is kept. Non-ASCII is escaped as \uXXXX (ensure_ascii).
 * On success *out is a malloc'd NUL-terminated string (caller frees). */
ql_status ql_json_dumps_py(const json_t *v, int indent, int sort_keys, char **out, size_t *len);

#endif
