"""Cython glue for the SimpleRNN kernels: allocate results, release the GIL, call csrc/.

Arguments arrive validated and normalised by fusedrnn.ops (dtype, shapes, last-axis
contiguity); this layer only checks what it relies on for memory safety."""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t
from fusedrnn._common cimport (frnn_blas, frnn_dims, frnn_seq_strides, frnn_activation,
                               scipy_blas, raise_for_status, seq_strides)

cnp.import_array()

cdef extern from "fusedrnn.h" nogil:
    int frnn_rnn_forward_f32(const frnn_blas *blas, const frnn_dims *d,
                             const float *x, frnn_seq_strides xs,
                             const float *kernel, const float *recurrent, const float *bias,
                             const uint8_t *mask, frnn_seq_strides ms, const float *h0,
                             float *outputs, frnn_seq_strides os, float *h_n,
                             const float *rec_mask,
                             float *x_cache, float *h_states, uint8_t *mask_cache) noexcept
    int frnn_rnn_forward_f64(const frnn_blas *blas, const frnn_dims *d,
                             const double *x, frnn_seq_strides xs,
                             const double *kernel, const double *recurrent, const double *bias,
                             const uint8_t *mask, frnn_seq_strides ms, const double *h0,
                             double *outputs, frnn_seq_strides os, double *h_n,
                             const double *rec_mask,
                             double *x_cache, double *h_states, uint8_t *mask_cache) noexcept
    int frnn_rnn_backward_f32(const frnn_blas *blas, const frnn_dims *d,
                              const float *kernel, const float *recurrent, const float *h0,
                              const float *x_cache, const float *h_states,
                              const uint8_t *mask_cache, const float *rec_mask,
                              const float *d_outputs,
                              frnn_seq_strides dos, const float *d_h_n,
                              float *dx, frnn_seq_strides dxs, float *d_kernel,
                              float *d_recurrent, float *d_bias, float *d_h0) noexcept
    int frnn_rnn_backward_f64(const frnn_blas *blas, const frnn_dims *d,
                              const double *kernel, const double *recurrent, const double *h0,
                              const double *x_cache, const double *h_states,
                              const uint8_t *mask_cache, const double *rec_mask,
                              const double *d_outputs,
                              frnn_seq_strides dos, const double *d_h_n,
                              double *dx, frnn_seq_strides dxs, double *d_kernel,
                              double *d_recurrent, double *d_bias, double *d_h0) noexcept




def simple_rnn_forward(cnp.ndarray x, cnp.ndarray kernel, cnp.ndarray recurrent, bias, mask,
                       h0, rec_mask, bint go_backwards, bint zero_output_for_mask, int activation,
                       bint training, bint weight_rows=False):
    """Returns (outputs, h_n, cache); cache = (x_cache, h_states, mask_cache) in processing
    order, or None for inference.  rec_mask: (B, H) C-contiguous or None.  See
    csrc/fusedrnn.h."""
    cdef Py_ssize_t B = x.shape[0], T = x.shape[1], I = x.shape[2]
    cdef Py_ssize_t H = recurrent.shape[1 if weight_rows else 0]  # rows: (G*H, H)
    dtype = x.dtype
    cdef bint is_f32 = dtype == np.float32
    # (empty arrays may report zero strides: nothing is read from them)
    if x.strides[2] != x.itemsize and I > 1 and x.size:
        raise ValueError("x: the feature axis must be contiguous")
    cdef frnn_dims d = make_rnn_dims(B, T, I, H, go_backwards, zero_output_for_mask, activation)
    d.weight_rows = weight_rows  # torch.nn's (G*H, I), (G*H, H): csrc/fusedrnn.h
    cdef frnn_blas blas = scipy_blas()
    cdef cnp.ndarray outputs = pooled_empty((B, T, H), dtype)
    cdef cnp.ndarray h_n = pooled_empty((B, H), dtype)
    x_cache = h_states = mask_cache = None
    if training:
        x_cache = pooled_empty((T, B, I), dtype)
        h_states = pooled_empty((T, B, H), dtype)
        if mask is not None:
            mask_cache = pooled_empty((T, B), np.uint8)
    cdef frnn_seq_strides xs = seq_strides(x), os = seq_strides(outputs)
    cdef frnn_seq_strides ms
    ms.stride_b = 0
    ms.stride_t = 0
    if mask is not None:
        ms = seq_strides(mask)
    cdef void *px = data_or_null(x)
    cdef void *pk = data_or_null(kernel)
    cdef void *pr = data_or_null(recurrent)
    cdef void *pb = data_or_null(bias)
    cdef const uint8_t *pm = <const uint8_t *>data_or_null(mask)
    cdef void *ph0 = data_or_null(h0)
    if rec_mask is not None and (rec_mask.shape != (B, H) or not rec_mask.flags.c_contiguous):
        raise ValueError("rec_mask: expected a C-contiguous (batch, units) array")
    cdef void *prm = data_or_null(rec_mask)
    cdef void *pout = data_or_null(outputs)
    cdef void *phn = data_or_null(h_n)
    cdef void *pxc = data_or_null(x_cache)
    cdef void *phs = data_or_null(h_states)
    cdef uint8_t *pmc = <uint8_t *>data_or_null(mask_cache)
    cdef int status
    with nogil:
        if is_f32:
            status = frnn_rnn_forward_f32(&blas, &d, <float *>px, xs, <float *>pk, <float *>pr,
                                          <float *>pb, pm, ms, <float *>ph0, <float *>pout, os,
                                          <float *>phn, <float *>prm, <float *>pxc,
                                          <float *>phs, pmc)
        else:
            status = frnn_rnn_forward_f64(&blas, &d, <double *>px, xs, <double *>pk,
                                          <double *>pr, <double *>pb, pm, ms, <double *>ph0,
                                          <double *>pout, os, <double *>phn, <double *>prm,
                                          <double *>pxc,
                                          <double *>phs, pmc)
    raise_for_status(status, "simple_rnn_forward")
    cache = (x_cache, h_states, mask_cache) if training else None
    return outputs, h_n, cache


