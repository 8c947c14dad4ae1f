/* "did you mean ...?" for unknown configuration keys. */
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int ql_config_edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    /* Three rows suffice for the optimal-string-alignment recurrence. */
    int *prev2 = calloc(m + 1, sizeof(int)), *prev = calloc(m + 1, sizeof(int)),
        *cur = calloc(m + 1, sizeof(int));
    int d = (int)(n > m ? n : m);
    if (prev2 && prev && cur) {
        for (size_t j = 0; j <= m; j++) prev[j] = (int)j;
        for (size_t i = 1; i <= n; i++) {
            cur[0] = (int)i;
            for (size_t j = 1; j <= m; j++) {
                int cost = a[i - 1] != b[j - 1];
                int v = prev[j] + 1;
                if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
                if (prev[j - 1] + cost < v) v = prev[j - 1] + cost;
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                    prev2[j - 2] + 1 < v)
                    v = prev2[j - 2] + 1;
                cur[j] = v;
            }
            int *t = prev2;
            prev2 = prev;
            prev = cur;
            cur = t;
        }
        d = prev[m];
    }
    free(prev2);
    free(prev);
    free(cur);
    return d;
}

/* Names other trainers use for the same settings (transformers'
 * TrainingArguments, PEFT's LoraConfig). */
static const struct {
    const char *alias, *key;
} aliases[] = {
    {"learning_rate", "train.lr"},
    {"lr_scheduler_type", "train.schedule"},
    {"max_steps", "train.steps"},
    {"warmup", "train.warmup_steps"},
    {"batch_size", "train.global_batch"},
    {"per_device_train_batch_size", "train.micro_batch"},
    {"gradient_checkpointing", "train.activation_checkpointing"},
    {"rank", "lora.r"},
    {"lora_r", "lora.r"},
    {"lora_alpha", "lora.alpha"},
    {"lora_dropout", "lora.dropout"},
    {"target_modules", "lora.targets"},
    {"max_length", "data.max_seq_len"},
    {"model_name_or_path", "model"},
};

static const char *leaf(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

const char *ql_config_suggest(const char *key) {
    size_t n;
    const ql_cfg_key *s = ql_config_schema(&n);
    const char *lk = leaf(key);
    /* The right name in the wrong section: "train.r" -> "lora.r". */
    for (size_t i = 0; i < n; i++)
        if (!strcmp(leaf(s[i].path), lk)) return s[i].path;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(aliases[i].alias, lk)) return aliases[i].key;
    /* Otherwise the closest full path (or section), if the distance is small
     * for the key's length: a typo, not a different word. */
    static const char *const sections[] = {"data", "lora", "train", "quant"};
    const char *best = NULL;
    int best_d = 1 << 30;
    for (size_t i = 0; i < n + 4; i++) {
        const char *cand = i < n ? s[i].path : sections[i - n];
        int d = ql_config_edit_distance(key, cand);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    int len = (int)strlen(key);
    int limit = len / 3 > 2 ? len / 3 : 2;
    return best_d <= limit ? best : NULL;
}
