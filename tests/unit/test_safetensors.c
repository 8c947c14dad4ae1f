/* safetensors reader and writer.
 *
 * The writer's expected bytes were produced by the PyPI safetensors 0.6.2
 * package (its Rust writer: serialize(..., metadata={"format": "pt"})), an
 * implementation independent of this one. Every malformed-file case must be
 * rejected with a message naming the file and the tensor. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "model/safetensors.h"

static char dir[] = "/tmp/ql_test_st_XXXXXX";

static char *path_of(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

/* 8-byte length, header text, then `dlen` data bytes. `hlen_override`
 * replaces the length field when nonzero. */
static void write_st(const char *path, const char *header, size_t dlen, uint64_t hlen_override) {
    size_t hl = strlen(header);
    uint64_t n = hlen_override ? hlen_override : hl;
    unsigned char *buf = calloc(1, 8 + hl + dlen);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < dlen; i++) buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, 8 + hl + dlen);
    free(buf);
}

static void expect_bad(const char *name, ql_status want, const char *must1, const char *must2) {
    ql_st_file f;
    const char *p = path_of(name);
    ql_error_clear();
    ql_status st = ql_st_open(p, &f);
    const char *m = ql_error_message();
    CHECKF(st == want, "%s: status %s, want %s (%s)", name, ql_status_name(st),
           ql_status_name(want), m);
    CHECKF(strstr(m, p) != NULL, "%s: message does not name the file: %s", name, m);
    CHECKF(!must1 || strstr(m, must1), "%s: message lacks '%s': %s", name, must1, m);
    CHECKF(!must2 || strstr(m, must2), "%s: message lacks '%s': %s", name, must2, m);
    CHECK(f.n_tensors == 0 && f.map == NULL);
    ql_st_close(&f);
}

