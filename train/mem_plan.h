/* The memory plan of a training run: the estimate of model/llama_mem.h for
 * a configuration, the limit it must fit (train.memory_limit_gb, else the
 * GPU's or the host's memory), the report `qlora train --dry-run` prints,
 * and the error that names what to change when it does not fit
 * (docs/training.md, "Memory"). */
#ifndef QL_MEM_PLAN_H
#define QL_MEM_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "model/llama_mem.h"

/* The model options a training configuration loads with (as
 * launcher/cmd_train.c builds them), for rows of at most max_seq tokens.
 * o->be is left NULL. */
/* quant.* into the model options: the 4-bit code book, block size and double
 * quantization, or (quant.type none) the linears as stored. */
void ql_quant_options_from_config(const ql_config *c, ql_llama_options *o);

void ql_mem_plan_options(const ql_config *c, int64_t max_seq, ql_llama_options *o);

/* The estimate for configuration c and model config hc on one of `world`
 * ranks; device: the backend is a GPU (bf16 activations, CUDA workspace). */
ql_status ql_mem_plan_estimate(const ql_config *c, const ql_hf_config *hc, int64_t max_seq,
                               int device, int world, ql_mem_estimate *e);

/* The bytes one rank may use and what that figure is ("train.memory_limit_gb",
 * "GPU 0 (NVIDIA H200)", "host memory / 2 ranks on this node"); 0 when
 * unknown (no limit is then checked). device_total: the GPU's memory (0:
 * not a GPU run); local_ranks: ranks sharing this host's memory. */
size_t ql_mem_plan_limit(const ql_config *c, size_t device_total, const char *device_name,
                         int local_ranks, char *what, size_t what_n);

/* The estimate as a table, with both activation figures and the limit. */
void ql_mem_plan_print(FILE *f, const ql_config *c, const ql_mem_estimate *e, size_t limit,
                       const char *what);

/* QL_ENOMEM, with a message naming the estimate, the limit and the changes
 * that would fit (train.activation_checkpointing, train.micro_batch,
 * data.max_seq_len, each with its new estimate), when e->total plus the
 * runtime reserve exceeds limit; QL_OK otherwise (and when limit is 0). */
ql_status ql_mem_plan_check(const ql_config *c, const ql_hf_config *hc, int64_t max_seq, int device,
                            int world, const ql_mem_estimate *e, size_t limit, const char *what);

/* The most layers (at most the model's) whose linears quant.dequantized_layers
 * could keep in bf16, the rest of c as it is, within limit: -1 when not
 * even 0 fits. */
int64_t ql_mem_plan_dense_fits(const ql_config *c, const ql_hf_config *hc, int64_t max_seq,
                               int device, int world, size_t limit);

/* For the dry run: when more layers than quant.dequantized_layers could keep
 * their linears in bf16 within limit on a GPU, and the micro-batch is long
 * enough for the calls to take the dequant path (where the copies are
 * read), a line saying how many and what they cost. Nothing otherwise. */
void ql_mem_plan_print_dense_hint(FILE *f, const ql_config *c, const ql_hf_config *hc,
                                  int64_t max_seq, int world, size_t limit);

/* Peak memory of this process so far as the kernel counts it (VmHWM from
 * getrusage), in bytes. */
size_t ql_mem_rss_peak(void);

#endif
