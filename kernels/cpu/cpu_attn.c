/* Fast causal attention: the reference's math in float32, in tiles of QB
 * query rows by KB keys so that every product runs eight lanes at a time
 * (kernels/cpu/cpu_v8.h), exp included.
 *
 * K and V are first copied transposed, one [head_dim, Sp] matrix per (batch,
 * kv head) with Sp = seq rounded up to KB and zeros past seq: a tile of
 * scores is then a sum over d of q[i][d] times eight adjacent keys, with no
 * horizontal sums. Masked scores are -inf before the exp, so masked
 * probabilities are exact zeros.
 *
 * Forward: a task per (batch, head, block of QB query rows): its scores
 * against every key it can see, the softmax of each row, P·V.
 * Backward, in two passes, so that every output element has one writer and
 * the bits do not depend on the thread count:
 *   - dq: a task per (batch, head, query block), over the key blocks;
 *   - dk, dv: a task per (batch, kv head, key block), over the group's heads
 *     and the query blocks that see the keys.
 * Both recompute a tile's P and dS with the same function (tile_grads), so
 * they agree; the price is the scores and dP computed twice. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_lanes.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_v8.h"

#ifdef __FMA__
#include <immintrin.h>
#endif

#define QB 16 /* query rows per tile */
#define KB 64 /* keys per tile; a multiple of 16 */

static inline ql_v8f fma8(ql_v8f a, ql_v8f b, ql_v8f c) {
#ifdef __FMA__
    return (ql_v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

/* out[r·ldo + c] = Σ_d a[r·lda + d] · bt[d·ldb + c], r < nr, c < KB. Rows
 * past nr repeat the last one (computed, not stored) so the loops stay fixed. */
static void tile_abt(const float *a, int64_t lda, int nr, const float *bt, int64_t ldb, int64_t D,
                     float *out, int64_t ldo) {
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const float *ar[4];
        for (int i = 0; i < 4; i++) ar[i] = a + (r0 + i < nr ? r0 + i : nr - 1) * lda;
        for (int c = 0; c < KB; c += 16) {
            ql_v8f acc[4][2] = {{{0}}};
            for (int64_t d = 0; d < D; d++) {
                ql_v8f b0 = ql_v8_load(bt + d * ldb + c), b1 = ql_v8_load(bt + d * ldb + c + 8);
                for (int i = 0; i < 4; i++) {
                    ql_v8f x = ql_v8_splat(ar[i][d]);
                    acc[i][0] = fma8(x, b0, acc[i][0]);
                    acc[i][1] = fma8(x, b1, acc[i][1]);
                }
            }
            for (int i = 0; i < 4 && r0 + i < nr; i++) {
                ql_v8_store(out + (r0 + i) * ldo + c, acc[i][0]);
                ql_v8_store(out + (r0 + i) * ldo + c + 8, acc[i][1]);
            }
        }
    }
}

/* acc[r·D + :D] += Σ_{c < nc} m[r·ldm + c] · y[c·ldy + :D], r < nr. */
static void tile_ab_acc(const float *m, int64_t ldm, int nr, int nc, const float *y, int64_t ldy,
                        int64_t D, float *acc) {
    const int64_t D8 = D & ~(int64_t)7;
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const float *mr[4];
        for (int i = 0; i < 4; i++) mr[i] = m + (r0 + i < nr ? r0 + i : nr - 1) * ldm;
        for (int64_t d = 0; d < D8; d += 8) {
            ql_v8f s[4];
            for (int i = 0; i < 4; i++)
                s[i] = ql_v8_load(acc + (r0 + (r0 + i < nr ? i : 0)) * D + d);
            for (int c = 0; c < nc; c++) {
                ql_v8f v = ql_v8_load(y + c * ldy + d);
                for (int i = 0; i < 4; i++) s[i] = fma8(ql_v8_splat(mr[i][c]), v, s[i]);
            }
            for (int i = 0; i < 4 && r0 + i < nr; i++) ql_v8_store(acc + (r0 + i) * D + d, s[i]);
        }
        for (int i = 0; i < 4 && r0 + i < nr; i++)
            for (int64_t d = D8; d < D; d++) {
                float s = acc[(r0 + i) * D + d];
                for (int c = 0; c < nc; c++) s += mr[i][c] * y[c * ldy + d];
                acc[(r0 + i) * D + d] = s;
            }
    }
}

