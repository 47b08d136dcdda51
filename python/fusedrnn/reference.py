"""Pure-NumPy reference of the fused kernels: the executable specification.

Same signatures and results as ``fusedrnn.ops``, written for reading rather than speed:
one Python loop over time, exact activations, float64-capable.  Tests compare the
kernels against these functions, and the benchmark uses them as the NumPy baseline."""
from __future__ import annotations

import numpy as np

from . import _validation as v
from .ops import LSTMGradients, LSTMOutput

__all__ = ["ACTIVATIONS", "lstm_forward", "lstm_backward"]


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact, and overflow-free for large |z|


# name -> (function, derivative expressed through the output y = f(z))
ACTIVATIONS = {
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
    "sigmoid": (_sigmoid, lambda y: y * (1.0 - y)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda y: (y > 0).astype(y.dtype)),
    "linear": (lambda z: z, lambda y: np.ones_like(y)),
    "hard_sigmoid": (
        lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0),
        lambda y: ((y > 0) & (y < 1)).astype(y.dtype) / 6.0,
    ),
}


def _activation(name, argname):
    v.activation_code(name, argname)  # same validation as the kernels
    return ACTIVATIONS["linear" if name is None else name]


class _ReferenceLSTMCache:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def lstm_forward(x, kernel, recurrent_kernel, bias=None, *, initial_state=None, mask=None,
                 go_backwards=False, zero_output_for_mask=False, training=False,
                 activation="tanh", recurrent_activation="sigmoid", recurrent_dropout_mask=None):
    x = np.asarray(x)
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    act, _ = _activation(activation, "activation")
    ract, _ = _activation(recurrent_activation, "recurrent_activation")
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    if initial_state is None:
        h = np.zeros((batch, units), x.dtype)
        c = np.zeros((batch, units), x.dtype)
    else:
        h, c = (np.array(s, dtype=x.dtype) for s in initial_state)
    h0, c0 = h.copy(), c.copy()
    valid = np.ones((batch, steps), bool) if mask is None else np.asarray(mask).astype(bool)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)

    outputs = np.zeros((batch, steps, units), x.dtype)
    saved = []  # per processing step: (x_t, valid_t, h_prev, c_prev, i, f, g, o, c_new)
    rec_mask = None if recurrent_dropout_mask is None else np.asarray(recurrent_dropout_mask)
    for t, s in enumerate(order):
        h_in = h if rec_mask is None else h * rec_mask  # Keras 3: dropout on h in the matmul only
        z = x[:, s] @ kernel + h_in @ recurrent_kernel
        if bias is not None:
            z = z + bias
        zi, zf, zg, zo = np.split(z, 4, axis=1)
        i, f, g, o = ract(zi), ract(zf), act(zg), ract(zo)
        c_new = f * c + i * g
        h_new = o * act(c_new)
        keep = valid[:, s][:, None]
        saved.append((x[:, s], keep, h_in, c, i, f, g, o, c_new))
        h = np.where(keep, h_new, h)
        c = np.where(keep, c_new, c)
        outputs[:, t] = np.where(keep, h, 0.0) if zero_output_for_mask else h
    cache = None
    if training:
        cache = _ReferenceLSTMCache(
            saved=saved, kernel=kernel, recurrent_kernel=recurrent_kernel, has_bias=bias is not None,
            has_state=initial_state is not None, order=list(order), shape=x.shape,
            zero_output_for_mask=zero_output_for_mask, activation=activation,
            recurrent_activation=recurrent_activation, rec_mask=rec_mask,
        )
    return LSTMOutput(outputs, h, c, cache)


