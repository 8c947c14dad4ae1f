/* The GGUF container and dequantization.
 *
 * tests/fixtures/gguf/types.gguf was written by the PyPI gguf package's
 * GGUFWriter and its reference values (types.*.bin) come from
 * gguf.quants.dequantize (tests/fixtures/make_gguf_fixtures.py, versions in
 * versions.json): dequantized tensors must match bit for bit. Malformed
 * files are that fixture with one field patched or the file cut short; each
 * must fail with QL_EFORMAT and a message naming the file and the key or
 * tensor. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "model/gguf.h"
#include "test_gguf_util.h"

static bytes types_bytes;

static void test_metadata(const ql_gguf_file *f) {
    uint64_t u = 0;
    CHECK(ql_gguf_get_u64(f, "test.u8", &u) == QL_OK && u == 200);
    CHECK(ql_gguf_get_u64(f, "test.u16", &u) == QL_OK && u == 60000);
    CHECK(ql_gguf_get_u64(f, "test.u32", &u) == QL_OK && u == 4000000000u);
    CHECK(ql_gguf_get_u64(f, "test.u64", &u) == QL_OK && u == (1ull << 40));
    CHECK(ql_gguf_get_u64(f, "general.alignment", &u) == QL_OK && u == 64);
    CHECK(ql_gguf_get_u64(f, "test.i8", &u) == QL_EFORMAT && msg_has("test.i8") &&
          msg_has("-100") && msg_has(f->path));
    CHECK(ql_gguf_get_u64(f, "test.str", &u) == QL_EFORMAT && msg_has("'test.str' is STRING"));
    CHECK(ql_gguf_get_u64(f, "test.nope", &u) == QL_ENOTFOUND && msg_has("test.nope"));

    double d = 0;
    CHECK(ql_gguf_get_f64(f, "test.f32", &d) == QL_OK && d == 0.15625);
    CHECK(ql_gguf_get_f64(f, "test.f64", &d) == QL_OK && d == -2.5e-300);
    CHECK(ql_gguf_get_f64(f, "test.i32", &d) == QL_OK && d == -2000000000.0);
    CHECK(ql_gguf_get_f64(f, "test.i64", &d) == QL_OK && d == -1099511627776.0);
    CHECK(ql_gguf_get_f64(f, "test.i16", &d) == QL_OK && d == -30000.0);
    CHECK(ql_gguf_get_f64(f, "test.arr_f32", &d) == QL_EFORMAT &&
          msg_has("'test.arr_f32' is an array of FLOAT32"));

    int b = 0;
    CHECK(ql_gguf_get_bool(f, "test.bool", &b) == QL_OK && b == 1);
    CHECK(ql_gguf_get_bool(f, "test.u8", &b) == QL_EFORMAT && msg_has("expected BOOL"));

    ql_gguf_str s = {0};
    CHECK(ql_gguf_get_str(f, "test.str", &s) == QL_OK && s.len == 11 &&
          !memcmp(s.p, "h\xc3\xa9llo GGUF", 11));
    CHECK(ql_gguf_get_str(f, "general.architecture", &s) == QL_OK && s.len == 5 &&
          !memcmp(s.p, "llama", 5));

    ql_gguf_str *sa = NULL;
    uint64_t n = 0;
    CHECK(ql_gguf_get_str_array(f, "test.arr_str", &sa, &n) == QL_OK && n == 4);
    if (sa && n == 4) {
        CHECK(sa[0].len == 1 && sa[0].p[0] == 'a');
        CHECK(sa[1].len == 0);
        CHECK(sa[2].len == 5 && !memcmp(sa[2].p, "\xc4\xa0the", 5));
        CHECK(sa[3].len == 3 && !memcmp(sa[3].p, "x y", 3));
    }
    free(sa);
    CHECK(ql_gguf_get_str_array(f, "test.arr_i32", &sa, &n) == QL_EFORMAT &&
          msg_has("'test.arr_i32' is an array of INT32, expected an array of STRING"));

    int64_t *ia = NULL;
    CHECK(ql_gguf_get_int_array(f, "test.arr_i32", &ia, &n) == QL_OK && n == 4);
    if (ia && n == 4) CHECK(ia[0] == 3 && ia[1] == -1 && ia[2] == 6 && ia[3] == 1);
    free(ia);
    ia = NULL;
    CHECK(ql_gguf_get_int_array(f, "test.arr_u8", &ia, &n) == QL_OK && n == 3);
    if (ia && n == 3) CHECK(ia[0] == 1 && ia[1] == 2 && ia[2] == 255);
    free(ia);
    CHECK(ql_gguf_get_int_array(f, "test.arr_nested", &ia, &n) == QL_EFORMAT &&
          msg_has("an array of ARRAY"));
    CHECK(ql_gguf_get_int_array(f, "test.u8", &ia, &n) == QL_EFORMAT && msg_has("UINT8"));

    float *fa = NULL;
    CHECK(ql_gguf_get_f32_array(f, "test.arr_f32", &fa, &n) == QL_OK && n == 3);
    if (fa && n == 3) CHECK(fa[0] == 0.5f && fa[1] == -1.25f && fa[2] == 3.0f);
    free(fa);

    const ql_gguf_kv *kv = ql_gguf_find_kv(f, "test.arr_nested");
    CHECK(kv && kv->type == QL_GGUF_ARRAY && kv->elem == QL_GGUF_ARRAY && kv->count == 2);

    int64_t id = 0;
    CHECK(ql_gguf_token_id(f, "bos", &id) == QL_OK && id == -1);
    CHECK(f->n_kv == 19 && !strcmp(f->kvs[0].key, "general.architecture"));
}

static void test_tensor_table(const ql_gguf_file *f) {
    CHECK(f->version == 3);
    CHECK(f->alignment == 64);
    CHECK(f->data_offset % 64 == 0);
    CHECK(f->n_tensors == 9);
    /* The writer's layout rule (FORMATS.md §5.1): each tensor starts where
     * the previous one ends, rounded up to the alignment. */
    uint64_t next = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const ql_gguf_tensor *t = &f->tensors[i];
        CHECKF(t->offset == next, "%s at %llu, want %llu", t->name, (unsigned long long)t->offset,
               (unsigned long long)next);
        CHECK(t->data == (const uint8_t *)f->map + f->data_offset + t->offset);
        next = t->offset + (t->nbytes + 63) / 64 * 64;
    }
    CHECK(f->data_offset + next == f->map_len);
    const ql_gguf_tensor *t = ql_gguf_find_tensor(f, "t_4d");
    CHECK(t && t->n_dims == 4 && t->ne[0] == 32 && t->ne[1] == 3 && t->ne[2] == 1 &&
          t->ne[3] == 2 && t->numel == 192 && t->type == QL_GGML_F16 && t->nbytes == 384);
    t = ql_gguf_find_tensor(f, "t_1d");
    CHECK(t && t->n_dims == 1 && t->ne[0] == 5 && t->ne[1] == 1 && t->numel == 5);
    t = ql_gguf_find_tensor(f, "t_q4_1");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 3 && t->nbytes == 6 * 20);
    t = ql_gguf_find_tensor(f, "t_q8_0");
    CHECK(t && t->nbytes == 6 * 34);
    t = ql_gguf_find_tensor(f, "t_q4_0");
    CHECK(t && t->nbytes == 6 * 18);
    CHECK(ql_gguf_find_tensor(f, "t_f33") == NULL);
    CHECK(ql_gguf_find_tensor(f, "") == NULL);
}

