# cython: language_level=3
# Declarations of the C kernels (csrc/fusedrnn.h) and helpers shared by the glue modules.
from libc.stdint cimport uint8_t
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "fusedrnn.h" nogil:
    ctypedef void (*frnn_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                                   float *, int *, float *, float *, int *) noexcept nogil
    ctypedef void (*frnn_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *,
                                   double *, int *, double *, double *, int *) noexcept nogil
    ctypedef struct frnn_blas:
        frnn_sgemm_fn sgemm
        frnn_dgemm_fn dgemm
    ctypedef enum frnn_activation:
        FRNN_ACT_TANH
        FRNN_ACT_SIGMOID
        FRNN_ACT_RELU
        FRNN_ACT_LINEAR
        FRNN_ACT_HARD_SIGMOID
    ctypedef struct frnn_dims:
        Py_ssize_t batch
        Py_ssize_t steps
        Py_ssize_t input_size
        Py_ssize_t units
        int go_backwards
        int zero_output_for_mask
        frnn_activation activation
        frnn_activation recurrent_activation
    ctypedef struct frnn_seq_strides:
        Py_ssize_t stride_b
        Py_ssize_t stride_t
    int FRNN_OK, FRNN_ENOMEM, FRNN_EINVAL, FRNN_EOVERFLOW

    void frnn_activate_f32(frnn_activation act, float *v, Py_ssize_t n) noexcept
    void frnn_activate_f64(frnn_activation act, double *v, Py_ssize_t n) noexcept
    void frnn_activation_grad_f32(frnn_activation act, const float *y, float *dv, Py_ssize_t n) noexcept
    void frnn_activation_grad_f64(frnn_activation act, const double *y, double *dv, Py_ssize_t n) noexcept


cdef inline frnn_blas scipy_blas() noexcept nogil:
    """The BLAS table handed to every kernel: scipy's Fortran sgemm/dgemm."""
    cdef frnn_blas table
    table.sgemm = <frnn_sgemm_fn>sgemm
    table.dgemm = <frnn_dgemm_fn>dgemm
    return table


cdef inline int raise_for_status(int status, str what) except -1:
    """Turn a kernel's status code into a Python exception (called with the GIL)."""
    if status == FRNN_OK:
        return 0
    if status == FRNN_ENOMEM:
        raise MemoryError(f"{what}: out of memory while allocating kernel scratch space")
    if status == FRNN_EOVERFLOW:
        raise ValueError(f"{what}: a dimension is too large for 32-bit BLAS indices")
    raise ValueError(f"{what}: invalid dimensions (kernel status {status})")


cdef inline frnn_seq_strides seq_strides(object array):
    """Batch and time strides, in elements, of a (B, T, F) or (B, T) array."""
    cdef frnn_seq_strides s
    s.stride_b = array.strides[0] // array.itemsize
    s.stride_t = array.strides[1] // array.itemsize
    return s
