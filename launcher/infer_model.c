#include "launcher/infer_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/fsutil.h"
#include "model/peft.h"
#include "train/mem_plan.h"

ql_status ql_infer_run_quant(const char *adir, int base_weights, ql_llama_options *o,
                             ql_infer_base *how) {
    memset(how, 0, sizeof *how);
    how->base_original = o->base_original = base_weights > 0;
    if (!adir || !adir[0]) return QL_OK;
    /* The run an adapter belongs to is the directory holding it, when that
     * has a config.resolved.yaml (as qlora export decides): RUN/adapter,
     * RUN/adapter.gguf, "adapter" inside RUN. */
    char run[4096];
    snprintf(run, sizeof run, "%s", adir);
    size_t n = strlen(run);
    while (n > 1 && run[n - 1] == '/') run[--n] = '\0';
    char *slash = strrchr(run, '/');
    if (!slash)
        snprintf(run, sizeof run, ".");
    else
        slash[slash == run] = '\0'; /* "/x": the run is "/" */
    char *path = ql_fs_join(run, "config.resolved.yaml");
    if (!path) return QL_ENOMEM;
    if (!ql_fs_exists(path)) {
        free(path);
        return QL_OK;
    }
    ql_config *c = ql_calloc(1, sizeof *c, "the run configuration");
    ql_status st = c ? ql_config_load(path, NULL, 0, c) : QL_ENOMEM;
    if (st == QL_OK) {
        const int keep = o->base_original;
        ql_quant_options_from_config(c, o);
        how->run_none = o->base_original;
        /* --base-weights, when given, wins over the run's quant.type none. */
        if (base_weights >= 0) o->base_original = keep;
        how->base_original = o->base_original;
    } else {
        st = ql_error_wrap(st, "reading the 4-bit settings the run trained with: ");
    }
    free(c);
    free(path);
    return st;
}

ql_status ql_infer_load(const char *model, const char *adapter, const ql_backend *be, int quiet,
                        int base_weights, ql_llama **m, char *adir, size_t cap, ql_lora_config *lc,
                        ql_infer_base *how) {
    *m = NULL;
    adir[0] = '\0';
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.quiet = quiet;
    o.lora = (ql_lora_config){.r = 0, .targets = 0};
    if (adapter) {
        QL_TRY(ql_peft_find(adapter, adir, cap));
        QL_TRY(ql_peft_read_config(adir, &o.lora, NULL, 0));
        o.lora.dropout = 0.0f;
    }
    QL_TRY(ql_infer_run_quant(adir, base_weights, &o, how));
    /* Generation has its own buffers (model/llama_generate.h); the training
     * activations only need their minimum. */
    o.max_batch = 1;
    o.max_seq = 2;
    *lc = o.lora;
    QL_TRY(ql_llama_load(model, &o, m));
    ql_status st = adapter ? ql_peft_load(adir, ql_llama_adapters(*m), be) : QL_OK;
    if (st != QL_OK) {
        ql_llama_free(*m);
        *m = NULL;
    }
    return st;
}

const char *ql_infer_base_words(const ql_infer_base *how) {
    if (how->base_original)
        return how->run_none ? " (base weights as stored, as the run trained: quant.type none)"
                             : " (base weights as stored, not rounded to 4 bits by qlora)";
    return how->run_none ? " (base weights rounded to 4 bits, although the run trained on them "
                           "as stored: --base-weights quantized)"
                         : "";
}
