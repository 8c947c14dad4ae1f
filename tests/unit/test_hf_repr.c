/* Python-compatible JSON text: float repr and json.dumps layout.
 *
 * Reference strings were printed by CPython 3.11 (repr(float) and
 * json.dumps), not derived from the code under test. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json_float.h"

static const struct {
    double x;
    const char *repr;
} cases[] = {
    {0x1.5f8c7e0000000p+1, "2.7464749813079834"},   /* FORMATS §8 nested_offset */
    {0x1.0491800000000p-5, "0.031807661056518555"}, /* FORMATS §2 real blob */
    {0x1.4f8b588e368f1p-17, "1e-05"},
    {0x1.a36e2eb1c432dp-14, "0.0001"},
    {0x1.1c37937e08000p+53, "1e+16"},
    {0x1.ec00000000000p+6, "123.0"},
    {0x1.421f5f40d8376p-23, "1.5e-07"},
    {0x1.999999999999ap-4, "0.1"},
    {0x1.99999a0000000p-4, "0.10000000149011612"},
    {0x1.1c37937e07fffp+53, "9999999999999998.0"},
    {0x1.9f3c70c996b77p-14, "9.900000000000001e-05"},
    {0x0.0000000000001p-1022, "5e-324"},
    {0x1.fffffffffffffp+1023, "1.7976931348623157e+308"},
    {-0x0.0p+0, "-0.0"},
    {0x0.0p+0, "0.0"},
    {0x1.0000000000000p+0, "1.0"},
    {-0x1.0c6f7a0b5ed8dp-22, "-2.5e-07"},
    {0x1.9000000000000p+6, "100.0"},
    {0x1.0f0cf064dd592p+73, "1e+22"},
    {0x1.c12218377de66p+46, "123456789012345.6"},
    {0x1.3333333333334p-2, "0.30000000000000004"},
    {0x1.4f8b580000000p-17, "9.999999747378752e-06"},
    {0x1.ff933c0000000p+127, "3.3999999521443642e+38"},
    {0x1.8000000000000p+2, "6.0"},
    {0x0.0000000000003p-1022, "1.5e-323"},
    {0x1.ad7f29abcaf48p-24, "1e-07"},
    {0x1.78c29dccccccdp+23, "12345678.9"},
    {0x1.8949120000000p+4, "24.580339431762695"},
    {0x1.6857fe0000000p+22, "5903871.5"},
    {-0x1.6ff6f40000000p+16, "-94198.953125"},
    {0x1.69b4540000000p-8, "0.005519171245396137"},
    {0x1.f3e02a0000000p-16, "2.9794910005875863e-05"},
    {-0x1.79ba820000000p+19, "-773588.0625"},
    {0x1.70720a0000000p+9, "736.8909301757812"},
    {0x1.4dde6e0000000p+26, "87521720.0"},
    {-0x1.06d8860000000p-11, "-0.0005013385671190917"},
    {-0x1.3431a40000000p-16, "-1.8369788449490443e-05"},
    {-0x1.2465d40000000p-24, "-6.80791600871089e-08"},
};

static void test_repr(void) {
    char buf[QL_FLOAT_REPR_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int n = ql_json_float_repr(cases[i].x, buf);
        CHECKF(!strcmp(buf, cases[i].repr), "repr(%a) = %s, want %s", cases[i].x, buf,
               cases[i].repr);
        CHECK(n == (int)strlen(cases[i].repr));
    }
}

static void test_dumps(void) {
    const char *in =
        "{\"b\":[1,2.5,{\"x\":null,\"a\":\"\xc3\xa9\xe2\x80\xa8\\t\xf0\x9f\x98\x80\\u007f\"}],"
        "\"a\":{},\"c\":[],\"d\":1e-05,\"e\":true}";
    json_t *v = json_loads(in, 0, NULL);
    CHECK(v != NULL);
    if (!v) return;
    char *out;
    size_t len;
    CHECK(ql_json_dumps_py(v, 2, 1, &out, &len) == QL_OK);
    const char *want_indent = "{\n"
                              "  \"a\": {},\n"
                              "  \"b\": [\n"
                              "    1,\n"
                              "    2.5,\n"
                              "    {\n"
                              "      \"a\": \"\\u00e9\\u2028\\t\\ud83d\\ude00\\u007f\",\n"
                              "      \"x\": null\n"
                              "    }\n"
                              "  ],\n"
                              "  \"c\": [],\n"
                              "  \"d\": 1e-05,\n"
                              "  \"e\": true\n"
                              "}";
    CHECKF(!strcmp(out, want_indent), "got\n%s", out);
    CHECK(len == strlen(want_indent));
    free(out);
    json_decref(v);

    v = json_loads("{\"b\":[1,2.5,{\"x\":null}],\"a\":{},\"c\":[],\"d\":1e-05}", 0, NULL);
    CHECK(ql_json_dumps_py(v, -1, 0, &out, &len) == QL_OK);
    const char *want_flat = "{\"b\": [1, 2.5, {\"x\": null}], \"a\": {}, \"c\": [], \"d\": 1e-05}";
    CHECKF(!strcmp(out, want_flat), "got %s", out);
    free(out);
    json_decref(v);
}

int main(void) {
    test_repr();
    test_dumps();
    return CHECK_DONE();
}
