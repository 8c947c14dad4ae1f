/* Host memory for both CPU backends: "device" memory is ordinary memory, so
 * upload and download are copies. Buffers are 64-byte aligned so that AVX
 * loads in the fast kernels never split a cache line at the start of a row.
 *
 * Every buffer is counted (what malloc_usable_size says it holds, at alloc
 * and again at free, so the two agree), for ql_backend.mem_stats: the memory
 * estimate is tested against these counts and the trainer reports their
 * per-step peak. The kernels' own thread-local scratch is plain malloc and
 * not counted. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cpu/cpu_ops.h"

#define QL_CPU_ALIGN 64

static size_t g_in_use, g_peak; /* __atomic: allocations may come from any thread */

static void count_alloc(size_t bytes) {
    size_t now = __atomic_add_fetch(&g_in_use, bytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&g_peak, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

static void count_free(size_t bytes) { __atomic_sub_fetch(&g_in_use, bytes, __ATOMIC_RELAXED); }

void ql_mem_stats_cpu(ql_mem_stats *s) {
    memset(s, 0, sizeof *s);
    s->in_use = __atomic_load_n(&g_in_use, __ATOMIC_RELAXED);
    s->peak = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
}

void ql_mem_reset_peak_cpu(void) {
    __atomic_store_n(&g_peak, __atomic_load_n(&g_in_use, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

/* The bytes of a ql_q4's buffers (as ql_q4_alloc sizes them). */
static size_t q4_buffer_bytes(const ql_q4 *q) {
    size_t b = (size_t)ql_q4_packed_bytes(q);
    if (q->double_quant)
        b += (size_t)q->n_blocks + (size_t)ql_q4_nested_blocks(q) * sizeof(float);
    else
        b += (size_t)q->n_blocks * sizeof(float);
    return b;
}

ql_status ql_alloc_cpu(size_t bytes, void **out) {
    size_t rounded = (bytes + QL_CPU_ALIGN - 1) / QL_CPU_ALIGN * QL_CPU_ALIGN;
    if (rounded == 0) rounded = QL_CPU_ALIGN;
    void *p = aligned_alloc(QL_CPU_ALIGN, rounded);
    *out = p;
    if (!p) return ql_error(QL_ENOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
    count_alloc(malloc_usable_size(p));
    return QL_OK;
}

void ql_free_cpu(void *p) {
    if (!p) return;
    count_free(malloc_usable_size(p));
    free(p);
}

ql_status ql_upload_cpu(void *dst, const void *host_src, size_t bytes) {
    if (bytes) memcpy(dst, host_src, bytes);
    return QL_OK;
}

ql_status ql_download_cpu(void *host_dst, const void *src, size_t bytes) {
    if (bytes) memcpy(host_dst, src, bytes);
    return QL_OK;
}

ql_status ql_copy_cpu(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return QL_OK;
}

ql_status ql_q4_upload_cpu(const ql_q4 *host, ql_q4 *dst) {
    *dst = *host;
    QL_TRY(ql_q4_alloc(dst));
    memcpy(dst->packed, host->packed, (size_t)ql_q4_packed_bytes(host));
    if (host->double_quant) {
        memcpy(dst->absmax_q, host->absmax_q, (size_t)host->n_blocks);
        memcpy(dst->nested_absmax, host->nested_absmax,
               (size_t)ql_q4_nested_blocks(host) * sizeof(float));
        /* ql_q4_alloc resets the map to the standard one; keep the file's. */
        memcpy(dst->nested_map, host->nested_map, sizeof dst->nested_map);
    } else {
        memcpy(dst->absmax, host->absmax, (size_t)host->n_blocks * sizeof(float));
    }
    count_alloc(q4_buffer_bytes(dst));
    return QL_OK;
}

/* The CPU backends never keep a dequantized copy beside 4-bit data, so a
 * weight with dense set holds float32 only. */
ql_status ql_dense_upload_cpu(const float *host_w, int64_t rows, int64_t cols, int64_t r,
                              ql_q4 *dst) {
    (void)r; /* float32 [rows, cols]: no LoRA padding on the CPU */
    memset(dst, 0, sizeof *dst);
    if (rows <= 0 || cols <= 0 || rows > (int64_t)(SIZE_MAX / sizeof(float)) / cols)
        return ql_error(QL_EINVAL, "cpu backend: float32 weight shape [%lld, %lld] is not valid",
                        (long long)rows, (long long)cols);
    void *p = NULL;
    QL_TRY(ql_alloc_cpu((size_t)(rows * cols) * sizeof(float), &p));
    memcpy(p, host_w, (size_t)(rows * cols) * sizeof(float));
    dst->rows = rows;
    dst->cols = cols;
    dst->n = rows * cols;
    dst->dense = p;
    return QL_OK;
}

void ql_q4_free_cpu(ql_q4 *dst) {
    if (!dst->packed && dst->dense) {
        ql_free_cpu(dst->dense);
        memset(dst, 0, sizeof *dst);
        return;
    }
    if (dst->packed) count_free(q4_buffer_bytes(dst));
    ql_q4_free(dst);
}

ql_status ql_sync_cpu(void) { return QL_OK; }