static void test_dequant(const ql_gguf_file *f) {
    static const char *names[] = {"t_f32",  "t_f16",  "t_bf16", "t_q8_0",
                                  "t_q4_0", "t_q4_1", "t_1d",   "t_4d"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const ql_gguf_tensor *t = ql_gguf_find_tensor(f, names[i]);
        CHECKF(t != NULL, "tensor %s", names[i]);
        if (!t) continue;
        char bin[64];
        snprintf(bin, sizeof bin, "types.%s.bin", names[i]);
        bytes want = load(fixture(bin));
        CHECKF(want.n == (size_t)t->numel * 4, "%s: %zu reference bytes", names[i], want.n);
        float *got = calloc((size_t)t->numel, 4);
        CHECK(ql_gguf_tensor_f32(f, t, got) == QL_OK);
        if (want.n == (size_t)t->numel * 4) {
            long bad = 0, first = -1;
            for (int64_t k = 0; k < t->numel; k++)
                if (memcmp(got + k, want.p + 4 * k, 4)) {
                    if (first < 0) first = (long)k;
                    bad++;
                }
            CHECKF(bad == 0, "%s: %ld of %lld values differ from gguf.quants (first at %ld)",
                   names[i], bad, (long long)t->numel, first);
        }
        free(got);
        free(want.p);
    }
    const ql_gguf_tensor *t = ql_gguf_find_tensor(f, "t_q5_k");
    CHECK(t && t->type == 13 && t->nbytes == 176);
    float dummy[256];
    CHECK(t && ql_gguf_tensor_f32(f, t, dummy) == QL_EUNSUPPORTED && msg_has("t_q5_k") &&
          msg_has("Q5_K (13)") && msg_has(f->path));

    /* The nibble order by hand: byte j holds element j low, j+16 high. */
    unsigned char q40[18] = {0x00, 0x3c}; /* d = 1.0 */
    q40[2] = 0x1f;                        /* elem 0: 15-8 = 7; elem 16: 1-8 = -7 */
    float y[32];
    CHECK(ql_gguf_dequantize(QL_GGML_Q4_0, q40, 32, y) == QL_OK);
    CHECK(y[0] == 7.0f && y[16] == -7.0f && y[1] == -8.0f && y[17] == -8.0f);
    unsigned char q41[20] = {0x00, 0x40, 0x00, 0xbc}; /* d = 2.0, m = -1.0 */
    q41[4 + 3] = 0x52;                                /* elem 3: 2*2-1 = 3; elem 19: 5*2-1 = 9 */
    CHECK(ql_gguf_dequantize(QL_GGML_Q4_1, q41, 32, y) == QL_OK);
    CHECK(y[3] == 3.0f && y[19] == 9.0f && y[0] == -1.0f);
    CHECK(ql_gguf_dequantize(QL_GGML_Q4_1, q41, 31, y) == QL_EINVAL);
    CHECK(ql_gguf_dequantize(14, q41, 256, y) == QL_EUNSUPPORTED && msg_has("Q6_K"));

    int64_t blk;
    uint64_t by;
    CHECK(ql_gguf_type_size(QL_GGML_Q8_0, &blk, &by) && blk == 32 && by == 34);
    CHECK(ql_gguf_type_size(QL_GGML_BF16, &blk, &by) && blk == 1 && by == 2);
    CHECK(!ql_gguf_type_size(4, &blk, &by) && !ql_gguf_type_size(99, &blk, &by));
    CHECK(!strcmp(ql_gguf_type_name(QL_GGML_Q4_1), "Q4_1") && ql_gguf_type_name(5) == NULL);
}

