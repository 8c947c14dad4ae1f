/* For the emulator's own tests: runs body() in a fork()ed child with its
 * stderr captured and no core file, so that a test can check that the
 * emulator stops a program (SIGABRT) and what it says. */
#ifndef QL_EMU_TEST_CHILD_H
#define QL_EMU_TEST_CHILD_H

#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

/* The child's wait status (-1 when no pipe), its stderr in *err. The child
 * exits 0 when body() returns; 20 seconds end it. */
template <class F> static int ql_emu_run_child(F body, std::string *err) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout), fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        close(fd[1]);
        const struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        alarm(20);
        body();
        _exit(0);
    }
    close(fd[1]);
    char buf[512];
    ssize_t n;
    while ((n = read(fd[0], buf, sizeof buf)) > 0) err->append(buf, (size_t)n);
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

/* Whether status is a death by SIGABRT. */
static inline bool ql_emu_aborted(int status) {
    return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

#endif
