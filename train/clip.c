#include "train/clip.h"

#include <math.h>

double ql_grad_sq_sum(const float *g, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

double ql_grad_norm(const float *g, int64_t n) { return sqrt(ql_grad_sq_sum(g, n)); }

float ql_clip_coef(double norm, double max_norm) {
    if (!(max_norm > 0.0)) return 1.0f;
    double c = max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void ql_grad_scale(float *g, int64_t n, float coef) {
    if (coef == 1.0f) return;
    for (int64_t i = 0; i < n; i++) g[i] *= coef;
}
