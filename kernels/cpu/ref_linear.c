/* Reference linear layers: the 4-bit base weight is dequantized whole, and
 * every dot product is accumulated in double and rounded once, so these are
 * the most accurate values the fast kernels are compared against. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

static ql_status dequantize_whole(const ql_q4 *w, float **out) {
    *out = ql_malloc((size_t)w->n * sizeof(float), "cpu-ref dequantized weight");
    if (!*out) return QL_ENOMEM;
    return ql_q4_dequantize_ref(w, *out);
}

static int has_lora(const ql_lora *lora) { return lora && lora->r > 0; }

ql_status ql_q4_dequantize_ref(const ql_q4 *w, ql_act *out) {
    if (w->packed)
        ql_q4_dequantize(w, out);
    else /* held in float32 (dense_upload) */
        memcpy(out, w->dense, (size_t)w->n * sizeof(float));
    return QL_OK;
}

ql_status ql_q4_lora_fwd_ref(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, int64_t T,
                             ql_act *y_, float *xa) {
    const float *x = x_;
    float *y = y_;
    float *W;
    QL_TRY(dequantize_whole(w, &W));
    int64_t in = w->cols, out = w->rows;
    int r = has_lora(lora) ? lora->r : 0;
    double *xa_exact = calloc((size_t)(r ? r : 1), sizeof(double));
    if (!xa_exact) {
        free(W);
        return ql_error(QL_ENOMEM, "cpu-ref q4_lora_fwd: out of memory");
    }
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * in;
        for (int k = 0; k < r; k++) {
            double acc = 0.0;
            for (int64_t i = 0; i < in; i++)
                acc += (double)ql_lora_input(lora, x, t * in + i) * lora->A[k * in + i];
            xa_exact[k] = acc;
            xa[t * r + k] = (float)acc;
        }
        for (int64_t o = 0; o < out; o++) {
            double acc = 0.0;
            for (int64_t i = 0; i < in; i++) acc += (double)xt[i] * W[o * in + i];
            double low = 0.0;
            for (int k = 0; k < r; k++) low += xa_exact[k] * lora->B[o * r + k];
            y[t * out + o] = (float)(acc + (r ? (double)lora->scale * low : 0.0));
        }
    }
    free(xa_exact);
    free(W);
    return QL_OK;
}

ql_status ql_q4_lora_bwd_ref(const ql_q4 *w, const ql_lora *lora, const ql_act *x_, const float *xa,
                             const ql_act *dy_, int64_t T, ql_act *dx_, float *dA, float *dB) {
    const float *x = x_, *dy = dy_;
    float *dx = dx_;
    int64_t in = w->cols, out = w->rows;
    int r = has_lora(lora) ? lora->r : 0;
    double s = r ? (double)lora->scale : 0.0;

    /* g[t,k] = (dy·B)[t,k], shared by dx and dA. */
    double *g = calloc((size_t)(T * r + 1), sizeof(double));
    if (!g) return ql_error(QL_ENOMEM, "cpu-ref q4_lora_bwd: out of memory");
    for (int64_t t = 0; t < T; t++)
        for (int k = 0; k < r; k++) {
            double acc = 0.0;
            for (int64_t o = 0; o < out; o++) acc += (double)dy[t * out + o] * lora->B[o * r + k];
            g[t * r + k] = acc;
        }

    if (dx) {
        float *W;
        ql_status st = dequantize_whole(w, &W);
        if (st != QL_OK) {
            free(g);
            return st;
        }
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < in; i++) {
                double acc = 0.0;
                for (int64_t o = 0; o < out; o++) acc += (double)dy[t * out + o] * W[o * in + i];
                double low = 0.0;
                for (int k = 0; k < r; k++) low += g[t * r + k] * lora->A[k * in + i];
                if (r && lora->drop.on)
                    low = ql_dropout_keep(lora->drop.seed, lora->drop.thresh, t * in + i)
                              ? low * lora->drop.scale
                              : 0.0;
                dx[t * in + i] = (float)(acc + s * low);
            }
        free(W);
    }

    for (int k = 0; k < r; k++)
        for (int64_t i = 0; i < in; i++) {
            double acc = 0.0;
            for (int64_t t = 0; t < T; t++)
                acc += g[t * r + k] * ql_lora_input(lora, x, t * in + i);
            dA[k * in + i] += (float)(s * acc);
        }
    for (int64_t o = 0; o < out; o++)
        for (int k = 0; k < r; k++) {
            double acc = 0.0;
            for (int64_t t = 0; t < T; t++) acc += (double)dy[t * out + o] * xa[t * r + k];
            dB[o * r + k] += (float)(s * acc);
        }
    free(g);
    return QL_OK;
}

ql_status ql_matmul_fwd_ref(const ql_act *W_, const ql_act *x_, int64_t T, int64_t in, int64_t out,
                            ql_act *y_) {
    const float *W = W_, *x = x_;
    float *y = y_;
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0.0;
            for (int64_t i = 0; i < in; i++) acc += (double)x[t * in + i] * W[o * in + i];
            y[t * out + o] = (float)acc;
        }
    return QL_OK;
}

ql_status ql_matmul_bwd_ref(const ql_act *W_, const ql_act *dy_, int64_t T, int64_t in, int64_t out,
                            ql_act *dx_) {
    const float *W = W_, *dy = dy_;
    float *dx = dx_;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < in; i++) {
            double acc = 0.0;
            for (int64_t o = 0; o < out; o++) acc += (double)dy[t * out + o] * W[o * in + i];
            dx[t * in + i] = (float)acc;
        }
    return QL_OK;
}
