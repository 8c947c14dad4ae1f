/* The "cuda" op table (kernels/backend.c calls ql_backend_cuda_impl when the
 * build has CUDA), and the scratch buffers the ops share.
 *
 * Activations are bf16 (act_dtype QL_DT_BF16); LoRA weights, optimizer state,
 * norm weights, losses and saved statistics are fp32, as backend.h says.
 * Every op is enqueued on the legacy default stream; `sync` waits for it.
 * Which device: the current one (ql_cuda_set_device), device 0 by default. */
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/cuda_ops.h"

/* Out of device memory is QL_ENOMEM with the figures (ql_cuda_malloc). */
static ql_status alloc_cuda(size_t bytes, void **out) { return ql_cuda_malloc(bytes, out); }

static void free_cuda(void *p) { ql_cuda_free(p); }

static ql_status upload_cuda(void *dst, const void *host_src, size_t bytes) {
    return bytes ? ql_cuda_upload(dst, host_src, bytes) : QL_OK;
}

static ql_status download_cuda(void *host_dst, const void *src, size_t bytes) {
    QL_TRY(bytes ? ql_cuda_download(host_dst, src, bytes) : QL_OK);
    return ql_cuda_xent_check();
}

static ql_status copy_cuda(void *dst, const void *src, size_t bytes) {
    return bytes ? ql_cuda_copy_d2d(dst, src, bytes, ql_cuda_stream()) : QL_OK;
}

static ql_status q4_upload_cuda(const ql_q4 *host, ql_q4 *dst) {
    return ql_cuda_q4_upload(host, dst);
}

static void q4_free_cuda(ql_q4 *dst) { ql_cuda_q4_free(dst); }

/* The float32 matrix goes up once and is freed after quantizing: the model
 * keeps only the 4-bit buffers, and the staging costs one matrix of float32
 * of device memory at a time. */
static ql_status q4_quantize_upload_cuda(const float *host_w, int64_t rows, int64_t cols,
                                         ql_qtype type, int blocksize, int double_quant,
                                         ql_q4 *dst) {
    memset(dst, 0, sizeof *dst);
    if (rows <= 0 || cols <= 0 || rows > (int64_t)(SIZE_MAX / sizeof(float)) / cols)
        return ql_error(QL_EINVAL, "4-bit quantize on CUDA: shape [%lld, %lld] is not valid",
                        (long long)rows, (long long)cols);
    size_t bytes = (size_t)(rows * cols) * sizeof(float);
    void *dev_w = NULL;
    QL_TRY(alloc_cuda(bytes, &dev_w));
    ql_status st = ql_cuda_upload(dev_w, host_w, bytes);
    if (st == QL_OK)
        st = ql_cuda_q4_quantize((const float *)dev_w, rows, cols, type, blocksize, double_quant,
                                 dst);
    if (st == QL_OK) st = ql_cuda_sync();
    if (st != QL_OK) {
        ql_cuda_q4_free(dst);
        memset(dst, 0, sizeof *dst);
    }
    ql_cuda_free(dev_w);
    return st;
}

static ql_status sync_cuda(void) {
    QL_TRY(ql_cuda_sync());
    return ql_cuda_xent_check();
}

static const ql_backend cuda_table = {
    "cuda",
    QL_DT_BF16,
    alloc_cuda,
    free_cuda,
    upload_cuda,
    download_cuda,
    copy_cuda,
    q4_upload_cuda,
    q4_free_cuda,
    q4_quantize_upload_cuda,
    ql_cuda_q4_keep_dequantized,
    ql_cuda_q4_lend_dequantized,
    ql_cuda_dense_upload,
    sync_cuda,
    ql_q4_dequantize_cuda,
    ql_q4_lora_fwd_cuda,
    ql_q4_lora_bwd_cuda,
    ql_bias_add_cuda,
    ql_add_cuda,
    ql_matmul_fwd_cuda,
    ql_matmul_bwd_cuda,
    ql_rmsnorm_fwd_cuda,
    ql_rmsnorm_bwd_cuda,
    ql_rope_fwd_cuda,
    ql_rope_bwd_cuda,
    ql_swiglu_fwd_cuda,
    ql_swiglu_bwd_cuda,
    ql_attn_fwd_cuda,
    ql_attn_bwd_cuda,
    ql_attn_cached_fwd_cuda,
    ql_embed_fwd_cuda,
    ql_xent_fwd_bwd_cuda,
    ql_adamw_cuda,
    ql_zero_f32_cuda,
    ql_sq_sum_f32_cuda,
    ql_scale_f32_cuda,
    ql_mem_stats_cuda,
    ql_mem_reset_peak_cuda,
};

extern "C" const ql_backend *ql_backend_cuda_impl(void) {
    if (ql_cuda_device_count() == 0) {
        ql_error(QL_EUNSUPPORTED, "backend \"cuda\": no CUDA device is visible (no driver, no "
                                  "GPU, or CUDA_VISIBLE_DEVICES hides them); use \"cpu\"");
        return NULL;
    }
    return &cuda_table;
}

/* --- scratch ---------------------------------------------------------------------------- */

static struct {
    void *p;
    size_t bytes;
} g_scratch[QL_SCRATCH_COUNT];

ql_status ql_cuda_scratch(int slot, size_t bytes, void **out) {
    QL_ASSERT(slot >= 0 && slot < QL_SCRATCH_COUNT);
    if (bytes > g_scratch[slot].bytes || !g_scratch[slot].p) {
        /* cudaFree waits for the device, so work still using the old buffer
         * finishes first. Grow by 1/4 so slowly growing sizes do not
         * reallocate every call. */
        ql_cuda_free(g_scratch[slot].p);
        g_scratch[slot].p = NULL;
        g_scratch[slot].bytes = 0;
        size_t want = bytes + bytes / 4 + 256;
        QL_TRY(alloc_cuda(want, &g_scratch[slot].p));
        g_scratch[slot].bytes = want;
    }
    *out = g_scratch[slot].p;
    return QL_OK;
}

extern "C" void ql_cuda_release_cache(void) {
    (void)cudaDeviceSynchronize();
    ql_cuda_xent_forget();
    for (int i = 0; i < QL_SCRATCH_COUNT; i++) {
        ql_cuda_free(g_scratch[i].p);
        g_scratch[i].p = NULL;
        g_scratch[i].bytes = 0;
    }
    ql_cuda_blas_release();
}
