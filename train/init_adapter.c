#include "train/init_adapter.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "model/gguf_lora.h"
#include "model/peft.h"

#define DIR_MAX 4096

/* "[q_proj, v_proj]" */
static void targets_str(unsigned t, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int j = 0; j < QL_CFG_N_TARGETS && len < n; j++)
        if (t & (1u << j))
            len += (size_t)snprintf(buf + len, n - len, "%s%s", len > 1 ? ", " : "",
                                    ql_config_target_name(j));
    if (len < n) snprintf(buf + len, n - len, "]");
}

/* lora_alpha as the JSON number it is (ql_lora_config holds a float, which
 * would write 0.1 as 0.10000000149011612 into config.resolved.yaml). */
static double exact_alpha(const char *dir, float fallback) {
    char *path = ql_fs_join(dir, QL_PEFT_CONFIG);
    json_t *o = path ? json_load_file(path, 0, NULL) : NULL;
    const json_t *a = o ? json_object_get(o, "lora_alpha") : NULL;
    double x = json_is_number(a) ? json_number_value(a) : (double)fallback;
    json_decref(o);
    free(path);
    return (float)x == fallback ? x : (double)fallback;
}

static ql_status conflict(const char *key, const char *now, const char *dir, const char *peft_key,
                          const char *theirs) {
    const int gguf = ql_gguf_lora_is_file(dir); /* its settings: adapter.lora.alpha, the tensors */
    return ql_error(QL_EINVAL,
                    "%s is %s, but lora.init_adapter %s%s%s has %s %s: the adapter sets %s; "
                    "leave %s out or make it %s",
                    key, now, dir, gguf ? "" : "/", gguf ? "" : QL_PEFT_CONFIG,
                    gguf ? "(as llama.cpp reads it)" : peft_key, theirs, key, key, theirs);
}

ql_status ql_init_adapter_resolve(ql_config *c) {
    if (!c->lora.init_adapter[0]) return QL_OK;
    char dir[DIR_MAX];
    ql_lora_config lc;
    ql_status st = ql_peft_find(c->lora.init_adapter, dir, sizeof dir);
    if (st == QL_OK) st = ql_peft_read_config(dir, &lc, NULL, 0);
    if (st != QL_OK) return ql_error_wrap(st, "lora.init_adapter: ");
    double alpha = exact_alpha(dir, lc.alpha);
    char a[600], b[600];
    if (ql_config_given(c, "lora.r") && c->lora.r != lc.r) {
        snprintf(a, sizeof a, "%lld", (long long)c->lora.r);
        snprintf(b, sizeof b, "%d", lc.r);
        return conflict("lora.r", a, dir, "r", b);
    }
    if (ql_config_given(c, "lora.alpha") && c->lora.alpha != alpha) {
        snprintf(a, sizeof a, "%.17g", c->lora.alpha);
        snprintf(b, sizeof b, "%.17g", alpha);
        return conflict("lora.alpha", a, dir, "lora_alpha", b);
    }
    if (ql_config_given(c, "lora.use_rslora") && !c->lora.use_rslora != !lc.use_rslora)
        return conflict("lora.use_rslora", c->lora.use_rslora ? "true" : "false", dir, "use_rslora",
                        lc.use_rslora ? "true" : "false");
    if (ql_config_given(c, "lora.targets") && c->lora.targets != lc.targets) {
        targets_str(c->lora.targets, a, sizeof a);
        targets_str(lc.targets, b, sizeof b);
        return conflict("lora.targets", a, dir, "target_modules", b);
    }
    c->lora.r = lc.r;
    c->lora.alpha = alpha;
    c->lora.use_rslora = lc.use_rslora;
    c->lora.targets = lc.targets;
    return QL_OK;
}

ql_status ql_init_adapter_load(const ql_config *c, ql_llama *m, const ql_backend *be, FILE *log) {
    if (!c->lora.init_adapter[0]) return QL_OK;
    char dir[DIR_MAX];
    ql_adapters *a = ql_llama_adapters(m);
    ql_status st = ql_peft_find(c->lora.init_adapter, dir, sizeof dir);
    if (st == QL_OK) st = ql_peft_load(dir, a, be);
    if (st != QL_OK) return ql_error_wrap(st, "lora.init_adapter: ");
    if (log) {
        char t[200];
        targets_str(c->lora.targets, t, sizeof t);
        fprintf(log,
                "init adapter: %s (r %lld, alpha %g%s, %s: %d tensors); AdamW starts from "
                "zero\n",
                dir, (long long)c->lora.r, c->lora.alpha, c->lora.use_rslora ? ", rsLoRA" : "", t,
                a->n_tensors);
    }
    return QL_OK;
}
