/* Every configuration key: type, default, range and meaning. docs/config.md
 * is the same table for people; tests/unit/test_config.c checks they agree. */
#include <math.h>
#include <stddef.h>

#include "core/config.h"

#define OFF(field) offsetof(ql_config, field)
#define STR(field) QL_CFG_STR, OFF(field), sizeof(((ql_config *)0)->field)
#define TYPED(t, field) t, OFF(field), 0
#define BIG 1e15

static const ql_cfg_key schema[] = {
    {"model", STR(model), NULL, 0, 0, 0, 0, 0, 0, NULL,
     "base model: a Hugging Face directory, a bitsandbytes 4-bit directory or a .gguf file"},
    {"output_dir", STR(output_dir), NULL, 0, 0, 0, 0, 0, 0, NULL,
     "run directory: config.resolved.yaml, metrics.jsonl and adapter/ are written here"},
    {"seed", TYPED(QL_CFG_INT, seed), "1234", 0, BIG, 0, 0, 0, 0, NULL,
     "seeds LoRA initialisation, dropout and the data order; the same seed repeats a CPU run "
     "bit for bit"},
    {"backend", STR(backend), "cpu", 0, 0, 0, 0, 0, 0, "auto|cpu|cpu-ref|cuda",
     "where the model runs: cpu (OpenBLAS + OpenMP), cpu-ref (plain loops), cuda (one GPU per "
     "rank), auto (cuda when a GPU is visible, else cpu)"},
    {"overwrite_output_dir", TYPED(QL_CFG_BOOL, overwrite_output_dir), "false", 0, 0, 0, 0, 0, 0,
     NULL, "allow an output_dir that already holds a run (its metrics.jsonl is restarted)"},
    {"resume", STR(resume), "auto", 0, 0, 0, 0, 0, 0, NULL,
     "auto: continue from OUTPUT_DIR/checkpoints (the newest good checkpoint) when there is one; "
     "never: start from step 0; or the path of a checkpoint to continue from"},

    {"data.train", STR(data.train), NULL, 0, 0, 0, 0, 0, 0, NULL,
     "training data: JSONL of text, prompt/completion, messages or pre-tokenized records"},
    {"data.max_seq_len", TYPED(QL_CFG_INT, data.max_seq_len), "512", 2, 1048576, 0, 0, 0, 0, NULL,
     "row length; longer records follow data.on_overlength (and are counted)"},
    {"data.shuffle", TYPED(QL_CFG_BOOL, data.shuffle), "true", 0, 0, 0, 0, 0, 0, NULL,
     "visit the records in a new seeded order each epoch (false: file order)"},
    {"data.pad_to", TYPED(QL_CFG_CHOICE, data.pad_to), "longest", 0, 0, 0, 0, 0, 0,
     "longest|max_seq_len", "pad a micro-batch to its longest row or always to data.max_seq_len"},
    {"data.packing", TYPED(QL_CFG_BOOL, data.packing), "true", 0, 0, 0, 0, 0, 0, NULL,
     "pack records into rows of data.max_seq_len, keeping document boundaries (false: one "
     "record per row, padded)"},
    {"data.valid", STR(data.valid), "\"\"", 0, 0, 0, 0, 0, 0, NULL,
     "validation data in the training data's format; evaluated at the end of training"},
    {"data.valid_fraction", TYPED(QL_CFG_FLOAT, data.valid_fraction), "0.0", 0, 1, 0, 1, 0, 0, NULL,
     "hold out this fraction of data.train's records (chosen from the seed) as the validation "
     "set"},
    {"data.cache", TYPED(QL_CFG_BOOL, data.cache), "true", 0, 0, 0, 0, 0, 0, NULL,
     "keep tokenized data in data.cache_dir so a restart does not tokenize again"},
    {"data.cache_dir", STR(data.cache_dir), "\"\"", 0, 0, 0, 0, 0, 0, NULL,
     "where tokenized data is cached (empty: OUTPUT_DIR/data_cache)"},
    {"data.chat_template", TYPED(QL_CFG_CHOICE, data.chat_template), "auto", 0, 0, 0, 0, 0, 0,
     "auto|chatml|llama3|llama2|mistral|mistral-legacy",
     "how \"messages\" records are laid out: recognised from the model's chat_template, or "
     "this format"},
    {"data.on_overlength", TYPED(QL_CFG_CHOICE, data.on_overlength), "truncate", 0, 0, 0, 0, 0, 0,
     "truncate|drop|error",
     "a record longer than data.max_seq_len: keep its first tokens, leave it out, or stop "
     "(each counted in the data report)"},
    {"data.on_bad_record", TYPED(QL_CFG_CHOICE, data.on_bad_record), "error", 0, 0, 0, 0, 0, 0,
     "error|skip",
     "a malformed record (bad JSON or UTF-8, missing fields, wrong types, unknown role): stop "
     "naming file:line, or skip it and count it"},

    {"lora.r", TYPED(QL_CFG_INT, lora.r), "16", 1, 65536, 0, 0, 0, 0, NULL, "LoRA rank"},
    {"lora.alpha", TYPED(QL_CFG_FLOAT, lora.alpha), "32", 0, INFINITY, 1, 0, 0, 0, NULL,
     "LoRA alpha: the update is scaled by alpha / r (alpha / sqrt(r) with use_rslora)"},
    {"lora.dropout", TYPED(QL_CFG_FLOAT, lora.dropout), "0.0", 0, 1, 0, 1, 0, 0, NULL,
     "dropout probability on the LoRA input (PEFT's lora_dropout)"},
    {"lora.targets", TYPED(QL_CFG_TARGETS, lora.targets),
     "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]", 0, 0, 0, 0, 0, 0, NULL,
     "the linear projections that get adapters"},
    {"lora.use_rslora", TYPED(QL_CFG_BOOL, lora.use_rslora), "false", 0, 0, 0, 0, 0, 0, NULL,
     "rank-stabilised LoRA: scale alpha / sqrt(r) instead of alpha / r"},
    {"lora.init_adapter", STR(lora.init_adapter), "\"\"", 0, 0, 0, 0, 0, 0, NULL,
     "start from this LoRA adapter (a PEFT adapter directory, a run directory holding adapter/, "
     "or a llama.cpp adapter FILE.gguf): r, alpha, use_rslora and targets are taken from it; a "
     "resumed checkpoint takes precedence"},

    {"train.steps", TYPED(QL_CFG_INT, train.steps), "100", 1, BIG, 0, 0, 0, 0, NULL,
     "optimizer steps to run"},
    {"train.global_batch", TYPED(QL_CFG_INT, train.global_batch), "8", 1, 1048576, 0, 0, 0, 0, NULL,
     "sequences per optimizer step, whatever the number of ranks"},
    {"train.micro_batch", TYPED(QL_CFG_INT, train.micro_batch), "4", 1, 1048576, 0, 0, 0, 0, NULL,
     "sequences per forward/backward; gradients of ceil(global_batch / micro_batch) "
     "micro-batches are accumulated"},
    {"train.lr", TYPED(QL_CFG_FLOAT, train.lr), "2.0e-4", 0, INFINITY, 0, 0, 1e-6, 1e-2, NULL,
     "peak learning rate (reached after warmup)"},
    {"train.schedule", TYPED(QL_CFG_CHOICE, train.schedule), "cosine", 0, 0, 0, 0, 0, 0,
     "cosine|linear|constant", "learning-rate decay after warmup, as transformers' schedules"},
    {"train.warmup_steps", TYPED(QL_CFG_INT, train.warmup_steps), "0", 0, BIG, 0, 0, 0, 0, NULL,
     "steps of linear warmup from 0 to train.lr"},
    {"train.weight_decay", TYPED(QL_CFG_FLOAT, train.weight_decay), "0.0", 0, INFINITY, 0, 0, 0, 0,
     NULL, "AdamW decoupled weight decay"},
    {"train.max_grad_norm", TYPED(QL_CFG_FLOAT, train.max_grad_norm), "1.0", 0, INFINITY, 0, 0, 0,
     0, NULL, "clip the global gradient norm to this (0: no clipping)"},
    {"train.adam_beta1", TYPED(QL_CFG_FLOAT, train.adam_beta1), "0.9", 0, 1, 0, 1, 0, 0, NULL,
     "AdamW beta1"},
    {"train.adam_beta2", TYPED(QL_CFG_FLOAT, train.adam_beta2), "0.999", 0, 1, 0, 1, 0, 0, NULL,
     "AdamW beta2"},
    {"train.adam_epsilon", TYPED(QL_CFG_FLOAT, train.adam_epsilon), "1.0e-8", 0, INFINITY, 0, 0, 0,
     0, NULL, "AdamW epsilon"},
    {"train.on_nonfinite", TYPED(QL_CFG_CHOICE, train.on_nonfinite), "skip", 0, 0, 0, 0, 0, 0,
     "skip|stop",
     "a step whose loss or gradient is NaN/Inf: skip its update and count it, or stop the run"},
    {"train.max_nonfinite_in_a_row", TYPED(QL_CFG_INT, train.max_nonfinite_in_a_row), "5", 1, BIG,
     0, 0, 0, 0, NULL, "with on_nonfinite: skip, stop with an error after this many in a row"},
    {"train.activation_checkpointing", TYPED(QL_CFG_BOOL, train.activation_checkpointing), "false",
     0, 0, 0, 0, 0, 0, NULL,
     "keep only each layer's input and recompute the rest in the backward pass (less memory)"},
    {"train.memory_limit_gb", TYPED(QL_CFG_FLOAT, train.memory_limit_gb), "0.0", 0, BIG, 0, 0, 0, 0,
     NULL,
     "refuse to start when the memory estimate for one rank exceeds this many GiB (0: the GPU's "
     "memory on cuda, the host's on cpu); --memory-limit=GB sets it"},
    {"train.log_every", TYPED(QL_CFG_INT, train.log_every), "10", 1, BIG, 0, 0, 0, 0, NULL,
     "when stderr is not a terminal, print a progress line every this many steps"},
    {"train.eval_every", TYPED(QL_CFG_INT, train.eval_every), "0", 0, BIG, 0, 0, 0, 0, NULL,
     "with a validation set, also evaluate every this many steps (0: only at the end)"},

    {"dist.timeout_s", TYPED(QL_CFG_FLOAT, dist.timeout_s), "600", 0, BIG, 0, 0, 0, 0, NULL,
     "seconds a rank waits in one collective for the others before it aborts the job, naming "
     "the collective (0: no limit; the environment's QL_DIST_TIMEOUT_S wins)"},
    {"dist.bucket_mb", TYPED(QL_CFG_INT, dist.bucket_mb), "16", 1, 65536, 0, 0, 0, 0, NULL,
     "MiB of gradients the reduce-scatter moves per bucket (no effect on the result)"},

    {"quant.type", TYPED(QL_CFG_CHOICE, quant.type), "nf4", 0, 0, 0, 0, 0, 0, "nf4|fp4|none",
     "4-bit code book for weights quantized on load (a bnb-4bit directory keeps its own); none: "
     "the linears as stored, not quantized: float32 on the CPU, bf16 on a GPU (LoRA, not QLoRA)"},
    {"quant.blocksize", TYPED(QL_CFG_INT, quant.blocksize), "64", 32, 4096, 0, 0, 0, 0, NULL,
     "elements per absmax block: 32, 64, 128, 256, 512, 1024, 2048 or 4096"},
    {"quant.double_quant", TYPED(QL_CFG_BOOL, quant.double_quant), "true", 0, 0, 0, 0, 0, 0, NULL,
     "quantize the absmax values to 8 bits as well (bitsandbytes' double quantization)"},
    {"quant.dequantized_layers", TYPED(QL_CFG_INT, quant.dequantized_layers), "0", 0, BIG, 0, 0, 0,
     0, NULL,
     "on cuda, also keep the linears of this many layers (from the first; more than the model "
     "has: all) dequantized in bf16, 2 bytes a weight, so long micro-batches skip "
     "dequantizing them; the same results (0: none; ignored on the CPU backends)"},

    {"checkpoint.every_steps", TYPED(QL_CFG_INT, checkpoint.every_steps), "500", 0, BIG, 0, 0, 0, 0,
     NULL, "write a checkpoint every this many optimizer steps (0: not by step count)"},
    {"checkpoint.every_minutes", TYPED(QL_CFG_FLOAT, checkpoint.every_minutes), "0.0", 0, BIG, 0, 0,
     0, 0, NULL,
     "also write one when this many minutes have passed since the last (0: not by time)"},
    {"checkpoint.keep_last", TYPED(QL_CFG_INT, checkpoint.keep_last), "3", 1, BIG, 0, 0, 0, 0, NULL,
     "checkpoints kept in OUTPUT_DIR/checkpoints; older ones are removed after a save"},
    {"checkpoint.file_locking", TYPED(QL_CFG_CHOICE, checkpoint.file_locking), "best-effort", 0, 0,
     0, 0, 0, 0, "best-effort|strict|off",
     "lock the checkpoints directory and HDF5 files: best-effort goes on without locks where the "
     "file system has none (some NFS/Lustre mounts), strict stops there, off never locks"},

    {"review.prompts", TYPED(QL_CFG_INT, review.prompts), "4", 0, 1000, 0, 0, 0, 0, NULL,
     "held-out records whose base-model and adapter answers OUTPUT_DIR/review.md shows side by "
     "side (records with a unit test first); 0: no review sheet"},
    {"review.samples", TYPED(QL_CFG_INT, review.samples), "2", 0, 1000, 0, 0, 0, 0, NULL,
     "of those, how many answers are printed and written to metrics.jsonl when training starts "
     "(base model) and ends (adapter)"},
    {"review.max_new_tokens", TYPED(QL_CFG_INT, review.max_new_tokens), "128", 1, 1000000, 0, 0, 0,
     0, NULL, "longest answer, in tokens (greedy decoding)"},
    {"review.tests", TYPED(QL_CFG_BOOL, review.tests), "true", 0, 0, 0, 0, 0, 0, NULL,
     "run the unit test of records that have one (a \"test\" field) on both answers, in a "
     "sandboxed python3"},
};

_Static_assert(sizeof schema / sizeof schema[0] <= QL_CFG_KEYS_MAX,
               "more keys than ql_config.given holds: raise QL_CFG_KEYS_MAX");

const ql_cfg_key *ql_config_schema(size_t *n) {
    *n = sizeof schema / sizeof schema[0];
    return schema;
}

static const char *const target_names[QL_CFG_N_TARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *ql_config_target_name(int i) {
    return i >= 0 && i < QL_CFG_N_TARGETS ? target_names[i] : NULL;
}
