/* The sandboxed Python runner (train/sandbox.h). */
#include "train/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fsutil.h"

void ql_sandbox_limits_default(ql_sandbox_limits *l) {
    *l = (ql_sandbox_limits){.cpu_s = 10,
                             .wall_s = 20,
                             .mem_bytes = (int64_t)1 << 30,
                             .out_bytes = (int64_t)1 << 20,
                             .no_network = 1};
}

const char *ql_sandbox_verdict_name(ql_sandbox_verdict v) {
    switch (v) {
    case QL_SB_PASS: return "pass";
    case QL_SB_FAIL: return "fail";
    case QL_SB_TIMEOUT: return "timeout";
    case QL_SB_MEMORY: return "memory";
    }
    return "?";
}

const char *ql_sandbox_net_name(ql_sandbox_net n) {
    switch (n) {
    case QL_SB_NET_ISOLATED: return "isolated (network namespace)";
    case QL_SB_NET_USER_ISOLATED: return "isolated (user + network namespace)";
    case QL_SB_NET_SHARED: return "NOT isolated (the kernel refused a network namespace)";
    case QL_SB_NET_NOT_ASKED: return "not isolated (not asked)";
    }
    return "?";
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* `name` as execve needs it: itself when it has a '/', else the first
 * executable of that name in PATH. */
static ql_status resolve(const char *name, char *out, size_t cap) {
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0)
            return ql_error(QL_ENOTFOUND, "python: %s is not an executable file", name);
        snprintf(out, cap, "%s", name);
        return QL_OK;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0 && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, p, name) < cap &&
            access(out, X_OK) == 0)
            return QL_OK;
        p += n + (e ? 1 : 0);
    }
    return ql_error(QL_ENOTFOUND, "python: no '%s' in PATH (%s); name one with --python", name,
                    path);
}

static void set_limit(int what, rlim_t soft, rlim_t hard) {
    struct rlimit r = {.rlim_cur = soft, .rlim_max = hard};
    (void)setrlimit(what, &r);
}

/* The child: never returns. Only async-signal-safe calls after fork. */
static void child(const char *dir, const char *python, const ql_sandbox_limits *lim, int status_fd,
                  char *const envp[]) {
    setpgid(0, 0);
    char net = 'n';
    if (lim->no_network) {
        if (unshare(CLONE_NEWNET) == 0)
            net = 'i';
        else if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0)
            net = 'u';
        else
            net = 's';
    }
    (void)!write(status_fd, &net, 1);
    rlim_t cpu = (rlim_t)ceil(lim->cpu_s < 1 ? 1 : lim->cpu_s);
    set_limit(RLIMIT_CPU, cpu, cpu + 1); /* SIGXCPU, then SIGKILL a second later */
    if (lim->mem_bytes > 0) set_limit(RLIMIT_AS, (rlim_t)lim->mem_bytes, (rlim_t)lim->mem_bytes);
    if (lim->out_bytes > 0) set_limit(RLIMIT_FSIZE, (rlim_t)lim->out_bytes, (rlim_t)lim->out_bytes);
    set_limit(RLIMIT_CORE, 0, 0);
    int ok = chdir(dir) == 0;
    int in = open("/dev/null", O_RDONLY);
    int out = openat(AT_FDCWD, "output", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ok = ok && in >= 0 && out >= 0 && dup2(in, 0) == 0 && dup2(out, 1) == 1 && dup2(out, 2) == 2;
    /* Nothing of the parent's (model files, sockets) stays open but the
     * status pipe, which closes itself at exec. */
    if (ok && dup2(status_fd, 3) == 3) {
        (void)fcntl(3, F_SETFD, FD_CLOEXEC);
        for (int fd = 4; fd < 1024; fd++) (void)close(fd);
        char *const argv[] = {(char *)python, "-I", "test.py", NULL};
        execve(python, argv, envp);
    }
    int err = errno;
    char msg[2] = {'E', (char)(err > 127 ? 127 : err)};
    (void)!write(ok ? 3 : status_fd, msg, 2);
    _exit(127);
}

