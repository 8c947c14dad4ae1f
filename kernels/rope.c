/* RoPE inverse frequencies exactly as transformers computes them
 * (modeling_rope_utils.py), in float32 with the same operation order:
 *   default: inv_freq = 1.0 / (theta ** (arange(0, d, 2).float() / d))
 *   linear:  inv_freq / factor
 *   llama3:  _compute_llama3_parameters (FORMATS §4.1).
 * Python scalars meet float32 tensors as float32; `scalar / tensor` is
 * torch's __rtruediv__, i.e. reciprocal(tensor) * scalar. */
#include <math.h>

#include "kernels/backend.h"

ql_status ql_rope_inv_freq(const ql_rope_config *c, int head_dim, float *inv_freq) {
    if (head_dim <= 0 || head_dim % 2)
        return ql_error(QL_EINVAL, "rope: head_dim %d must be positive and even", head_dim);
    if (c->type != QL_ROPE_DEFAULT && c->type != QL_ROPE_LINEAR && c->type != QL_ROPE_LLAMA3)
        return ql_error(QL_EUNSUPPORTED,
                        "rope: this RoPE scaling type is not supported (default, linear and "
                        "llama3 are)");
    if (!(c->theta > 0.0f))
        return ql_error(QL_EINVAL, "rope: rope_theta %g must be positive", (double)c->theta);
    if ((c->type == QL_ROPE_LINEAR || c->type == QL_ROPE_LLAMA3) && !(c->factor > 0.0f))
        return ql_error(QL_EINVAL, "rope: rope_scaling.factor %g must be positive",
                        (double)c->factor);
    if (c->type == QL_ROPE_LLAMA3 &&
        !(c->high_freq_factor > c->low_freq_factor && c->low_freq_factor > 0.0f &&
          c->original_max_position > 0.0f))
        return ql_error(QL_EINVAL,
                        "rope: llama3 scaling needs 0 < low_freq_factor (%g) < high_freq_factor "
                        "(%g) and original_max_position_embeddings (%g) > 0",
                        (double)c->low_freq_factor, (double)c->high_freq_factor,
                        (double)c->original_max_position);

    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)head_dim;
        inv_freq[i] = 1.0f / powf(c->theta, e);
    }
    if (c->type == QL_ROPE_LINEAR)
        for (int i = 0; i < half; i++) inv_freq[i] = inv_freq[i] / c->factor;
    if (c->type != QL_ROPE_LLAMA3) return QL_OK;

    /* The wavelength bounds are Python floats; comparisons against the
     * float32 wavelength tensor happen in float32. */
    double old_ctx = c->original_max_position;
    float low_wl = (float)(old_ctx / (double)c->low_freq_factor);
    float high_wl = (float)(old_ctx / (double)c->high_freq_factor);
    float two_pi = (float)(2.0 * M_PI);
    float span = (float)((double)c->high_freq_factor - (double)c->low_freq_factor);
    for (int i = 0; i < half; i++) {
        float f = inv_freq[i];
        float wavelen = (1.0f / f) * two_pi;
        float scaled = wavelen > low_wl ? f / c->factor : f;
        float smooth = ((1.0f / wavelen) * (float)old_ctx - c->low_freq_factor) / span;
        float smoothed = (1.0f - smooth) * scaled / c->factor + smooth * scaled;
        int medium = !(wavelen < high_wl) && !(wavelen > low_wl);
        inv_freq[i] = medium ? smoothed : scaled;
    }
    return QL_OK;
}
