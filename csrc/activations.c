/* Exported activation entry points (used by tests to measure the approximation error). */
#include "activations.h"

FRNN_CLONES void frnn_activate_f32(frnn_activation act, float *v, ptrdiff_t n) {
    frnn_activate_inl_f32(act, v, n);
}
void frnn_activate_f64(frnn_activation act, double *v, ptrdiff_t n) {
    frnn_activate_inl_f64(act, v, n);
}
FRNN_CLONES void frnn_activation_grad_f32(frnn_activation act, const float *y, float *dv, ptrdiff_t n) {
    frnn_activation_grad_inl_f32(act, y, dv, n);
}
void frnn_activation_grad_f64(frnn_activation act, const double *y, double *dv, ptrdiff_t n) {
    frnn_activation_grad_inl_f64(act, y, dv, n);
}
