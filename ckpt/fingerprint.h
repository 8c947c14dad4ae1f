/* What a checkpoint records about its inputs, so that a resume can refuse
 * one that was trained on something else (docs/checkpoint-format.md):
 *
 * - the base model's fingerprint: SHA-256 over the model's weight and
 *   config files (config.json, *.safetensors, *.gguf, in name order): for
 *   each, its name, its size and its first and last MiB. Sampled, so that an
 *   8B model is fingerprinted in milliseconds; it tells models apart, it is
 *   not an integrity check of the weights;
 * - the training data's: SHA-256 over the rows in row order (each row's
 *   records' token ids and targets); with the seed (a key a resume may not
 *   change) it fixes the global order the data cursor indexes;
 * - the run id: 32 random hex digits when a run first starts, kept by every
 *   resume, so that a manifest from another run is recognised. */
#ifndef QL_CKPT_FINGERPRINT_H
#define QL_CKPT_FINGERPRINT_H

#include "ckpt/manifest.h"
#include "core/status.h"
#include "data/jsonl_tokens.h"
#include "data/packing.h"

ql_status ql_model_fingerprint(const char *path, char hex[QL_SHA256_HEX]);
void ql_data_fingerprint(const ql_token_data *d, const ql_packing *p, char hex[QL_SHA256_HEX]);
ql_status ql_new_run_id(char id[QL_RUN_ID_LEN + 1]);

#endif
