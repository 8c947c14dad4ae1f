#include "core/png.h"

#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"

/* ------------------------------------------------------------ bit output */

typedef struct bits {
    uint8_t *buf;
    size_t len, cap;
    uint32_t acc; /* pending bits, LSB first */
    int n;
    int oom;
} bits;

static void put_byte(bits *b, uint8_t v) {
    if (b->len == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        uint8_t *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    b->buf[b->len++] = v;
}

/* `count` bits of v, least significant first (deflate's order for extra
 * bits and header fields). */
static void put_bits(bits *b, uint32_t v, int count) {
    b->acc |= v << b->n;
    b->n += count;
    while (b->n >= 8) {
        put_byte(b, (uint8_t)b->acc);
        b->acc >>= 8;
        b->n -= 8;
    }
}

/* A Huffman code: most significant bit first. */
static void put_code(bits *b, uint32_t code, int len) {
    uint32_t rev = 0;
    for (int i = 0; i < len; i++) rev |= ((code >> i) & 1u) << (len - 1 - i);
    put_bits(b, rev, len);
}

static void flush_bits(bits *b) {
    if (b->n > 0) put_byte(b, (uint8_t)b->acc);
    b->acc = 0;
    b->n = 0;
}

/* ------------------------------------------------ deflate, fixed Huffman */

/* Literal/length symbol in the fixed code (RFC 1951 3.2.6). */
static void put_sym(bits *b, int sym) {
    if (sym < 144)
        put_code(b, 0x30u + (uint32_t)sym, 8);
    else if (sym < 256)
        put_code(b, 0x190u + (uint32_t)(sym - 144), 9);
    else if (sym < 280)
        put_code(b, (uint32_t)(sym - 256), 7);
    else
        put_code(b, 0xC0u + (uint32_t)(sym - 280), 8);
}

static const uint16_t len_base[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bits *b, int len, int dist) {
    int i = 28;
    while (len_base[i] > len) i--;
    put_sym(b, 257 + i);
    put_bits(b, (uint32_t)(len - len_base[i]), len_extra[i]);
    int d = 29;
    while (dist_base[d] > dist) d--;
    put_code(b, (uint32_t)d, 5);
    put_bits(b, (uint32_t)(dist - dist_base[d]), dist_extra[d]);
}

static size_t match_len(const uint8_t *p, size_t i, size_t n, size_t dist) {
    size_t k = 0;
    while (i + k < n && k < 258 && p[i + k] == p[i + k - dist]) k++;
    return k;
}

ql_status ql_png_zlib(const uint8_t *data, size_t n, size_t stride, uint8_t **out,
                      size_t *out_len) {
    bits b = {0};
    put_byte(&b, 0x78); /* deflate, 32 KiB window */
    put_byte(&b, 0x01); /* no dictionary, fastest; (0x78 * 256 + 1) % 31 == 0 */
    put_bits(&b, 1, 1); /* the final block */
    put_bits(&b, 1, 2); /* fixed Huffman codes */
    int use_row = stride > 0 && stride <= 32768;
    for (size_t i = 0; i < n;) {
        size_t best = 0, dist = 0;
        if (i >= 1) {
            best = match_len(data, i, n, 1);
            dist = 1;
        }
        if (use_row && i >= stride) {
            size_t k = match_len(data, i, n, stride);
            if (k > best) {
                best = k;
                dist = stride;
            }
        }
        if (best >= 3) {
            put_match(&b, (int)best, (int)dist);
            i += best;
        } else {
            put_sym(&b, data[i]);
            i++;
        }
    }
    put_sym(&b, 256); /* end of block */
    flush_bits(&b);
    uint32_t a = 1, s = 0; /* Adler-32 */
    for (size_t i = 0; i < n; i++) {
        a = (a + data[i]) % 65521u;
        s = (s + a) % 65521u;
    }
    uint32_t ad = (s << 16) | a;
    for (int k = 3; k >= 0; k--) put_byte(&b, (uint8_t)(ad >> (8 * k)));
    if (b.oom) {
        free(b.buf);
        return ql_error(QL_ENOMEM, "out of memory compressing an image");
    }
    *out = b.buf;
    *out_len = b.len;
    return QL_OK;
}

/* ------------------------------------------------------------------- PNG */

static uint32_t crc_table[256];
static int crc_ready;

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t c) {
    if (!crc_ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;
            for (int k = 0; k < 8; k++) v = v & 1 ? 0xEDB88320u ^ (v >> 1) : v >> 1;
            crc_table[i] = v;
        }
        crc_ready = 1;
    }
    c ^= 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static ql_status chunk(ql_fs_tmpfile *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t head[8], tail[4];
    be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t c = crc32_of((const uint8_t *)type, 4, 0);
    c = crc32_of(data, n, c);
    be32(tail, c);
    QL_TRY(ql_fs_tmpfile_write(f, head, 8));
    if (n) QL_TRY(ql_fs_tmpfile_write(f, data, n));
    return ql_fs_tmpfile_write(f, tail, 4);
}

ql_status ql_png_write_indexed(const char *path, int w, int h, const uint8_t *pixels,
                               const uint8_t *palette, int n_colors) {
    if (w <= 0 || h <= 0 || n_colors < 1 || n_colors > 256)
        return ql_error(QL_EINVAL, "%s: bad image (%d x %d, %d colours)", path, w, h, n_colors);
    /* Scanlines: filter byte 0 (none), then the row's indices. */
    size_t stride = (size_t)w + 1, n = stride * (size_t)h;
    uint8_t *raw = ql_malloc(n, "the image rows");
    if (!raw) return QL_ENOMEM;
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * stride] = 0;
        memcpy(raw + (size_t)y * stride + 1, pixels + (size_t)y * (size_t)w, (size_t)w);
    }
    uint8_t *z = NULL;
    size_t zn = 0;
    ql_status st = ql_png_zlib(raw, n, stride, &z, &zn);
    free(raw);
    if (st != QL_OK) return st;
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bits per index */
    ihdr[9] = 3;  /* palette */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering (all rows use filter 0) */
    ihdr[12] = 0; /* no interlace */
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    ql_fs_tmpfile f;
    st = ql_fs_tmpfile_open(path, &f);
    if (st != QL_OK) {
        free(z);
        return st;
    }
    st = ql_fs_tmpfile_write(&f, sig, 8);
    if (st == QL_OK) st = chunk(&f, "IHDR", ihdr, 13);
    if (st == QL_OK) st = chunk(&f, "PLTE", palette, (size_t)n_colors * 3);
    if (st == QL_OK) st = chunk(&f, "IDAT", z, zn);
    if (st == QL_OK) st = chunk(&f, "IEND", NULL, 0);
    if (st == QL_OK)
        st = ql_fs_tmpfile_commit(&f);
    else
        ql_fs_tmpfile_abort(&f);
    free(z);
    return st;
}