def lstm_backward(cache, d_outputs=None, d_h_n=None, d_c_n=None, *, input_gradient=True,
                  initial_gradient=True):
    batch, steps, features = cache.shape
    kernel, recurrent_kernel = cache.kernel, cache.recurrent_kernel
    units = recurrent_kernel.shape[0]
    dtype = kernel.dtype
    _, act_grad = _activation(cache.activation, "activation")
    act, _ = _activation(cache.activation, "activation")
    _, ract_grad = _activation(cache.recurrent_activation, "recurrent_activation")
    dh = np.zeros((batch, units), dtype) if d_h_n is None else np.array(d_h_n, dtype)
    dc = np.zeros((batch, units), dtype) if d_c_n is None else np.array(d_c_n, dtype)
    dx = np.zeros(cache.shape, dtype)
    dk = np.zeros_like(kernel)
    dr = np.zeros_like(recurrent_kernel)
    db = np.zeros(4 * units, dtype)
    for t in range(steps - 1, -1, -1):
        s = cache.order[t]
        x_t, keep, h_in, c_prev, i, f, g, o, c_new = cache.saved[t]
        if d_outputs is not None:
            d_out = np.asarray(d_outputs)[:, t]
            dh = dh + (np.where(keep, d_out, 0.0) if cache.zero_output_for_mask else d_out)
        # masked rows pass dh and dc straight through; valid rows go through the cell
        tc = act(c_new)
        do = dh * tc
        dct = dc + dh * o * act_grad(tc)
        di, dg, df = dct * g, dct * i, dct * c_prev
        dz = np.concatenate(
            [di * ract_grad(i), df * ract_grad(f), dg * act_grad(g), do * ract_grad(o)], axis=1
        )
        dz = np.where(keep, dz, 0.0)
        dk += x_t.T @ dz
        dr += h_in.T @ dz
        db += dz.sum(axis=0)
        dx[:, s] = dz @ kernel.T
        dh_in = dz @ recurrent_kernel.T
        if cache.rec_mask is not None:
            dh_in = dh_in * cache.rec_mask
        dh = np.where(keep, dh_in, dh)
        dc = np.where(keep, dct * f, dc)
    return LSTMGradients(
        dx if input_gradient else None, dk, dr, db if cache.has_bias else None,
        dh if cache.has_state and initial_gradient else None,
        dc if cache.has_state and initial_gradient else None,
    )


# ---------------------------------------------------------------------------- GRU ----

from .ops import GRUGradients, GRUOutput, SimpleRNNGradients, SimpleRNNOutput  # noqa: E402

__all__ += ["gru_forward", "gru_backward", "simple_rnn_forward", "simple_rnn_backward"]


class _ReferenceCache:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def _single_initial_state(initial_state, batch, units, dtype):
    """h0 from None, an array, or a 1-element list/tuple (as the ops accept)."""
    if initial_state is None:
        return np.zeros((batch, units), dtype), False
    if isinstance(initial_state, (list, tuple)):
        (initial_state,) = initial_state
    return np.array(initial_state, dtype=dtype), True


def _gru_dropout_masks(recurrent_dropout_mask, batch, units, dtype):
    """(m_z, m_r, m_h): one (batch, units) mask per gate block; ones without dropout."""
    if recurrent_dropout_mask is None:
        return (np.ones((batch, units), dtype),) * 3
    masks = np.asarray(recurrent_dropout_mask, dtype)
    return tuple(masks) if masks.ndim == 3 else (masks,) * 3


