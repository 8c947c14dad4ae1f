/* Subcommands of the qlora binary. Each returns the process exit code; only
 * launcher/ turns statuses into exit codes and calls exit(). */
#ifndef QL_LAUNCHER_COMMANDS_H
#define QL_LAUNCHER_COMMANDS_H

#include "core/status.h"

/* Exit codes (docs/exit-codes.md). */
enum {
    QL_EXIT_OK = 0,
    QL_EXIT_ERROR = 1,   /* bad input or a failure; the message says which */
    QL_EXIT_USAGE = 2,   /* bad command line */
    QL_EXIT_DRIFT = 3,   /* qlora eval --baseline: the loss drifted above the threshold */
    QL_EXIT_REQUEUE = 75 /* checkpointed after a preemption signal: requeue me */
};

typedef struct ql_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
} ql_command;

int ql_cmd_quantize(int argc, char **argv);
int ql_cmd_train(int argc, char **argv);
int ql_cmd_eval(int argc, char **argv);
int ql_cmd_eval_code(int argc, char **argv); /* qlora eval --code */
int ql_cmd_tokenize(int argc, char **argv);
int ql_cmd_data(int argc, char **argv);
int ql_cmd_ckpt(int argc, char **argv);
int ql_cmd_generate(int argc, char **argv);
int ql_cmd_export(int argc, char **argv);
int ql_cmd_report(int argc, char **argv);

/* Prints "qlora: <message>" for a failed status and returns QL_EXIT_ERROR. */
int ql_report(ql_status s);

#endif
