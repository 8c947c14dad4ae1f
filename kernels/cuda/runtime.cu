/* Device discovery, memory, ql_q4 upload and event timers: the host side of
 * kernels/cuda_api.h that is not a kernel. */
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_api.h"
#include "kernels/cuda/cuda_util.h"

extern "C" int ql_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* No driver (cudaErrorInsufficientDriver), no device
         * (cudaErrorNoDevice) or a broken installation: report none. */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" ql_status ql_cuda_get_device_info(int device, ql_cuda_device_info *info) {
    cudaDeviceProp p;
    memset(info, 0, sizeof *info);
    QL_CUDA_TRY(cudaGetDeviceProperties(&p, device));
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    info->total_mem = p.totalGlobalMem;
    info->l2_bytes = p.l2CacheSize;
    QL_CUDA_TRY(cudaDriverGetVersion(&info->driver_version));
    QL_CUDA_TRY(cudaRuntimeGetVersion(&info->runtime_version));
    return QL_OK;
}

extern "C" ql_status ql_cuda_set_device(int device) {
    QL_CUDA_TRY(cudaSetDevice(device));
    return QL_OK;
}

/* --- counted device memory -------------------------------------------------------
 * Every device buffer of the backend comes from ql_cuda_malloc, which records
 * its size in a small open-addressing table (pointer -> bytes) so that
 * ql_cuda_free can subtract it: the in-use and peak figures of
 * ql_backend.mem_stats. A few thousand buffers per model; one mutex. */
static struct {
    pthread_mutex_t mu;
    void **keys; /* NULL: empty; TOMB: deleted */
    size_t *sizes;
    size_t cap, used; /* used counts tombstones too */
    size_t in_use, peak;
} g_mem = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, 0, 0};
static char g_tomb;
#define TOMB ((void *)&g_tomb)

static size_t slot_of(const void *p, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)(h & (cap - 1));
}

/* Under the mutex. 0 when the table cannot grow (the buffer is then simply
 * not counted). */
static int mem_grow(void) {
    size_t cap = g_mem.cap ? 2 * g_mem.cap : 1024;
    void **keys = (void **)calloc(cap, sizeof *keys);
    size_t *sizes = (size_t *)calloc(cap, sizeof *sizes);
    if (!keys || !sizes) {
        free(keys);
        free(sizes);
        return 0;
    }
    size_t used = 0;
    for (size_t i = 0; i < g_mem.cap; i++) {
        void *k = g_mem.keys[i];
        if (!k || k == TOMB) continue;
        size_t j = slot_of(k, cap);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = k;
        sizes[j] = g_mem.sizes[i];
        used++;
    }
    free(g_mem.keys);
    free(g_mem.sizes);
    g_mem.keys = keys;
    g_mem.sizes = sizes;
    g_mem.cap = cap;
    g_mem.used = used;
    return 1;
}

static void mem_add(void *p, size_t bytes) {
    pthread_mutex_lock(&g_mem.mu);
    if ((g_mem.used + 1) * 2 <= g_mem.cap || mem_grow()) {
        size_t j = slot_of(p, g_mem.cap);
        while (g_mem.keys[j] && g_mem.keys[j] != TOMB) j = (j + 1) & (g_mem.cap - 1);
        if (!g_mem.keys[j]) g_mem.used++;
        g_mem.keys[j] = p;
        g_mem.sizes[j] = bytes;
        g_mem.in_use += bytes;
        if (g_mem.in_use > g_mem.peak) g_mem.peak = g_mem.in_use;
    }
    pthread_mutex_unlock(&g_mem.mu);
}

static void mem_remove(void *p) {
    pthread_mutex_lock(&g_mem.mu);
    if (g_mem.cap) {
        size_t j = slot_of(p, g_mem.cap);
        while (g_mem.keys[j] && g_mem.keys[j] != p) j = (j + 1) & (g_mem.cap - 1);
        if (g_mem.keys[j] == p) {
            g_mem.keys[j] = TOMB;
            g_mem.in_use -= g_mem.sizes[j];
        }
    }
    pthread_mutex_unlock(&g_mem.mu);
}

extern "C" void ql_cuda_mem_counts(size_t *in_use, size_t *peak) {
    pthread_mutex_lock(&g_mem.mu);
    *in_use = g_mem.in_use;
    *peak = g_mem.peak;
    pthread_mutex_unlock(&g_mem.mu);
}