def gru_forward(x, kernel, recurrent_kernel, bias=None, *, reset_after=True,
                initial_state=None, mask=None, go_backwards=False, zero_output_for_mask=False,
                training=False, activation="tanh", recurrent_activation="sigmoid",
                recurrent_dropout_mask=None):
    """Keras' GRUCell, step by step: gates z, r, h; h = z*h_prev + (1-z)*hh.  With
    recurrent dropout (Keras 3's implementation 1), gate block g sees h_prev*m_g in its
    recurrent matmul; the update z*h_prev uses h_prev itself."""
    x = np.asarray(x)
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    act, _ = _activation(activation, "activation")
    ract, _ = _activation(recurrent_activation, "recurrent_activation")
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h, has_state = _single_initial_state(initial_state, batch, units, x.dtype)
    if bias is None:
        b_in = np.zeros(3 * units, x.dtype)
        b_rec = np.zeros(3 * units, x.dtype)
    elif reset_after:
        b_in, b_rec = np.asarray(bias)
    else:
        b_in, b_rec = np.asarray(bias), None
    u_z, u_r, u_h = np.split(recurrent_kernel, 3, axis=1)
    m_z, m_r, m_h = _gru_dropout_masks(recurrent_dropout_mask, batch, units, x.dtype)
    valid = np.ones((batch, steps), bool) if mask is None else np.asarray(mask).astype(bool)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)

    outputs = np.zeros((batch, steps, units), x.dtype)
    saved = []  # per processing step: (x_t, keep, h_prev, z, r, hh, rec_h)
    for t, s in enumerate(order):
        xw = x[:, s] @ kernel + b_in
        x_z, x_r, x_h = np.split(xw, 3, axis=1)
        rec_z, rec_r = (h * m_z) @ u_z, (h * m_r) @ u_r
        if reset_after:
            rec_z, rec_r = rec_z + b_rec[:units], rec_r + b_rec[units: 2 * units]
        z = ract(x_z + rec_z)
        r = ract(x_r + rec_r)
        if reset_after:
            rec_h = (h * m_h) @ u_h + b_rec[2 * units:]
            hh = act(x_h + r * rec_h)
        else:
            rec_h = None
            hh = act(x_h + (r * (h * m_h)) @ u_h)
        h_new = z * h + (1 - z) * hh
        keep = valid[:, s][:, None]
        saved.append((x[:, s], keep, h, z, r, hh, rec_h))
        h = np.where(keep, h_new, h)
        outputs[:, t] = np.where(keep, h, 0.0) if zero_output_for_mask else h
    cache = None
    if training:
        cache = _ReferenceCache(
            saved=saved, kernel=kernel, recurrent_kernel=recurrent_kernel,
            has_bias=bias is not None, has_state=has_state, order=list(order), shape=x.shape,
            reset_after=reset_after, zero_output_for_mask=zero_output_for_mask,
            activation=activation, recurrent_activation=recurrent_activation,
            dropout_masks=(m_z, m_r, m_h),
        )
    return GRUOutput(outputs, h, cache)


def gru_backward(cache, d_outputs=None, d_h_n=None, *, input_gradient=True,
                 initial_gradient=True):
    batch, steps, _ = cache.shape
    kernel, recurrent_kernel = cache.kernel, cache.recurrent_kernel
    units = recurrent_kernel.shape[0]
    dtype = kernel.dtype
    _, act_grad = _activation(cache.activation, "activation")
    _, ract_grad = _activation(cache.recurrent_activation, "recurrent_activation")
    u_z, u_r, u_h = np.split(recurrent_kernel, 3, axis=1)
    m_z, m_r, m_h = cache.dropout_masks
    dh = np.zeros((batch, units), dtype) if d_h_n is None else np.array(d_h_n, dtype)
    dx = np.zeros(cache.shape, dtype)
    dk = np.zeros_like(kernel)
    dr = np.zeros_like(recurrent_kernel)
    dr_z, dr_r, dr_h = np.split(dr, 3, axis=1)  # views: dr is filled block by block
    db_in = np.zeros(3 * units, dtype)
    db_rec = np.zeros(3 * units, dtype)
    for t in range(steps - 1, -1, -1):
        s = cache.order[t]
        x_t, keep, h_prev, z, r, hh, rec_h = cache.saved[t]
        if d_outputs is not None:
            d_out = np.asarray(d_outputs)[:, t]
            dh = dh + (np.where(keep, d_out, 0.0) if cache.zero_output_for_mask else d_out)
        # masked rows pass dh straight through; valid rows go through the cell
        d_hh_pre = np.where(keep, dh * (1 - z) * act_grad(hh), 0.0)
        d_z_pre = np.where(keep, dh * (h_prev - hh) * ract_grad(z), 0.0)
        dh_prev = dh * z
        if cache.reset_after:
            d_r_pre = d_hh_pre * rec_h * ract_grad(r)
            d_rec_h = d_hh_pre * r  # gradient w.r.t. (h_prev*m_h) U_h + b_rec_h
            db_rec += np.concatenate([d_z_pre, d_r_pre, d_rec_h], axis=1).sum(axis=0)
        else:
            q = r * (h_prev * m_h)
            d_q = d_hh_pre @ u_h.T
            d_r_pre = d_q * h_prev * m_h * ract_grad(r)
            d_rec_h = d_hh_pre  # gradient w.r.t. q U_h
            dh_prev = dh_prev + d_q * r * m_h
        dr_z += (h_prev * m_z).T @ d_z_pre
        dr_r += (h_prev * m_r).T @ d_r_pre
        dr_h += ((h_prev * m_h) if cache.reset_after else q).T @ d_rec_h
        dh_prev = dh_prev + m_z * (d_z_pre @ u_z.T) + m_r * (d_r_pre @ u_r.T)
        if cache.reset_after:
            dh_prev = dh_prev + m_h * (d_rec_h @ u_h.T)
        d_xw = np.concatenate([d_z_pre, d_r_pre, d_hh_pre], axis=1)  # d(x W + b_in)
        dk += x_t.T @ d_xw
        db_in += d_xw.sum(axis=0)
        dx[:, s] = d_xw @ kernel.T
        dh = np.where(keep, dh_prev, dh)
    db = None
    if cache.has_bias:
        db = np.stack([db_in, db_rec]) if cache.reset_after else db_in
    return GRUGradients(dx if input_gradient else None, dk, dr, db,
                        dh if cache.has_state and initial_gradient else None)


