/* qlora's 4-bit quantization against real bitsandbytes.
 *
 * Fixtures: tests/fixtures/bnb/, written by tests/fixtures/make_bnb_reference.py
 * with bitsandbytes running on a CPU (versions and the backend of each op in
 * versions.json). On a CPU, quantize_4bit runs bitsandbytes' pure-torch
 * "default" backend and quantize_blockwise (the 8-bit absmax codes of double
 * quantization) its C++ CPU library; neither is the CUDA kernel that produced
 * real checkpoints, and qlora follows CUDA. The known differences are asserted
 * as differences here, element by element, never skipped:
 *
 *  - An all-zero block: CUDA computes 0 * (1/0) = NaN and emits code 0 for
 *    every element (byte 0x00); the default backend clamps absmax to 1e-38 and
 *    emits the code of 0.0 (NF4 code 7, byte 0x77). qlora does what CUDA does.
 *  - The double-quant offset is torch's float32 mean; qlora sums in double and
 *    rounds once. They may differ by an ulp; then everything after the offset
 *    is compared using bitsandbytes' offset.
 *
 * Everything else (absmax, packed nibbles, 8-bit absmax codes, nested absmax,
 * the quant-state JSON, dequantized values) must match bit for bit. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "kernels/nf4.h"
#include "kernels/quant4.h"
#include "model/bnb4.h"

static json_t *index_json;
static char dir[1024];

typedef struct arr {
    void *data;
    int64_t n; /* elements */
    const char *dtype;
} arr;

static arr load_entry(const json_t *t, const char *what) {
    arr a = {0};
    if (!t) {
        fprintf(stderr, "fixture %s missing from index.json\n", what);
        abort();
    }
    a.dtype = json_string_value(json_object_get(t, "dtype"));
    const char *file = json_string_value(json_object_get(t, "file"));
    a.n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "shape"), i, d) a.n *= json_integer_value(d);
    size_t esz = strcmp(a.dtype, "u8") == 0 ? 1 : strcmp(a.dtype, "bf16") == 0 ? 2 : 4;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        abort();
    }
    a.data = calloc((size_t)a.n + 1, esz);
    size_t got = fread(a.data, esz, (size_t)a.n, f);
    fclose(f);
    if ((int64_t)got != a.n) {
        fprintf(stderr, "fixture %s: %zu of %lld elements\n", path, got, (long long)a.n);
        abort();
    }
    return a;
}

static arr load(const json_t *c, const char *name) {
    return load_entry(json_object_get(json_object_get(c, "arrays"), name), name);
}

/* f32 or bf16 array as float32 (bf16 widening is exact). */
static float *as_f32(const arr *a) {
    float *out = malloc((size_t)a->n * sizeof(float));
    for (int64_t i = 0; i < a->n; i++)
        out[i] = strcmp(a->dtype, "bf16") == 0 ? ql_bf16_to_f32(((const uint16_t *)a->data)[i])
                                               : ((const float *)a->data)[i];
    return out;
}

static uint32_t bits(float x) { return ql_bits_from_f32(x); }

/* Element count a check found different, with the first few reported. */
static int64_t report_(const char *case_, const char *what, int64_t i, double got, double want,
                       int64_t count) {
    if (count < 5)
        fprintf(stderr, "  %s: %s[%lld]: qlora %.9g, bitsandbytes %.9g\n", case_, what,
                (long long)i, got, want);
    return count + 1;
}

static unsigned nibble(const uint8_t *p, int64_t e) { return ql_q4_nibble(p, e); }