static void test_bad_files(void) {
    write_bytes(path_of("short.st"), "\x10\0\0\0\0", 5);
    expect_bad("short.st", QL_EFORMAT, "5 bytes", "shorter than the 8-byte");

    write_st(path_of("past_end.st"), "{}", 4, 1000);
    expect_bad("past_end.st", QL_EFORMAT, "header length 1000", "past the end of the file");

    write_st(path_of("huge_header.st"), "{}", 0, 200000000ull);
    expect_bad("huge_header.st", QL_EFORMAT, "exceeds the limit", NULL);

    write_st(path_of("no_brace.st"), " {}", 0, 0);
    expect_bad("no_brace.st", QL_EFORMAT, "does not start with '{'", NULL);

    write_st(path_of("bad_json.st"), "{\"a\":", 0, 0);
    expect_bad("bad_json.st", QL_EFORMAT, "not valid JSON", NULL);

    write_st(path_of("dup_key.st"),
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
             1, 0);
    expect_bad("dup_key.st", QL_EFORMAT, "not valid JSON", "duplicate");

    write_st(path_of("not_obj_entry.st"), "{\"w\":[1,2]}", 0, 0);
    expect_bad("not_obj_entry.st", QL_EFORMAT, "tensor 'w'", "not a JSON object");

    write_st(path_of("unknown_dtype.st"),
             "{\"model.norm.weight\":{\"dtype\":\"Q7\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
             0);
    expect_bad("unknown_dtype.st", QL_EFORMAT, "tensor 'model.norm.weight'", "unknown dtype 'Q7'");

    write_st(path_of("f8.st"),
             "{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, 0);
    expect_bad("f8.st", QL_EUNSUPPORTED, "tensor 'x'", "F8_E4M3");

    write_st(path_of("size_mismatch.st"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0);
    expect_bad("size_mismatch.st", QL_EFORMAT, "tensor 'x'", "needs 12 bytes");

    write_st(path_of("out_of_range.st"),
             "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"U8\",\"shape\":[100],"
             "\"data_offsets\":[0,100]}}",
             64, 0);
    expect_bad("out_of_range.st", QL_EFORMAT, "tensor 'model.layers.0.mlp.up_proj.weight'",
               "data_offsets [0, 100] out of range: data buffer is 64 bytes");

    write_st(path_of("overlap.st"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             12, 0);
    expect_bad("overlap.st", QL_EFORMAT, "tensor 'b'", "overlap tensor 'a'");

    write_st(path_of("hole.st"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
             12, 0);
    expect_bad("hole.st", QL_EFORMAT, "tensor 'b'", "hole");

    write_st(path_of("trailing.st"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, 0);
    expect_bad("trailing.st", QL_EFORMAT, "4 trailing bytes", NULL);

    write_st(path_of("meta.st"), "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, 0);
    expect_bad("meta.st", QL_EFORMAT, "'__metadata__'", "key 'n' is not a string");

    write_st(path_of("neg.st"), "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}",
             1, 0);
    expect_bad("neg.st", QL_EFORMAT, "tensor 'a'", "data_offsets");

    write_st(path_of("neg_shape.st"),
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, 0);
    expect_bad("neg_shape.st", QL_EFORMAT, "tensor 'a'", "shape entry 0");

    ql_st_file f;
    ql_status st = ql_st_open(path_of("does_not_exist.st"), &f);
    CHECK(st == QL_ENOTFOUND);
    CHECK(strstr(ql_error_message(), "does_not_exist.st") != NULL);
}

/* The bytes safetensors 0.6.2 wrote for these tensors. */
static const char py_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},\"I\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":"
    "[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},\"b\":{\"dtype\":"
    "\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},\"m\":{\"dtype\":\"BF16\",\"shape\":[1,2],"
    "\"data_offsets\":[20,24]},\"c\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[24,24]},"
    "\"B\":{\"dtype\":\"U8\",\"shape\":[2,1],\"data_offsets\":[24,26]},\"q\\\"x\\\\\\n\":{"
    "\"dtype\":"
    "\"U8\",\"shape\":[1],\"data_offsets\":[26,27]},\"z\":{\"dtype\":\"U8\",\"shape\":[3],"
    "\"data_offsets\":[27,30]}} ";
static const char py_data_hex[] = "0700000000000000000060400000803f000000c0803f00c0040509010203";

static void test_writer_matches_python(void) {
    const float b[2] = {1.0f, -2.0f}, a = 3.5f;
    const uint8_t z[3] = {1, 2, 3}, m[4] = {0x80, 0x3f, 0x00, 0xc0}, q[1] = {9}, bb[2] = {4, 5};
    const int64_t i64 = 7;
    ql_st_entry e[] = {
        {.name = "b", .dtype = QL_DT_F32, .ndim = 1, .shape = {2}, .data = b, .nbytes = 8},
        {.name = "a", .dtype = QL_DT_F32, .ndim = 0, .data = &a, .nbytes = 4},
        {.name = "z", .dtype = QL_DT_U8, .ndim = 1, .shape = {3}, .data = z, .nbytes = 3},
        {.name = "m", .dtype = QL_DT_BF16, .ndim = 2, .shape = {1, 2}, .data = m, .nbytes = 4},
        {.name = "c", .dtype = QL_DT_F16, .ndim = 2, .shape = {0, 4}, .data = NULL, .nbytes = 0},
        {.name = "q\"x\\\n", .dtype = QL_DT_U8, .ndim = 1, .shape = {1}, .data = q, .nbytes = 1},
        {.name = "I", .dtype = QL_DT_I64, .ndim = 1, .shape = {1}, .data = &i64, .nbytes = 8},
        {.name = "B", .dtype = QL_DT_U8, .ndim = 2, .shape = {2, 1}, .data = bb, .nbytes = 2},
    };
    size_t n = sizeof e / sizeof *e;
    const char *p = path_of("written.st");
    CHECK(ql_st_write(p, e, n) == QL_OK);
    char *got;
    size_t len;
    CHECK(ql_fs_read_file(p, &got, &len) == QL_OK);
    size_t hl = sizeof py_header - 1;
    CHECK(hl == 480);
    CHECKF(len == 8 + hl + 30, "file is %zu bytes", len);
    uint64_t n8 = 0;
    for (int i = 7; i >= 0; i--) n8 = (n8 << 8) | (unsigned char)got[i];
    CHECK(n8 == hl);
    CHECKF(len >= 8 + hl && !memcmp(got + 8, py_header, hl), "header differs:\n%.*s", (int)hl,
           got + 8);
    char hex[64] = {0};
    for (size_t i = 0; i < 30 && 8 + hl + i < len; i++)
        sprintf(hex + 2 * i, "%02x", (unsigned char)got[8 + hl + i]);
    CHECKF(!strcmp(hex, py_data_hex), "data %s", hex);
    free(got);
    CHECK(ql_st_file_size(e, n) == 8 + 480 + 30);

    /* and it reads back */
    ql_st_file f;
    CHECK(ql_st_open(p, &f) == QL_OK);
    CHECK(f.n_tensors == n);
    CHECK(f.format && !strcmp(f.format, "pt"));
    const ql_st_tensor *t = ql_st_find(&f, "m");
    CHECK(t && t->dtype == QL_DT_BF16 && t->ndim == 2 && t->shape[1] == 2 && t->numel == 2);
    float mf[2];
    if (t) {
        CHECK(ql_st_to_f32(&f, t, mf) == QL_OK);
        CHECK(mf[0] == 1.0f && mf[1] == -2.0f);
    }
    t = ql_st_find(&f, "a");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    t = ql_st_find(&f, "c");
    CHECK(t && t->numel == 0 && t->begin == t->end);
    t = ql_st_find(&f, "q\"x\\\n");
    CHECK(t && ((const uint8_t *)t->data)[0] == 9);
    CHECK(ql_st_find(&f, "nope") == NULL);
    ql_st_close(&f);

    /* no temporary file left beside it */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp-", dir);
    CHECK(system(cmd) != 0);
}

static void test_writer_rejects(void) {
    const float x[2] = {1, 2};
    ql_st_entry dup[2] = {
        {.name = "w", .dtype = QL_DT_F32, .ndim = 1, .shape = {1}, .data = x, .nbytes = 4},
        {.name = "w", .dtype = QL_DT_F16, .ndim = 1, .shape = {2}, .data = x, .nbytes = 4},
    };
    CHECK(ql_st_write(path_of("dup.st"), dup, 2) == QL_EINVAL);
    CHECK(strstr(ql_error_message(), "'w' given twice") != NULL);
    ql_st_entry bad = {
        .name = "w", .dtype = QL_DT_F32, .ndim = 1, .shape = {3}, .data = x, .nbytes = 8};
    CHECK(ql_st_write(path_of("bad.st"), &bad, 1) == QL_EINVAL);
    CHECK(!ql_fs_exists(path_of("dup.st")) && !ql_fs_exists(path_of("bad.st")));
}

/* A writer that does not pad: data starts at an odd address. */
static void test_unaligned_read(void) {
    const char *h = "{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    char hdr[128];
    snprintf(hdr, sizeof hdr, "%s%s", h, strlen(h) % 2 ? "" : " ");
    const char *p = path_of("odd.st");
    size_t hl = strlen(hdr);
    unsigned char buf[256];
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    const unsigned char d[4] = {0x80, 0x3f, 0x40, 0x40}; /* 1.0, 3.0 */
    memcpy(buf + 8 + hl, d, 4);
    write_bytes(p, buf, 8 + hl + 4);
    ql_st_file f;
    CHECK(ql_st_open(p, &f) == QL_OK);
    float out[2] = {0};
    const ql_st_tensor *t = ql_st_find(&f, "x");
    CHECK(t && ((uintptr_t)t->data & 1));
    if (t) CHECK(ql_st_to_f32(&f, t, out) == QL_OK);
    CHECK(out[0] == 1.0f && out[1] == 3.0f);
    ql_st_close(&f);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_bad_files();
    test_writer_matches_python();
    test_writer_rejects();
    test_unaligned_read();
    ql_fs_remove_tree(dir);
    return CHECK_DONE();
}