extern "C" void ql_cuda_mem_reset_peak(void) {
    pthread_mutex_lock(&g_mem.mu);
    g_mem.peak = g_mem.in_use;
    pthread_mutex_unlock(&g_mem.mu);
}

extern "C" ql_status ql_cuda_mem_info(size_t *used, size_t *total) {
    size_t fr = 0, tot = 0;
    *used = *total = 0;
    QL_CUDA_TRY(cudaMemGetInfo(&fr, &tot));
    *used = tot - fr;
    *total = tot;
    return QL_OK;
}

extern "C" ql_status ql_cuda_malloc(size_t bytes, void **out) {
    *out = NULL;
    if (!bytes) bytes = 1;
    const cudaError_t e = cudaMalloc(out, bytes);
    if (e == cudaErrorMemoryAllocation) {
        /* Not sticky: the device goes on working. The figures say whether
         * qlora itself or something else on the device took the memory. */
        (void)cudaGetLastError();
        *out = NULL;
        size_t held, peak, fr = 0, tot = 0;
        ql_cuda_mem_counts(&held, &peak);
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) fr = tot = 0;
        (void)cudaGetLastError();
        const double mib = 1024.0 * 1024.0, gib = mib * 1024.0;
        char dev[128] = "";
        if (tot)
            snprintf(dev, sizeof dev,
                     "; the device has %.2f of %.2f GiB in use (the CUDA context, libraries and "
                     "other processes included)",
                     (double)(tot - fr) / gib, (double)tot / gib);
        return ql_error(QL_ENOMEM,
                        "out of GPU memory: %zu bytes (%.1f MiB) asked for while qlora "
                        "held %.1f MiB%s",
                        bytes, (double)bytes / mib, (double)held / mib, dev);
    }
    QL_CUDA_TRY(e);
    mem_add(*out, bytes);
    return QL_OK;
}

extern "C" void ql_cuda_free(void *p) {
    if (!p) return;
    mem_remove(p);
    (void)cudaFree(p);
}

extern "C" ql_status ql_cuda_upload(void *dev_dst, const void *host_src, size_t bytes) {
    QL_CUDA_TRY(cudaMemcpy(dev_dst, host_src, bytes, cudaMemcpyHostToDevice));
    return QL_OK;
}

extern "C" ql_status ql_cuda_download(void *host_dst, const void *dev_src, size_t bytes) {
    QL_CUDA_TRY(cudaMemcpy(host_dst, dev_src, bytes, cudaMemcpyDeviceToHost));
    return QL_OK;
}

extern "C" ql_status ql_cuda_copy_d2d(void *dev_dst, const void *dev_src, size_t bytes,
                                      void *stream) {
    QL_CUDA_TRY(
        cudaMemcpyAsync(dev_dst, dev_src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream));
    return QL_OK;
}

extern "C" ql_status ql_cuda_memset(void *dev_dst, int byte, size_t bytes, void *stream) {
    QL_CUDA_TRY(cudaMemsetAsync(dev_dst, byte, bytes, (cudaStream_t)stream));
    return QL_OK;
}

extern "C" ql_status ql_cuda_sync(void) {
    QL_CUDA_TRY(cudaDeviceSynchronize());
    return QL_OK;
}

/* --- ql_q4 on the device ----------------------------------------------------- */

static ql_status q4_check_host(const ql_q4 *h) {
    if (h->rows <= 0 || h->cols <= 0 || h->n != h->rows * h->cols)
        return ql_error(QL_EINVAL, "4-bit matrix: shape [%lld, %lld] with n = %lld is inconsistent",
                        (long long)h->rows, (long long)h->cols, (long long)h->n);
    if (!ql_q4_blocksize_ok(h->blocksize))
        return ql_error(QL_EINVAL, "4-bit matrix: block size %d is not one bitsandbytes allows",
                        h->blocksize);
    if (h->n_blocks != (h->n + h->blocksize - 1) / h->blocksize)
        return ql_error(QL_EINVAL, "4-bit matrix: n_blocks %lld, expected ceil(%lld / %d)",
                        (long long)h->n_blocks, (long long)h->n, h->blocksize);
    if (h->type != QL_QTYPE_NF4 && h->type != QL_QTYPE_FP4)
        return ql_error(QL_EINVAL, "4-bit matrix: unknown quant type %d", (int)h->type);
    if (!h->packed || (h->double_quant ? !h->absmax_q || !h->nested_absmax : !h->absmax))
        return ql_error(QL_EINVAL, "4-bit matrix: a buffer is missing");
    return QL_OK;
}

