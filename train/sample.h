/* Choosing the next token from logits: greedy, or sampling with temperature,
 * top-k and top-p (nucleus), applied in that order as transformers'
 * generate() applies its logits warpers. Draws come from a ql_rng, so the
 * same seed gives the same tokens. */
#ifndef QL_SAMPLE_H
#define QL_SAMPLE_H

#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"

typedef struct ql_sampling {
    double temperature; /* <= 0: greedy (the largest logit; the lowest id on a tie) */
    int64_t top_k;      /* keep the k largest logits; 0: all */
    double top_p;       /* keep the smallest set of most likely tokens whose
                           probability reaches top_p; >= 1: all */
} ql_sampling;

/* Scratch for ql_sample over a vocabulary of V (reused between calls). */
typedef struct ql_sample_cand {
    float logit;
    int32_t id;
} ql_sample_cand;

typedef struct ql_sampler {
    int64_t V;
    float *p;             /* [V] */
    ql_sample_cand *cand; /* [V] */
} ql_sampler;

ql_status ql_sampler_init(ql_sampler *s, int64_t V);
void ql_sampler_free(ql_sampler *s);

/* The next token from logits[V]. Non-finite logits are never chosen; when
 * every logit is -inf or NaN the result is QL_EINVAL. */
ql_status ql_sample(ql_sampler *s, const float *logits, const ql_sampling *c, ql_rng *rng,
                    int32_t *out);

/* "greedy" or "temperature 0.7, top-k 50, top-p 0.9" into buf. */
void ql_sampling_describe(const ql_sampling *c, char *buf, int n);

#endif