static ql_status write_program(const char *dir, const char *program, size_t len) {
    char *path = ql_fs_join(dir, "test.py");
    if (!path) return ql_error(QL_ENOMEM, "out of memory");
    FILE *f = fopen(path, "wb");
    ql_status st = QL_OK;
    if (!f || fwrite(program, 1, len, f) != len)
        st = ql_error(QL_EIO, "%s: cannot write: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && st == QL_OK)
        st = ql_error(QL_EIO, "%s: cannot write: %s", path, strerror(errno));
    free(path);
    return st;
}

static void read_tail(const char *dir, char *tail, size_t cap) {
    tail[0] = '\0';
    char *path = ql_fs_join(dir, "output");
    FILE *f = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!f) return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        long from = n > (long)cap - 1 ? n - ((long)cap - 1) : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t got = fread(tail, 1, cap - 1, f);
            tail[got] = '\0';
            for (size_t i = 0; i < got; i++)
                if (tail[i] == '\0') tail[i] = ' ';
        }
    }
    fclose(f);
}

ql_status ql_sandbox_run_python(const char *python, const char *program, size_t len,
                                const ql_sandbox_limits *lim, ql_sandbox_result *r) {
    memset(r, 0, sizeof *r);
    r->net = QL_SB_NET_NOT_ASKED;
    char exe[4096];
    QL_TRY(resolve(python, exe, sizeof exe));
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/qlora-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return ql_error(QL_EIO, "%s: cannot create: %s", dir, strerror(errno));
    ql_status st = write_program(dir, program, len);
    char home[4200], tmpenv[4200];
    snprintf(home, sizeof home, "HOME=%s", dir);
    snprintf(tmpenv, sizeof tmpenv, "TMPDIR=%s", dir);
    char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", home, tmpenv, "LANG=C.UTF-8", NULL};
    int pfd[2] = {-1, -1};
    if (st == QL_OK && pipe2(pfd, O_CLOEXEC) != 0)
        st = ql_error(QL_EIO, "sandbox: pipe: %s", strerror(errno));
    pid_t pid = -1;
    double t0 = mono();
    if (st == QL_OK) {
        fflush(NULL);
        pid = fork();
        if (pid == 0) child(dir, exe, lim, pfd[1], envp);
        if (pid < 0) st = ql_error(QL_EIO, "sandbox: fork: %s", strerror(errno));
    }
    if (pfd[1] >= 0) close(pfd[1]);
    if (st != QL_OK) {
        if (pfd[0] >= 0) close(pfd[0]);
        ql_fs_remove_tree(dir);
        return st;
    }
    setpgid(pid, pid); /* also here, so the group exists before any kill */
    /* The status pipe: one byte for the network, then EOF at exec (or an
     * 'E' and errno when exec failed). */
    char msg[8];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(pfd[0], msg + got, sizeof msg - got);
        if (n > 0 && (got += (size_t)n) < sizeof msg) continue;
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    close(pfd[0]);
    if (got >= 1)
        r->net = msg[0] == 'i'   ? QL_SB_NET_ISOLATED
                 : msg[0] == 'u' ? QL_SB_NET_USER_ISOLATED
                 : msg[0] == 's' ? QL_SB_NET_SHARED
                                 : QL_SB_NET_NOT_ASKED;
    int exec_failed = got >= 3 && msg[1] == 'E';
    int exec_errno = exec_failed ? msg[2] : 0;
    /* Wait without reaping, so the group id cannot be reused before the kill. */
    int killed_at_wall = 0;
    long nap_ns = 1000000;
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            break;
        if (mono() - t0 > lim->wall_s) {
            kill(-pid, SIGKILL);
            killed_at_wall = 1;
            break;
        }
        struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 20000000) nap_ns *= 2;
    }
    kill(-pid, SIGKILL); /* whatever it started */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r->wall_s = mono() - t0;
    read_tail(dir, r->tail, sizeof r->tail);
    ql_fs_remove_tree(dir);
    if (exec_failed)
        return ql_error(QL_EIO, "sandbox: cannot run %s: %s", exe, strerror(exec_errno));
    if (WIFEXITED(status)) {
        r->exit_code = WEXITSTATUS(status);
        r->verdict = r->exit_code == 0                ? QL_SB_PASS
                     : strstr(r->tail, "MemoryError") ? QL_SB_MEMORY
                                                      : QL_SB_FAIL;
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        r->exit_code = -sig;
        /* SIGXCPU at the soft CPU limit, SIGKILL at the hard one or ours. */
        if (killed_at_wall || sig == SIGXCPU || sig == SIGKILL)
            r->verdict = QL_SB_TIMEOUT;
        else if (strstr(r->tail, "MemoryError"))
            r->verdict = QL_SB_MEMORY;
        else
            r->verdict = QL_SB_FAIL;
    } else {
        r->verdict = QL_SB_FAIL;
    }
    return QL_OK;
}