/* acc[c·D + :D] += Σ_{r < nr} m[r·ldm + c] · x[r·ldx + :D], c < nc. */
static void tile_atb_acc(const float *m, int64_t ldm, int nr, int nc, const float *x, int64_t ldx,
                         int64_t D, float *acc) {
    const int64_t D8 = D & ~(int64_t)7;
    for (int c0 = 0; c0 < nc; c0 += 4) {
        int cols[4];
        for (int i = 0; i < 4; i++) cols[i] = c0 + i < nc ? c0 + i : nc - 1;
        for (int64_t d = 0; d < D8; d += 8) {
            ql_v8f s[4];
            for (int i = 0; i < 4; i++) s[i] = ql_v8_load(acc + cols[i] * D + d);
            for (int r = 0; r < nr; r++) {
                ql_v8f v = ql_v8_load(x + r * ldx + d);
                for (int i = 0; i < 4; i++) s[i] = fma8(ql_v8_splat(m[r * ldm + cols[i]]), v, s[i]);
            }
            for (int i = 0; i < 4 && c0 + i < nc; i++) ql_v8_store(acc + (c0 + i) * D + d, s[i]);
        }
        for (int i = 0; i < 4 && c0 + i < nc; i++)
            for (int64_t d = D8; d < D; d++) {
                float s = acc[(c0 + i) * D + d];
                for (int r = 0; r < nr; r++) s += m[r * ldm + c0 + i] * x[r * ldx + d];
                acc[(c0 + i) * D + d] = s;
            }
    }
}

/* row[c] = row[c]·scale - sub where query i sees key j0 + c, else -inf,
 * for c < n. Keys past seq are past every query, so the causal test covers
 * them and doc_row is never read there. */
static void scale_and_mask(float *row, int64_t j0, int64_t n, int64_t i, const int32_t *doc_row,
                           float scale, float sub) {
    int64_t seen = i - j0 + 1 < n ? i - j0 + 1 : n; /* the causal limit */
    if (seen < 0) seen = 0;
    for (int64_t c = 0; c < seen; c++) row[c] = row[c] * scale - sub;
    for (int64_t c = seen; c < n; c++) row[c] = -INFINITY;
    if (doc_row)
        for (int64_t c = 0; c < seen; c++)
            if (doc_row[j0 + c] != doc_row[i]) row[c] = -INFINITY;
}

/* What both attention functions share about one call. */
typedef struct attn_dims {
    int64_t S, Sp, D, H, KV, group, nqb, nkb;
    float scale;
} attn_dims;

static attn_dims dims_of(const ql_attn_shape *s) {
    attn_dims d = {.S = s->seq, .D = s->head_dim, .H = s->n_heads, .KV = s->n_kv_heads};
    d.Sp = (d.S + KB - 1) / KB * KB;
    d.group = d.H / d.KV;
    d.nqb = (d.S + QB - 1) / QB;
    d.nkb = d.Sp / KB;
    d.scale = (float)(1.0 / sqrt((double)d.D));
    return d;
}

/* xt[(b·KV + g)·D·Sp + d·Sp + j] = x[b, j, g, d], zero for j >= seq. */
static float *transpose_kv(const float *x, int64_t B, const attn_dims *a) {
    float *xt = malloc((size_t)(B * a->KV * a->D * a->Sp) * sizeof(float));
    if (!xt) return NULL;
#pragma omp parallel for schedule(static)
    for (int64_t bg = 0; bg < B * a->KV; bg++) {
        int64_t b = bg / a->KV, g = bg % a->KV;
        float *t = xt + bg * a->D * a->Sp;
        for (int64_t d = 0; d < a->D; d++) {
            for (int64_t j = 0; j < a->S; j++)
                t[d * a->Sp + j] = x[((b * a->S + j) * a->KV + g) * a->D + d];
            for (int64_t j = a->S; j < a->Sp; j++) t[d * a->Sp + j] = 0.0f;
        }
    }
    return xt;
}