static void test_case(const char *name, const json_t *c) {
    const int64_t rows = json_integer_value(json_object_get(c, "rows"));
    const int64_t cols = json_integer_value(json_object_get(c, "cols"));
    const int bs = (int)json_integer_value(json_object_get(c, "blocksize"));
    const int dq = json_is_true(json_object_get(c, "double_quant"));
    const char *qt_name = json_string_value(json_object_get(c, "quant_type"));
    const ql_qtype qt = strcmp(qt_name, "nf4") == 0 ? QL_QTYPE_NF4 : QL_QTYPE_FP4;
    const int in_bf16 = strcmp(json_string_value(json_object_get(c, "input_dtype")), "bf16") == 0;
    const int64_t n = rows * cols, nb = (n + bs - 1) / bs;

    const char *input = json_string_value(json_object_get(c, "input"));
    arr in = load_entry(json_object_get(json_object_get(index_json, "inputs"), input), input);
    float *w = as_f32(&in);
    CHECK(in.n == n);
    arr packed = load(c, "packed"), absmax_raw = load(c, "absmax_raw"), absmax = load(c, "absmax");
    arr blob = load(c, "blob"), dequant = load(c, "dequant");
    const uint8_t *want_packed = packed.data;
    const float *want_raw = absmax_raw.data;
    CHECK(packed.n == (n + 1) / 2 && absmax_raw.n == nb && absmax.n == nb);

    /* 1. Per-block absmax (float32, before double quantization). */
    ql_q4 q0, q;
    CHECK(ql_q4_quantize(w, rows, cols, qt, bs, 0, &q0) == QL_OK);
    int64_t bad = 0;
    for (int64_t b = 0; b < nb; b++)
        if (bits(q0.absmax[b]) != bits(want_raw[b]))
            bad = report_(name, "absmax", b, q0.absmax[b], want_raw[b], bad);
    CHECKF(bad == 0, "%s: %lld absmax values differ", name, (long long)bad);

    /* 2. Packed nibbles. In an all-zero block bitsandbytes' default backend
     * emits the code of 0.0 where CUDA (and qlora) emit code 0. */
    CHECK(ql_q4_quantize(w, rows, cols, qt, bs, dq, &q) == QL_OK);
    const unsigned zero_code = ql_q4_encode(qt, 0.0f);
    int64_t zero_blocks = 0, fp4_zero_codes = 0;
    bad = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t first = b * bs, last = first + bs < n ? first + bs : n;
        if (want_raw[b] == 0.0f) {
            zero_blocks++;
            int64_t cpu_ok = 0, ql_ok = 0;
            for (int64_t e = first; e < last; e++) {
                cpu_ok += nibble(want_packed, e) == zero_code;
                ql_ok += nibble(q.packed, e) == 0;
            }
            CHECKF(cpu_ok == last - first,
                   "%s: all-zero block %lld: bitsandbytes-cpu should give code %u throughout", name,
                   (long long)b, zero_code);
            CHECKF(ql_ok == last - first,
                   "%s: all-zero block %lld: qlora should give code 0 (as CUDA) throughout", name,
                   (long long)b);
            continue;
        }
        const float r = 1.0f / want_raw[b];
        for (int64_t e = first; e < last; e++) {
            unsigned got = nibble(q.packed, e), exp = nibble(want_packed, e);
            if (got == exp) continue;
            /* FP4 values too small for the smallest nonzero code: CUDA (and
             * qlora) give the signed zero of the input's sign (8 = -0 when
             * x < 0); bitsandbytes 0.50's default backend sorts its code book,
             * whose entry 8 is +0.0, after entry 0, so bucketize hands tiny
             * negatives code 0 and tiny positives code 8. */
            float x = w[e] * r;
            if (qt == QL_QTYPE_FP4 && x != 0.0f && fabsf(x) <= 0.00260417f &&
                got == (x < 0.0f ? 8u : 0u) && exp == (x < 0.0f ? 0u : 8u)) {
                fp4_zero_codes++;
                continue;
            }
            bad = report_(name, "code", e, got, exp, bad);
        }
    }
    /* The padding nibble of an odd n encodes 0.0 in both. */
    if (n & 1) CHECK(nibble(q.packed, n) == nibble(want_packed, n));
    CHECKF(bad == 0, "%s: %lld of %lld codes differ", name, (long long)bad, (long long)n);
    if (fp4_zero_codes)
        fprintf(
            stderr,
            "  %s: %lld tiny FP4 values coded as the opposite-signed zero by bitsandbytes-cpu\n",
            name, (long long)fp4_zero_codes);
    if (strstr(name, "zero_block")) CHECKF(zero_blocks == 1, "%s: expected one zero block", name);

    /* 3. The state bitsandbytes would dequantize: its own arrays in a ql_q4. */
    ql_q4 ref = {.type = qt, .rows = rows, .cols = cols, .blocksize = bs, .double_quant = dq};
    CHECK(ql_q4_alloc(&ref) == QL_OK);
    memcpy(ref.packed, packed.data, (size_t)packed.n);
    float *want_absmax_f32 = NULL;
    if (dq) {
        const uint32_t off_bits =
            (uint32_t)strtoul(json_string_value(json_object_get(c, "offset_f32_bits")), NULL, 16);
        const float off = ql_f32_from_bits(off_bits);
        arr nested = load(c, "nested_absmax"), code = load(c, "nested_code");
        arr absmax_dq = load(c, "absmax_dq");
        const float *want_nested = nested.data;
        const uint8_t *want_q = absmax.data;
        const int64_t ng = (nb + QL_NESTED_BLOCKSIZE - 1) / QL_NESTED_BLOCKSIZE;
        CHECK(nested.n == ng && code.n == 256 && absmax_dq.n == nb);
        CHECK(!strcmp(absmax.dtype, "u8"));

        /* bitsandbytes' dynamic map is qlora's table. */
        bad = 0;
        for (unsigned i = 0; i < 256; i++)
            if (bits(((float *)code.data)[i]) != bits(ql_dynmap_value(i))) bad++;
        CHECKF(bad == 0, "%s: %lld dynamic-map entries differ", name, (long long)bad);

        /* The offset: torch's float32 mean vs qlora's double sum. */
        if (bits(q.nested_offset) != off_bits) {
            int32_t d = (int32_t)(bits(q.nested_offset) - off_bits);
            fprintf(stderr,
                    "  %s: offset: qlora %.9g (%08x), bitsandbytes (torch float32 mean) %.9g "
                    "(%08x): %d ulp; comparing the rest with bitsandbytes' offset\n",
                    name, q.nested_offset, bits(q.nested_offset), off, off_bits, d);
            CHECKF(d == 1 || d == -1, "%s: offsets differ by %d ulp, more than the one allowed",
                   name, d);
        } else {
            CHECK(bits(q.nested_offset) == off_bits);
        }

        /* Nested absmax and 8-bit codes, recomputed from qlora's absmax with
         * bitsandbytes' offset, as ql_q4_quantize does it. */
        bad = 0;
        int64_t bad_codes = 0, cpu_far_codes = 0;
        for (int64_t g = 0; g < ng; g++) {
            int64_t first = g * QL_NESTED_BLOCKSIZE;
            int64_t len = nb - first < QL_NESTED_BLOCKSIZE ? nb - first : QL_NESTED_BLOCKSIZE;
            float a2 = 0.0f;
            for (int64_t i = 0; i < len; i++) a2 = fmaxf(a2, fabsf(q0.absmax[first + i] - off));
            if (bits(a2) != bits(want_nested[g]))
                bad = report_(name, "nested_absmax", g, a2, want_nested[g], bad);
            float r2 = 1.0f / a2;
            for (int64_t i = 0; i < len; i++) {
                float x = (q0.absmax[first + i] - off) * r2;
                unsigned k = ql_dynmap_encode(q.nested_map, x), kb = want_q[first + i];
                if (k == kb) continue;
                /* bitsandbytes' CPU library (quantize_blockwise's C++ binary
                 * search) can pick the farther of two neighbouring codes for an
                 * x close to their midpoint; CUDA's dQuantize and qlora pick the
                 * nearer one. Accept exactly that. */
                float dk = fabsf(x - ql_dynmap_value(k)), dkb = fabsf(x - ql_dynmap_value(kb));
                if ((k == kb + 1 || kb == k + 1) && dk < dkb) {
                    fprintf(stderr,
                            "  %s: absmax code[%lld]: x = %.9g: qlora %u (nearest, |d| %.3g), "
                            "bitsandbytes-cpu %u (|d| %.3g)\n",
                            name, (long long)(first + i), x, k, dk, kb, dkb);
                    cpu_far_codes++;
                    continue;
                }
                bad_codes = report_(name, "absmax code", first + i, k, kb, bad_codes);
            }
        }
        CHECKF(bad == 0, "%s: %lld nested absmax values differ", name, (long long)bad);
        CHECKF(bad_codes == 0, "%s: %lld of %lld 8-bit absmax codes differ", name,
               (long long)bad_codes, (long long)nb);
        /* With equal offsets, ql_q4_quantize's own output is the same. */
        if (bits(q.nested_offset) == off_bits && cpu_far_codes == 0) {
            CHECK(memcmp(q.absmax_q, want_q, (size_t)nb) == 0);
            CHECK(memcmp(q.nested_absmax, want_nested, (size_t)ng * sizeof(float)) == 0);
        }

        memcpy(ref.absmax_q, want_q, (size_t)nb);
        memcpy(ref.nested_absmax, want_nested, (size_t)ng * sizeof(float));
        memcpy(ref.nested_map, code.data, sizeof ref.nested_map);
        ref.nested_offset = off;

        /* Double-quant absmax, undone: code * nested absmax, then + offset. */
        want_absmax_f32 = malloc((size_t)nb * sizeof(float));
        memcpy(want_absmax_f32, absmax_dq.data, (size_t)nb * sizeof(float));
        float *got = malloc((size_t)nb * sizeof(float));
        ql_q4_absmax_f32(&ref, got);
        bad = 0;
        for (int64_t b = 0; b < nb; b++)
            if (bits(got[b]) != bits(want_absmax_f32[b]))
                bad = report_(name, "absmax_dq", b, got[b], want_absmax_f32[b], bad);
        CHECKF(bad == 0, "%s: %lld dequantized absmax values differ", name, (long long)bad);
        free(got);
        free(nested.data), free(code.data), free(absmax_dq.data);
    } else {
        CHECK(!strcmp(absmax.dtype, "f32"));
        CHECK(memcmp(absmax.data, want_raw, (size_t)nb * sizeof(float)) == 0);
        memcpy(ref.absmax, absmax.data, (size_t)nb * sizeof(float));
    }

    /* 4. The quant-state JSON blob, byte for byte (with bitsandbytes'
     * offset; it is qlora's own whenever the offsets agree). */
    char *json = NULL;
    size_t json_len = 0;
    CHECK(ql_bnb4_quant_state_json(&ref, in_bf16 ? QL_DT_BF16 : QL_DT_F32, &json, &json_len) ==
          QL_OK);
    CHECKF(json_len == (size_t)blob.n && memcmp(json, blob.data, json_len) == 0,
           "%s: quant state JSON\n  qlora:        %s\n  bitsandbytes: %.*s", name, json,
           (int)blob.n, (const char *)blob.data);
    free(json);

    /* 5. Dequantization of bitsandbytes' own state, bit for bit (rounded to
     * bf16 as bitsandbytes returns it for a bf16 input). */
    float *got = malloc((size_t)n * sizeof(float));
    float *want = as_f32(&dequant);
    CHECK(dequant.n == n);
    ql_q4_dequantize(&ref, got);
    bad = 0;
    int64_t fp4_neg_zero = 0;
    for (int64_t e = 0; e < n; e++) {
        float g = in_bf16 ? ql_bf16_to_f32(ql_f32_to_bf16(got[e])) : got[e];
        if (bits(g) == bits(want[e])) continue;
        /* bitsandbytes-cpu's vectorized FP4 dequant gives +0.0 for code 8
         * (-0); qlora and CUDA give -0.0 * absmax = -0.0. */
        if (qt == QL_QTYPE_FP4 && nibble(ref.packed, e) == 8 && bits(want[e]) == 0 &&
            bits(g) == 0x80000000u) {
            fp4_neg_zero++;
            continue;
        }
        bad = report_(name, "dequant", e, g, want[e], bad);
    }
    if (fp4_neg_zero)
        fprintf(stderr, "  %s: %lld FP4 code-8 values: qlora -0.0, bitsandbytes-cpu +0.0\n", name,
                (long long)fp4_neg_zero);
    CHECKF(bad == 0, "%s: %lld of %lld dequantized values differ", name, (long long)bad,
           (long long)n);

    /* 6. qlora's own packed codes under bitsandbytes' absmax state dequantize
     * to bitsandbytes' values, except in an all-zero block, where CUDA's code
     * 0 gives -1 * 0 = -0.0 and the CPU's code 7 gives +0.0. */
    memcpy(ref.packed, q.packed, (size_t)packed.n);
    ql_q4_dequantize(&ref, got);
    bad = 0;
    int64_t neg_zero = 0, fp4_zero_sign = 0;
    for (int64_t e = 0; e < n; e++) {
        float g = in_bf16 ? ql_bf16_to_f32(ql_f32_to_bf16(got[e])) : got[e];
        if (want_raw[e / bs] == 0.0f) {
            CHECKF(bits(want[e]) == 0, "%s: zero block: bitsandbytes-cpu gives +0.0", name);
            neg_zero += bits(g) == 0x80000000u;
            continue;
        }
        if (bits(g) == bits(want[e])) continue;
        /* The two FP4 signed-zero differences above: only the sign of 0 differs. */
        if (qt == QL_QTYPE_FP4 && (bits(g) ^ bits(want[e])) == 0x80000000u &&
            (bits(g) & 0x7fffffffu) == 0) {
            fp4_zero_sign++;
            continue;
        }
        bad = report_(name, "qlora-coded dequant", e, g, want[e], bad);
    }
    CHECKF(bad == 0, "%s: %lld of %lld values differ", name, (long long)bad, (long long)n);
    /* Only where a code differed above or bitsandbytes-cpu decoded code 8 as +0. */
    CHECKF(fp4_zero_sign <= fp4_zero_codes + fp4_neg_zero,
           "%s: %lld FP4 zeros differ in sign, more than explained", name,
           (long long)fp4_zero_sign);
    /* Without double quant the block's absmax is 0, so qlora (CUDA) gives
     * NF4 -1 * 0 = -0.0 and FP4 +0 * 0 = +0.0. */
    if (zero_blocks && !dq)
        CHECKF(neg_zero == (qt == QL_QTYPE_NF4 ? zero_blocks * bs : 0),
               "%s: zero block: qlora gave %lld values -0.0", name, (long long)neg_zero);

    free(got), free(want), free(want_absmax_f32), free(w);
    free(in.data), free(packed.data), free(absmax_raw.data), free(absmax.data);
    free(blob.data), free(dequant.data);
    ql_q4_free(&ref);
    ql_q4_free(&q);
    ql_q4_free(&q0);
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/bnb", src ? src : ".");
    char path[1100];
    snprintf(path, sizeof path, "%s/index.json", dir);
    json_error_t err;
    index_json = json_load_file(path, 0, &err);
    if (!index_json) {
        fprintf(stderr, "%s: %s (set QL_SOURCE_DIR to the repository root)\n", path, err.text);
        return 1;
    }
    const char *name;
    json_t *c;
    int cases = 0;
    json_object_foreach(json_object_get(index_json, "cases"), name, c) {
        test_case(name, c);
        cases++;
    }
    CHECKF(cases >= 15, "only %d cases in the bitsandbytes fixtures", cases);
    json_decref(index_json);
    return CHECK_DONE();
}
