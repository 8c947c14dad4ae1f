/* `qlora quantize`: a Hugging Face model directory in F32/F16/BF16 to the
 * bitsandbytes 4-bit directory transformers would save (FORMATS §2).
 *
 * The linear layers of every decoder block become NF4/FP4 (optionally with
 * double quantization); embeddings, norms and lm_head are copied unchanged.
 * The output appears atomically: it is built in "OUT.tmp-XXXXXX" beside OUT
 * and renamed only when complete; on failure the temporary directory is
 * removed. */
#ifndef QL_HF_QUANTIZE_H
#define QL_HF_QUANTIZE_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "kernels/nf4.h"

/* transformers' default max_shard_size ("5GB"). */
#define QL_DEFAULT_MAX_SHARD_BYTES 5000000000ull

typedef struct ql_quantize_opts {
    const char *model_dir;
    const char *out_dir;
    ql_qtype type;
    int double_quant;
    int blocksize;
    int force;                     /* replace an existing out_dir */
    uint64_t max_shard_bytes;      /* 0: QL_DEFAULT_MAX_SHARD_BYTES */
    FILE *progress;                /* one line per tensor; NULL for none */
    volatile sig_atomic_t *cancel; /* set by a signal handler: stop and clean up */
} ql_quantize_opts;

typedef struct ql_quantize_stats {
    int n_quantized, n_kept, n_dropped, n_shards;
    uint64_t bytes_in, bytes_out; /* tensor data before / after */
    int64_t params_quantized, params_total;
    uint64_t bytes_quantized;     /* packed weights + absmax + nested absmax */
    uint64_t bytes_quantized_all; /* the same plus code books and quant-state blobs */
} ql_quantize_stats;

ql_status ql_hf_quantize(const ql_quantize_opts *o, ql_quantize_stats *s);

/* Files copied from the model directory when present. */
extern const char *const ql_hf_side_files[];

#endif
