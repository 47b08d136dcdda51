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


def lstm_backward(cache, d_outputs=None, d_h_n=None, d_c_n=None):
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
        dx, dk, dr, db if cache.has_bias else None,
        dh if cache.has_state else None, dc if cache.has_state else None,
    )
