/* A Hugging Face model directory (F32/F16/BF16 or bitsandbytes 4-bit) as a
 * ql_model_source, over the checked loader in model/hf_model.h. */
#include <stdlib.h>
#include <string.h>

#include "model/hf_model.h"
#include "model/source.h"

static const ql_hf_model *hf(const ql_model_source *s) { return s->impl; }

static int hf_has(const ql_model_source *s, const char *name) {
    return ql_hf_model_find(hf(s), name, NULL) != NULL;
}

static int hf_is_q4(const ql_model_source *s, const char *name) {
    const ql_st_tensor *t = ql_hf_model_find(hf(s), name, NULL);
    const ql_hf_expected *e = ql_hf_model_expected(hf(s), name);
    /* The loader has already checked that a U8 linear in a bnb directory
     * is a complete 4-bit weight. */
    return t && e && e->is_linear && s->cfg.quant.present && t->dtype == QL_DT_U8;
}

static ql_status hf_get_q4(const ql_model_source *s, const char *name, ql_q4 *out) {
    if (!hf_is_q4(s, name))
        return ql_error(QL_EINVAL, "%s: tensor '%s' is not stored in bitsandbytes 4-bit", s->path,
                        name);
    return ql_hf_model_get_q4(hf(s), name, out, NULL);
}

static ql_status hf_get_f32(const ql_model_source *s, const char *name, float *out) {
    if (!hf_is_q4(s, name)) return ql_hf_model_get_f32(hf(s), name, out);
    ql_q4 q;
    QL_TRY(ql_hf_model_get_q4(hf(s), name, &q, NULL));
    ql_q4_dequantize(&q, out);
    ql_q4_free(&q);
    return QL_OK;
}

static void hf_close(ql_model_source *s) {
    ql_hf_config_free(&s->cfg);
    if (s->impl) {
        ql_hf_model_close(s->impl);
        free(s->impl);
    }
    s->impl = NULL;
}

ql_status ql_hf_source_open(const char *dir, ql_model_source *s) {
    memset(s, 0, sizeof *s);
    if (strlen(dir) >= sizeof s->path)
        return ql_error(QL_EINVAL, "model: path is too long (%zu characters)", strlen(dir));
    ql_hf_model *m = ql_calloc(1, sizeof *m, "HF model");
    if (!m) return QL_ENOMEM;
    ql_status st = ql_hf_model_open(dir, m);
    if (st != QL_OK) {
        free(m);
        return st;
    }
    s->kind = m->cfg.quant.present ? QL_SOURCE_BNB4 : QL_SOURCE_HF;
    snprintf(s->path, sizeof s->path, "%s", dir);
    s->cfg = m->cfg; /* a second owner of the parsed config.json */
    json_incref(s->cfg.json);
    s->has = hf_has;
    s->get_f32 = hf_get_f32;
    s->is_q4 = hf_is_q4;
    s->get_q4 = hf_get_q4;
    s->close = hf_close;
    s->impl = m;
    return QL_OK;
}