ql_status ql_attn_fwd_cpu(const ql_act *q_, const ql_act *k_, const ql_act *v_, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *out_, float *lse) {
    ql_attn_check_shape(s);
    const float *q = q_, *v = v_;
    float *out = out_;
    const attn_dims a = dims_of(s);
    const int64_t S = a.S, D = a.D, H = a.H, KV = a.KV;
    float *kt = transpose_kv(k_, s->batch, &a);
    if (!kt) return ql_error(QL_ENOMEM, "cpu attn_fwd: out of memory");
    int failed = 0;
#pragma omp parallel
    {
        float *sc = malloc((size_t)(QB * a.Sp) * sizeof(float)); /* a block's score rows */
        float *acc = malloc((size_t)(QB * D) * sizeof(float));
        if (!sc || !acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < s->batch * H * a.nqb; task++) {
            if (!sc || !acc) continue;
            int64_t b = task / (H * a.nqb), h = task / a.nqb % H, i0 = task % a.nqb * QB;
            int64_t g = h / a.group;
            int nr = (int)(S - i0 < QB ? S - i0 : QB);
            int64_t jend = i0 + nr; /* keys any row of the block sees */
            int64_t nkb = (jend + KB - 1) / KB;
            const int32_t *doc_row = doc ? doc + b * S : NULL;
            const float *qb = q + ((b * S + i0) * H + h) * D;
            const float *ktg = kt + (b * KV + g) * D * a.Sp;
            for (int64_t kb = 0; kb < nkb; kb++)
                tile_abt(qb, H * D, nr, ktg + kb * KB, a.Sp, D, sc + kb * KB, a.Sp);
            float inv[QB];
            for (int r = 0; r < nr; r++) {
                float *row = sc + r * a.Sp;
                int64_t i = i0 + r, n = nkb * KB;
                scale_and_mask(row, 0, n, i, doc_row, a.scale, 0.0f);
                ql_v8f mx8 = ql_v8_splat(-INFINITY);
                for (int64_t j = 0; j < n; j += 8) mx8 = ql_v8_max(mx8, ql_v8_load(row + j));
                float mx = ql_v8_hmax(mx8); /* finite: key i is always seen */
                ql_v8f sum8 = ql_v8_splat(0.0f);
                for (int64_t j = 0; j < n; j += 8) {
                    ql_v8f e = ql_v8_exp(ql_v8_load(row + j) - mx);
                    ql_v8_store(row + j, e);
                    sum8 += e;
                }
                float sum = ql_v8_total(sum8);
                lse[(b * H + h) * S + i] = mx + logf(sum);
                inv[r] = 1.0f / sum;
            }
            memset(acc, 0, (size_t)(nr * D) * sizeof(float));
            const float *vg = v + (b * S * KV + g) * D;
            for (int64_t kb = 0; kb < nkb; kb++) {
                int nc = (int)(S - kb * KB < KB ? S - kb * KB : KB);
                tile_ab_acc(sc + kb * KB, a.Sp, nr, nc, vg + kb * KB * KV * D, KV * D, D, acc);
            }
            for (int r = 0; r < nr; r++) {
                float *o = out + ((b * S + i0 + r) * H + h) * D;
                for (int64_t d = 0; d < D; d++) o[d] = acc[r * D + d] * inv[r];
            }
        }
        free(sc);
        free(acc);
    }
    free(kt);
    return failed ? ql_error(QL_ENOMEM, "cpu attn_fwd: out of memory") : QL_OK;
}

/* The tensors of one backward call, and the transposed K and V. */
typedef struct attn_bwd_args {
    attn_dims a;
    const float *dout, *q, *k, *v, *out, *lse, *kt, *vt;
    const int32_t *doc;
} attn_bwd_args;

