/* lora.init_adapter's configuration half (train/init_adapter.h) on the
 * adapters PEFT saved in tests/fixtures/peft (index.json lists their r,
 * lora_alpha, use_rslora and target_modules, as PEFT was given them):
 * the lora.* keys come from the adapter; one set to another value in the
 * file or on the command line is an error naming both values; the same value
 * is accepted; ql_config_given tells a written value from a default. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/config.h"
#include "train/init_adapter.h"

static char fx[4096];

/* Resolves `yaml` (with model/output_dir/data added) and the overrides. */
static ql_status resolve(const char *yaml, const char *o1, const char *o2, ql_config *c) {
    char text[8192];
    snprintf(text, sizeof text, "model: m\noutput_dir: o\ndata:\n  train: t.jsonl\n%s", yaml);
    ql_cfg_override ov[2];
    char b1[512], b2[512];
    size_t n = 0;
    if (o1 && !ql_config_split_override(o1, b1, &ov[n])) n++;
    if (o2 && !ql_config_split_override(o2, b2, &ov[n])) n++;
    ql_status st = ql_config_parse(text, strlen(text), "cfg.yaml", ov, n, c);
    if (st != QL_OK) return st;
    return ql_init_adapter_resolve(c);
}

static unsigned bits(const char *const *names, int n) {
    unsigned t = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < QL_CFG_N_TARGETS; j++)
            if (!strcmp(names[i], ql_config_target_name(j))) t |= 1u << j;
    return t;
}

int main(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "skip: QL_SOURCE_DIR not set\n");
        return 77;
    }
    snprintf(fx, sizeof fx, "%s/tests/fixtures/peft", src);
    ql_config *c = calloc(1, sizeof *c);
    char y[6000], ov[6000];

    /* given: written keys only (file and command line) */
    CHECK(resolve("lora:\n  r: 16\n", "--train.lr=1e-3", NULL, c) == QL_OK);
    CHECK(ql_config_given(c, "lora.r") && ql_config_given(c, "train.lr"));
    CHECK(!ql_config_given(c, "lora.alpha") && !ql_config_given(c, "lora.init_adapter"));
    CHECK(!ql_config_given(c, "no.such.key"));
    CHECK(c->lora.r == 16 && c->lora.alpha == 32.0); /* no init adapter: untouched */

    /* llama_tied_rslora: r 8, alpha 16, rsLoRA, [q_proj, v_proj, down_proj] */
    static const char *const tied[] = {"q_proj", "v_proj", "down_proj"};
    snprintf(y, sizeof y, "lora:\n  init_adapter: %s/llama_tied_rslora/adapter\n", fx);
    CHECK(resolve(y, NULL, NULL, c) == QL_OK);
    CHECK(c->lora.r == 8 && c->lora.alpha == 16.0 && c->lora.use_rslora == 1);
    CHECK(c->lora.targets == bits(tied, 3));
    /* qwen2_bf16: r 2, alpha 5.5, no rsLoRA, [q_proj, k_proj, o_proj, up_proj]; a
     * run directory (holding adapter/) works as well */
    static const char *const qw[] = {"q_proj", "k_proj", "o_proj", "up_proj"};
    snprintf(ov, sizeof ov, "--lora.init_adapter=%s/qwen2_bf16", fx);
    CHECK(resolve("lora:\n  use_rslora: false\n  dropout: 0.1\n", ov, NULL, c) == QL_OK);
    CHECK(c->lora.r == 2 && c->lora.alpha == 5.5 && !c->lora.use_rslora);
    CHECK(c->lora.targets == bits(qw, 4));
    CHECK(c->lora.dropout == 0.1); /* the configuration's own */

    /* the same values written out (as config.resolved.yaml has them) */
    snprintf(y, sizeof y,
             "lora:\n  init_adapter: %s/llama_all/adapter\n  r: 4\n  alpha: 8\n"
             "  use_rslora: false\n  targets: all-linear\n",
             fx);
    CHECK(resolve(y, NULL, NULL, c) == QL_OK);

    /* conflicts name the key, both values and the adapter's file */
    struct {
        const char *ov, *want;
    } bad[] = {
        {"--lora.r=8", "lora.r is 8, but lora.init_adapter "},
        {"--lora.alpha=16", "lora.alpha is 16, but lora.init_adapter "},
        {"--lora.use_rslora=true", "lora.use_rslora is true, but lora.init_adapter "},
        {"--lora.targets=q_proj,v_proj",
         "lora.targets is [q_proj, v_proj], but lora.init_adapter "},
    };
    const char *tail[] = {"adapter_config.json has r 4: the adapter sets lora.r; leave lora.r out "
                          "or make it 4",
                          "has lora_alpha 8:", "has use_rslora false:",
                          "has target_modules [q_proj, k_proj, v_proj, o_proj, gate_proj, "
                          "up_proj, down_proj]:"};
    snprintf(y, sizeof y, "lora:\n  init_adapter: %s/llama_all\n", fx);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ql_status st = resolve(y, bad[i].ov, NULL, c);
        const char *msg = ql_error_message();
        CHECKF(st == QL_EINVAL, "%s: status %d", bad[i].ov, (int)st);
        CHECKF(strstr(msg, bad[i].want) && strstr(msg, tail[i]), "%s: message: %s", bad[i].ov, msg);
    }
    /* a missing adapter names the key and the path */
    CHECK(resolve("lora:\n  init_adapter: /nonexistent/ad\n", NULL, NULL, c) == QL_ENOTFOUND);
    CHECKF(strstr(ql_error_message(), "lora.init_adapter: /nonexistent/ad: not an adapter"), "%s",
           ql_error_message());
    free(c);
    return CHECK_DONE();
}
