/* Dequantization of 4-bit tiles: AVX2 decoding (cpu_avx2.h) where available,
 * otherwise a 256-entry byte -> two-floats table. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_avx2.h"
#include "kernels/cpu/cpu_dequant.h"

float ql_q4_block_absmax_cpu(const ql_q4 *w, int64_t b) {
    if (!w->double_quant) return w->absmax[b];
    return ql_dq_absmax(w->nested_map, w->absmax_q, w->nested_absmax, w->nested_offset, b);
}

void ql_q4_dequant_range_cpu(const ql_q4 *w, int64_t e0, int64_t e1, float *out) {
    if (!w->packed) { /* held in float32 (dense_upload) */
        memcpy(out, (const float *)w->dense + e0, (size_t)(e1 - e0) * sizeof(float));
        return;
    }
    float book[16];
    for (unsigned c = 0; c < 16; c++) book[c] = ql_q4_value(w->type, c);
#ifdef __AVX2__
    const __m256 lo = _mm256_loadu_ps(book), hi = _mm256_loadu_ps(book + 8);
#else
    float pair[256][2];
    for (unsigned b = 0; b < 256; b++) {
        pair[b][0] = book[b >> 4];
        pair[b][1] = book[b & 15];
    }
#endif
    const int64_t bs = w->blocksize;
    int64_t e = e0;
    while (e < e1) {
        int64_t b = e / bs;
        int64_t end = (b + 1) * bs < e1 ? (b + 1) * bs : e1;
        float a = ql_q4_block_absmax_cpu(w, b);
        if (e & 1) {
            out[e - e0] = book[ql_q4_nibble(w->packed, e)] * a;
            e++;
        }
#ifdef __AVX2__
        const __m256 amax = _mm256_set1_ps(a);
        for (; e + 16 <= end; e += 16) {
            __m256 w0, w1;
            ql_avx2_decode16(w->packed + (e >> 1), lo, hi, amax, &w0, &w1);
            _mm256_storeu_ps(out + (e - e0), w0);
            _mm256_storeu_ps(out + (e - e0) + 8, w1);
        }
#else
        for (; e + 2 <= end; e += 2) {
            const float *v = pair[w->packed[e >> 1]];
            out[e - e0] = v[0] * a;
            out[e - e0 + 1] = v[1] * a;
        }
#endif
        for (; e < end; e++) out[e - e0] = book[ql_q4_nibble(w->packed, e)] * a;
    }
}

/* Per-thread scratch lives in pthread-specific data so that its destructor
 * frees it when libgomp retires a worker (e.g. after omp_set_num_threads
 * lowers the count); a plain _Thread_local pointer would leak it. */
typedef struct scratch {
    float *p;
    size_t cap;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_destroy(void *v) {
    scratch *s = v;
    free(s->p);
    free(s);
}

static void scratch_key_init(void) {
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

float *ql_cpu_scratch(size_t floats) {
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok) {
        ql_error(QL_ENOMEM, "cpu backend: cannot create the thread-local tile buffer key");
        return NULL;
    }
    scratch *s = pthread_getspecific(scratch_key);
    if (s && floats <= s->cap) return s->p;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            ql_error(QL_ENOMEM, "cpu backend: out of memory for a tile buffer");
            return NULL;
        }
    }
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        ql_error(QL_ENOMEM, "cpu backend: out of memory for a %zu-byte tile buffer", bytes);
        return NULL;
    }
    free(s->p);
    s->p = p;
    s->cap = floats;
    return p;
}

/* Each tile is one sgemm call, and each call re-packs x (T·in floats), so
 * large T wants tall tiles; small T wants many tiles to keep threads busy. */
int64_t ql_cpu_fwd_tile_rows(int64_t T, int64_t in, int64_t out) {
    int64_t budget = T >= 64 ? (int64_t)1 << 21 : (int64_t)1 << 18;
    int64_t rows = budget / in / 16 * 16;
    int64_t spread = (out / 8 + 15) / 16 * 16; /* aim for at least 8 tiles */
    if (rows > spread) rows = spread;
    if (rows > 1024) rows = 1024;
    if (rows < 16) rows = 16;
    return rows;
}