/* For query rows i0.. (nr of them) of head h in batch row b against keys
 * j0..j0+KB-1: p = exp(s·scale - lse) and ds = p·(dout·v - dout·out), row
 * stride KB, zero where masked. tmp holds KB·QB floats. */
static void tile_grads(const attn_bwd_args *x, int64_t b, int64_t h, int64_t i0, int nr, int64_t j0,
                       float *p, float *ds, float *tmp) {
    const attn_dims *a = &x->a;
    const int64_t S = a->S, D = a->D, H = a->H, g = h / a->group;
    const int64_t off = ((b * S + i0) * H + h) * D, kvoff = (b * a->KV + g) * D * a->Sp + j0;
    const int32_t *doc_row = x->doc ? x->doc + b * S : NULL;
    tile_abt(x->q + off, H * D, nr, x->kt + kvoff, a->Sp, D, p, KB);
    tile_abt(x->dout + off, H * D, nr, x->vt + kvoff, a->Sp, D, tmp, KB);
    for (int r = 0; r < nr; r++) {
        int64_t i = i0 + r;
        float l = x->lse[(b * H + h) * S + i];
        float di = ql_dot_lanes(x->dout + off + r * H * D, x->out + off + r * H * D, D);
        float *pr = p + r * KB, *dsr = ds + r * KB, *dpr = tmp + r * KB;
        scale_and_mask(pr, j0, KB, i, doc_row, a->scale, l);
        for (int c = 0; c < KB; c += 8) {
            ql_v8f e = ql_v8_exp(ql_v8_load(pr + c));
            ql_v8_store(pr + c, e);
            ql_v8_store(dsr + c, e * (ql_v8_load(dpr + c) - di));
        }
    }
}