/* ---- malformed files ------------------------------------------------------------- */

static void expect_bad(const char *name, bytes b, const char *must1, const char *must2) {
    const char *path = save(name, b.p, b.n);
    ql_gguf_file f;
    ql_error_clear();
    ql_status st = ql_gguf_open(path, &f);
    CHECKF(st == QL_EFORMAT, "%s: status %s (%s)", name, ql_status_name(st), ql_error_message());
    CHECKF(msg_has(path), "%s: message does not name the file", name);
    CHECKF(msg_has(must1), "%s", name);
    CHECKF(msg_has(must2), "%s", name);
    CHECK(f.map == NULL && f.n_tensors == 0 && f.n_kv == 0);
    ql_gguf_close(&f);
    free(b.p);
}

static void test_versions(void) {
    bytes b = copy_of(types_bytes);
    put_u32(b, 4, 2); /* v2 has v3's layout */
    const char *path = save("v2.gguf", b.p, b.n);
    ql_gguf_file f;
    CHECK(ql_gguf_open(path, &f) == QL_OK && f.version == 2 && f.n_tensors == 9);
    ql_gguf_close(&f);
    free(b.p);

    b = copy_of(types_bytes);
    put_u32(b, 4, 1);
    expect_bad("v1.gguf", b, "version 1 is not supported", NULL);
    b = copy_of(types_bytes);
    put_u32(b, 4, 4);
    expect_bad("v4.gguf", b, "version 4 is not supported", NULL);
    b = copy_of(types_bytes);
    put_u32(b, 4, 0x03000000u);
    expect_bad("be.gguf", b, "big-endian", NULL);
    b = copy_of(types_bytes);
    b.p[0] = 'X';
    expect_bad("magic.gguf", b, "not a GGUF file", NULL);
}

