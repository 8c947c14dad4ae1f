/* The sandbox that runs generated code (train/sandbox.h) and the code
 * evaluation's test runs (train/code_eval.h), with python3 (skipped with 77
 * when there is none):
 *   - a passing program passes; exit 3 fails with that status;
 *   - a test that loops forever is killed at the CPU limit, one that sleeps
 *     forever at the wall-clock limit, one that allocates without bound stops
 *     at the memory limit: all three are failures (timeout, timeout, memory);
 *   - a process the program starts does not outlive it (its group is killed);
 *   - with a network namespace, the program sees no interface but lo;
 *   - a record {"prompt", "completion", "test"}: the right body passes, a
 *     wrong one, an endless one and a memory-hungry one do not; pass@1-style
 *     counting over them;
 *   - records read from JSONL (with and without "test"), bad records refused. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "train/code_eval.h"
#include "train/sandbox.h"

static const char *PY = "python3";

static ql_sandbox_result run(const char *prog, double cpu, double wall, int64_t mem) {
    ql_sandbox_limits l;
    ql_sandbox_limits_default(&l);
    l.cpu_s = cpu;
    l.wall_s = wall;
    l.mem_bytes = mem;
    ql_sandbox_result r;
    ql_status st = ql_sandbox_run_python(PY, prog, strlen(prog), &l, &r);
    CHECKF(st == QL_OK, "run: %s", ql_error_message());
    return r;
}

/* 1 while pid exists and is not a zombie. */
static int alive(long pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

int main(void) {
    char exe[4096];
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        printf("skipped: no python3 in PATH\n");
        return 77;
    }
    (void)exe;
    ql_sandbox_result r = run("print('hello')\n", 5, 10, (int64_t)512 << 20);
    CHECKF(r.verdict == QL_SB_PASS && strstr(r.tail, "hello"), "pass: %s exit %d tail '%s'",
           ql_sandbox_verdict_name(r.verdict), r.exit_code, r.tail);
    printf("network: %s\n", ql_sandbox_net_name(r.net));

    r = run("import sys\nsys.exit(3)\n", 5, 10, (int64_t)512 << 20);
    CHECKF(r.verdict == QL_SB_FAIL && r.exit_code == 3, "exit 3: %s %d",
           ql_sandbox_verdict_name(r.verdict), r.exit_code);

    r = run("raise ValueError('boom')\n", 5, 10, (int64_t)512 << 20);
    CHECKF(r.verdict == QL_SB_FAIL && strstr(r.tail, "ValueError: boom"), "raise: %s tail '%s'",
           ql_sandbox_verdict_name(r.verdict), r.tail);

    /* Forever on the CPU: SIGXCPU at 1 s (the wall limit is further). */
    r = run("while True:\n    pass\n", 1, 30, (int64_t)512 << 20);
    CHECKF(r.verdict == QL_SB_TIMEOUT && r.wall_s < 10, "busy loop: %s exit %d after %.1f s",
           ql_sandbox_verdict_name(r.verdict), r.exit_code, r.wall_s);

    /* Forever asleep: only the wall clock ends it. */
    r = run("import time\ntime.sleep(1000)\n", 5, 1.5, (int64_t)512 << 20);
    CHECKF(r.verdict == QL_SB_TIMEOUT && r.wall_s >= 1.4 && r.wall_s < 10,
           "sleep: %s exit %d after %.1f s", ql_sandbox_verdict_name(r.verdict), r.exit_code,
           r.wall_s);

    /* Without bound: 10 MB at a time until the address space runs out. */
    r = run("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", 20, 30, (int64_t)256 << 20);
    CHECKF(r.verdict == QL_SB_MEMORY, "allocation: %s exit %d tail '%s'",
           ql_sandbox_verdict_name(r.verdict), r.exit_code, r.tail);

    /* A child left behind is killed with the group. */
    r = run("import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint('child', p.pid)\n", 5,
            10, (int64_t)512 << 20);
    long child = 0;
    const char *c = strstr(r.tail, "child ");
    if (c) child = strtol(c + 6, NULL, 10);
    CHECKF(r.verdict == QL_SB_PASS && child > 0, "spawn: %s tail '%s'",
           ql_sandbox_verdict_name(r.verdict), r.tail);
    if (child > 0) {
        for (int i = 0; i < 100 && alive(child); i++) usleep(10000);
        CHECKF(!alive(child), "the program's child %ld outlived it", child);
        if (alive(child)) kill((pid_t)child, SIGKILL);
    }

    /* No network: only the loopback interface in the namespace. */
    r = run("import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n", 5, 10,
            (int64_t)512 << 20);
    if (r.net == QL_SB_NET_ISOLATED || r.net == QL_SB_NET_USER_ISOLATED)
        CHECKF(r.verdict == QL_SB_PASS && strstr(r.tail, "['lo']"), "interfaces: %s", r.tail);
    else
        printf("network isolation not available here (%s): interfaces %s",
               ql_sandbox_net_name(r.net), r.tail);

    /* Code records. */
    ql_code_record rec = {.prompt = "def add(a, b):\n    \"\"\"a + b\"\"\"\n",
                          .test = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n",
                          .source = "add"};
    static const struct {
        const char *body;
        ql_sandbox_verdict want;
    } bodies[] = {
        /* completions of the prompt without its final newline */
        {"\n    return a + b\n", QL_SB_PASS},
        {"\n    return a - b", QL_SB_FAIL}, /* no final newline: one is added */
        {"\n    while True:\n        pass\n", QL_SB_TIMEOUT},
        {"\n    x = []\n    while True:\n        x.append(' ' * 10**7)\n", QL_SB_MEMORY},
        {"\n    return (", QL_SB_FAIL}, /* a syntax error */
    };
    ql_sandbox_limits l;
    ql_sandbox_limits_default(&l);
    l.cpu_s = 1;
    l.wall_s = 5;
    l.mem_bytes = (int64_t)256 << 20;
    int passed = 0;
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        ql_sandbox_result res;
        CHECK(ql_code_run_test(PY, &rec, bodies[i].body, strlen(bodies[i].body), &l, &res) ==
              QL_OK);
        CHECKF(res.verdict == bodies[i].want, "body %zu: %s, want %s (tail '%s')", i,
               ql_sandbox_verdict_name(res.verdict), ql_sandbox_verdict_name(bodies[i].want),
               res.tail);
        passed += res.verdict == QL_SB_PASS;
    }
    CHECK(passed == 1);
    size_t len;
    CHECK(ql_code_prompt_len("def f():\n  \n") == 8 && ql_code_prompt_len(" \n") == 0);
    char *prog = ql_code_program("def f():\n", 8, "\n    return 1", 13, "assert f() == 1\n", &len);
    CHECK(prog && !strcmp(prog, "def f():\n    return 1\n\nassert f() == 1\n") &&
          len == strlen(prog));
    free(prog);

    /* JSONL records. */
    char dir[] = "/tmp/ql_test_codeset_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/c.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"prompt\": \"def f():\\n\", \"completion\": \"    return 1\\n\", \"test\": "
          "\"assert f() == 1\\n\", \"source\": \"m.py:1\"}\n\n"
          "{\"prompt\": \"def g():\\n\", \"completion\": \"    return 2\\n\"}\n",
          f);
    fclose(f);
    ql_code_set s;
    CHECKF(ql_code_set_load(path, &s) == QL_OK, "%s", ql_error_message());
    CHECK(s.n == 2 && s.n_tests == 1 && s.r[0].line == 1 && s.r[1].line == 3);
    if (s.n == 2) {
        CHECK(!strcmp(s.r[0].source, "m.py:1") && s.r[1].test == NULL);
        CHECK(strstr(s.r[1].source, "c.jsonl:3") != NULL);
    }
    ql_code_set_free(&s);
    f = fopen(path, "w");
    fputs("{\"prompt\": \"def f():\\n\"}\n{\"text\": \"x\"}\n", f);
    fclose(f);
    CHECK(ql_code_set_load(path, &s) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "c.jsonl:2") != NULL, "%s", ql_error_message());
    f = fopen(path, "w");
    fputs("{\"prompt\": \"def f():\\n\", \"test\": 3}\n", f);
    fclose(f);
    CHECK(ql_code_set_load(path, &s) == QL_EFORMAT);
    CHECKF(strstr(ql_error_message(), "\"test\" must be a string") != NULL, "%s",
           ql_error_message());
    ql_error_clear();
    ql_fs_remove_tree(dir);

    ql_sandbox_limits_default(&l);
    CHECK(ql_sandbox_run_python("/nonexistent/python3", "", 0, &l, &r) == QL_ENOTFOUND);
    ql_error_clear();
    return CHECK_DONE();
}
