/* The GGUF writer (model/gguf_write.c) read back by qlora's strict reader
 * (model/gguf.c, which validates as ggml's gguf.cpp does): metadata of each
 * written type, tensors of each type whose sizes are not multiples of the
 * alignment (so the padding between them matters), the file replacing an
 * existing one atomically, the writer's refusals, and Q8_0 quantization
 * against the PyPI gguf package's on edge blocks. That llama.cpp's own
 * reader (the PyPI gguf package) reads the files alike is
 * tests/e2e/test_export_gguf.sh. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/check.h"

/* A tensor filled while the file is written: byte k of tensor `index` is
 * index + k. */
static ql_status fill_pattern(void *ctx, size_t index, void *dst) {
    *(int *)ctx += 1;
    for (int k = 0; k < 34; k++) ((uint8_t *)dst)[k] = (uint8_t)(index + (size_t)k);
    return QL_OK;
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

/* ql_gguf_quantize_q8_0 against the PyPI gguf package's Q8_0 on blocks at
 * the algorithm's edges (tests/fixtures/make_q8_0_reference.py). */
static void check_q8_0(const char *src_dir) {
    char *in = ql_fs_join(src_dir, "tests/fixtures/gguf/q8_0.input.f32");
    char *ref = ql_fs_join(src_dir, "tests/fixtures/gguf/q8_0.blocks.bin");
    char *x = NULL, *want = NULL;
    size_t nx = 0, nw = 0;
    CHECKF(ql_fs_read_file(in, &x, &nx) == QL_OK && ql_fs_read_file(ref, &want, &nw) == QL_OK, "%s",
           ql_error_message());
    const int64_t n = (int64_t)(nx / sizeof(float));
    CHECK(n > 0 && n % 32 == 0 && nw == (size_t)(n / 32 * 34));
    if (n > 0 && nw == (size_t)(n / 32 * 34)) {
        uint8_t *got = malloc(nw);
        ql_gguf_quantize_q8_0((const float *)x, n, got);
        int64_t bad = -1;
        for (int64_t b = 0; b < n / 32 && bad < 0; b++)
            if (memcmp(got + b * 34, want + b * 34, 34)) bad = b;
        CHECKF(bad < 0, "Q8_0 block %lld differs from gguf.quants'", (long long)bad);
        free(got);
    }
    free(x);
    free(want);
    free(in);
    free(ref);
}

int main(void) {
    char dir[] = "/tmp/ql_gguf_write_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = ql_fs_join(dir, "a.gguf");

    float f32[5 * 3];
    uint16_t f16[7], bf16[3 * 2];
    for (int i = 0; i < 15; i++) f32[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 7; i++) f16[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 6; i++) bf16[i] = (uint16_t)(0x4000 + 3 * i);

    ql_gguf_writer w = {0};
    CHECK(ql_gguf_writer_add_str(&w, "general.architecture", "llama") == QL_OK);
    CHECK(ql_gguf_writer_add_f32(&w, "adapter.lora.alpha", 45.25f) == QL_OK);
    CHECK(ql_gguf_writer_add_u32(&w, "general.quantization_version", 2) == QL_OK);
    CHECK(ql_gguf_writer_add_str(&w, "general.architecture", "qwen2") == QL_EINTERNAL);
    CHECK(ql_gguf_writer_add_tensor(&w, "t.f32", 2, (int64_t[]){3, 5}, QL_GGML_F32, f32,
                                    sizeof f32) == QL_OK);
    CHECK(ql_gguf_writer_add_tensor(&w, "t.f16", 1, (int64_t[]){7}, QL_GGML_F16, f16, sizeof f16) ==
          QL_OK);
    CHECK(ql_gguf_writer_add_tensor(&w, "t.bf16", 2, (int64_t[]){2, 3}, QL_GGML_BF16, bf16,
                                    sizeof bf16) == QL_OK);
    /* refused: a wrong byte count, a quantized type, a duplicate name */
    CHECK(ql_gguf_writer_add_tensor(&w, "bad", 1, (int64_t[]){4}, QL_GGML_F32, f32, 12) ==
          QL_EINTERNAL);
    CHECK(ql_gguf_writer_add_tensor(&w, "q", 1, (int64_t[]){32}, QL_GGML_Q4_0, f32, 16) ==
          QL_EINTERNAL);
    CHECK(ql_gguf_writer_add_tensor(&w, "q", 1, (int64_t[]){33}, QL_GGML_Q8_0, f32, 34) ==
          QL_EINTERNAL);
    CHECK(ql_gguf_writer_add_tensor(&w, "t.f16", 1, (int64_t[]){7}, QL_GGML_F16, f16, sizeof f16) ==
          QL_EINTERNAL);

    /* A quantized type, filled at save time. */
    int fills = 0;
    CHECK(ql_gguf_writer_add_tensor_fill(&w, "t.q8_0", 1, (int64_t[]){32}, QL_GGML_Q8_0, 34,
                                         fill_pattern, &fills, 7) == QL_OK);

    /* An existing file is replaced whole. */
    CHECK(ql_fs_write_atomic(path, "old", 3) == QL_OK);
    CHECK(ql_gguf_writer_save(&w, path) == QL_OK);
    CHECK(count_tmp_files(dir) == 0);

    ql_gguf_file f;
    ql_status st = ql_gguf_open(path, &f);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st == QL_OK) {
        CHECK(f.version == 3 && f.n_kv == 3 && f.n_tensors == 4);
        CHECK(fills == 1);
        const ql_gguf_tensor *q = ql_gguf_find_tensor(&f, "t.q8_0");
        CHECK(q && q->type == QL_GGML_Q8_0 && q->nbytes == 34 && q->offset == 128);
        if (q) CHECK(q->data[0] == 7 && q->data[33] == 7 + 33);
        ql_gguf_str s;
        CHECK(ql_gguf_get_str(&f, "general.architecture", &s) == QL_OK && s.len == 5 &&
              !memcmp(s.p, "llama", 5));
        double alpha;
        CHECK(ql_gguf_get_f64(&f, "adapter.lora.alpha", &alpha) == QL_OK && alpha == 45.25);
        uint64_t qv;
        CHECK(ql_gguf_get_u64(&f, "general.quantization_version", &qv) == QL_OK && qv == 2);
        CHECK(ql_gguf_find_kv(&f, "adapter.lora.alpha")->type == QL_GGUF_F32);
        const ql_gguf_tensor *a = ql_gguf_find_tensor(&f, "t.f32"),
                             *b = ql_gguf_find_tensor(&f, "t.f16"),
                             *c = ql_gguf_find_tensor(&f, "t.bf16");
        CHECK(a && b && c);
        if (a && b && c) {
            CHECK(a->n_dims == 2 && a->ne[0] == 3 && a->ne[1] == 5 && a->type == QL_GGML_F32);
            CHECK(b->n_dims == 1 && b->ne[0] == 7 && b->type == QL_GGML_F16);
            CHECK(c->n_dims == 2 && c->ne[0] == 2 && c->ne[1] == 3 && c->type == QL_GGML_BF16);
            CHECK(!memcmp(a->data, f32, sizeof f32));
            CHECK(!memcmp(b->data, f16, sizeof f16));
            CHECK(!memcmp(c->data, bf16, sizeof bf16));
            /* 60 and 14 bytes: the next tensors start on the 32-byte boundaries */
            CHECK(a->offset == 0 && b->offset == 64 && c->offset == 96);
            /* and the last is padded too, as ggml's reader of the whole data
             * section expects */
            CHECK(f.map_len == f.data_offset + 128 + 64);
        }
        ql_gguf_close(&f);
    }

    /* Another file rewritten whole: every metadata entry copied as it is,
     * arrays (nested ones included) and all, and its tensors, at its own
     * alignment (tests/fixtures/gguf/types.gguf: every value type,
     * general.alignment 64, quantized tensors). */
    const char *src_dir = getenv("QL_SOURCE_DIR");
    char *types = ql_fs_join(src_dir ? src_dir : ".", "tests/fixtures/gguf/types.gguf");
    char *copy = ql_fs_join(dir, "copy.gguf");
    ql_gguf_file a, b;
    CHECKF(ql_gguf_open(types, &a) == QL_OK, "%s", ql_error_message());
    CHECK(a.alignment == 64);
    ql_gguf_writer w2 = {.alignment = a.alignment};
    for (size_t i = 0; i < a.n_kv; i++) CHECK(ql_gguf_writer_copy_kv(&w2, &a.kvs[i]) == QL_OK);
    for (size_t i = 0; i < a.n_tensors; i++) {
        const ql_gguf_tensor *t = &a.tensors[i];
        CHECK(ql_gguf_writer_add_tensor(&w2, t->name, t->n_dims, t->ne, t->type, t->data,
                                        t->nbytes) == QL_OK);
    }
    CHECK(ql_gguf_writer_save(&w2, copy) == QL_OK);
    CHECKF(ql_gguf_open(copy, &b) == QL_OK, "%s", ql_error_message());
    CHECK(a.n_kv > 8 && b.n_kv == a.n_kv && b.alignment == 64 && a.n_tensors > 4 &&
          b.n_tensors == a.n_tensors);
    for (size_t i = 0; i < b.n_kv; i++) {
        const ql_gguf_kv *x = &b.kvs[i], *y = ql_gguf_find_kv(&a, x->key);
        CHECKF(y && x->type == y->type && x->elem == y->elem && x->count == y->count &&
                   x->size == y->size && !memcmp(x->at, y->at, x->size),
               "%s", x->key);
    }
    for (size_t i = 0; i < b.n_tensors; i++) {
        const ql_gguf_tensor *x = &b.tensors[i], *y = ql_gguf_find_tensor(&a, x->name);
        CHECKF(y && x->type == y->type && x->nbytes == y->nbytes && x->offset % 64 == 0 &&
                   !memcmp(x->data, y->data, x->nbytes),
               "%s", x->name);
    }
    ql_gguf_close(&a);
    ql_gguf_close(&b);
    unlink(copy);
    w2.alignment = 48; /* not a power of 2: refused, nothing written */
    CHECK(ql_gguf_writer_save(&w2, copy) == QL_EUNSUPPORTED);
    CHECK(!ql_fs_exists(copy) && count_tmp_files(dir) == 0);
    ql_gguf_writer_free(&w2);
    unlink(copy);
    free(copy);
    free(types);

    check_q8_0(src_dir ? src_dir : ".");

    /* A destination that cannot be written: an error naming it, nothing left. */
    char *bad = ql_fs_join(dir, "no/such/dir/x.gguf");
    st = ql_gguf_writer_save(&w, bad);
    CHECK(st == QL_EIO && strstr(ql_error_message(), "x.gguf"));
    CHECK(count_tmp_files(dir) == 0);
    free(bad);

    ql_gguf_writer_free(&w);
    unlink(path);
    rmdir(dir);
    free(path);
    return CHECK_DONE();
}