def simple_rnn_backward(cnp.ndarray kernel, cnp.ndarray recurrent, bint has_bias, h0,
                        rec_mask, tuple cache, d_outputs, d_h_n, bint go_backwards,
                        bint zero_output_for_mask, int activation,
                        bint input_gradient=True, bint weight_rows=False,
                        bint initial_gradient=True):
    """Returns (dx, d_kernel, d_recurrent, d_bias or None, d_h0); dx is None, and not
    computed, when input_gradient is false; d_h0 None when initial_gradient is (and
    possibly not computed: fusedrnn.h's no_initial_gradient)."""
    x_cache, h_states, mask_cache = cache
    cdef Py_ssize_t T = x_cache.shape[0], B = x_cache.shape[1], I = x_cache.shape[2]
    cdef Py_ssize_t H = recurrent.shape[1 if weight_rows else 0]  # rows: (G*H, H)
    dtype = kernel.dtype
    cdef bint is_f32 = dtype == np.float32
    cdef frnn_dims d = make_rnn_dims(B, T, I, H, go_backwards, zero_output_for_mask, activation)
    d.weight_rows = weight_rows  # the gradients in the weights' layout
    d.no_initial_gradient = not initial_gradient  # then d_h0 is not returned
    cdef frnn_blas blas = scipy_blas()
    dx = pooled_empty((B, T, I), dtype) if input_gradient else None
    cdef cnp.ndarray d_kernel = pooled_empty((<object>kernel).shape, dtype)
    cdef cnp.ndarray d_recurrent = pooled_empty((<object>recurrent).shape, dtype)
    d_bias = pooled_empty((H,), dtype) if has_bias else None
    cdef cnp.ndarray d_h0 = pooled_empty((B, H), dtype)
    cdef frnn_seq_strides dxs
    dxs.stride_b = 0
    dxs.stride_t = 0
    if dx is not None:
        dxs = seq_strides(dx)
    cdef frnn_seq_strides dos
    dos.stride_b = 0
    dos.stride_t = 0
    if d_outputs is not None:
        if d_outputs.strides[2] != d_outputs.itemsize and H > 1 and d_outputs.size:
            raise ValueError("d_outputs: the feature axis must be contiguous")
        dos = seq_strides(d_outputs)
    cdef void *pk = data_or_null(kernel)
    cdef void *pr = data_or_null(recurrent)
    cdef void *ph0 = data_or_null(h0)
    cdef void *pxc = data_or_null(x_cache)
    cdef void *phs = data_or_null(h_states)
    cdef const uint8_t *pmc = <const uint8_t *>data_or_null(mask_cache)
    if rec_mask is not None and (rec_mask.shape != (B, H) or not rec_mask.flags.c_contiguous):
        raise ValueError("rec_mask: expected a C-contiguous (batch, units) array")
    cdef void *prm = data_or_null(rec_mask)
    cdef void *pdo = data_or_null(d_outputs)
    cdef void *pdhn = data_or_null(d_h_n)
    cdef void *pdx = data_or_null(dx)
    cdef void *pdk = data_or_null(d_kernel)
    cdef void *pdr = data_or_null(d_recurrent)
    cdef void *pdb = data_or_null(d_bias)
    cdef void *pdh0 = data_or_null(d_h0)
    cdef int status
    with nogil:
        if is_f32:
            status = frnn_rnn_backward_f32(&blas, &d, <float *>pk, <float *>pr, <float *>ph0,
                                           <float *>pxc, <float *>phs, pmc, <float *>prm,
                                           <float *>pdo, dos,
                                           <float *>pdhn, <float *>pdx, dxs, <float *>pdk,
                                           <float *>pdr, <float *>pdb, <float *>pdh0)
        else:
            status = frnn_rnn_backward_f64(&blas, &d, <double *>pk, <double *>pr,
                                           <double *>ph0, <double *>pxc, <double *>phs, pmc,
                                           <double *>prm, <double *>pdo, dos, <double *>pdhn, <double *>pdx,
                                           dxs, <double *>pdk, <double *>pdr, <double *>pdb,
                                           <double *>pdh0)
    raise_for_status(status, "simple_rnn_backward")
    return dx, d_kernel, d_recurrent, d_bias, d_h0 if initial_gradient else None
