/* Flags that take a value, as every subcommand spells them: "--flag VALUE"
 * or "--flag=VALUE". */
#ifndef QL_LAUNCHER_CLI_FLAGS_H
#define QL_LAUNCHER_CLI_FLAGS_H

#include <stddef.h>

#define QL_CLI_NOT_VALUED (-1) /* argv[*i] is none of the names */
#define QL_CLI_NO_VALUE (-2)   /* a valued flag ends the command line */

/* Matches argv[*i] against names[0..n-1]. On a match returns its index with
 * *val set, having moved *i past a separate value; otherwise one of the codes
 * above. "--flagX" does not match "--flag". */
int ql_cli_valued_flag(int argc, char **argv, int *i, const char *const *names, size_t n,
                       const char **val);

/* A number in [lo, hi] (an integer when `integer`) spelled by the whole of
 * `s`: 0 with *out set, else -1. */
int ql_cli_number(const char *s, double lo, double hi, int integer, double *out);

/* --base-weights quantized|original: 0 with *original set, else -1. */
int ql_cli_base_weights(const char *val, int *original);
#define QL_CLI_BASE_WEIGHTS_BAD "--base-weights must be quantized or original, not '%s'"
/* Its --help lines, for commands whose flag descriptions start at column 25. */
#define QL_CLI_BASE_WEIGHTS_HELP                                                                   \
    "  --base-weights quantized|original\n"                                                        \
    "                        quantized: the linears rounded to 4 bits as qlora train\n"            \
    "                        holds them; original: as the file stores them (float32 on\n"          \
    "                        the CPU), for a merged model (qlora export --merge).\n"               \
    "                        Default: as the run behind --adapter RUN held them, else\n"           \
    "                        quantized (NF4, block 64, double quantization)\n"

/* "qlora CMD: " + fmt (one %s: arg) and the --help hint on stderr; returns
 * the bad-command-line exit code. */
int ql_cli_usage_error(const char *cmd, const char *fmt, const char *arg);

#endif
