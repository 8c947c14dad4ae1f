/* The "cpu" op table: OpenBLAS on dequantized tiles, OpenMP over fixed tiles
 * (never over a reduction), so results do not depend on the thread count. */
#include "kernels/cpu/cpu_ops.h"

static const ql_backend cpu_fast = {
    .name = "cpu",
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
    .q4_dequantize = ql_q4_dequantize_cpu,
    .q4_lora_fwd = ql_q4_lora_fwd_cpu,
    .q4_lora_bwd = ql_q4_lora_bwd_cpu,
    .bias_add = ql_bias_add_cpu,
    .add = ql_add_cpu,
    .matmul_fwd = ql_matmul_fwd_cpu,
    .matmul_bwd = ql_matmul_bwd_cpu,
    .rmsnorm_fwd = ql_rmsnorm_fwd_cpu,
    .rmsnorm_bwd = ql_rmsnorm_bwd_cpu,
    .rope_fwd = ql_rope_fwd_cpu,
    .rope_bwd = ql_rope_bwd_cpu,
    .swiglu_fwd = ql_swiglu_fwd_cpu,
    .swiglu_bwd = ql_swiglu_bwd_cpu,
    .attn_fwd = ql_attn_fwd_cpu,
    .attn_bwd = ql_attn_bwd_cpu,
    .attn_cached_fwd = ql_attn_cached_fwd_cpu,
    .embed_fwd = ql_embed_fwd_cpu,
    .xent_fwd_bwd = ql_xent_fwd_bwd_cpu,
    .adamw = ql_adamw_cpu,
    .zero_f32 = ql_zero_f32_cpu,
    .sq_sum_f32 = ql_sq_sum_f32_cpu,
    .scale_f32 = ql_scale_f32_cpu,
    .mem_stats = ql_mem_stats_cpu,
    .mem_reset_peak = ql_mem_reset_peak_cpu,
};

const ql_backend *ql_backend_cpu(void) { return &cpu_fast; }