static void test_truncated(void) {
    ql_gguf_file good;
    CHECK(ql_gguf_open(fixture("types.gguf"), &good) == QL_OK);
    size_t end = 0; /* where the last tensor's data ends; padding may follow */
    for (size_t i = 0; i < good.n_tensors; i++) {
        size_t e = good.data_offset + good.tensors[i].offset + good.tensors[i].nbytes;
        if (e > end) end = e;
    }
    size_t in_str = after_str(types_bytes, "test.str") + 4 + 8 + 3; /* inside "héllo GGUF" */
    size_t in_key = after_str(types_bytes, "test.u64") - 3;
    size_t in_ne = tinfo_ne(types_bytes, "t_4d", 2) + 5;
    size_t in_q41 = good.data_offset + ql_gguf_find_tensor(&good, "t_q4_1")->offset + 7;
    ql_gguf_close(&good);
    /* Every prefix of the file that cuts off data must be refused. */
    int all_refused = 1, all_named = 1;
    const char *path = tmp_path("cut.gguf");
    for (size_t cut = 0; cut < end; cut++) {
        save("cut.gguf", types_bytes.p, cut);
        ql_gguf_file f;
        ql_error_clear();
        ql_status st = ql_gguf_open(path, &f);
        if (st != QL_EFORMAT) {
            if (all_refused)
                fprintf(stderr, "  cut at %zu: %s %s\n", cut, ql_status_name(st),
                        ql_error_message());
            all_refused = 0;
            ql_gguf_close(&f);
        }
        if (!strstr(ql_error_message(), path)) all_named = 0;
        if (cut == in_str) CHECK(msg_has("'test.str'") && msg_has("runs past the end"));
        if (cut == in_q41) CHECK(msg_has("'t_q4_1'") && msg_has("runs past the end"));
        if (cut == in_key)
            CHECK(msg_has("key of metadata entry 11") && msg_has("runs past the end"));
        if (cut == in_ne) CHECK(msg_has("'t_4d'") && msg_has("truncated"));
    }
    CHECKF(all_refused, "every truncation of types.gguf is refused with EFORMAT");
    CHECKF(all_named, "every truncation message names the file");
}

static void test_malformed(void) {
    bytes b;

    b = copy_of(types_bytes);
    put_u64(b, tinfo_offset(b, "t_q5_k"), get_u64(b, tinfo_offset(b, "t_q5_k")) + 64 * 100);
    expect_bad("past_end.gguf", b, "'t_q5_k'", "runs past the end");

    b = copy_of(types_bytes);
    put_u64(b, tinfo_offset(b, "t_1d"), get_u64(b, tinfo_offset(b, "t_q4_1")));
    expect_bad("overlap.gguf", b, "'t_q4_1'", "'t_1d' (offset");
    b = copy_of(types_bytes); /* partial overlap: t_f16 starts inside t_f32's data */
    put_u64(b, tinfo_offset(b, "t_f16"), 704);
    expect_bad("overlap2.gguf", b, "'t_f32'", "overlap");

    b = copy_of(types_bytes);
    put_u32(b, tinfo_type(b, "t_f32"), 99);
    expect_bad("type99.gguf", b, "'t_f32'", "unknown ggml type 99");
    b = copy_of(types_bytes);
    put_u32(b, tinfo_type(b, "t_q4_0"), 4); /* Q4_2, removed from ggml */
    expect_bad("type4.gguf", b, "'t_q4_0'", "unknown ggml type 4");

    b = copy_of(types_bytes);
    put_u32(b, tinfo_ndims(b, "t_f32"), 5);
    expect_bad("ndims.gguf", b, "'t_f32'", "5 dimensions");

    b = copy_of(types_bytes);
    put_u64(b, after_str(b, "test.str") + 4, 1ull << 40);
    expect_bad("longstr.gguf", b, "'test.str'", "string length 1099511627776");
    b = copy_of(types_bytes); /* a key whose length runs past the end */
    put_u64(b, after_str(b, "test.u8") - 7 - 8, 1ull << 50);
    expect_bad("longkey.gguf", b, "key of metadata entry 2", "runs past the end");
    b = copy_of(types_bytes); /* an array count far beyond the file */
    put_u64(b, kv_value(b, "test.arr_str") + 4, 1ull << 61);
    expect_bad("longarr.gguf", b, "'test.arr_str'", "runs past the end");
    b = copy_of(types_bytes);
    put_u64(b, kv_value(b, "test.arr_i32") + 4, 1ull << 61);
    expect_bad("longarr2.gguf", b, "'test.arr_i32'", "runs past the end");

    b = copy_of(types_bytes);
    put_u32(b, kv_value(b, "general.alignment"), 48);
    expect_bad("align48.gguf", b, "general.alignment", "power of 2");
    b = copy_of(types_bytes);
    put_u32(b, after_str(b, "general.alignment"), QL_GGUF_I32);
    expect_bad("aligntype.gguf", b, "general.alignment", "INT32, expected UINT32");
    b = copy_of(types_bytes);
    put_u64(b, tinfo_offset(b, "t_1d"), get_u64(b, tinfo_offset(b, "t_1d")) + 32);
    expect_bad("misaligned.gguf", b, "'t_1d'", "not a multiple of the alignment 64");

    b = copy_of(types_bytes);
    put_u64(b, tinfo_ne(b, "t_q8_0", 0), 48);
    expect_bad("block.gguf", b, "'t_q8_0'", "not a multiple of its block size 32");
    b = copy_of(types_bytes);
    put_u64(b, tinfo_ne(b, "t_f32", 1), 1ull << 63);
    expect_bad("negdim.gguf", b, "'t_f32'", "negative dimension");
    b = copy_of(types_bytes);
    put_u64(b, tinfo_ne(b, "t_4d", 1), 1ull << 40);
    put_u64(b, tinfo_ne(b, "t_4d", 2), 1ull << 40);
    expect_bad("huge.gguf", b, "'t_4d'", "2^63");

    b = copy_of(types_bytes);
    rename_str(b, "test.i8", "test.u8");
    expect_bad("dupkey.gguf", b, "'test.u8'", "more than once");
    b = copy_of(types_bytes);
    rename_str(b, "t_f16", "t_f32");
    expect_bad("duptensor.gguf", b, "'t_f32'", "more than once");
    b = copy_of(types_bytes);
    put_u32(b, after_str(b, "test.u8"), 13);
    expect_bad("vtype.gguf", b, "'test.u8'", "unknown value type 13");
    b = copy_of(types_bytes);
    put_u32(b, kv_value(b, "test.arr_u8"), 77);
    expect_bad("elemtype.gguf", b, "'test.arr_u8'", "element type 77");
    b = copy_of(types_bytes);
    put_u64(b, 16, 1ull << 40);
    expect_bad("nkv.gguf", b, "1099511627776 metadata entries", NULL);
    b = copy_of(types_bytes);
    put_u64(b, 8, 1ull << 40);
    expect_bad("ntensors.gguf", b, "1099511627776 tensors", NULL);

    b = copy_of(types_bytes);
    b.n = 10;
    expect_bad("tiny.gguf", b, "shorter than the 24-byte GGUF header", NULL);

    ql_gguf_file f;
    CHECK(ql_gguf_open(tmp_path("does-not-exist.gguf"), &f) == QL_ENOTFOUND &&
          msg_has("does-not-exist.gguf"));
}

