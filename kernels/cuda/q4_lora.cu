/* 4-bit linear layers with LoRA on CUDA: the op table's q4_dequantize,
 * q4_lora_fwd and q4_lora_bwd.
 *
 * LoRA A and B are fp32 master weights; the products use bf16 copies made at
 * each call (r·in and out·r elements: small), padded with zeros to
 * rpad = r rounded up to 16, and fp32 accumulation. The copies a call needs
 * before its first product are made by one launch (ql_cuda_f32_to_bf16_pad_n):
 * at small shapes a LoRA call is launch-bound.
 *
 * Forward:
 *   xa = x'·Aᵀ (fp32 out); x' = x ⊙ mask with drop.scale as alpha: cuBLASLt
 *        without dropout, under it lora_skinny.cu's kernel, which applies
 *        the mask as it reads x (x' is never written)
 *   E = bf16(s·xa) [T, rpad]
 *   y = [x | E]·[W | B]ᵀ in one GEMM
 * Backward:
 *   G = dy·B (fp32), E = bf16(s·G)
 *   dx = [dy | E]·[W ; A] in one GEMM; under dropout the E·A part is kept
 *        apart and added only where the mask kept x, times drop.scale
 *   dA += drop.scale · Eᵀ·x',   dB += s · dyᵀ·bf16(xa)   (cuBLASLt, beta = 1;
 *        dA under dropout by lora_skinny.cu, the mask applied as x is read)
 *
 * "One GEMM" is, by ql_cuda_q4_path_for(T) (kernels/cuda_q4_path.c):
 *   fused    the kernel of q4_gemm.cu, W decoded tile by tile in its main loop;
 *   dequant  W dequantized to bf16 into a matrix laid out as
 *
 *                     in     rpad
 *                  [  W   |  B  ]  out       row stride in + rpad
 *                  [  A   |     ]  rpad
 *
 *            B's bf16 columns beside W for the forward's [W | B], A's rows
 *            below it for the backward's [W ; A]; the activations copied
 *            beside E the same way, then one cuBLASLt GEMM. Both round once,
 *            from fp32. The matrix is scratch, or the weight's own copy when
 *            the model keeps one (ql_cuda_q4_keep_dequantized): then there is
 *            no dequantize pass, and the GEMMs are the same calls on the same
 *            layout, so the same bits.
 * Under dropout the dequant path's dx is dy·W in fp32 scratch, then the
 * masked E·A term summed and added, one rounding, in ql_cuda_lora_dx_dropout.
 * The mask is never stored: the kernels that apply it draw it from its seed
 * (kernels/dropout.h).
 *
 * A weight held in bf16 only (ql_cuda_dense_upload: packed NULL; quant.type
 * none, --base-weights original) has its matrix in that layout from the
 * start: every call takes the dequant path and reads it, with no dequantize
 * pass; a call without LoRA reads its W block at the layout's row stride. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_ops.h"

extern "C" ql_status ql_q4_dequantize_cuda(const ql_q4 *w, ql_act *out) {
    if (!w->packed && w->dense) { /* bf16 already: W's block of the layout */
        QL_CUDA_TRY(cudaMemcpy2DAsync(out, (size_t)w->cols * sizeof(ql_bf16), w->dense,
                                      (size_t)(w->cols + w->dense_pad) * sizeof(ql_bf16),
                                      (size_t)w->cols * sizeof(ql_bf16), (size_t)w->rows,
                                      cudaMemcpyDeviceToDevice, ql_cuda_stream()));
        return QL_OK;
    }
    return ql_cuda_q4_dequantize(w, QL_DT_BF16, out, ql_cuda_stream());
}

static int lora_rank(const ql_lora *l) { return l && l->r > 0 ? l->r : 0; }
static int64_t pad16(int64_t r) { return (r + 15) / 16 * 16; }

/* Typed scratch of n elements of size esz. */
template <typename T> static ql_status scratch(int slot, int64_t n, T **out) {
    void *p;
    QL_TRY(ql_cuda_scratch(slot, (size_t)n * sizeof(T), &p));
    *out = (T *)p;
    return QL_OK;
}

/* The conversion of A to bf16 [rpad, in] at dst (row stride ldd), rows r..
 * zero. */
