/* A model source of generated weights for a given configuration: benchmarks
 * of shapes whose weights are not at hand (a Llama-3-8B-shaped model), and
 * tests of the memory estimate and of the GPU path without a model file.
 *
 * Every tensor is a deterministic function of (seed, tensor name), so two
 * loads (one per backend, or before and after a simulated restart) see the
 * same weights. Norm weights are 1 + N(0, 0.02); embeddings and lm_head
 * uniform with standard deviation std (cheap to draw: an 8B model's are 525M
 * values each); linears either float32 N(0, std) that the loader quantizes
 * as it would a Hugging Face checkpoint, or 4-bit codes generated directly (uniform
 * random nibbles, absmax near std / 0.5), which skips quantization: an 8B
 * shape loads in seconds. */
#ifndef QL_RANDOM_SOURCE_H
#define QL_RANDOM_SOURCE_H

#include <stdint.h>

#include "model/source.h"

typedef struct ql_random_source_opts {
    uint64_t seed;
    float std; /* of linear weights and embeddings; <= 0: 0.02 */
    /* 1: linears served as 4-bit (is_q4/get_q4) in this type, block size
     * and double quantization; 0: as float32 to be quantized on load. */
    int q4;
    ql_qtype quant_type;
    int blocksize;
    int double_quant;
} ql_random_source_opts;

/* Copies cfg (not its json) into s->cfg; s->path becomes "random:<model_type>". */
ql_status ql_random_source_open(const ql_hf_config *cfg, const ql_random_source_opts *o,
                                ql_model_source *s);

#endif
