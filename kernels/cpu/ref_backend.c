/* The "cpu-ref" op table: plain loops, the reference every other backend is
 * tested against. */
#include "kernels/cpu/cpu_ops.h"

static const ql_backend cpu_ref = {
    .name = "cpu-ref",
    .act_dtype = QL_DT_F32,
    .alloc = ql_alloc_cpu,
    .free = ql_free_cpu,
    .upload = ql_upload_cpu,
    .download = ql_download_cpu,
    .copy = ql_copy_cpu,
    .q4_upload = ql_q4_upload_cpu,
    .q4_free = ql_q4_free_cpu,
    .dense_upload = ql_dense_upload_cpu,
    .sync = ql_sync_cpu,
    .q4_dequantize = ql_q4_dequantize_ref,
    .q4_lora_fwd = ql_q4_lora_fwd_ref,
    .q4_lora_bwd = ql_q4_lora_bwd_ref,
    .bias_add = ql_bias_add_ref,
    .add = ql_add_ref,
    .matmul_fwd = ql_matmul_fwd_ref,
    .matmul_bwd = ql_matmul_bwd_ref,
    .rmsnorm_fwd = ql_rmsnorm_fwd_ref,
    .rmsnorm_bwd = ql_rmsnorm_bwd_ref,
    .rope_fwd = ql_rope_fwd_ref,
    .rope_bwd = ql_rope_bwd_ref,
    .swiglu_fwd = ql_swiglu_fwd_ref,
    .swiglu_bwd = ql_swiglu_bwd_ref,
    .attn_fwd = ql_attn_fwd_ref,
    .attn_bwd = ql_attn_bwd_ref,
    .attn_cached_fwd = ql_attn_cached_fwd_ref,
    .embed_fwd = ql_embed_fwd_ref,
    .xent_fwd_bwd = ql_xent_fwd_bwd_ref,
    .adamw = ql_adamw_ref,
    .zero_f32 = ql_zero_f32_cpu,
    .sq_sum_f32 = ql_sq_sum_f32_cpu,
    .scale_f32 = ql_scale_f32_cpu,
    .mem_stats = ql_mem_stats_cpu,
    .mem_reset_peak = ql_mem_reset_peak_cpu,
};

const ql_backend *ql_backend_cpu_ref(void) { return &cpu_ref; }