static ql_cuda_pad_job a_job(const ql_lora *l, int64_t in, int64_t rpad, ql_bf16 *dst,
                             int64_t ldd) {
    return ql_cuda_pad_job{l->A, l->r, in, in, 1.0f, dst, rpad, in, ldd};
}

/* The conversion of B to bf16 [out, rpad] at dst (row stride ldd), columns
 * r.. zero. */
static ql_cuda_pad_job b_job(const ql_lora *l, int64_t out, int64_t rpad, ql_bf16 *dst,
                             int64_t ldd) {
    return ql_cuda_pad_job{l->B, out, l->r, l->r, 1.0f, dst, out, rpad, ldd};
}

/* The dequant path's matrix for w (the layout above; rpad 0 without LoRA):
 * the weight's kept copy when its layout is this one, else scratch that
 * *need_dequant says W must still be written into. *wpad: the matrix's own
 * padding (its rows are w->cols + *wpad apart), which is rpad except for a
 * bf16-only weight laid out for LoRA and called without it. */
static ql_status dense_w(const ql_q4 *w, int64_t rpad, ql_bf16 **Wb, bool *need_dequant,
                         int64_t *wpad) {
    *wpad = rpad;
    *Wb = NULL;
    *need_dequant = false;
    if (w->dense && (w->dense_pad == rpad || (!w->packed && rpad == 0))) {
        *Wb = (ql_bf16 *)w->dense;
        *need_dequant = false;
        *wpad = w->dense_pad;
        return QL_OK;
    }
    if (!w->packed)
        return ql_error(QL_EINTERNAL,
                        "a bf16 weight laid out for LoRA padding %lld called with padding %lld",
                        (long long)w->dense_pad, (long long)rpad);
    *need_dequant = true;
    return scratch(QL_SCRATCH_DEQUANT, (w->rows + rpad) * (w->cols + rpad), Wb);
}

static ql_status dequant_into(const ql_q4 *w, ql_bf16 *Wb, int64_t ld, bool need) {
    if (!need) return QL_OK;
    return ql_cuda_q4_timed(QL_Q4_PHASE_DEQUANT, [&] {
        return ql_cuda_q4_dequantize_ld(w, QL_DT_BF16, Wb, ld, ql_cuda_stream());
    });
}

extern "C" ql_status ql_cuda_dense_upload(const float *host_w, int64_t rows, int64_t cols,
                                          int64_t r, ql_q4 *dst) {
    memset(dst, 0, sizeof *dst);
    if (rows <= 0 || cols <= 0 || r < 0 || rows > (int64_t)(SIZE_MAX / sizeof(float)) / cols)
        return ql_error(QL_EINVAL, "bf16 weight on CUDA: shape [%lld, %lld], LoRA rank %lld",
                        (long long)rows, (long long)cols, (long long)r);
    const int64_t rpad = r ? pad16(r) : 0;
    const size_t f32_bytes = (size_t)(rows * cols) * sizeof(float),
                 bytes = (size_t)ql_q4_dense_elems(rows, cols, r) * sizeof(ql_bf16);
    void *staging = NULL, *p = NULL;
    ql_status st = ql_cuda_malloc(f32_bytes, &staging);
    if (st == QL_OK) st = ql_cuda_upload(staging, host_w, f32_bytes);
    if (st == QL_OK) st = ql_cuda_malloc(bytes, &p);
    /* W's block; the B columns and A rows beside it are the calls' to write. */
    if (st == QL_OK)
        st = ql_cuda_f32_to_bf16_pad((const float *)staging, rows, cols, cols, 1.0f, (ql_bf16 *)p,
                                     cols, cols + rpad);
    if (st == QL_OK) st = ql_cuda_sync();
    ql_cuda_free(staging);
    if (st != QL_OK) {
        ql_cuda_free(p);
        return ql_error_wrap(st,
                             "a [%lld, %lld] weight in bf16 on CUDA (%zu bytes): ", (long long)rows,
                             (long long)cols, bytes);
    }
    dst->rows = rows;
    dst->cols = cols;
    dst->n = rows * cols;
    dst->dense = p;
    dst->dense_pad = rpad;
    return QL_OK;
}

