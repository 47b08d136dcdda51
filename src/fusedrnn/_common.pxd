# cython: language_level=3
# Declarations of the C kernels (csrc/fusedrnn.h) and helpers shared by the glue modules.
from libc.stdint cimport uint8_t
cimport numpy as cnp
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
        int weight_rows
        int no_initial_gradient
    ctypedef struct frnn_seq_strides:
        Py_ssize_t stride_b
        Py_ssize_t stride_t
    int FRNN_OK, FRNN_ENOMEM, FRNN_EINVAL, FRNN_EOVERFLOW

    size_t FRNN_POOL_MIN_BYTES
    void *frnn_alloc(size_t count, size_t size) noexcept
    void frnn_free(void *ptr) noexcept
    void frnn_set_pool_limit(size_t n_bytes) noexcept
    size_t frnn_pool_limit() noexcept
    size_t frnn_pool_retained() noexcept

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


cdef inline frnn_seq_strides seq_strides(object array) except *:
    """Batch and time strides, in elements, of a (B, T, F) or (B, T) array."""
    cdef frnn_seq_strides s
    s.stride_b = array.strides[0] // array.itemsize
    s.stride_t = array.strides[1] // array.itemsize
    return s


cdef inline void *data_or_null(object array) noexcept:
    """Data pointer of a validated ndarray, or NULL for None (optional arguments)."""
    if array is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef inline frnn_dims make_dims(Py_ssize_t batch, Py_ssize_t steps, Py_ssize_t inputs,
                                Py_ssize_t units, bint go_backwards, bint zero_output_for_mask,
                                int activation, int recurrent_activation) noexcept nogil:
    cdef frnn_dims d
    d.batch = batch
    d.steps = steps
    d.input_size = inputs
    d.units = units
    d.go_backwards = go_backwards
    d.zero_output_for_mask = zero_output_for_mask
    d.activation = <frnn_activation>activation
    d.recurrent_activation = <frnn_activation>recurrent_activation
    d.weight_rows = 0  # Keras' layout; the forward wrappers may ask for torch's
    d.no_initial_gradient = 0  # the backward wrappers may say they need no d_h0
    return d


cdef inline frnn_dims make_rnn_dims(Py_ssize_t batch, Py_ssize_t steps, Py_ssize_t inputs,
                                    Py_ssize_t units, bint go_backwards,
                                    bint zero_output_for_mask, int activation) noexcept nogil:
    """SimpleRNN has one activation; recurrent_activation is unused."""
    return make_dims(batch, steps, inputs, units, go_backwards, zero_output_for_mask,
                     activation, activation)
