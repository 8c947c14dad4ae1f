/* core/fsutil: mkdir -p over new, existing and blocked paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"

int main(void) {
    char tmpl[] = "/tmp/ql-fsutil-XXXXXX";
    char *root = mkdtemp(tmpl);
    CHECK(root != NULL);
    if (!root) return CHECK_DONE();
    char deep[512], file[512], through[512];
    snprintf(deep, sizeof deep, "%s/a/b/c", root);
    CHECK(ql_fs_mkdirs(deep) == QL_OK && ql_fs_is_dir(deep));
    CHECK(ql_fs_mkdirs(deep) == QL_OK); /* already there */
    snprintf(file, sizeof file, "%s/a/f", root);
    CHECK(ql_fs_write_atomic(file, "x", 1) == QL_OK);
    snprintf(through, sizeof through, "%s/a/f/g", root);
    CHECK(ql_fs_mkdirs(through) == QL_EIO);
    CHECKF(strstr(ql_error_message(), "/a/f") != NULL, "%s", ql_error_message());
    CHECK(ql_fs_mkdirs(file) == QL_EIO);
    CHECKF(strstr(ql_error_message(), "not a directory") != NULL, "%s", ql_error_message());
    ql_fs_remove_tree(root);
    CHECK(!ql_fs_exists(root));
    return CHECK_DONE();
}
