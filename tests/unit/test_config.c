/* Configuration: the YAML example as written, overrides, defaults,
 * every kind of bad input with its exact message, warnings, the resolved
 * YAML read back, and docs/config.md listing every key with its default. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/config.h"

/* Issue 3's example, byte for byte (comments included). */
static const char *example =
    "model: models/SmolLM2-135M-Instruct.Q4_1.gguf   # HF directory, bnb-4bit directory or "
    ".gguf\n"
    "output_dir: runs/demo\n"
    "seed: 1234\n"
    "data:\n"
    "  train: data/train.jsonl\n"
    "  max_seq_len: 512\n"
    "lora:\n"
    "  r: 16\n"
    "  alpha: 32\n"
    "  dropout: 0.0\n"
    "  targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]\n"
    "train:\n"
    "  steps: 100\n"
    "  global_batch: 8      # sequences per optimizer step, whatever the number of ranks\n"
    "  micro_batch: 4       # sequences per rank per forward/backward; accumulation follows\n"
    "  lr: 2.0e-4\n"
    "  schedule: cosine     # cosine | linear | constant\n"
    "  warmup_steps: 10\n"
    "  weight_decay: 0.0\n"
    "  max_grad_norm: 1.0\n";

static ql_status parse(const char *yaml, const char *const *args, ql_config *c) {
    ql_cfg_override ov[8];
    char buf[8][256];
    size_t n = 0;
    for (; args && args[n]; n++) CHECK(ql_config_split_override(args[n], buf[n], &ov[n]) == 0);
    return ql_config_parse(yaml, yaml ? strlen(yaml) : 0, "cfg.yaml", ov, n, c);
}