static ql_status q4_copy_up(void **dst, const void *src, size_t bytes) {
    QL_TRY(ql_cuda_malloc(bytes, dst));
    return ql_cuda_upload(*dst, src, bytes);
}

extern "C" ql_status ql_cuda_q4_upload(const ql_q4 *host, ql_q4 *dev) {
    QL_TRY(q4_check_host(host));
    *dev = *host;
    dev->owns = 0;
    dev->packed = NULL;
    dev->absmax = NULL;
    dev->absmax_q = NULL;
    dev->nested_absmax = NULL;
    dev->dense = NULL;
    dev->dense_pad = 0;
    ql_status st;
    void *p = NULL;
    QL_TRY_GOTO(st, q4_copy_up(&p, host->packed, (size_t)ql_q4_packed_bytes(host)), fail);
    dev->packed = (uint8_t *)p;
    p = NULL;
    if (host->double_quant) {
        QL_TRY_GOTO(st, q4_copy_up(&p, host->absmax_q, (size_t)host->n_blocks), fail);
        dev->absmax_q = (uint8_t *)p;
        p = NULL;
        QL_TRY_GOTO(
            st,
            q4_copy_up(&p, host->nested_absmax, (size_t)ql_q4_nested_blocks(host) * sizeof(float)),
            fail);
        dev->nested_absmax = (float *)p;
    } else {
        QL_TRY_GOTO(st, q4_copy_up(&p, host->absmax, (size_t)host->n_blocks * sizeof(float)), fail);
        dev->absmax = (float *)p;
    }
    return QL_OK;
fail:
    ql_cuda_free(p);
    ql_cuda_q4_free(dev);
    return st;
}

extern "C" void ql_cuda_q4_free(ql_q4 *dev) {
    ql_cuda_free(dev->packed);
    ql_cuda_free(dev->absmax);
    ql_cuda_free(dev->absmax_q);
    ql_cuda_free(dev->nested_absmax);
    ql_cuda_free(dev->dense);
    dev->dense = NULL;
    dev->dense_pad = 0;
    dev->packed = NULL;
    dev->absmax = NULL;
    dev->absmax_q = NULL;
    dev->nested_absmax = NULL;
}

/* --- event timers ------------------------------------------------------------- */

struct ql_cuda_timer {
    cudaEvent_t start, stop;
};

extern "C" ql_status ql_cuda_timer_create(ql_cuda_timer **out) {
    *out = NULL;
    ql_cuda_timer *t = (ql_cuda_timer *)ql_calloc(1, sizeof *t, "CUDA timer");
    if (!t) return QL_ENOMEM;
    cudaError_t e = cudaEventCreate(&t->start);
    if (e == cudaSuccess) {
        e = cudaEventCreate(&t->stop);
        if (e != cudaSuccess) (void)cudaEventDestroy(t->start);
    }
    if (e != cudaSuccess) {
        free(t);
        QL_CUDA_TRY(e);
    }
    *out = t;
    return QL_OK;
}

extern "C" void ql_cuda_timer_destroy(ql_cuda_timer *t) {
    if (!t) return;
    (void)cudaEventDestroy(t->start);
    (void)cudaEventDestroy(t->stop);
    free(t);
}

extern "C" ql_status ql_cuda_timer_start(ql_cuda_timer *t, void *stream) {
    QL_CUDA_TRY(cudaEventRecord(t->start, (cudaStream_t)stream));
    return QL_OK;
}

extern "C" ql_status ql_cuda_timer_stop(ql_cuda_timer *t, void *stream, float *ms) {
    QL_CUDA_TRY(cudaEventRecord(t->stop, (cudaStream_t)stream));
    QL_CUDA_TRY(cudaEventSynchronize(t->stop));
    QL_CUDA_TRY(cudaEventElapsedTime(ms, t->start, t->stop));
    return QL_OK;
}
