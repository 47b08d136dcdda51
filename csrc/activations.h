/* Vectorisable activations.  Included by every kernel file so the loops inline into the
 * fused passes (and into each target clone).
 *
 * float32 tanh is a clamped [13/6] rational approximation (the coefficients Eigen uses);
 * measured max abs error against float64 tanh is 4.1e-7 over every float32 in [-16, 16]
 * (at |x| = 5.83; tests/test_activations.py pins it below 5e-7).  float32 sigmoid is 0.5 + 0.5*tanh(x/2), with the same absolute error.
 * float64 uses libm: the reference comparisons at 1e-12 need exact activations. */
#ifndef FUSEDRNN_ACTIVATIONS_H
#define FUSEDRNN_ACTIVATIONS_H

#include <math.h>
#include "internal.h"

FRNN_INLINE float frnn_tanh_approx_f32(float x) {
    const float clamp = 7.90531110763549805f; /* beyond this the rational is |1| in float32 */
    x = x > clamp ? clamp : x;
    x = x < -clamp ? -clamp : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p / q;
}

/* One element (fused passes call these directly; the array versions below use them too,
 * so both give the same values). */
FRNN_INLINE float frnn_tanh_f32(float x) { return frnn_tanh_approx_f32(x); }
FRNN_INLINE float frnn_sigmoid_f32(float x) { return 0.5f + 0.5f * frnn_tanh_approx_f32(0.5f * x); }

FRNN_INLINE void frnn_activate_inl_f32(frnn_activation act, float *FRNN_RESTRICT v, ptrdiff_t n) {
    switch (act) {
    case FRNN_ACT_TANH:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = frnn_tanh_f32(v[k]);
        break;
    case FRNN_ACT_SIGMOID:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = frnn_sigmoid_f32(v[k]);
        break;
    case FRNN_ACT_RELU:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = v[k] > 0.0f ? v[k] : (v[k] != v[k] ? v[k] : 0.0f);
        break;
    case FRNN_ACT_HARD_SIGMOID:
        for (ptrdiff_t k = 0; k < n; ++k) {
            float y = v[k] * (1.0f / 6.0f) + 0.5f;
            y = y > 1.0f ? 1.0f : y;
            v[k] = y < 0.0f ? 0.0f : y;
        }
        break;
    case FRNN_ACT_LINEAR:
    default:
        break;
    }
}

FRNN_INLINE double frnn_sigmoid_f64(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

FRNN_INLINE double frnn_tanh_f64(double x) { return tanh(x); }

FRNN_INLINE void frnn_activate_inl_f64(frnn_activation act, double *FRNN_RESTRICT v, ptrdiff_t n) {
    switch (act) {
    case FRNN_ACT_TANH:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = frnn_tanh_f64(v[k]);
        break;
    case FRNN_ACT_SIGMOID:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = frnn_sigmoid_f64(v[k]);
        break;
    case FRNN_ACT_RELU:
        for (ptrdiff_t k = 0; k < n; ++k) v[k] = v[k] > 0.0 ? v[k] : (v[k] != v[k] ? v[k] : 0.0);
        break;
    case FRNN_ACT_HARD_SIGMOID:
        for (ptrdiff_t k = 0; k < n; ++k) {
            double y = v[k] / 6.0 + 0.5;
            y = y > 1.0 ? 1.0 : y;
            v[k] = y < 0.0 ? 0.0 : y;
        }
        break;
    case FRNN_ACT_LINEAR:
    default:
        break;
    }
}

/* dv[k] *= act'(x) where y = act(x) is given: every supported derivative is a function of y. */
#define FRNN_DEFINE_ACT_GRAD(REAL, SUFFIX)                                                     \
    FRNN_INLINE void frnn_activation_grad_inl_##SUFFIX(frnn_activation act,                   \
                                                       const REAL *FRNN_RESTRICT y,           \
                                                       REAL *FRNN_RESTRICT dv, ptrdiff_t n) { \
        switch (act) {                                                                         \
        case FRNN_ACT_TANH:                                                                    \
            for (ptrdiff_t k = 0; k < n; ++k) dv[k] *= (REAL)1 - y[k] * y[k];                  \
            break;                                                                             \
        case FRNN_ACT_SIGMOID:                                                                 \
            for (ptrdiff_t k = 0; k < n; ++k) dv[k] *= y[k] * ((REAL)1 - y[k]);                \
            break;                                                                             \
        case FRNN_ACT_RELU:                                                                    \
            for (ptrdiff_t k = 0; k < n; ++k) dv[k] = y[k] > 0 ? dv[k] : (REAL)0;              \
            break;                                                                             \
        case FRNN_ACT_HARD_SIGMOID:                                                            \
            for (ptrdiff_t k = 0; k < n; ++k)                                                  \
                dv[k] = (y[k] > 0 && y[k] < 1) ? dv[k] / (REAL)6 : (REAL)0;                    \
            break;                                                                             \
        case FRNN_ACT_LINEAR:                                                                  \
        default:                                                                               \
            break;                                                                             \
        }                                                                                      \
    }
FRNN_DEFINE_ACT_GRAD(float, f32)
FRNN_DEFINE_ACT_GRAD(double, f64)
#undef FRNN_DEFINE_ACT_GRAD

#endif