# ---------------------------------------------------------------------- SimpleRNN ----

def simple_rnn_forward(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
                       initial_state=None, mask=None, go_backwards=False,
                       zero_output_for_mask=False, training=False, recurrent_dropout_mask=None):
    """Keras' SimpleRNNCell, step by step: h = activation(x W + b + (h_prev*m) U), m the
    recurrent dropout mask (ones without)."""
    x = np.asarray(x)
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    act, _ = _activation(activation, "activation")
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h, has_state = _single_initial_state(initial_state, batch, units, x.dtype)
    m = (np.ones((batch, units), x.dtype) if recurrent_dropout_mask is None
         else np.asarray(recurrent_dropout_mask, x.dtype))
    valid = np.ones((batch, steps), bool) if mask is None else np.asarray(mask).astype(bool)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    outputs = np.zeros((batch, steps, units), x.dtype)
    saved = []  # per processing step: (x_t, keep, h_prev, h_new)
    for t, s in enumerate(order):
        pre = x[:, s] @ kernel + (h * m) @ recurrent_kernel
        if bias is not None:
            pre = pre + bias
        h_new = act(pre)
        keep = valid[:, s][:, None]
        saved.append((x[:, s], keep, h, h_new))
        h = np.where(keep, h_new, h)
        outputs[:, t] = np.where(keep, h, 0.0) if zero_output_for_mask else h
    cache = None
    if training:
        cache = _ReferenceCache(
            saved=saved, kernel=kernel, recurrent_kernel=recurrent_kernel,
            has_bias=bias is not None, has_state=has_state, order=list(order), shape=x.shape,
            zero_output_for_mask=zero_output_for_mask, activation=activation, dropout_mask=m,
        )
    return SimpleRNNOutput(outputs, h, cache)


def simple_rnn_backward(cache, d_outputs=None, d_h_n=None, *, input_gradient=True,
                        initial_gradient=True):
    batch, steps, _ = cache.shape
    kernel, recurrent_kernel = cache.kernel, cache.recurrent_kernel
    units = recurrent_kernel.shape[0]
    dtype = kernel.dtype
    _, act_grad = _activation(cache.activation, "activation")
    dh = np.zeros((batch, units), dtype) if d_h_n is None else np.array(d_h_n, dtype)
    dx = np.zeros(cache.shape, dtype)
    dk = np.zeros_like(kernel)
    dr = np.zeros_like(recurrent_kernel)
    db = np.zeros(units, dtype)
    for t in range(steps - 1, -1, -1):
        s = cache.order[t]
        x_t, keep, h_prev, h_new = cache.saved[t]
        if d_outputs is not None:
            d_out = np.asarray(d_outputs)[:, t]
            dh = dh + (np.where(keep, d_out, 0.0) if cache.zero_output_for_mask else d_out)
        d_pre = np.where(keep, dh * act_grad(h_new), 0.0)
        dk += x_t.T @ d_pre
        dr += (h_prev * cache.dropout_mask).T @ d_pre
        db += d_pre.sum(axis=0)
        dx[:, s] = d_pre @ kernel.T
        dh = np.where(keep, cache.dropout_mask * (d_pre @ recurrent_kernel.T), dh)
    return SimpleRNNGradients(dx if input_gradient else None, dk, dr,
                              db if cache.has_bias else None,
                              dh if cache.has_state and initial_gradient else None)