extern "C" ql_status ql_cuda_q4_keep_dequantized(ql_q4 *w, int64_t r) {
    if (!w->packed)
        return ql_error(QL_EINTERNAL, "keeping a dequantized copy of a weight held in bf16");
    if (r < 0)
        return ql_error(QL_EINVAL, "keeping a dequantized 4-bit weight: LoRA rank %lld",
                        (long long)r);
    const int64_t rpad = r ? pad16(r) : 0, ld = w->cols + rpad;
    ql_cuda_free(w->dense);
    w->dense = NULL;
    w->dense_pad = 0;
    void *p = NULL;
    const size_t bytes = (size_t)ql_q4_dense_elems(w->rows, w->cols, r) * sizeof(ql_bf16);
    ql_status st = ql_cuda_malloc(bytes, &p);
    if (st != QL_OK)
        return ql_error_wrap(st, "keeping a [%lld, %lld] 4-bit weight dequantized (%zu bytes): ",
                             (long long)w->rows, (long long)w->cols, bytes);
    st = ql_cuda_q4_dequantize_ld(w, QL_DT_BF16, p, ld, ql_cuda_stream());
    if (st != QL_OK) {
        ql_cuda_free(p);
        return st;
    }
    w->dense = p;
    w->dense_pad = rpad;
    return QL_OK;
}

extern "C" ql_status ql_cuda_q4_lend_dequantized(ql_q4 *w, int64_t r, void *buf) {
    if (!buf) {
        w->dense = NULL;
        w->dense_pad = 0;
        return QL_OK;
    }
    if (r < 0)
        return ql_error(QL_EINVAL, "lending a dequantized 4-bit weight: LoRA rank %lld",
                        (long long)r);
    if (w->dense)
        return ql_error(QL_EINTERNAL, "lending a dequantized copy to a 4-bit weight that has one");
    const int64_t rpad = r ? pad16(r) : 0;
    QL_TRY(dequant_into(w, (ql_bf16 *)buf, w->cols + rpad, true));
    w->dense = buf;
    w->dense_pad = rpad;
    return QL_OK;
}

/* Whether the products reading x' apply the mask as they read x
 * (lora_skinny.cu): under dropout, where the kernels take the shapes. Else
 * x' is written to scratch for cuBLASLt. Without dropout cuBLASLt reads x
 * once already. */
static bool skinny(const ql_lora *l, const ql_bf16 *x, int64_t in) {
    return l->drop.on && ql_cuda_lora_skinny_ok(in, pad16(l->r)) && ((uintptr_t)x & 15u) == 0;
}

/* The LoRA branch's input x' (x ⊙ mask, exact in bf16) and the factor
 * drop.scale that the products using it take as alpha. */
static ql_status lora_input(const ql_lora *l, const ql_bf16 *x, int64_t T, int64_t in,
                            const ql_bf16 **xin, float *alpha) {
    *xin = x;
    *alpha = 1.0f;
    if (!l->drop.on) return QL_OK;
    ql_bf16 *xm;
    QL_TRY(scratch(QL_SCRATCH_XDROP, T * in, &xm));
    QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_DROPOUT,
                            [&] { return ql_cuda_dropout_bf16(x, &l->drop, T * in, xm); }));
    *xin = xm;
    *alpha = l->drop.scale;
    return QL_OK;
}

/* cat[T, k + rpad] = [a | ·]: a [T, k] copied into the left columns; the
 * caller writes the right ones. */
static ql_status concat_left(const ql_bf16 *a, int64_t T, int64_t k, int64_t rpad, ql_bf16 **cat) {
    QL_TRY(scratch(QL_SCRATCH_CONCAT, T * (k + rpad), cat));
    ql_bf16 *dst = *cat;
    return ql_cuda_q4_timed(QL_Q4_PHASE_CONCAT, [&]() -> ql_status {
        QL_CUDA_TRY(cudaMemcpy2DAsync(dst, (size_t)(k + rpad) * sizeof(ql_bf16), a,
                                      (size_t)k * sizeof(ql_bf16), (size_t)k * sizeof(ql_bf16),
                                      (size_t)T, cudaMemcpyDeviceToDevice, ql_cuda_stream()));
        return QL_OK;
    });
}

/* ---------------------------------------------------------------------------------- forward */