/* Random byte changes in the header and tables: opening must either succeed
 * (and then every tensor dequantizes) or fail with EFORMAT; never crash or
 * read outside the mapping (the sanitizer build checks that). */
static void test_corrupted(void) {
    ql_rng r;
    ql_rng_seed(&r, 7);
    ql_gguf_file good;
    CHECK(ql_gguf_open(fixture("types.gguf"), &good) == QL_OK);
    size_t tables = good.data_offset;
    ql_gguf_close(&good);
    int ok = 0, refused = 0, other = 0;
    for (int it = 0; it < 3000; it++) {
        bytes b = copy_of(types_bytes);
        int flips = 1 + (int)ql_rng_below(&r, 3);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)ql_rng_below(&r, tables);
            b.p[at] = it % 2 ? (unsigned char)ql_rng_below(&r, 256) : b.p[at] ^ 0x80;
        }
        const char *path = save("fuzz.gguf", b.p, b.n);
        free(b.p);
        ql_gguf_file f;
        ql_status st = ql_gguf_open(path, &f);
        if (st == QL_OK) {
            ok++;
            for (size_t i = 0; i < f.n_tensors; i++) {
                const ql_gguf_tensor *t = &f.tensors[i];
                if (!ql_gguf_can_dequantize(t->type) || t->numel > (1 << 20)) continue;
                float *y = malloc((size_t)t->numel * 4 + 4);
                if (ql_gguf_tensor_f32(&f, t, y) != QL_OK) other++;
                free(y);
            }
            ql_gguf_close(&f);
        } else if (st == QL_EFORMAT && strstr(ql_error_message(), path)) {
            refused++;
        } else {
            if (!other)
                fprintf(stderr, "  fuzz %d: %s %s\n", it, ql_status_name(st), ql_error_message());
            other++;
        }
    }
    CHECKF(other == 0, "%d corrupted files gave another status or an unnamed file", other);
    CHECK(refused > 1000 && ok > 10);
}

int main(void) {
    if (!mkdtemp(gguf_tmp)) return 1;
    types_bytes = load(fixture("types.gguf"));
    ql_gguf_file f;
    ql_status st = ql_gguf_open(fixture("types.gguf"), &f);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st == QL_OK) {
        test_metadata(&f);
        test_tensor_table(&f);
        test_dequant(&f);
        ql_gguf_close(&f);
    }
    test_versions();
    test_truncated();
    test_malformed();
    test_corrupted();
    free(types_bytes.p);
    ql_fs_remove_tree(gguf_tmp);
    return CHECK_DONE();
}
