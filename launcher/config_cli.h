#ifndef QL_LAUNCHER_CONFIG_CLI_H
#define QL_LAUNCHER_CONFIG_CLI_H

#include <stdio.h>

#include "core/config.h"

/* Reads `CONFIG.yaml [--section.key=value ...]` from argv[first..argc-1], as
 * qlora train and qlora data stats take them, and loads the configuration
 * (its warnings go to stderr). Returns -1 with *out set (free() it) when the
 * caller should go on; otherwise the exit code: QL_EXIT_OK after --help,
 * QL_EXIT_USAGE for a bad command line, QL_EXIT_ERROR for a bad config. */
int ql_cli_load_config(int argc, char **argv, int first, const char *cmd, void (*usage)(FILE *),
                       ql_config **out);

#endif
