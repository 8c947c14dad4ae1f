/* Cross-entropy over a large vocabulary, forward and backward in one kernel:
 * one block per token row. Pass 1 streams the row once in chunks of
 * XENT_THREADS elements; each thread keeps an online (max, sum of exp) of
 * its own elements in order, and the threads' pairs are merged by a fixed
 * butterfly, so the row's log-sum-exp depends only on the data. Pass 2
 * writes grad_scale·(softmax − onehot) in bf16. The row's target logit is
 * read before the barrier that precedes pass 2, so dlogits may alias logits.
 *
 * Targets >= V are rejected before anything is written (QL_EINVAL naming the
 * first such position), as the CPU backends do; this reads one word back
 * from the device, so the call waits for the work queued before it. */
#include <math.h>

#include "kernels/cuda/cuda_ops.h"

#define XENT_THREADS 256

struct xent_pair {
    float m, s;
};

static __device__ __forceinline__ xent_pair xent_merge(xent_pair a, xent_pair b) {
    xent_pair r;
    r.m = fmaxf(a.m, b.m);
    if (r.m == -INFINITY) {
        r.s = 0.0f;
        return r;
    }
    /* Symmetric in a and b, so both lanes of a butterfly get the same bits. */
    float ea = a.m == -INFINITY ? 0.0f : a.s * expf(a.m - r.m);
    float eb = b.m == -INFINITY ? 0.0f : b.s * expf(b.m - r.m);
    r.s = ea + eb;
    return r;
}

__global__ void __launch_bounds__(XENT_THREADS)
    k_xent(const ql_bf16 *logits, const int32_t *targets, int64_t V, float grad_scale,
           float *losses, ql_bf16 *dlogits) {
    __shared__ xent_pair red[32];
    __shared__ float s_lse;
    const int64_t t = blockIdx.x;
    const ql_bf16 *lt = logits + t * V;
    const int32_t y = targets[t];
    ql_bf16 *dt = dlogits ? dlogits + t * V : NULL;
    if (y < 0 || y >= V) { /* ignored, or an error reported at the next wait: no gradient */
        if (threadIdx.x == 0) losses[t] = y < 0 ? 0.0f : __uint_as_float(0x7fc00000u);
        if (dt)
            for (int64_t j = threadIdx.x; j < V; j += XENT_THREADS) dt[j] = 0;
        return;
    }

    /* Pass 1: this thread's elements, in order. */
    xent_pair p = {-INFINITY, 0.0f};
    for (int64_t j = threadIdx.x; j < V; j += XENT_THREADS) {
        float l = ql_ld_bf16(lt + j);
        if (l > p.m) {
            p.s = (p.m == -INFINITY ? 0.0f : p.s * expf(p.m - l)) + 1.0f;
            p.m = l;
        } else {
            p.s += expf(l - p.m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        xent_pair q;
        q.m = __shfl_xor_sync(0xffffffffu, p.m, o);
        q.s = __shfl_xor_sync(0xffffffffu, p.s, o);
        p = xent_merge(p, q);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = p;
    __syncthreads();
    if (warp == 0) {
        xent_pair q = lane < XENT_THREADS / 32 ? red[lane] : xent_pair{-INFINITY, 0.0f};
        for (int o = 16; o > 0; o >>= 1) {
            xent_pair r;
            r.m = __shfl_xor_sync(0xffffffffu, q.m, o);
            r.s = __shfl_xor_sync(0xffffffffu, q.s, o);
            q = xent_merge(q, r);
        }
        if (lane == 0) {
            float lse = q.m + logf(q.s);
            s_lse = lse;
            losses[t] = lse - ql_ld_bf16(lt + y); /* read before any write below */
        }
    }
    __syncthreads();
    if (!dt) return;
    const float lse = s_lse;
    for (int64_t j = threadIdx.x; j < V; j += XENT_THREADS) {
        float pj = expf(ql_ld_bf16(lt + j) - lse);
        dt[j] = ql_bf16_bits(grad_scale * (j == y ? pj - 1.0f : pj));
    }
}

/* Targets outside the vocabulary, found without a host wait inside the step:
 * each call gets a sequence number q since the last check, and the check
 * kernel keeps min((q << 32) | t) over bad targets in one device word (an
 * integer minimum: the same in any order), so the word names the first bad
 * token of the first call that had one. The host reads it when it waits for
 * the device anyway (the backend's download and sync: ql_cuda_xent_check).
 * The model checks its targets on the host before uploading them, so in
 * training this only guards direct callers of the op. */
#define XENT_PENDING_MAX 1024
static struct {
    const int32_t *targets;
    int64_t V;
} g_pending[XENT_PENDING_MAX];
static int g_n_pending;
static unsigned long long *g_first_bad; /* the QL_SCRATCH_FLAG word, while calls are pending */

__global__ void k_xent_check(const int32_t *targets, int64_t T, int64_t V, unsigned long long seq,
                             unsigned long long *first_bad) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < T;
         t += (int64_t)gridDim.x * blockDim.x)
        if (targets[t] >= V) atomicMin(first_bad, (seq << 32) | (unsigned long long)t);
}

extern "C" ql_status ql_cuda_xent_check(void) {
    if (g_n_pending == 0) return QL_OK;
    unsigned long long bad = ~0ull;
    const int n = g_n_pending;
    g_n_pending = 0;
    QL_CUDA_TRY(cudaMemcpy(&bad, g_first_bad, sizeof bad, cudaMemcpyDeviceToHost));
    if (bad == ~0ull) return QL_OK;
    const int q = (int)(bad >> 32);
    const int64_t t = (int64_t)(bad & 0xffffffffull);
    QL_ASSERT(q < n);
    int32_t target = 0;
    QL_CUDA_TRY(
        cudaMemcpy(&target, g_pending[q].targets + t, sizeof target, cudaMemcpyDeviceToHost));
    return ql_error(QL_EINVAL,
                    "cross-entropy: target %d at token %lld is outside the vocabulary of %lld "
                    "(use a negative target to ignore a position)",
                    target, (long long)t, (long long)g_pending[q].V);
}

extern "C" void ql_cuda_xent_forget(void) { g_n_pending = 0; }

extern "C" ql_status ql_xent_fwd_bwd_cuda(const ql_act *logits, const int32_t *targets, int64_t T,
                                          int64_t V, float grad_scale, float *losses,
                                          ql_act *dlogits) {
    if (T <= 0) return QL_OK;
    QL_ASSERT(V > 0 && T <= 0x7fffffff);
    if (g_n_pending == XENT_PENDING_MAX) QL_TRY(ql_cuda_xent_check());
    if (g_n_pending == 0) {
        void *flag;
        QL_TRY(ql_cuda_scratch(QL_SCRATCH_FLAG, sizeof(unsigned long long), &flag));
        g_first_bad = (unsigned long long *)flag;
        QL_CUDA_TRY(
            cudaMemsetAsync(g_first_bad, 0xff, sizeof(unsigned long long), ql_cuda_stream()));
    }
    const int q = g_n_pending++;
    g_pending[q].targets = targets;
    g_pending[q].V = V;
    QL_LAUNCH((ql_cuda_grid(T, 256), 256, 0, ql_cuda_stream()), k_xent_check)
    (targets, T, V, (unsigned long long)q, g_first_bad);
    QL_CUDA_LAUNCHED();
    QL_LAUNCH(((unsigned)T, XENT_THREADS, 0, ql_cuda_stream()), k_xent)
    ((const ql_bf16 *)logits, targets, V, grad_scale, losses, (ql_bf16 *)dlogits);
    QL_CUDA_LAUNCHED();
    return QL_OK;
}
