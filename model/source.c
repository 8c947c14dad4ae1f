/* ql_model_source_open: picks the source implementation from the path. */
#include "model/source.h"

#include <string.h>
#include <strings.h>

#include "core/fsutil.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

ql_status ql_model_source_open(const char *path, ql_model_source *s) {
    memset(s, 0, sizeof *s);
    if (!path || !*path) return ql_error(QL_EINVAL, "model: no path given");
    if (strlen(path) >= sizeof s->path)
        return ql_error(QL_EINVAL, "model: path is too long (%zu characters)", strlen(path));
    if (ends_with(path, ".gguf")) {
        if (!ql_fs_exists(path)) return ql_error(QL_ENOTFOUND, "%s: no such file", path);
        return ql_gguf_source_open(path, s);
    }
    if (ql_fs_is_dir(path)) return ql_hf_source_open(path, s);
    if (!ql_fs_exists(path)) return ql_error(QL_ENOTFOUND, "%s: no such file or directory", path);
    return ql_error(QL_EUNSUPPORTED, "%s: not a model directory (with config.json) or a .gguf file",
                    path);
}

void ql_model_source_close(ql_model_source *s) {
    if (s && s->close) s->close(s);
    if (s) memset(s, 0, sizeof *s);
}

ql_status ql_model_config_load(const char *path, ql_hf_config *c) {
    memset(c, 0, sizeof *c);
    if (!path || !*path) return ql_error(QL_EINVAL, "model: no path given");
    if (ql_fs_is_dir(path)) return ql_hf_config_load(path, c);
    /* A GGUF holds its configuration in the header the source reads on
     * opening; its tensors are not read. */
    ql_model_source s;
    QL_TRY(ql_model_source_open(path, &s));
    *c = s.cfg;
    c->json = NULL; /* owned by the source */
    ql_model_source_close(&s);
    return QL_OK;
}
