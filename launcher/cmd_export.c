/* qlora export RUN_OR_ADAPTER --out DIR [--merge] [--gguf]: the adapter in
 * PEFT's format or llama.cpp's LoRA GGUF, or a merged model as a Hugging Face
 * directory or one GGUF file (docs/export.md). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ckpt/export.h"
#include "launcher/cli_flags.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: qlora export RUN_OR_ADAPTER --out DIR [--merge] [--gguf] [flags]\n"
            "\n"
            "Writes what a run trained in the form deployment tools read:\n"
            "  without --merge  a PEFT adapter directory (adapter_model.safetensors +\n"
            "                   adapter_config.json) for PeftModel.from_pretrained and vLLM\n"
            "  with --merge     a merged model directory (model.safetensors, config.json and the\n"
            "                   tokenizer files) for transformers' AutoModelForCausalLM: each\n"
            "                   linear W + s*B*A, where W is the base as qlora held it in\n"
            "                   training (after the 4-bit round trip; see --base-weights)\n"
            "  with --gguf      one file, the LoRA adapter llama.cpp loads beside a GGUF base\n"
            "                   (llama-cli -m BASE.gguf --lora OUT.gguf)\n"
            "  --merge --gguf   one GGUF file, the merged model for llama.cpp (llama-cli -m\n"
            "                   OUT.gguf), from a run trained on a GGUF file: its tokenizer and\n"
            "                   other tensors copied as stored, the linears in --dtype\n"
            "\n"
            "RUN_OR_ADAPTER is a run directory (its adapter/, else its newest checkpoint that\n"
            "verifies), a checkpoints directory, one checkpoint (RUN/checkpoints/step-N), an\n"
            "adapter directory, or a llama.cpp LoRA adapter FILE.gguf (with --model BASE: its\n"
            "layout and Q/K row order come from the base model).\n"
            "\n"
            "flags:\n"
            "  --out DIR               the directory to write (appears complete or not at all);\n"
            "                          with --gguf, the file\n"
            "  --merge                 write a merged model instead of an adapter\n"
            "  --gguf                  write a llama.cpp GGUF file instead (adapter or merged)\n"
            "  --dtype bf16|f16|f32|q8_0\n"
            "                          tensor dtype (default: f32 for an adapter, bf16 merged,\n"
            "                          f16 merged GGUF; q8_0 for a merged GGUF only)\n"
            "  --model PATH            base model for --merge, --gguf and a .gguf adapter\n"
            "                          (default: the run's `model`, else the adapter's\n"
            "                          base_model_name_or_path)\n"
            "  --base-model-name NAME  base_model_name_or_path to write in adapter_config.json\n"
            "                          (e.g. a Hugging Face id; default: the adapter's)\n"
            "  --base-weights quantized|original\n"
            "                          --merge into the 4-bit round-tripped base the adapter was\n"
            "                          trained against (default), or into the source's weights\n"
            "  --force                 replace DIR if it exists\n"
            "  --quiet                 no progress on stderr\n"
            "  --help                  this text\n"
            "\n"
            "exit status: 0 written, 1 error (the message says which), 2 bad command line\n");
}

static int bad_usage(const char *fmt, const char *arg) {
    return ql_cli_usage_error("export", fmt, arg);
}

static volatile sig_atomic_t cancel_flag;
static void on_signal(int sig) {
    cancel_flag = 1;
    signal(sig, SIG_DFL);
}

static int parse_args(int argc, char **argv, ql_export_opts *o, int *quiet) {
    *o = (ql_export_opts){.dtype = -1};
    *quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        }
        if (!strcmp(s, "--merge")) {
            o->merge = 1;
            continue;
        }
        if (!strcmp(s, "--gguf")) {
            o->gguf = 1;
            continue;
        }
        if (!strcmp(s, "--force")) {
            o->force = 1;
            continue;
        }
        if (!strcmp(s, "--quiet")) {
            *quiet = 1;
            continue;
        }
        if (s[0] != '-' || !s[1]) {
            if (o->src) return bad_usage("one source only (got a second: '%s')", s);
            o->src = s;
            continue;
        }
        static const char *const valued[] = {"--out", "--dtype", "--model", "--base-model-name",
                                             "--base-weights"};
        const char *val = NULL;
        int which =
            ql_cli_valued_flag(argc, argv, &i, valued, sizeof valued / sizeof *valued, &val);
        if (which == QL_CLI_NO_VALUE) return bad_usage("%s needs a value", s);
        if (which < 0) return bad_usage("unknown flag '%s'", s);
        switch (which) {
        case 0: o->out_dir = val; break;
        case 1:
            if (!strcmp(val, "bf16"))
                o->dtype = QL_DT_BF16;
            else if (!strcmp(val, "f16"))
                o->dtype = QL_DT_F16;
            else if (!strcmp(val, "f32"))
                o->dtype = QL_DT_F32;
            else if (!strcmp(val, "q8_0"))
                o->q8_0 = 1;
            else
                return bad_usage("--dtype must be bf16, f16, f32 or q8_0, not '%s'", val);
            break;
        case 2: o->model = val; break;
        case 3: o->base_name = val; break;
        case 4:
            if (ql_cli_base_weights(val, &o->base_original))
                return bad_usage(QL_CLI_BASE_WEIGHTS_BAD, val);
            break;
        }
    }
    if (!o->src) return bad_usage("%s", "a run or adapter directory is required");
    if (!o->out_dir) return bad_usage("%s is required", "--out");
    if (o->q8_0 && !(o->merge && o->gguf))
        return bad_usage("%s", "--dtype q8_0 is for a merged GGUF (--merge --gguf) only");
    if (!o->merge && !o->gguf && o->model)
        fprintf(stderr, "qlora export: note: --model applies to --merge and --gguf only\n");
    if (!o->merge && o->base_original)
        fprintf(stderr, "qlora export: note: --base-weights applies to --merge only\n");
    if (o->gguf && o->base_name)
        fprintf(stderr, "qlora export: note: --base-model-name does not apply to --gguf (a GGUF "
                        "adapter does not name its base)\n");
    return -1;
}

static const char *dtype_word(ql_dtype d, int q8_0) {
    return q8_0 ? "q8_0" : d == QL_DT_BF16 ? "bf16" : d == QL_DT_F16 ? "f16" : "f32";
}

static void print_targets(unsigned t) {
    const char *sep = "";
    for (int p = 0; p < QL_N_PROJ; p++)
        if ((t >> p) & 1u) {
            printf("%s%s", sep, ql_proj_name((ql_proj)p));
            sep = ",";
        }
}

int ql_cmd_export(int argc, char **argv) {
    ql_export_opts o;
    int quiet;
    int rc = parse_args(argc, argv, &o, &quiet);
    if (rc >= 0) return rc;
    o.progress = quiet ? NULL : stderr;
    o.cancel = &cancel_flag;
    static ql_export_result r;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    ql_status st = ql_export(&o, &r);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (st != QL_OK) return ql_report(st);

    if (r.from == QL_EXPORT_FROM_ADAPTER)
        printf("adapter   %s (r %d, alpha %g%s, ", r.adapter_dir, r.lora.r, (double)r.lora.alpha,
               r.lora.use_rslora ? ", rsLoRA" : "");
    else
        printf("adapter   checkpoint %s, step %lld (r %d, alpha %g%s, ", r.adapter_dir,
               (long long)r.step, r.lora.r, (double)r.lora.alpha,
               r.lora.use_rslora ? ", rsLoRA" : "");
    print_targets(r.lora.targets);
    printf(")\n");
    if (o.gguf && !o.merge) {
        printf("base      %s (general.architecture %s)\n", r.model, r.gguf_arch);
        printf("wrote     %s: llama.cpp LoRA adapter, %d tensors in %s\n", o.out_dir, r.n_tensors,
               dtype_word(r.dtype, o.q8_0));
        size_t m = strlen(r.model);
        printf("use       llama-cli -m %s --lora %s\n",
               m > 5 && !strcmp(r.model + m - 5, ".gguf") ? r.model : "BASE.gguf", o.out_dir);
    } else if (!o.merge) {
        printf("wrote     %s: PEFT adapter, %d tensors in %s\n", o.out_dir, r.n_tensors,
               dtype_word(r.dtype, o.q8_0));
        printf("base      base_model_name_or_path = %s\n", r.base_name[0] ? r.base_name : "null");
        size_t n = strlen(r.base_name);
        if (n > 5 && !strcmp(r.base_name + n - 5, ".gguf"))
            fprintf(stderr,
                    "qlora export: note: base_model_name_or_path is a GGUF file, which PEFT's "
                    "AutoPeftModel cannot load; pass --base-model-name with the Hugging Face id "
                    "of the base model (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)\n");
    } else {
        printf("base      %s", r.model);
        if (r.quant_none)
            printf(" (its own weights, as the run trained: quant.type none)\n");
        else if (o.base_original)
            printf(" (its own weights, no 4-bit round trip)\n");
        else
            printf(" (after the 4-bit round trip: %s, block %d%s; %s)\n",
                   r.qtype == QL_QTYPE_FP4 ? "fp4" : "nf4", r.blocksize,
                   r.double_quant ? ", double quant" : "",
                   r.quant_from_run ? "the run's settings" : "qlora's defaults");
        if (o.gguf) {
            printf("wrote     %s: merged GGUF model, %d tensors (%d with the adapter added; %d "
                   "copied as stored), %.1f MB, linears in %s\n",
                   o.out_dir, r.merge.n_tensors, r.merge.n_merged, r.merge.n_copied,
                   (double)r.merge.bytes / 1e6, dtype_word(r.dtype, o.q8_0));
            printf("use       llama-cli -m %s\n", o.out_dir);
            fflush(stdout);
            return QL_EXIT_OK;
        }
        printf("wrote     %s: merged model, %d tensors (%d with the adapter added), %.1f MB %s "
               "in %d file%s\n",
               o.out_dir, r.merge.n_tensors, r.merge.n_merged, (double)r.merge.bytes / 1e6,
               dtype_word(r.dtype, o.q8_0), r.merge.n_shards, r.merge.n_shards == 1 ? "" : "s");
        if (r.merge.tokenizer_missing)
            printf("tokenizer not written: %s has no tokenizer.json%s; copy the base model's "
                   "tokenizer files into %s (docs/export.md)\n",
                   r.model, r.merge.tokenizer_missing == 1 ? " (a GGUF file)" : "", o.out_dir);
        if (r.merge.tokenizer_files)
            printf("tokenizer %d file%s copied\n", r.merge.tokenizer_files,
                   r.merge.tokenizer_files == 1 ? "" : "s");
        /* Without the flag qlora would round the merged linears to 4 bits,
         * and that rounding is larger than the update. */
        printf("evaluate  qlora eval --model %s --base-weights original --data FILE\n", o.out_dir);
    }
    fflush(stdout);
    return QL_EXIT_OK;
}