ql_status ql_attn_bwd_cpu(const ql_act *dout_, const ql_act *q_, const ql_act *k_, const ql_act *v_,
                          const ql_act *out_, const float *lse, const int32_t *doc,
                          const ql_attn_shape *s, ql_act *dq_, ql_act *dk_, ql_act *dv_) {
    ql_attn_check_shape(s);
    attn_bwd_args x = {.a = dims_of(s),
                       .dout = dout_,
                       .q = q_,
                       .k = k_,
                       .v = v_,
                       .out = out_,
                       .lse = lse,
                       .doc = doc};
    const attn_dims *a = &x.a;
    const int64_t S = a->S, D = a->D, H = a->H, KV = a->KV, B = s->batch;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    float *kt = transpose_kv(x.k, B, a), *vt = transpose_kv(x.v, B, a);
    x.kt = kt, x.vt = vt;
    if (!kt || !vt) {
        free(kt);
        free(vt);
        return ql_error(QL_ENOMEM, "cpu attn_bwd: out of memory");
    }
    int failed = 0;
#pragma omp parallel
    {
        float *p = malloc((size_t)(3 * QB * KB) * sizeof(float));
        float *acc = malloc((size_t)(2 * KB * D) * sizeof(float));
        if (!p || !acc) {
#pragma omp atomic write
            failed = 1;
        }
        float *ds = p ? p + QB * KB : NULL, *tmp = p ? p + 2 * QB * KB : NULL;
        /* dq: each query block over the key blocks it sees. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * H * a->nqb; task++) {
            if (!p || !acc) continue;
            int64_t b = task / (H * a->nqb), h = task / a->nqb % H, i0 = task % a->nqb * QB;
            int64_t g = h / a->group;
            int nr = (int)(S - i0 < QB ? S - i0 : QB);
            memset(acc, 0, (size_t)(nr * D) * sizeof(float));
            for (int64_t j0 = 0; j0 < i0 + nr; j0 += KB) {
                tile_grads(&x, b, h, i0, nr, j0, p, ds, tmp);
                int nc = (int)(S - j0 < KB ? S - j0 : KB);
                tile_ab_acc(ds, KB, nr, nc, x.k + ((b * S + j0) * KV + g) * D, KV * D, D, acc);
            }
            for (int r = 0; r < nr; r++) {
                float *dqr = dq + ((b * S + i0 + r) * H + h) * D;
                for (int64_t d = 0; d < D; d++) dqr[d] = acc[r * D + d] * a->scale;
            }
        }
        /* dk, dv: each key block over the group's heads and the query blocks
         * that see it. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * KV * a->nkb; task++) {
            if (!p || !acc) continue;
            int64_t b = task / (KV * a->nkb), g = task / a->nkb % KV, j0 = task % a->nkb * KB;
            int nc = (int)(S - j0 < KB ? S - j0 : KB);
            float *dka = acc, *dva = acc + KB * D;
            memset(acc, 0, (size_t)(2 * KB * D) * sizeof(float));
            for (int64_t h = g * a->group; h < (g + 1) * a->group; h++)
                for (int64_t i0 = j0 / QB * QB; i0 < S; i0 += QB) {
                    int nr = (int)(S - i0 < QB ? S - i0 : QB);
                    tile_grads(&x, b, h, i0, nr, j0, p, ds, tmp);
                    const int64_t off = ((b * S + i0) * H + h) * D;
                    tile_atb_acc(p, KB, nr, nc, x.dout + off, H * D, D, dva);
                    tile_atb_acc(ds, KB, nr, nc, x.q + off, H * D, D, dka);
                }
            for (int c = 0; c < nc; c++) {
                int64_t row = ((b * S + j0 + c) * KV + g) * D;
                for (int64_t d = 0; d < D; d++) {
                    dk[row + d] = dka[c * D + d] * a->scale;
                    dv[row + d] = dva[c * D + d];
                }
            }
        }
        free(p);
        free(acc);
    }
    free(kt);
    free(vt);
    return failed ? ql_error(QL_ENOMEM, "cpu attn_bwd: out of memory") : QL_OK;
}

/* Generation's attention over a cache: a task per (row, head), each with its
 * scores in one pass over the keys it sees, in key order (so the bits do not
 * depend on the thread count or on which rows share the call). */
ql_status ql_attn_cached_fwd_cpu(const ql_act *q_, const ql_act *k_, const ql_act *v_, int64_t T,
                                 int64_t pos0, const ql_attn_shape *s, ql_act *out_) {
    QL_ASSERT(T > 0 && pos0 >= 0 && s->head_dim > 0 && s->n_kv_heads > 0 &&
              s->n_heads % s->n_kv_heads == 0);
    const float *q = q_, *k = k_, *v = v_;
    float *out = out_;
    const int64_t H = s->n_heads, D = s->head_dim, group = s->n_heads / s->n_kv_heads;
    const int64_t qdim = H * D, kvdim = s->n_kv_heads * D;
    const float scale = 1.0f / sqrtf((float)D);
    int failed = 0;
#pragma omp parallel
    {
        float *sc = malloc((size_t)(pos0 + T) * sizeof(float));
        if (!sc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t th = 0; th < T * H; th++) {
            if (!sc) continue;
            const int64_t t = th / H, h = th % H, n = pos0 + t + 1, kh = (h / group) * D;
            const float *qr = q + t * qdim + h * D;
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                sc[j] = ql_dot_lanes(qr, k + j * kvdim + kh, D) * scale;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int64_t j = 0; j < n; j++) sc[j] -= mx;
            ql_exp_f32(sc, sc, n);
            float acc[QL_LANES] = {0};
            ql_lanes_add(acc, sc, n);
            const float inv = 1.0f / ql_lanes_total(acc);
            float *o = out + t * qdim + h * D;
            memset(o, 0, (size_t)D * sizeof(float));
            for (int64_t j = 0; j < n; j++) {
                const float w = sc[j] * inv, *vr = v + j * kvdim + kh;
                for (int64_t e = 0; e < D; e++) o[e] += w * vr[e];
            }
        }
        free(sc);
    }
    if (failed) return ql_error(QL_ENOMEM, "cpu attn_cached_fwd: out of memory for the scores");
    return QL_OK;
}
