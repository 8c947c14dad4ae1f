#include "launcher/infer_model.h"

#include "model/peft.h"

ql_status ql_infer_load(const char *model, const char *adapter, const ql_backend *be, int quiet,
                        int base_original, ql_llama **m, char *adir, size_t cap,
                        ql_lora_config *lc) {
    *m = NULL;
    adir[0] = '\0';
    ql_llama_options o;
    ql_llama_options_default(&o);
    o.be = be;
    o.quiet = quiet;
    o.base_original = base_original;
    o.lora = (ql_lora_config){.r = 0, .targets = 0};
    if (adapter) {
        QL_TRY(ql_peft_find(adapter, adir, cap));
        QL_TRY(ql_peft_read_config(adir, &o.lora, NULL, 0));
        o.lora.dropout = 0.0f;
    }
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