static ql_status lora_fwd(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, int64_t T,
                          ql_act *y_, float *xa) {
    const ql_bf16 *x = (const ql_bf16 *)x_;
    ql_bf16 *y = (ql_bf16 *)y_;
    const int64_t in = w->cols, out = w->rows;
    const int r = lora_rank(lora);
    const int64_t rpad = pad16(r);
    if (T <= 0) return QL_OK;
    const bool fused = w->packed && ql_cuda_q4_path_for(T) == QL_CUDA_Q4_FUSED;
    ql_cuda_q4_note_path(fused ? QL_CUDA_Q4_FUSED : QL_CUDA_Q4_DEQUANT_BLAS);

    /* The dequant path's W [out, in] (row stride K, B's columns beside it). */
    const int64_t K = in + (r ? rpad : 0);
    ql_bf16 *Wb = NULL, *Bb = NULL;
    bool need_dequant = false;
    int64_t wpad = 0;
    if (!fused) QL_TRY(dense_w(w, r ? rpad : 0, &Wb, &need_dequant, &wpad));
    if (r) {
        const ql_bf16 *xin;
        float alpha;
        ql_bf16 *Ab;
        QL_TRY(scratch(QL_SCRATCH_LORA_A, rpad * in, &Ab));
        if (fused) QL_TRY(scratch(QL_SCRATCH_LORA_B, out * rpad, &Bb));
        const ql_cuda_pad_job jobs[2] = {a_job(lora, in, rpad, Ab, in),
                                         fused ? b_job(lora, out, rpad, Bb, rpad)
                                               : b_job(lora, out, rpad, Wb + in, K)};
        QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_CONVERT,
                                [&] { return ql_cuda_f32_to_bf16_pad_n(jobs, 2); }));
        if (skinny(lora, x, in)) {
            QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_LORA_GEMM, [&] {
                return ql_cuda_lora_xa(x, Ab, rpad, r, &lora->drop, lora->drop.scale, T, in, xa);
            }));
        } else {
            QL_TRY(lora_input(lora, x, T, in, &xin, &alpha));
            /* xa[T, r] = alpha · x'·Aᵀ, A stored [N = r, K = in]. */
            QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_LORA_GEMM, [&] {
                return ql_cuda_gemm(T, r, in, alpha, xin, in, 0, Ab, in, 1, 0.0f, xa, QL_DT_F32, r);
            }));
        }
    }

    if (fused) {
        ql_bf16 *E = NULL;
        if (r) {
            QL_TRY(scratch(QL_SCRATCH_LORA_T, T * rpad, &E));
            QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_CONVERT, [&] {
                return ql_cuda_f32_to_bf16_pad(xa, T, r, r, lora->scale, E, rpad, rpad);
            }));
        }
        ql_q4_gemm_args a;
        memset(&a, 0, sizeof a);
        a.w = w;
        a.kn = 0;
        a.M = T;
        a.X = x;
        a.ldx = in;
        a.E = E;
        a.lde = rpad;
        a.F = Bb;
        a.ldf = rpad;
        a.Ke = r ? rpad : 0;
        a.C = y;
        a.ldc = out;
        return ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] { return ql_cuda_q4_gemm(&a); });
    }

    /* y = [x | E]·[W | B]ᵀ: W beside the B columns already written. */
    QL_TRY(dequant_into(w, Wb, K, need_dequant));
    if (!r)
        return ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] {
            return ql_cuda_gemm(T, out, in, 1.0f, x, in, 0, Wb, in + wpad, 1, 0.0f, y, QL_DT_BF16,
                                out);
        });
    ql_bf16 *cat;
    QL_TRY(concat_left(x, T, in, rpad, &cat));
    QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_CONVERT, [&] {
        return ql_cuda_f32_to_bf16_pad(xa, T, r, r, lora->scale, cat + in, rpad, K);
    }));
    return ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] {
        return ql_cuda_gemm(T, out, K, 1.0f, cat, K, 0, Wb, K, 1, 0.0f, y, QL_DT_BF16, out);
    });
}

extern "C" ql_status ql_q4_lora_fwd_cuda(const ql_q4 *w, const ql_lora *lora, const ql_act *x,
                                         int64_t T, ql_act *y, float *xa) {
    const ql_status st = lora_fwd(w, lora, x, T, y, xa);
    return st == QL_OK ? ql_cuda_q4_phases_flush() : st;
}

/* --------------------------------------------------------------------------------- backward */

