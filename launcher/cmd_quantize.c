/* qlora quantize: a Hugging Face model directory to bitsandbytes 4-bit. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "launcher/cli_flags.h"
#include "launcher/commands.h"
#include "model/hf_quantize.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qlora quantize --model DIR --out DIR [flags]\n"
               "\n"
               "Quantizes the linear layers of a Hugging Face Llama-family model (safetensors,\n"
               "F32/F16/BF16) to bitsandbytes 4-bit and writes a directory that transformers\n"
               "loads as a pre-quantized model. Embeddings, norms and lm_head are kept as they\n"
               "are. The output appears only when complete (built in OUT.tmp-XXXXXX).\n"
               "\n"
               "flags:\n"
               "  --model DIR            the model directory (config.json, model.safetensors or\n"
               "                         model.safetensors.index.json and shards)\n"
               "  --out DIR              the directory to create\n"
               "  --quant-type nf4|fp4   4-bit code book (default nf4)\n"
               "  --no-double-quant      store absmax as float32 instead of 8-bit codes\n"
               "                         (default: double quantization on; --double-quant\n"
               "                         says so explicitly)\n"
               "  --blocksize N          elements per absmax block: 32, 64, 128, 256, 512, 1024,\n"
               "                         2048 or 4096 (default 64)\n"
               "  --max-shard-size SIZE  split the output into shards above this size, e.g.\n"
               "                         5GB, 500MB, 2GiB or bytes (default 5GB)\n"
               "  --force                replace --out if it exists\n"
               "  --quiet                no per-tensor progress on stderr\n"
               "  --help                 this text\n"
               "\n"
               "exit status: 0 done, 1 error (the message says which file and what), 2 bad\n"
               "command line\n");
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* "5GB" -> 5e9, "2GiB" -> 2^31, "123" -> 123. */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return -1;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KB", 1e3},
                 {"MB", 1e6},
                 {"GB", 1e9},
                 {"TB", 1e12},
                 {"KiB", 1024.0},
                 {"MiB", 1048576.0},
                 {"GiB", 1073741824.0},
                 {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcasecmp(end, units[i].suffix)) {
            double b = v * units[i].mult;
            if (b < 1 || b > 1.8e19) return -1;
            *out = (uint64_t)b;
            return 0;
        }
    return -1;
}

static int bad_usage(const char *fmt, const char *arg) {
    return ql_cli_usage_error("quantize", fmt, arg);
}

int ql_cmd_quantize(int argc, char **argv) {
    ql_quantize_opts o = {.type = QL_QTYPE_NF4,
                          .double_quant = 1,
                          .blocksize = QL_Q4_DEFAULT_BLOCKSIZE,
                          .progress = stderr};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
        if (!strcmp(a, "--no-double-quant")) {
            o.double_quant = 0;
            continue;
        }
        if (!strcmp(a, "--double-quant")) {
            o.double_quant = 1;
            continue;
        }
        if (!strcmp(a, "--force")) {
            o.force = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = NULL;
            continue;
        }
        /* Flags with a value: "--flag value" or "--flag=value". */
        static const char *const valued[] = {"--model", "--out", "--quant-type", "--blocksize",
                                             "--max-shard-size"};
        const char *val = NULL;
        int which =
            ql_cli_valued_flag(argc, argv, &i, valued, sizeof valued / sizeof *valued, &val);
        if (which == QL_CLI_NO_VALUE) return bad_usage("%s needs a value", a);
        if (which < 0) return bad_usage("unknown flag '%s'", a);
        switch (which) {
        case 0: o.model_dir = val; break;
        case 1: o.out_dir = val; break;
        case 2:
            if (!strcmp(val, "nf4"))
                o.type = QL_QTYPE_NF4;
            else if (!strcmp(val, "fp4"))
                o.type = QL_QTYPE_FP4;
            else
                return bad_usage("--quant-type must be nf4 or fp4, not '%s'", val);
            break;
        case 3: {
            char *end;
            long bs = strtol(val, &end, 10);
            if (*end || end == val || !ql_q4_blocksize_ok(bs))
                return bad_usage("--blocksize must be one of 32, 64, 128, 256, 512, 1024, 2048, "
                                 "4096, not '%s'",
                                 val);
            o.blocksize = (int)bs;
            break;
        }
        case 4:
            if (parse_size(val, &o.max_shard_bytes))
                return bad_usage("--max-shard-size '%s' is not a size such as 5GB or 500MB", val);
            break;
        }
    }
    if (!o.model_dir) return bad_usage("%s", "--model DIR is required");
    if (!o.out_dir || !*o.out_dir) return bad_usage("%s", "--out DIR is required");

    /* Ctrl-C or a job scheduler's SIGTERM: stop at the next tensor and remove
     * the temporary directory rather than leave it behind. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.cancel = &interrupted;

    ql_quantize_stats s;
    ql_status st = ql_hf_quantize(&o, &s);
    if (st != QL_OK) return ql_report(st);

    const double mib = 1024.0 * 1024.0;
    printf("quantized %d linear weights to %s (%s, block %d); kept %d tensors unchanged",
           s.n_quantized, o.type == QL_QTYPE_NF4 ? "nf4" : "fp4",
           o.double_quant ? "double quant" : "float32 absmax", o.blocksize, s.n_kept);
    if (s.n_dropped) printf("; dropped %d rotary inv_freq buffers", s.n_dropped);
    printf("\nsize: %.2f MiB -> %.2f MiB\n", s.bytes_in / mib, s.bytes_out / mib);
    if (s.params_quantized)
        printf("bits/param: %.3f for the 4-bit linears (weights + absmax; %.3f with code books "
               "and quant states), %.3f overall\n",
               8.0 * (double)s.bytes_quantized / (double)s.params_quantized,
               8.0 * (double)s.bytes_quantized_all / (double)s.params_quantized,
               s.params_total ? 8.0 * (double)s.bytes_out / (double)s.params_total : 0.0);
    printf("wrote %s (%d safetensors file%s)\n", o.out_dir, s.n_shards, s.n_shards == 1 ? "" : "s");
    return QL_EXIT_OK;
}
