"""The kernels' element-wise activations, exposed so tests can measure their error."""
import numpy as np
cimport numpy as cnp
from fusedrnn._common cimport (frnn_activation, frnn_activate_f32, frnn_activate_f64,
                               frnn_activation_grad_f32, frnn_activation_grad_f64)

cnp.import_array()


def activate(x, int activation):
    """Return act(x) computed by the kernels' activation code (float32 or float64)."""
    cdef cnp.ndarray out = np.array(x, copy=True, order="C")
    if out.dtype != np.float32 and out.dtype != np.float64:
        raise TypeError(f"x: expected float32 or float64, got {out.dtype}")
    cdef Py_ssize_t n = out.size
    cdef void *p = cnp.PyArray_DATA(out)
    cdef bint is_f32 = out.dtype == np.float32
    with nogil:
        if is_f32:
            frnn_activate_f32(<frnn_activation>activation, <float *>p, n)
        else:
            frnn_activate_f64(<frnn_activation>activation, <double *>p, n)
    return out


def activation_grad(y, dv, int activation):
    """Return dv * act'(x) given y = act(x), as the kernels compute it."""
    cdef cnp.ndarray yc = np.ascontiguousarray(y)
    cdef cnp.ndarray out = np.array(dv, dtype=yc.dtype, copy=True, order="C")
    if (<object>yc).shape != (<object>out).shape:
        raise ValueError("y and dv must have the same shape")
    if yc.dtype != np.float32 and yc.dtype != np.float64:
        raise TypeError(f"y: expected float32 or float64, got {yc.dtype}")
    cdef Py_ssize_t n = out.size
    cdef void *py = cnp.PyArray_DATA(yc)
    cdef void *p = cnp.PyArray_DATA(out)
    cdef bint is_f32 = yc.dtype == np.float32
    with nogil:
        if is_f32:
            frnn_activation_grad_f32(<frnn_activation>activation, <const float *>py, <float *>p, n)
        else:
            frnn_activation_grad_f64(<frnn_activation>activation, <const double *>py, <double *>p, n)
    return out
