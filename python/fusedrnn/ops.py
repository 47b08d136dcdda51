"""Functional forward and backward passes of the fused recurrent kernels.

Everything is in Keras' layout: inputs (batch, time, features), weights as
``keras.layers.X.get_weights()`` returns them.  float32 and float64 are supported; every
array argument must have the dtype of ``x`` (a TypeError says which one does not).

Masks follow Keras: ``mask`` is (batch, time) booleans, True = the step is used; a masked
step keeps the previous state and outputs it again (zeros with
``zero_output_for_mask=True``).  With ``go_backwards=True`` the cell consumes the input
from the last step to the first and the outputs come back in that (reversed) order.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from . import _kernels
from . import _validation as v
from ._threads import _pin_kernel_blas

_pin_kernel_blas()  # the kernels split their GEMMs over their own threads: see _threads.py
_lstm_forward_kernel = _kernels.lstm_forward
_lstm_backward_kernel = _kernels.lstm_backward

__all__ = ["LSTMOutput", "LSTMGradients", "LSTMCache", "lstm_forward", "lstm_backward"]


class LSTMOutput(NamedTuple):
    outputs: np.ndarray        # (batch, time, units), in processing order
    h_n: np.ndarray            # (batch, units)
    c_n: np.ndarray            # (batch, units)
    cache: Optional["LSTMCache"]  # None unless training=True


class LSTMGradients(NamedTuple):
    x: Optional[np.ndarray]     # None when the backward pass was asked for no input gradient
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: Optional[np.ndarray]  # None when the forward pass had no bias
    h0: Optional[np.ndarray]    # None when the forward pass had no initial_state
    c0: Optional[np.ndarray]


class LSTMCache:
    """What lstm_backward needs, saved by lstm_forward(training=True).  Opaque; reusable.

    Per step and batch row it holds the activated gates (4*units), the cell state and the
    hidden state (units each), plus the input in time-major order (features)."""

    __slots__ = ("kernel", "recurrent_kernel", "has_bias", "h0", "c0", "recurrent_dropout_mask",
                 "arrays", "options", "shape", "weight_rows")

    def __init__(self, kernel, recurrent_kernel, has_bias, h0, c0, recurrent_dropout_mask, arrays,
                 options, shape, weight_rows=False):
        self.weight_rows = weight_rows  # torch's layout: the gradients come in it too
        self.recurrent_dropout_mask = recurrent_dropout_mask
        self.kernel = kernel
        self.recurrent_kernel = recurrent_kernel
        self.has_bias = has_bias
        self.h0 = h0
        self.c0 = c0
        self.arrays = arrays
        self.options = options
        self.shape = shape  # (batch, time, features, units)

    @property
    def nbytes(self) -> int:
        """Bytes saved for backward (excluding the weights, which are shared)."""
        return sum(a.nbytes for a in self.arrays if a is not None)


def _lstm_options(go_backwards, zero_output_for_mask, activation, recurrent_activation):
    return (
        v.flag(go_backwards, "go_backwards"),
        v.flag(zero_output_for_mask, "zero_output_for_mask"),
        v.activation_code(activation, "activation"),
        v.activation_code(recurrent_activation, "recurrent_activation"),
    )


def _gradient_flag(value, argname: str = "input_gradient") -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname}: expected True or False, got {type(value).__name__}")
    return bool(value)


def _upstream_gradients(cache, d_outputs, d_h_n):
    """Validated d_outputs (batch, time, units) and d_h_n (batch, units) for a cache's
    forward pass, in its dtype; None stays None (zero)."""
    batch, steps, _, units = cache.shape
    dtype = cache.kernel.dtype
    d_outputs = v.gradient_input(d_outputs, (batch, steps, units), "d_outputs",
                                 "(batch, time, units)", dtype)
    d_h_n = v.gradient_input(d_h_n, (batch, units), "d_h_n", "(batch, units)", dtype)
    return d_outputs, d_h_n


def _weight_rows(weight_layout) -> bool:
    """True for torch's weight layout, False for Keras'."""
    if not isinstance(weight_layout, str) or weight_layout not in ("keras", "torch"):
        raise ValueError(f"weight_layout: expected 'keras' or 'torch', got {weight_layout!r}")
    return weight_layout == "torch"


def _recurrent_weights(x, kernel, recurrent_kernel, gates: int, rows: bool = False):
    """Validated (kernel, recurrent_kernel, units) for a cell with `gates` gate blocks, in
    Keras' layout or, with rows, torch's (gate blocks stacked along the rows)."""
    features = x.shape[2]
    blocks = "units" if gates == 1 else f"{gates}*units"
    recurrent_kernel = v.float_array(recurrent_kernel, "recurrent_kernel", x.dtype)
    shape = f"({blocks}, units)" if rows else f"(units, {blocks})"
    if recurrent_kernel.ndim != 2 or recurrent_kernel.shape[1 if rows else 0] < 1:
        raise ValueError(f"recurrent_kernel: expected shape {shape}, got {recurrent_kernel.shape}")
    units = recurrent_kernel.shape[1 if rows else 0]
    if rows:
        recurrent_kernel = v.weight(recurrent_kernel, (gates * units, units), "recurrent_kernel",
                                    shape, x.dtype)
        kernel = v.weight(kernel, (gates * units, features), "kernel",
                          f"({blocks}, features)", x.dtype)
    else:
        recurrent_kernel = v.weight(recurrent_kernel, (units, gates * units), "recurrent_kernel",
                                    shape, x.dtype)
        kernel = v.weight(kernel, (features, gates * units), "kernel",
                          f"(features, {blocks})", x.dtype)
    return kernel, recurrent_kernel, units


def lstm_forward(x, kernel, recurrent_kernel, bias=None, *, initial_state=None, mask=None,
                 go_backwards=False, zero_output_for_mask=False, training=False,
                 activation="tanh", recurrent_activation="sigmoid",
                 recurrent_dropout_mask=None, weight_layout="keras") -> LSTMOutput:
    """Run an LSTM over a whole sequence with the fused kernel.

    x: (batch, time, features).  kernel: (features, 4*units).  recurrent_kernel:
    (units, 4*units).  bias: (4*units,) or None.  Gate order i, f, c, o.
    initial_state: (h0, c0), each (batch, units), or None for zeros.
    recurrent_dropout_mask: (batch, units) or None; multiplies h_{t-1} where it enters the
    recurrent matmul at every step (Keras 3's recurrent dropout with one mask shared by
    the four gates; scale it by 1/(1-rate)).
    With training=True the cache keeps references to the weights, initial state and
    dropout mask (not copies): do not modify them in place before lstm_backward.
    weight_layout: "keras" (get_weights()' layout, the default) or "torch": kernel and
    recurrent_kernel are torch.nn.LSTM's weight_ih (4*units, features) and weight_hh
    (4*units, units), bias is bias_ih + bias_hh; lstm_backward then returns the kernel,
    recurrent_kernel and bias gradients in that layout (bias: the sum's, which is each
    torch bias's).  Both passes read torch's rows where they pack or multiply the weights
    and write the gradients in torch's layout: no transposes, as fast as Keras' layout.
    Returns LSTMOutput(outputs, h_n, c_n, cache); cache is None unless training=True.
    """
    x = v.sequence_input(x, "x")
    batch, steps, features = x.shape
    rows = _weight_rows(weight_layout)
    kernel, recurrent_kernel, units = _recurrent_weights(x, kernel, recurrent_kernel, 4, rows)
    if bias is not None:
        bias = v.weight(bias, (4 * units,), "bias", "(4*units,)", x.dtype)
    h0, c0 = v.initial_states(initial_state, 2, batch, units, x.dtype)
    mask_u8 = v.mask_array(mask, batch, steps)
    rec_mask = v.optional_state_like(recurrent_dropout_mask, batch, units, x.dtype,
                                     "recurrent_dropout_mask")
    options = _lstm_options(go_backwards, zero_output_for_mask, activation, recurrent_activation)
    outputs, h_n, c_n, arrays = _lstm_forward_kernel(
        x, kernel, recurrent_kernel, bias, mask_u8, h0, c0, rec_mask, *options,
        v.flag(training, "training"), rows
    )
    cache = None
    if training:
        cache = LSTMCache(kernel, recurrent_kernel, bias is not None, h0, c0, rec_mask, arrays,
                          options, (batch, steps, features, units), rows)
    return LSTMOutput(outputs, h_n, c_n, cache)


def lstm_backward(cache: LSTMCache, d_outputs=None, d_h_n=None, d_c_n=None, *,
                  input_gradient: bool = True, initial_gradient: bool = True) -> LSTMGradients:
    """Gradients of a scalar loss w.r.t. every input of lstm_forward, given the loss's
    gradients w.r.t. its outputs (batch, time, units), h_n and c_n (batch, units).
    None means zero.  With input_gradient=False the gradient w.r.t. x is not computed
    (one GEMM less; ``x`` is None), as for a first layer fed with data.  With
    initial_gradient=False the gradients w.r.t. the initial state are not wanted
    (``h0``, ``c0`` None; a single step on torch's layout skips its product with the
    recurrent weights), as for a state that needs no gradient.  The cache is not
    consumed: it may be used again."""
    if not isinstance(cache, LSTMCache):
        raise TypeError(
            "cache: expected the cache returned by lstm_forward(..., training=True), got "
            f"{type(cache).__name__}"
        )
    d_outputs, d_h_n = _upstream_gradients(cache, d_outputs, d_h_n)
    batch, _, _, units = cache.shape
    d_c_n = v.gradient_input(d_c_n, (batch, units), "d_c_n", "(batch, units)", cache.kernel.dtype)
    dx, dk, dr, db, dh0, dc0 = _lstm_backward_kernel(
        cache.kernel, cache.recurrent_kernel, cache.has_bias, cache.h0, cache.c0,
        cache.recurrent_dropout_mask, cache.arrays, d_outputs, d_h_n, d_c_n, *cache.options,
        _gradient_flag(input_gradient),
        cache.weight_rows, _gradient_flag(initial_gradient, "initial_gradient")
    )
    return LSTMGradients(dx, dk, dr, db, dh0 if cache.h0 is not None else None,
                         dc0 if cache.c0 is not None else None)


# ---------------------------------------------------------------------------- GRU ----

__all__ += ["GRUOutput", "GRUGradients", "GRUCache", "gru_forward", "gru_backward",
            "SimpleRNNOutput", "SimpleRNNGradients", "SimpleRNNCache", "simple_rnn_forward",
            "simple_rnn_backward"]

_gru_forward_kernel = _kernels.gru_forward
_gru_backward_kernel = _kernels.gru_backward
_simple_rnn_forward_kernel = _kernels.simple_rnn_forward
_simple_rnn_backward_kernel = _kernels.simple_rnn_backward


class GRUOutput(NamedTuple):
    outputs: np.ndarray        # (batch, time, units), in processing order
    h_n: np.ndarray            # (batch, units)
    cache: Optional["GRUCache"]  # None unless training=True


class GRUGradients(NamedTuple):
    x: Optional[np.ndarray]     # None when the backward pass was asked for no input gradient
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: Optional[np.ndarray]  # None when the forward pass had no bias; else its shape
    h0: Optional[np.ndarray]    # None when the forward pass had no initial_state


class _RecurrentCache:
    """What the backward pass needs, saved by the forward pass with training=True.
    Opaque; reusable (backward only reads it)."""

    __slots__ = ("kernel", "recurrent_kernel", "has_bias", "h0", "recurrent_dropout_mask",
                 "arrays", "options", "shape", "weight_rows")

    def __init__(self, kernel, recurrent_kernel, has_bias, h0, recurrent_dropout_mask, arrays,
                 options, shape, weight_rows=False):
        self.weight_rows = weight_rows  # torch's layout: the gradients come in it too
        self.kernel = kernel
        self.recurrent_kernel = recurrent_kernel
        self.has_bias = has_bias
        self.h0 = h0
        self.recurrent_dropout_mask = recurrent_dropout_mask  # as the kernel takes it, or None
        self.arrays = arrays
        self.options = options
        self.shape = shape  # (batch, time, features, units)

    @property
    def nbytes(self) -> int:
        """Bytes saved for backward (excluding the weights, which are shared)."""
        return sum(a.nbytes for a in self.arrays if a is not None)


class GRUCache(_RecurrentCache):
    """Saved by gru_forward(training=True): per step and batch row the activated gates
    z, r, hh (3*units), the recurrent h-block term (units: h_{t-1} U_h + b_rec_h with
    reset_after=True, r * h_{t-1} without), the state (units), and the input (features)."""

    __slots__ = ()


class SimpleRNNCache(_RecurrentCache):
    """Saved by simple_rnn_forward(training=True): per step and batch row the state (units,
    which is also the activation's output) and the input (features)."""

    __slots__ = ()


def _check_cache(cache, cls, producer: str):
    if not isinstance(cache, cls):
        raise TypeError(
            f"cache: expected the cache returned by {producer}(..., training=True), got "
            f"{type(cache).__name__}"
        )


def _gru_dropout_masks(value, batch: int, units: int, dtype):
    """The recurrent dropout masks as the kernel takes them: (3, batch, units) for the gate
    blocks z, r, h, C-contiguous; a (batch, units) mask is used for all three."""
    if value is None:
        return None
    array = v.float_array(value, "recurrent_dropout_mask", dtype)
    if array.shape == (batch, units):
        return v.c_array(np.broadcast_to(array, (3, batch, units)))
    v.check_shape(array, (3, batch, units), "recurrent_dropout_mask",
                  "(batch, units) or (3, batch, units) [z, r, h]")
    return v.c_array(array)


def gru_forward(x, kernel, recurrent_kernel, bias=None, *, reset_after=True,
                initial_state=None, mask=None, go_backwards=False, zero_output_for_mask=False,
                training=False, activation="tanh", recurrent_activation="sigmoid",
                recurrent_dropout_mask=None, weight_layout="keras") -> GRUOutput:
    """Run a GRU over a whole sequence with the fused kernel (Keras' GRU semantics).

    x: (batch, time, features).  kernel: (features, 3*units).  recurrent_kernel:
    (units, 3*units).  Gate order z, r, h.  bias: (2, 3*units) [input row; recurrent row]
    with reset_after=True (torch's formulation), (3*units,) with reset_after=False, or None.
    initial_state: h0 (batch, units) or a 1-element list/tuple of it, or None for zeros.
    recurrent_dropout_mask: None, (batch, units), or (3, batch, units) with one mask per gate
    block z, r, h as Keras 3's GRUCell draws them (implementation 1): h_{t-1}*m_g replaces
    h_{t-1} where it meets the recurrent kernel's gate-g block; the update z*h_{t-1} uses
    h_{t-1} itself.
    weight_layout: "keras" (get_weights()' layout, the default) or "torch": kernel and
    recurrent_kernel are torch.nn.GRU's weight_ih (3*units, features) and weight_hh
    (3*units, units), gate rows r, z, n, and bias is [bias_ih; bias_hh] (2, 3*units) in
    that order ((3*units,) with reset_after=False); gru_backward's weight gradients come
    in that layout too, as for lstm_forward.  One step (time = 1) is computed straight
    from torch's rows, forward and backward; longer sequences read the rows too, gate
    block by gate block, in both passes.
    Returns GRUOutput(outputs, h_n, cache); cache is None unless training=True.
    """
    x = v.sequence_input(x, "x")
    batch, steps, features = x.shape
    if not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after: expected a bool, got {type(reset_after).__name__}")
    reset_after = v.flag(reset_after, "reset_after")
    rows = _weight_rows(weight_layout)
    kernel, recurrent_kernel, units = _recurrent_weights(x, kernel, recurrent_kernel, 3, rows)
    if bias is not None:
        if reset_after:
            bias = v.weight(bias, (2, 3 * units), "bias",
                            "(2, 3*units) [input row; recurrent row] (reset_after=True)", x.dtype)
        else:
            bias = v.weight(bias, (3 * units,), "bias", "(3*units,) (reset_after=False)", x.dtype)
    (h0,) = v.initial_states(initial_state, 1, batch, units, x.dtype)
    mask_u8 = v.mask_array(mask, batch, steps)
    rec_mask = _gru_dropout_masks(recurrent_dropout_mask, batch, units, x.dtype)
    options = (reset_after,) + _lstm_options(go_backwards, zero_output_for_mask, activation,
                                             recurrent_activation)
    outputs, h_n, arrays = _gru_forward_kernel(
        x, kernel, recurrent_kernel, bias, mask_u8, h0, rec_mask, *options,
        v.flag(training, "training"), rows
    )
    cache = None
    if training:
        cache = GRUCache(kernel, recurrent_kernel, bias is not None, h0, rec_mask, arrays,
                         options, (batch, steps, features, units), rows)
    return GRUOutput(outputs, h_n, cache)


def gru_backward(cache: GRUCache, d_outputs=None, d_h_n=None, *,
                 input_gradient: bool = True, initial_gradient: bool = True) -> GRUGradients:
    """Gradients of a scalar loss w.r.t. every input of gru_forward, given the loss's
    gradients w.r.t. its outputs (batch, time, units) and h_n (batch, units); None means
    zero.  input_gradient=False skips the gradient w.r.t. x (``x`` is None),
    initial_gradient=False the one w.r.t. the initial state (``h0`` is None), as for
    lstm_backward.  The cache is not consumed: it may be used again."""
    _check_cache(cache, GRUCache, "gru_forward")
    d_outputs, d_h_n = _upstream_gradients(cache, d_outputs, d_h_n)
    dx, dk, dr, db, dh0 = _gru_backward_kernel(
        cache.kernel, cache.recurrent_kernel, cache.has_bias, cache.h0,
        cache.recurrent_dropout_mask, cache.arrays,
        d_outputs, d_h_n, *cache.options, _gradient_flag(input_gradient),
        cache.weight_rows, _gradient_flag(initial_gradient, "initial_gradient")
    )
    return GRUGradients(dx, dk, dr, db, dh0 if cache.h0 is not None else None)


# ---------------------------------------------------------------------- SimpleRNN ----

class SimpleRNNOutput(NamedTuple):
    outputs: np.ndarray        # (batch, time, units), in processing order
    h_n: np.ndarray            # (batch, units)
    cache: Optional["SimpleRNNCache"]  # None unless training=True


class SimpleRNNGradients(NamedTuple):
    x: Optional[np.ndarray]     # None when the backward pass was asked for no input gradient
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: Optional[np.ndarray]  # None when the forward pass had no bias
    h0: Optional[np.ndarray]    # None when the forward pass had no initial_state


def simple_rnn_forward(x, kernel, recurrent_kernel, bias=None, *, activation="tanh",
                       initial_state=None, mask=None, go_backwards=False,
                       zero_output_for_mask=False, training=False,
                       recurrent_dropout_mask=None, weight_layout="keras") -> SimpleRNNOutput:
    """Run a SimpleRNN, h = activation(x W + b + h_{t-1} U), with the fused kernel.

    x: (batch, time, features).  kernel: (features, units).  recurrent_kernel:
    (units, units).  bias: (units,) or None.  initial_state: h0 (batch, units) or a
    1-element list/tuple of it, or None for zeros.  recurrent_dropout_mask: (batch, units)
    or None; multiplies h_{t-1} where it meets the recurrent kernel (Keras 3).
    weight_layout: "keras" (get_weights()' layout, the default) or "torch": kernel and
    recurrent_kernel are torch.nn.RNN's weight_ih (units, features) and weight_hh (units,
    units), bias is bias_ih + bias_hh; the gradients come in that layout too, and both
    passes read the rows without transposes, as for lstm_forward.
    Returns SimpleRNNOutput(outputs, h_n, cache); cache is None unless training=True.
    """
    x = v.sequence_input(x, "x")
    batch, steps, features = x.shape
    rows = _weight_rows(weight_layout)
    kernel, recurrent_kernel, units = _recurrent_weights(x, kernel, recurrent_kernel, 1, rows)
    if bias is not None:
        bias = v.weight(bias, (units,), "bias", "(units,)", x.dtype)
    (h0,) = v.initial_states(initial_state, 1, batch, units, x.dtype)
    mask_u8 = v.mask_array(mask, batch, steps)
    rec_mask = v.optional_state_like(recurrent_dropout_mask, batch, units, x.dtype,
                                     "recurrent_dropout_mask")
    options = (v.flag(go_backwards, "go_backwards"), v.flag(zero_output_for_mask, "zero_output_for_mask"),
               v.activation_code(activation, "activation"))
    outputs, h_n, arrays = _simple_rnn_forward_kernel(
        x, kernel, recurrent_kernel, bias, mask_u8, h0, rec_mask, *options,
        v.flag(training, "training"), rows
    )
    cache = None
    if training:
        cache = SimpleRNNCache(kernel, recurrent_kernel, bias is not None, h0, rec_mask, arrays,
                               options, (batch, steps, features, units), rows)
    return SimpleRNNOutput(outputs, h_n, cache)


def simple_rnn_backward(cache: SimpleRNNCache, d_outputs=None, d_h_n=None, *,
                        input_gradient: bool = True,
                        initial_gradient: bool = True) -> SimpleRNNGradients:
    """Gradients of a scalar loss w.r.t. every input of simple_rnn_forward, given the
    loss's gradients w.r.t. its outputs (batch, time, units) and h_n (batch, units); None
    means zero.  input_gradient=False skips the gradient w.r.t. x (``x`` is None),
    initial_gradient=False the one w.r.t. the initial state (``h0`` is None), as for
    lstm_backward.  The cache is not consumed: it may be used again."""
    _check_cache(cache, SimpleRNNCache, "simple_rnn_forward")
    d_outputs, d_h_n = _upstream_gradients(cache, d_outputs, d_h_n)
    dx, dk, dr, db, dh0 = _simple_rnn_backward_kernel(
        cache.kernel, cache.recurrent_kernel, cache.has_bias, cache.h0,
        cache.recurrent_dropout_mask, cache.arrays,
        d_outputs, d_h_n, *cache.options, _gradient_flag(input_gradient),
        cache.weight_rows, _gradient_flag(initial_gradient, "initial_gradient")
    )
    return SimpleRNNGradients(dx, dk, dr, db, dh0 if cache.h0 is not None else None)

