/* Host memory for both CPU backends: "device" memory is ordinary memory, so
 * upload and download are copies. Buffers are 64-byte aligned so that AVX
 * loads in the fast kernels never split a cache line at the start of a row. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

#define QL_CPU_ALIGN 64

ql_status ql_alloc_cpu(size_t bytes, void **out) {
    size_t rounded = (bytes + QL_CPU_ALIGN - 1) / QL_CPU_ALIGN * QL_CPU_ALIGN;
    if (rounded == 0) rounded = QL_CPU_ALIGN;
    void *p = aligned_alloc(QL_CPU_ALIGN, rounded);
    *out = p;
    if (!p) return ql_error(QL_ENOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
    return QL_OK;
}

void ql_free_cpu(void *p) { free(p); }

ql_status ql_upload_cpu(void *dst, const void *host_src, size_t bytes) {
    if (bytes) memcpy(dst, host_src, bytes);
    return QL_OK;
}

ql_status ql_download_cpu(void *host_dst, const void *src, size_t bytes) {
    if (bytes) memcpy(host_dst, src, bytes);
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
    return QL_OK;
}

void ql_q4_free_cpu(ql_q4 *dst) { ql_q4_free(dst); }

ql_status ql_sync_cpu(void) { return QL_OK; }