/* dx without LoRA, or with it and no dropout, on the dequant path:
 * dx = [dy | E]·[W ; A], E already in cat's right columns and A's bf16 rows
 * already below W's in Wb (row stride in + rpad; Wb NULL without LoRA). */
static ql_status dx_dequant(const ql_q4 *w, int r, const ql_bf16 *dy, const ql_bf16 *cat,
                            ql_bf16 *Wb, bool need_dequant, int64_t rpad, int64_t T, ql_bf16 *dx) {
    const int64_t in = w->cols, out = w->rows, K = out + (r ? rpad : 0);
    int64_t wpad = r ? rpad : 0;
    if (!r) QL_TRY(dense_w(w, 0, &Wb, &need_dequant, &wpad));
    const int64_t ldw = in + wpad;
    QL_TRY(dequant_into(w, Wb, ldw, need_dequant));
    return ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] {
        if (!r)
            return ql_cuda_gemm(T, in, out, 1.0f, dy, out, 0, Wb, ldw, 0, 0.0f, dx, QL_DT_BF16, in);
        return ql_cuda_gemm(T, in, K, 1.0f, cat, K, 0, Wb, ldw, 0, 0.0f, dx, QL_DT_BF16, in);
    });
}

/* dx under dropout on the dequant path: dy·W in fp32, then E·A added where
 * the mask kept x (times drop.scale) and one rounding, in one kernel
 * (ql_cuda_lora_dx_dropout). Ab: A in bf16 [rpad, in]. */
static ql_status dx_dequant_dropout(const ql_q4 *w, const ql_lora *lora, const ql_bf16 *Ab,
                                    const ql_bf16 *dy, const ql_bf16 *E, int64_t lde, int64_t T,
                                    ql_bf16 *dx) {
    const int64_t in = w->cols, out = w->rows, rpad = pad16(lora->r), ldw = in + rpad;
    ql_bf16 *Wb = NULL;
    bool need_dequant = false;
    int64_t wpad;
    float *acc;
    QL_TRY(dense_w(w, rpad, &Wb, &need_dequant, &wpad)); /* wpad == rpad with LoRA */
    QL_TRY(dequant_into(w, Wb, ldw, need_dequant));
    QL_TRY(scratch(QL_SCRATCH_F32_OUT, T * in, &acc));
    QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] {
        return ql_cuda_gemm(T, in, out, 1.0f, dy, out, 0, Wb, ldw, 0, 0.0f, acc, QL_DT_F32, in);
    }));
    return ql_cuda_q4_timed(QL_Q4_PHASE_DROPOUT, [&] {
        return ql_cuda_lora_dx_dropout(acc, E, lde, Ab, lora->r, &lora->drop, T, in, dx);
    });
}

