#include <stdio.h>

#include "launcher/commands.h"

int ql_cmd_quantize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "qlora quantize: not built yet\n");
    return QL_EXIT_ERROR;
}