static void test_example(void) {
    ql_config c;
    CHECKF(parse(example, NULL, &c) == QL_OK, "%s", ql_error_message());
    CHECK(!strcmp(c.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    CHECK(!strcmp(c.output_dir, "runs/demo"));
    CHECK(c.seed == 1234);
    CHECK(!strcmp(c.data.train, "data/train.jsonl"));
    CHECK(c.data.max_seq_len == 512);
    CHECK(c.lora.r == 16 && c.lora.alpha == 32.0 && c.lora.dropout == 0.0);
    CHECK(c.lora.targets == 0x7fu);
    CHECK(c.train.steps == 100 && c.train.global_batch == 8 && c.train.micro_batch == 4);
    CHECK(c.train.lr == 2.0e-4);
    CHECK(c.train.schedule == QL_SCHED_COSINE);
    CHECK(c.train.warmup_steps == 10);
    CHECK(c.train.weight_decay == 0.0 && c.train.max_grad_norm == 1.0);
    CHECKF(c.warnings[0] == '\0', "unexpected warnings: %s", c.warnings);
    /* keys the example leaves out take their defaults */
    CHECK(!strcmp(c.backend, "cpu"));
    CHECK(c.data.shuffle == 1 && c.data.pad_to == QL_PAD_LONGEST);
    CHECK(c.train.adam_beta1 == 0.9 && c.train.adam_beta2 == 0.999);
    CHECK(c.train.adam_epsilon == 1e-8);
    CHECK(c.train.on_nonfinite == QL_NONFINITE_SKIP && c.train.max_nonfinite_in_a_row == 5);
    CHECK(c.quant.type == 0 && c.quant.blocksize == 64 && c.quant.double_quant == 1);
    CHECK(c.lora.use_rslora == 0 && c.train.activation_checkpointing == 0);

    /* `qlora train cfg.yaml --train.steps=50 --lora.r=8` */
    const char *args[] = {"--train.steps=50", "--lora.r=8", NULL};
    CHECKF(parse(example, args, &c) == QL_OK, "%s", ql_error_message());
    CHECK(c.train.steps == 50 && c.lora.r == 8);
    CHECK(c.lora.alpha == 32.0 && c.train.global_batch == 8); /* the rest untouched */
}

static void test_overrides(void) {
    ql_config c;
    const char *args[] = {"--lora.targets=[q_proj, v_proj]",
                          "--train.schedule=linear",
                          "--data.shuffle=false",
                          "--model=other.gguf",
                          "--train.lr=1e-4",
                          "--quant.type=fp4",
                          NULL};
    CHECKF(parse(example, args, &c) == QL_OK, "%s", ql_error_message());
    CHECK(c.lora.targets == ((1u << 0) | (1u << 2)));
    CHECK(c.train.schedule == QL_SCHED_LINEAR);
    CHECK(c.data.shuffle == 0);
    CHECK(!strcmp(c.model, "other.gguf"));
    CHECK(c.train.lr == 1e-4);
    CHECK(c.quant.type == 1);
    /* a comma list without brackets, and all-linear */
    const char *a2[] = {"--lora.targets=gate_proj,down_proj", NULL};
    CHECK(parse(example, a2, &c) == QL_OK && c.lora.targets == ((1u << 4) | (1u << 6)));
    const char *a3[] = {"--lora.targets=all-linear", NULL};
    CHECK(parse(example, a3, &c) == QL_OK && c.lora.targets == 0x7fu);
    /* dotted keys in the file are the same keys */
    CHECK(parse("model: m\noutput_dir: o\ndata.train: t\nlora.r: 4\n", NULL, &c) == QL_OK &&
          c.lora.r == 4);
    /* no file at all: everything from the command line */
    const char *a4[] = {"--model=m", "--output_dir=o", "--data.train=t.jsonl", NULL};
    CHECKF(parse(NULL, a4, &c) == QL_OK, "%s", ql_error_message());
    CHECK(c.train.steps == 100 && c.lora.r == 16);
    /* the split itself */
    char buf[64];
    ql_cfg_override o;
    CHECK(ql_config_split_override("--a.b=c=d", buf, &o) == 0 && !strcmp(o.key, "a.b") &&
          !strcmp(o.value, "c=d"));
    CHECK(ql_config_split_override("--a.b", buf, &o) == -1);
    CHECK(ql_config_split_override("a.b=1", buf, &o) == -1);
    CHECK(ql_config_split_override("--=1", buf, &o) == -1);
}

/* YAML text (NULL: the example), override, the exact message. */
static const struct bad_case {
    const char *yaml, *arg, *msg;
} bad_cases[] = {
    /* syntax: positions are libyaml's, 1-based */
    {"model: a\nlora:\n  r: 8\n   alpha: 3\n", NULL,
     "cfg.yaml:4:9: YAML syntax error: mapping values are not allowed in this context"},
    {"model: a\nlora: [1\n", NULL,
     "cfg.yaml:3:1: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
     "sequence at line 2)"},
    {"model: \"a\n", NULL,
     "cfg.yaml:2:1: YAML syntax error: found unexpected end of stream (while scanning a quoted "
     "scalar at line 1)"},
    {"model: a\nmodel: b\n", NULL, "cfg.yaml:2:1: duplicate key 'model' (first at line 1)"},
    {"model: &m a\n", NULL,
     "cfg.yaml:1:8: anchors (&name) are not supported in a configuration file"},
    {"model: a\n---\nmodel: b\n", NULL,
     "cfg.yaml:2:1: a second YAML document; a configuration file holds one"},
    {"- a\n- b\n", NULL,
     "cfg.yaml:1:1: expected keys such as 'model:' at the top level, got a list"},
    /* unknown keys, with and without a suggestion */
    {"model: a\nlora:\n  alpah: 3\n", NULL,
     "cfg.yaml:3:3: unknown key 'lora.alpah' (did you mean 'lora.alpha'?)"},
    {"model: a\ntrain:\n  r: 3\n", NULL,
     "cfg.yaml:3:3: unknown key 'train.r' (did you mean 'lora.r'?)"},
    {"model: a\nlearning_rate: 1e-4\n", NULL,
     "cfg.yaml:2:1: unknown key 'learning_rate' (did you mean 'train.lr'?)"},
    {"model: a\noptimizer:\n  name: adamw\n", NULL, "cfg.yaml:2:1: unknown key 'optimizer'"},
    {NULL, "--train.step=3",
     "command line: unknown key 'train.step' (did you mean 'train.steps'?)"},
    {NULL, "--lora=3", "command line: 'lora' is a section: set its keys, e.g. --lora.r=..."},
    {"model: a\nlora: 16\n", NULL,
     "cfg.yaml:2:1: 'lora' is a section: expected its keys (r, alpha, dropout, targets, "
     "use_rslora, init_adapter), got a value"},
    /* wrong types */
    {"model: a\ntrain:\n  steps: ten\n", NULL,
     "cfg.yaml:3:10: train.steps: expected an integer, got 'ten'"},
    {"model: a\ntrain:\n  steps: 1.5\n", NULL,
     "cfg.yaml:3:10: train.steps: expected an integer, got '1.5'"},
    {"model: a\ntrain:\n  lr: fast\n", NULL,
     "cfg.yaml:3:7: train.lr: expected a number, got 'fast'"},
    {"model: a\ntrain:\n  lr: .nan\n", NULL,
     "cfg.yaml:3:7: train.lr: expected a number, got '.nan'"},
    {"model: a\ndata:\n  shuffle: maybe\n", NULL,
     "cfg.yaml:3:12: data.shuffle: expected true or false, got 'maybe'"},
    {"model: [a, b]\n", NULL, "cfg.yaml:1:8: model: expected a string, got a list"},
    {"model:\n", NULL, "cfg.yaml:1:7: model: expected a string, got nothing"},
    {NULL, "--train.schedule=cosin",
     "command line: train.schedule: expected one of cosine, linear, constant, got 'cosin' (did "
     "you mean 'cosine'?)"},
    {NULL, "--backend=tpu",
     "command line: backend: expected one of auto, cpu, cpu-ref, cuda, got 'tpu' (did you mean "
     "'cpu'?)"},
    {NULL, "--backend=metal",
     "command line: backend: expected one of auto, cpu, cpu-ref, cuda, got 'metal'"},
    {NULL, "--lora.targets=[q_proj, qproj]",
     "command line: lora.targets: unknown module 'qproj' (did you mean 'q_proj'?); expected "
     "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj or all-linear"},
    {NULL, "--lora.targets=[]", "command line: lora.targets: expected at least one module"},
    /* out of range */
    {"model: a\nlora:\n  r: 0\n", NULL, "cfg.yaml:3:6: lora.r: must be in [1, 65536], got 0"},
    {NULL, "--train.lr=-2e-4", "command line: train.lr: must be >= 0, got -2e-4"},
    {NULL, "--lora.alpha=0", "command line: lora.alpha: must be > 0, got 0"},
    {NULL, "--lora.dropout=1", "command line: lora.dropout: must be in [0, 1), got 1"},
    {NULL, "--train.steps=0", "command line: train.steps: must be >= 1, got 0"},
    {NULL, "--train.warmup_steps=-1", "command line: train.warmup_steps: must be >= 0, got -1"},
    {NULL, "--data.max_seq_len=1",
     "command line: data.max_seq_len: must be in [2, 1.04858e+06], got 1"},
    {NULL, "--train.micro_batch=9",
     "command line: train.micro_batch (9) must not exceed train.global_batch (8)"},
    {"model: a\noutput_dir: o\ndata:\n  train: t\n  valid: v.jsonl\n  valid_fraction: 0.1\n", NULL,
     "cfg.yaml:6:19: data.valid_fraction (0.1) and data.valid (v.jsonl, cfg.yaml:5:10) are both "
     "set: the validation set comes from one of them"},
    {NULL, "--quant.blocksize=100",
     "command line: quant.blocksize: must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096, "
     "got 100"},
    /* required keys */
    {"output_dir: o\ndata:\n  train: t\n", NULL,
     "cfg.yaml: missing required key 'model' (base model: a Hugging Face directory, a "
     "bitsandbytes 4-bit directory or a .gguf file)"},
};

static void test_bad(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *b = &bad_cases[i];
        ql_config c;
        const char *args[] = {b->arg, NULL};
        ql_error_clear();
        ql_status st = parse(b->yaml ? b->yaml : example, b->arg ? args : NULL, &c);
        CHECKF(st != QL_OK, "case %zu accepted", i);
        CHECKF(!strcmp(ql_error_message(), b->msg), "case %zu:\n  got:  %s\n  want: %s", i,
               ql_error_message(), b->msg);
    }
}

/* A string key whose default is "" is emptied from the command line by
 * --key= and --key='""' (the file set it); one with another default, or a
 * required one, is not. */
static void test_empty_override(void) {
    const char *yaml = "model: m\noutput_dir: o\ndata:\n  train: t\n  valid: v.jsonl\n";
    ql_config c;
    const char *a1[] = {"--data.valid=", NULL};
    CHECK(parse(yaml, a1, &c) == QL_OK && c.data.valid[0] == '\0');
    const char *a2[] = {"--data.valid=\"\"", NULL};
    CHECK(parse(yaml, a2, &c) == QL_OK && c.data.valid[0] == '\0');
    const char *a3[] = {"--lora.init_adapter=''", NULL};
    CHECK(parse(yaml, a3, &c) == QL_OK && c.lora.init_adapter[0] == '\0');
    CHECK(parse(yaml, NULL, &c) == QL_OK && !strcmp(c.data.valid, "v.jsonl"));
    const char *a4[] = {"--backend=", NULL};
    ql_error_clear();
    CHECK(parse(yaml, a4, &c) != QL_OK && strstr(ql_error_message(), "got nothing"));
    const char *a5[] = {"--model=", NULL};
    ql_error_clear();
    CHECK(parse(yaml, a5, &c) != QL_OK && strstr(ql_error_message(), "got nothing"));
}

static void test_warnings(void) {
    ql_config c;
    const char *a1[] = {"--train.lr=0.5", NULL};
    CHECK(parse(example, a1, &c) == QL_OK);
    CHECKF(!strcmp(c.warnings,
                   "command line: warning: train.lr = 0.5 is far outside the usual range "
                   "1e-06..0.01\n"),
           "%s", c.warnings);
    const char *a2[] = {"--train.lr=1e-7", NULL};
    CHECK(parse(example, a2, &c) == QL_OK && strstr(c.warnings, "train.lr = 1e-7"));
    const char *a3[] = {"--train.lr=1e-2", NULL}; /* the bounds themselves are usual */
    CHECK(parse(example, a3, &c) == QL_OK && c.warnings[0] == '\0');
    const char *a4[] = {"--train.warmup_steps=200", NULL};
    CHECK(parse(example, a4, &c) == QL_OK);
    CHECKF(!strcmp(c.warnings, "command line: warning: train.warmup_steps (200) exceeds "
                               "train.steps (100): the learning rate never reaches train.lr\n"),
           "%s", c.warnings);
}

/* Every schema field of a and b is equal. */
static int same_config(const ql_config *a, const ql_config *b) {
    size_t n;
    const ql_cfg_key *k = ql_config_schema(&n);
    for (size_t i = 0; i < n; i++) {
        size_t sz = k[i].type == QL_CFG_STR     ? k[i].size
                    : k[i].type == QL_CFG_INT   ? sizeof(int64_t)
                    : k[i].type == QL_CFG_FLOAT ? sizeof(double)
                                                : sizeof(int);
        if (memcmp((const char *)a + k[i].offset, (const char *)b + k[i].offset, sz)) {
            fprintf(stderr, "  differs: %s\n", k[i].path);
            return 0;
        }
    }
    return 1;
}

static void test_round_trip(void) {
    ql_config a, b;
    const char *args[] = {"--train.lr=3.3e-5",         "--lora.dropout=0.05",
                          "--lora.alpha=7.25",         "--model=with \"quotes\" and \\ and: colon",
                          "--lora.targets=v_proj",     "--train.adam_epsilon=1e-10",
                          "--train.on_nonfinite=stop", NULL};
    CHECKF(parse(example, args, &a) == QL_OK, "%s", ql_error_message());
    char *y = ql_config_to_yaml(&a);
    CHECK(y != NULL);
    if (!y) return;
    CHECKF(ql_config_parse(y, strlen(y), "resolved.yaml", NULL, 0, &b) == QL_OK, "%s\n%s",
           ql_error_message(), y);
    CHECK(same_config(&a, &b));
    /* floats carry a '.', so YAML 1.1 readers see numbers */
    CHECKF(strstr(y, "  adam_epsilon: 1.0e-10\n") && strstr(y, "  lr: 3.3e-05\n") &&
               strstr(y, "  alpha: 7.25\n") && strstr(y, "  targets: [v_proj]\n") &&
               strstr(y, "  on_nonfinite: stop\n"),
           "%s", y);
    free(y);
}

static void test_edit_distance(void) {
    CHECK(ql_config_edit_distance("kitten", "sitting") == 3);
    CHECK(ql_config_edit_distance("", "abc") == 3);
    CHECK(ql_config_edit_distance("abc", "") == 3);
    CHECK(ql_config_edit_distance("ab", "ba") == 1); /* a swap is one edit */
    CHECK(ql_config_edit_distance("lora.alpah", "lora.alpha") == 1);
    CHECK(ql_config_edit_distance("same", "same") == 0);
    CHECK(ql_config_suggest("zzzzzzzz") == NULL);
    const char *s = ql_config_suggest("train.warmup");
    CHECK(s && !strcmp(s, "train.warmup_steps"));
    s = ql_config_suggest("trian.lr");
    CHECK(s && !strcmp(s, "train.lr"));
}

/* docs/config.md documents every key with its default. */
static void test_docs(void) {
    const char *src = getenv("QL_SOURCE_DIR");
    if (!src) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/config.md", src);
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f) return;
    static char text[1 << 17];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    size_t n;
    const ql_cfg_key *k = ql_config_schema(&n);
    for (size_t i = 0; i < n; i++) {
        /* a table row: | `key` | type | default | meaning | */
        char row[256];
        snprintf(row, sizeof row, "| `%s` |", k[i].path);
        const char *r = strstr(text, row);
        CHECKF(r != NULL, "docs/config.md has no row for %s", k[i].path);
        if (!r) continue;
        const char *eol = strchr(r, '\n');
        char want[256];
        snprintf(want, sizeof want, "`%s`", k[i].def ? k[i].def : "required");
        const char *d = strstr(r + strlen(row), want);
        CHECKF(d && (!eol || d < eol), "docs/config.md: %s: default %s not in its row", k[i].path,
               want);
    }
}

int main(void) {
    test_example();
    test_overrides();
    test_bad();
    test_warnings();
    test_empty_override();
    test_round_trip();
    test_edit_distance();
    test_docs();
    return CHECK_DONE();
}
