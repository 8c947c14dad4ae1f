/* May this run continue from that checkpoint? A checkpoint trained on
 * another base model, with another adapter layout, on other data, or with a
 * setting that fixes the state or the data stream changed (the keys in
 * QL_CKPT_FIXED_KEYS) is refused with a message naming the difference.
 * Other settings may change on resume (train.steps, train.lr, the number of
 * ranks, ...); each change is listed in `notes`, one per line. */
#ifndef QL_CKPT_COMPAT_H
#define QL_CKPT_COMPAT_H

#include <stddef.h>

#include "ckpt/manifest.h"
#include "core/config.h"

#define QL_CKPT_FIXED_KEYS                                                                         \
    "seed, data.max_seq_len, data.shuffle, data.packing, lora.r, lora.alpha, lora.targets, "       \
    "lora.use_rslora, train.global_batch, quant.type, quant.blocksize, quant.double_quant"

/* `ck`: the checkpoint's manifest; `now`: this run's (base, tensors,
 * n_params, data filled in); `cfg`: this run's configuration. */
ql_status ql_ckpt_check_compat(const ql_ckpt_meta *ck, const ql_ckpt_meta *now,
                               const ql_config *cfg, char *notes, size_t notes_n);

/* The configuration check alone (the QL_CKPT_FIXED_KEYS), before the model
 * and the data are loaded, so that a refused resume is refused at once. */
ql_status ql_ckpt_check_fixed_keys(const ql_ckpt_meta *ck, const ql_config *cfg);

#endif