static ql_status lora_bwd(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, const float *xa,
                          const ql_act *dy_, int64_t T, ql_act *dx_, float *dA, float *dB) {
    const ql_bf16 *x = (const ql_bf16 *)x_, *dy = (const ql_bf16 *)dy_;
    ql_bf16 *dx = (ql_bf16 *)dx_;
    const int64_t in = w->cols, out = w->rows;
    const int r = lora_rank(lora);
    const int64_t rpad = pad16(r);
    if (T <= 0) return QL_OK;
    const bool fused = w->packed && ql_cuda_q4_path_for(T) == QL_CUDA_Q4_FUSED;
    const bool drop = r && lora->drop.on;
    ql_cuda_q4_note_path(fused ? QL_CUDA_Q4_FUSED : QL_CUDA_Q4_DEQUANT_BLAS);

    /* E = bf16(s·dy·B) [T, rpad], row stride lde: the right columns of
     * [dy | E] where the dequant path's one GEMM reads it, else its own.
     * Ab: A in bf16 where dx's product reads it (below W for that GEMM);
     * xab: bf16(xa) for dB. */
    ql_bf16 *E = NULL, *cat = NULL, *Wb = NULL, *Ab = NULL, *xab = NULL;
    bool need_dequant = false;
    int64_t lde = rpad;
    if (r) {
        ql_bf16 *Bb;
        float *G;
        QL_TRY(scratch(QL_SCRATCH_LORA_B, out * rpad, &Bb));
        QL_TRY(scratch(QL_SCRATCH_LORA_XA, T * rpad, &xab));
        ql_cuda_pad_job jobs[3] = {b_job(lora, out, rpad, Bb, rpad),
                                   {xa, T, r, r, 1.0f, xab, T, rpad, rpad}};
        int n_jobs = 2;
        if (dx) {
            if (fused || drop) {
                QL_TRY(scratch(QL_SCRATCH_LORA_A, rpad * in, &Ab));
                jobs[n_jobs++] = a_job(lora, in, rpad, Ab, in);
            } else {
                int64_t wpad;
                QL_TRY(dense_w(w, rpad, &Wb, &need_dequant, &wpad));
                Ab = Wb + out * (in + rpad);
                jobs[n_jobs++] = a_job(lora, in, rpad, Ab, in + rpad);
            }
        }
        QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_CONVERT,
                                [&] { return ql_cuda_f32_to_bf16_pad_n(jobs, n_jobs); }));
        /* G[T, rpad] = dy·B, B stored [K = out, N = rpad]; pad columns come out 0. */
        QL_TRY(scratch(QL_SCRATCH_LORA_G, T * rpad, &G));
        QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_LORA_GEMM, [&] {
            return ql_cuda_gemm(T, rpad, out, 1.0f, dy, out, 0, Bb, rpad, 0, 0.0f, G, QL_DT_F32,
                                rpad);
        }));
        if (fused || !dx || drop) {
            QL_TRY(scratch(QL_SCRATCH_LORA_T, T * rpad, &E));
        } else {
            QL_TRY(concat_left(dy, T, out, rpad, &cat));
            E = cat + out;
            lde = out + rpad;
        }
        QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_CONVERT, [&] {
            return ql_cuda_f32_to_bf16_pad(G, T, rpad, rpad, lora->scale, E, rpad, lde);
        }));
    }

    if (dx && fused) {
        ql_q4_gemm_args a;
        memset(&a, 0, sizeof a);
        a.w = w;
        a.kn = 1;
        a.M = T;
        a.X = dy;
        a.ldx = out;
        a.E = E;
        a.lde = rpad;
        a.F = Ab;
        a.ldf = in;
        a.Ke = r ? rpad : 0;
        if (r) a.drop = lora->drop;
        a.C = dx;
        a.ldc = in;
        QL_TRY(ql_cuda_q4_timed(QL_Q4_PHASE_BASE_GEMM, [&] { return ql_cuda_q4_gemm(&a); }));
    } else if (dx && drop) {
        QL_TRY(dx_dequant_dropout(w, lora, Ab, dy, E, lde, T, dx));
    } else if (dx) {
        QL_TRY(dx_dequant(w, r, dy, cat, Wb, need_dequant, rpad, T, dx));
    }
    if (!r) return QL_OK;

    /* dA[r, in] += alpha · Eᵀ·x': E stored [K = T, M = r] (row stride lde). */
    const ql_bf16 *xin = NULL;
    float alpha;
    const bool fold_mask = skinny(lora, x, in);
    if (!fold_mask) QL_TRY(lora_input(lora, x, T, in, &xin, &alpha));
    return ql_cuda_q4_timed(QL_Q4_PHASE_LORA_GEMM, [&] {
        if (fold_mask)
            QL_TRY(ql_cuda_lora_dA(E, lde, x, &lora->drop, lora->drop.scale, r, rpad, T, in, dA));
        else
            QL_TRY(ql_cuda_gemm(r, in, T, alpha, E, lde, 1, xin, in, 0, 1.0f, dA, QL_DT_F32, in));
        /* dB[out, r] += s · dyᵀ·bf16(xa): dy stored [K = T, M = out]. */
        return ql_cuda_gemm(out, r, T, lora->scale, dy, out, 1, xab, rpad, 0, 1.0f, dB, QL_DT_F32,
                            r);
    });
}

extern "C" ql_status ql_q4_lora_bwd_cuda(const ql_q4 *w, const ql_lora *lora, const ql_act *x,
                                         const float *xa, const ql_act *dy, int64_t T, ql_act *dx,
                                         float *dA, float *dB) {
    const ql_status st = lora_bwd(w, lora, x, xa, dy, T, dx, dA, dB);
    return st == QL_OK ? ql_cuda_q4_phases_flush() : st;
}
