/* A stand-in for <jansson.h> in the nvcc-only build of tests/gpu/run.sh
 * (an image without the JSON library's development files). The GPU programs
 * build their model configurations in C (ql_hf_config.json stays NULL), so
 * the JSON checks in model/llama_load.c never run there; these declarations
 * only let that file compile. Never on the include path of the CMake build. */
#ifndef QL_GPU_MIN_JANSSON_H
#define QL_GPU_MIN_JANSSON_H

#include <stddef.h>

typedef struct json_t json_t;

static inline json_t *json_object_get(const json_t *o, const char *k) {
    (void)o, (void)k;
    return NULL;
}
static inline int json_is_null(const json_t *j) { return j == NULL; }
static inline int json_is_string(const json_t *j) { return (void)j, 0; }
static inline int json_is_true(const json_t *j) { return (void)j, 0; }
static inline int json_is_integer(const json_t *j) { return (void)j, 0; }
static inline const char *json_string_value(const json_t *j) { return (void)j, ""; }
static inline long long json_integer_value(const json_t *j) { return (void)j, 0; }

#endif
