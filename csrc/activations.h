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

FRNN_INLINE float frnn_relu_f32(float x) { return x > 0.0f ? x : (x != x ? x : 0.0f); }
FRNN_INLINE float frnn_hard_sigmoid_f32(float x) {
    float y = x * (1.0f / 6.0f) + 0.5f;
    y = y > 1.0f ? 1.0f : y;
    return y < 0.0f ? 0.0f : y;
}

FRNN_INLINE double frnn_sigmoid_f64(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

FRNN_INLINE double frnn_tanh_f64(double x) { return tanh(x); }
FRNN_INLINE double frnn_relu_f64(double x) { return x > 0.0 ? x : (x != x ? x : 0.0); }
FRNN_INLINE double frnn_hard_sigmoid_f64(double x) {
    double y = x / 6.0 + 0.5;
    y = y > 1.0 ? 1.0 : y;
    return y < 0.0 ? 0.0 : y;
}

FRNN_INLINE float frnn_linear_f32(float x) { return x; }
FRNN_INLINE double frnn_linear_f64(double x) { return x; }

/* One loop per activation, the switch outside them (each loop vectorises).  STORE(k, v)
 * stores act(src[k]) = v. */
#define FRNN_ACTIVATION_LOOPS(SUFFIX, act, src, n, STORE)                                      \
    switch (act) {                                                                             \
    case FRNN_ACT_TANH:                                                                        \
        for (ptrdiff_t k = 0; k < n; ++k) STORE(k, frnn_tanh_##SUFFIX(src[k]));               \
        break;                                                                                 \
    case FRNN_ACT_SIGMOID:                                                                     \
        for (ptrdiff_t k = 0; k < n; ++k) STORE(k, frnn_sigmoid_##SUFFIX(src[k]));            \
        break;                                                                                 \
    case FRNN_ACT_RELU:                                                                        \
        for (ptrdiff_t k = 0; k < n; ++k) STORE(k, frnn_relu_##SUFFIX(src[k]));               \
        break;                                                                                 \
    case FRNN_ACT_HARD_SIGMOID:                                                                \
        for (ptrdiff_t k = 0; k < n; ++k) STORE(k, frnn_hard_sigmoid_##SUFFIX(src[k]));       \
        break;                                                                                 \
    case FRNN_ACT_LINEAR:                                                                      \
    default:                                                                                   \
        for (ptrdiff_t k = 0; k < n; ++k) STORE(k, frnn_linear_##SUFFIX(src[k]));             \
        break;                                                                                 \
    }
#define FRNN_STORE_IN_PLACE(k, value) (v[k] = (value))
#define FRNN_STORE_ONE(k, value) (dst[k] = (value))
#define FRNN_STORE_TWO(k, value) (dst[k] = dst2[k] = (value))

/* v[k] = act(v[k]) for k < n.
 * The same into dst (and dst2 where not NULL), src unchanged: an activation stored where
 * its values are needed in one pass instead of in place and then copied (SimpleRNN's h_t,
 * the next step's state and the output row: inference 1.00-1.08x on the AMD Zen 4). */
#define FRNN_DEFINE_ACTIVATE(REAL, SUFFIX)                                                     \
    FRNN_INLINE void frnn_activate_inl_##SUFFIX(frnn_activation act, REAL *FRNN_RESTRICT v,    \
                                                ptrdiff_t n) {                                 \
        if (act == FRNN_ACT_LINEAR) return;                                                    \
        FRNN_ACTIVATION_LOOPS(SUFFIX, act, v, n, FRNN_STORE_IN_PLACE)                          \
    }                                                                                          \
    FRNN_INLINE void frnn_activate_into_inl_##SUFFIX(frnn_activation act,                      \
                                                     const REAL *FRNN_RESTRICT src,            \
                                                     REAL *FRNN_RESTRICT dst,                  \
                                                     REAL *FRNN_RESTRICT dst2, ptrdiff_t n) {  \
        if (dst2) {                                                                            \
            FRNN_ACTIVATION_LOOPS(SUFFIX, act, src, n, FRNN_STORE_TWO)                         \
        } else {                                                                               \
            FRNN_ACTIVATION_LOOPS(SUFFIX, act, src, n, FRNN_STORE_ONE)                         \
        }                                                                                      \
    }
FRNN_DEFINE_ACTIVATE(float, f32)
FRNN_DEFINE_ACTIVATE(double, f64)
#undef FRNN_DEFINE_ACTIVATE
#undef FRNN_ACTIVATION_LOOPS
#undef FRNN_STORE_IN_PLACE
#undef FRNN_STORE_ONE
#undef FRNN_STORE_TWO

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
