/* SHA-256 against the FIPS 180-4 examples (NIST's "abc", the empty message,
 * the 448- and 896-bit messages and one million 'a'), split updates against
 * one call, files, and lengths around the padding boundary against coreutils'
 * sha256sum (an independent implementation; skipped when it is missing); the
 * SHA-NI and plain C paths against each other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/sha256.h"

static void hex_of(const void *m, size_t n, char hex[65]) {
    uint8_t d[32];
    ql_sha256_buf(m, n, d);
    ql_sha256_hex(d, hex);
}

static void test_fips(void) {
    static const struct {
        const char *msg, *want;
    } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopq"
         "rlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char hex[65];
        hex_of(v[i].msg, strlen(v[i].msg), hex);
        CHECKF(!strcmp(hex, v[i].want), "'%s': %s", v[i].msg, hex);
    }
    /* one million 'a', fed in uneven pieces */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    ql_sha256 s;
    ql_sha256_init(&s);
    for (size_t off = 0, k = 1; off < 1000000; k = k * 7 % 1009 + 1) {
        size_t n = 1000000 - off < k ? 1000000 - off : k;
        ql_sha256_update(&s, a + off, n);
        off += n;
    }
    uint8_t d[32];
    char hex[65];
    ql_sha256_final(&s, d);
    ql_sha256_hex(d, hex);
    CHECKF(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "%s",
           hex);
    free(a);
}

static void test_splits(void) {
    uint8_t m[300];
    for (int i = 0; i < 300; i++) m[i] = (uint8_t)(i * 131 + 7);
    int ok = 1;
    for (size_t len = 0; len <= 300; len += 13) {
        uint8_t want[32];
        ql_sha256_buf(m, len, want);
        for (size_t cut = 0; cut <= len; cut++) {
            ql_sha256 s;
            uint8_t got[32];
            ql_sha256_init(&s);
            ql_sha256_update(&s, m, cut);
            ql_sha256_update(&s, m + cut, len - cut);
            ql_sha256_final(&s, got);
            ok &= !memcmp(got, want, 32);
        }
    }
    CHECK(ok);
}

/* A file of `len` bytes, its digest through ql_sha256_add_file and, when the
 * tool is there, sha256sum's. */
static void test_file(size_t len, int have_tool) {
    char path[] = "/tmp/ql_test_sha256_XXXXXX";
    int fd = mkstemp(path);
    uint8_t *m = malloc(len + 1);
    for (size_t i = 0; i < len; i++) m[i] = (uint8_t)(i * 17 + len);
    CHECK(fd >= 0 && write(fd, m, len) == (ssize_t)len);
    close(fd);
    ql_sha256 s;
    uint8_t d[32], one[32];
    ql_sha256_init(&s);
    CHECK(ql_sha256_add_file(&s, path) == QL_OK);
    ql_sha256_final(&s, d);
    ql_sha256_buf(m, len, one);
    CHECKF(!memcmp(d, one, 32), "file of %zu bytes", len);
    if (have_tool) {
        char cmd[128], line[128] = "", hex[65];
        snprintf(cmd, sizeof cmd, "sha256sum %s", path);
        FILE *p = popen(cmd, "r");
        if (p && fgets(line, sizeof line, p)) line[64] = '\0';
        if (p) pclose(p);
        ql_sha256_hex(d, hex);
        CHECKF(!strcmp(hex, line), "%zu bytes: %s, sha256sum %s", len, hex, line);
    }
    unlink(path);
    free(m);
}

/* Digests of pseudo-random messages of 0..700 bytes and of 1 MiB + 5, fed
 * in pieces, hashed together: a fingerprint of the implementation. */
static void summary(char hex[65]) {
    static uint8_t buf[(1 << 20) + 5];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    ql_sha256 all;
    ql_sha256_init(&all);
    for (size_t n = 0; n <= 700; n++) {
        uint8_t d[32];
        ql_sha256 s;
        ql_sha256_init(&s);
        ql_sha256_update(&s, buf + n, n / 3);
        ql_sha256_update(&s, buf + n + n / 3, n - n / 3);
        ql_sha256_final(&s, d);
        ql_sha256_update(&all, d, 32);
    }
    uint8_t d[32];
    ql_sha256_buf(buf, sizeof buf, d);
    ql_sha256_update(&all, d, 32);
    ql_sha256_final(&all, d);
    ql_sha256_hex(d, hex);
}

/* The SHA-NI path (where the CPU has it) and the plain C one agree: the
 * test runs itself again with QL_SHA256_GENERIC=1. */
static void test_paths(const char *self) {
    char mine[65], cmd[4200], other[128] = "";
    summary(mine);
    snprintf(cmd, sizeof cmd, "QL_SHA256_GENERIC=1 '%s' --summary", self);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    if (!fgets(other, sizeof other, p)) other[0] = 0;
    pclose(p);
    other[strcspn(other, "\n")] = 0;
    CHECKF(!strcmp(mine, other), "default path %s, plain C %s", mine, other);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--summary")) {
        char hex[65];
        summary(hex);
        puts(hex);
        return 0;
    }
    test_paths(argv[0]);
    test_fips();
    test_splits();
    int have_tool = system("sha256sum /dev/null >/dev/null 2>&1") == 0;
    if (!have_tool) printf("sha256sum not found: file digests checked against one call only\n");
    static const size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 100000, 200003};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) test_file(lens[i], have_tool);
    ql_sha256 s;
    ql_sha256_init(&s);
    CHECK(ql_sha256_add_file(&s, "/nonexistent/ql_sha256") == QL_EIO);
    CHECK(strstr(ql_error_message(), "/nonexistent/ql_sha256") != NULL);
    return CHECK_DONE();
}
