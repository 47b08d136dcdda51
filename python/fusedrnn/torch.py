"""PyTorch drop-in replacements for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Replace ``torch.nn.LSTM(...)`` by ``fusedrnn.torch.LSTM(...)`` and change nothing else: the
constructor signature, the parameter names, shapes and default initialisation, the
``forward`` arguments (a Tensor, batched or unbatched, or a PackedSequence, and ``hx``)
and the returned values are torch's.  Each class subclasses its ``torch.nn`` counterpart,
so ``isinstance(m, torch.nn.LSTM)``, ``state_dict``/``load_state_dict`` in both
directions, ``.double()``/``.float()``, optimizers and DistributedDataParallel all work as
with torch; only ``forward`` is ours.

Each layer and direction runs through one ``torch.autograd.Function`` that calls the fused
kernels of :mod:`fusedrnn.ops` (``*_forward(training=True)`` in forward, ``*_backward`` in
backward); under ``torch.no_grad()`` (or when nothing requires a gradient) the kernels run
with ``training=False`` and save nothing.  A one-layer, one-direction module called on a
batched Tensor (a decoding loop's call, or a plain model's) takes a short path after its
own checks (``_one_layer``): the kernels are called directly, without fusedrnn.ops' checks
and the general machinery, in inference and in training.  CPU tensors only, float32 or
float64.

Weights: the modules hand torch's ``weight_ih`` and ``weight_hh`` to the kernels as they
are (``weight_layout="torch"``: the kernels pack and multiply torch's rows, gate block by
gate block for the GRU, whose gate order r, z, n is Keras' z, r, h swapped, and return the
weight gradients in torch's layout): nothing is transposed on the way in or out.  LSTM
and RNN pass one bias ``bias_ih + bias_hh`` (its gradient goes to both); GRU keeps torch's
two biases as the ``reset_after=True`` bias ``[b_ih; b_hh]``.

``proj_size > 0`` (LSTM with projections) is not supported: the fused kernel has no
projection inside the recurrence, so the constructor raises a ValueError.
"""
from __future__ import annotations

import functools

import numpy as np
import torch  # absolute import: the real PyTorch, not this module
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import ops
from ._validation import ACTIVATIONS

__all__ = ["LSTM", "GRU", "RNN"]

_SUPPORTED_DTYPES = (torch.float32, torch.float64)
_INT32_MAX = 2**31 - 1  # BLAS' integers (fusedrnn.ops checks it in general)


# --------------------------------------------------------------------------------------
# Cells: how one torch layer/direction maps onto the kernels of fusedrnn.ops.
# The kernels take torch's weights as they are (weight_layout="torch"), forward and
# backward, and return the weight gradients in torch's layout.  Each cell has n_states (2
# for LSTM's (h, c), else 1), n_gates (gate blocks) and these methods:
#   torch_weights(w_ih, w_hh, b_ih, b_hh) -> (kernel, recurrent_kernel, bias) as NumPy,
#   forward(x, kernel, recurrent, bias, initial, mask, go_backwards, training)
#       -> (outputs in processing order, final states tuple, cache or None),
#   backward(cache, d_outputs, d_states, input_gradient, initial_gradient) -> (dx,
#       d_kernel, d_recurrent, d_bias, d_initial): dx None without input_gradient,
#       d_initial's entries None without initial_gradient,
#   kernel_forward(x, kernel, recurrent, bias, initial, training) -> (outputs, final
#       states tuple, saved arrays or None) and kernel_backward(saved, d_outputs, d_states,
#       input_gradient, initial_gradient) -> as backward: forward and backward straight through the
#       kernels (torch's layout, no mask, forward direction) for arguments the module
#       checked itself (its _one_layer); saved = (kernel, recurrent, bias, initial,
#       arrays),
#   torch_gradients(d_kernel, d_recurrent, d_bias) -> torch gradients of the 4 parameters.
# --------------------------------------------------------------------------------------

def _numpy(tensor):
    """A NumPy view of a CPU tensor (no copy); None stays None."""
    return None if tensor is None else tensor.detach().numpy()


def _require_op(name):
    """The kernel fusedrnn.ops.<name>, looked up at call time."""
    function = getattr(ops, name, None)
    if function is None:
        raise NotImplementedError(
            f"fusedrnn.ops.{name} is not available in this build of fusedrnn"
        )
    return function


class _SummedBiasCell:
    """Cells whose torch biases only ever appear as a sum (LSTM, RNN): they are added."""

    def torch_weights(self, w_ih, w_hh, b_ih, b_hh):
        """The kernels' inputs in torch's layout (weight_layout="torch"): no transposes."""
        bias = None if b_ih is None else _numpy(b_ih) + _numpy(b_hh)
        return _numpy(w_ih), _numpy(w_hh), bias

    def torch_gradients(self, d_kernel, d_recurrent, d_bias):
        """Kernel gradients in torch's layout -> torch's (weight_ih, weight_hh, bias_ih,
        bias_hh).

        The summed bias feeds both torch biases, so both receive its gradient (as two
        separate tensors: autograd may keep a returned gradient as a parameter's .grad)."""
        d_w_ih, d_w_hh = torch.from_numpy(d_kernel), torch.from_numpy(d_recurrent)
        if d_bias is None:
            return d_w_ih, d_w_hh, None, None
        d_b = torch.from_numpy(d_bias)
        return d_w_ih, d_w_hh, d_b, d_b.clone()


class _LSTMCell(_SummedBiasCell):
    """LSTM: torch's gate order (i, f, g, o) is Keras' (i, f, c, o)."""

    n_states = 2
    n_gates = 4

    def forward(self, x, kernel, recurrent, bias, initial, mask, go_backwards, training):
        result = _require_op("lstm_forward")(
            x, kernel, recurrent, bias, initial_state=initial, mask=mask,
            go_backwards=go_backwards, zero_output_for_mask=mask is not None, training=training,
            weight_layout="torch",
        )
        return result.outputs, (result.h_n, result.c_n), result.cache

    def kernel_forward(self, x, kernel, recurrent, bias, initial, training):
        h0, c0 = initial if initial else (None, None)
        outputs, h_n, c_n, arrays = ops._lstm_forward_kernel(
            x, kernel, recurrent, bias, None, h0, c0, None, False, False, ACTIVATIONS["tanh"],
            ACTIVATIONS["sigmoid"], training, True)
        return outputs, (h_n, c_n), arrays

    def kernel_backward(self, saved, d_outputs, d_states, input_gradient, initial_gradient):
        kernel, recurrent, bias, initial, arrays = saved
        h0, c0 = initial if initial else (None, None)
        dx, dk, dr, db, dh0, dc0 = ops._lstm_backward_kernel(
            kernel, recurrent, bias is not None, h0, c0, None, arrays, d_outputs, *d_states,
            False, False, ACTIVATIONS["tanh"], ACTIVATIONS["sigmoid"], input_gradient, True,
            initial_gradient)
        return dx, dk, dr, db, (dh0, dc0)

    def backward(self, cache, d_outputs, d_states, input_gradient, initial_gradient):
        grads = _require_op("lstm_backward")(cache, d_outputs, d_states[0], d_states[1],
                                             input_gradient=input_gradient,
                                             initial_gradient=initial_gradient)
        return grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, (grads.h0, grads.c0)


class _RNNCell(_SummedBiasCell):
    """Elman RNN, h = nonlinearity(x W_ih^T + h W_hh^T + b), with tanh or relu."""

    n_states = 1
    n_gates = 1

    def __init__(self, nonlinearity):
        self.nonlinearity = nonlinearity

    def forward(self, x, kernel, recurrent, bias, initial, mask, go_backwards, training):
        result = _require_op("simple_rnn_forward")(
            x, kernel, recurrent, bias, activation=self.nonlinearity, initial_state=initial,
            mask=mask, go_backwards=go_backwards, zero_output_for_mask=mask is not None,
            training=training, weight_layout="torch",
        )
        return result.outputs, (result.h_n,), result.cache

    def kernel_forward(self, x, kernel, recurrent, bias, initial, training):
        outputs, h_n, arrays = ops._simple_rnn_forward_kernel(
            x, kernel, recurrent, bias, None, initial[0] if initial else None, None, False,
            False, ACTIVATIONS[self.nonlinearity], training, True)
        return outputs, (h_n,), arrays

    def kernel_backward(self, saved, d_outputs, d_states, input_gradient, initial_gradient):
        kernel, recurrent, bias, initial, arrays = saved
        dx, dk, dr, db, dh0 = ops._simple_rnn_backward_kernel(
            kernel, recurrent, bias is not None, initial[0] if initial else None, None, arrays,
            d_outputs, d_states[0], False, False, ACTIVATIONS[self.nonlinearity],
            input_gradient, True, initial_gradient)
        return dx, dk, dr, db, (dh0,)

    def backward(self, cache, d_outputs, d_states, input_gradient, initial_gradient):
        grads = _require_op("simple_rnn_backward")(cache, d_outputs, d_states[0],
                                                   input_gradient=input_gradient,
                                                   initial_gradient=initial_gradient)
        return grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, (grads.h0,)


class _GRUCell:
    """GRU: torch's rows (r, z, n) become Keras' columns (z, r, h), reset_after=True.

    torch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) is Keras' reset_after candidate
    with bias [b_ih; b_hh], and torch's h = (1 - z) * n + z * h_prev is Keras' update."""

    n_states = 1
    n_gates = 3

    def torch_weights(self, w_ih, w_hh, b_ih, b_hh):
        """The kernels' inputs in torch's layout (weight_layout="torch"): no transposes,
        torch's gate order."""
        bias = None if b_ih is None else np.stack([_numpy(b_ih), _numpy(b_hh)])
        return _numpy(w_ih), _numpy(w_hh), bias

    def forward(self, x, kernel, recurrent, bias, initial, mask, go_backwards, training):
        result = _require_op("gru_forward")(
            x, kernel, recurrent, bias, reset_after=True, initial_state=initial, mask=mask,
            go_backwards=go_backwards, zero_output_for_mask=mask is not None, training=training,
            weight_layout="torch",
        )
        return result.outputs, (result.h_n,), result.cache

    def kernel_forward(self, x, kernel, recurrent, bias, initial, training):
        outputs, h_n, arrays = ops._gru_forward_kernel(
            x, kernel, recurrent, bias, None, initial[0] if initial else None, None, True,
            False, False, ACTIVATIONS["tanh"], ACTIVATIONS["sigmoid"], training, True)
        return outputs, (h_n,), arrays

    def kernel_backward(self, saved, d_outputs, d_states, input_gradient, initial_gradient):
        kernel, recurrent, bias, initial, arrays = saved
        dx, dk, dr, db, dh0 = ops._gru_backward_kernel(
            kernel, recurrent, bias is not None, initial[0] if initial else None, None, arrays,
            d_outputs, d_states[0], True, False, False, ACTIVATIONS["tanh"],
            ACTIVATIONS["sigmoid"], input_gradient, True, initial_gradient)
        return dx, dk, dr, db, (dh0,)

    def backward(self, cache, d_outputs, d_states, input_gradient, initial_gradient):
        grads = _require_op("gru_backward")(cache, d_outputs, d_states[0],
                                            input_gradient=input_gradient,
                                            initial_gradient=initial_gradient)
        return grads.x, grads.kernel, grads.recurrent_kernel, grads.bias, (grads.h0,)

    def torch_gradients(self, d_kernel, d_recurrent, d_bias):
        """Kernel gradients in torch's layout and gate order -> torch's (weight_ih,
        weight_hh, bias_ih, bias_hh); d_bias is [bias_ih; bias_hh]."""
        return (torch.from_numpy(d_kernel), torch.from_numpy(d_recurrent),
                *((None, None) if d_bias is None else map(torch.from_numpy, d_bias)))


def _outputs_in_input_order(outputs, go_backwards):
    """The kernels return outputs in processing order: re-reverse a backward direction."""
    outputs = torch.from_numpy(outputs)
    return outputs.flip(1) if go_backwards else outputs


# --------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------

def _direction_forward(cell, checked, x, weights, initial, mask, go_backwards, training):
    """(outputs in processing order, final states, cache or None) of one direction from
    torch tensors: through the cell's kernels directly when checked (the cache is then
    what kernel_backward takes), else through fusedrnn.ops (its cache)."""
    kernel, recurrent, bias = cell.torch_weights(*weights)
    initial_np = tuple(_numpy(s) for s in initial) if initial else None
    if not checked:
        return cell.forward(_numpy(x), kernel, recurrent, bias, initial_np, mask, go_backwards,
                            training=training)
    outputs, states, arrays = cell.kernel_forward(_numpy(x), kernel, recurrent, bias,
                                                  initial_np, training)
    return outputs, states, (kernel, recurrent, bias, initial_np, arrays) if training else None


def _kernel_gradient(gradient):
    """An upstream gradient as the kernels can read it, None staying None: a NumPy view when
    its last axis is contiguous (outputs') or it is contiguous (a state's), else a contiguous
    copy (autograd may hand expanded, zero-stride gradients), except for outputs' gradient
    of sum() (one value, every stride zero): one contiguous row read at every step and row
    (strides 0, 0, 1), not a copy as large as the outputs."""
    if gradient is None:
        return None
    if gradient.dim() == 3:
        if gradient.stride(2) == 1 or gradient.shape[2] == 1:
            return _numpy(gradient)
        if gradient.stride() == (0, 0, 0):
            return _numpy(gradient[0, 0].contiguous().expand(gradient.shape))
    return _numpy(gradient.contiguous())


class _FusedDirection(torch.autograd.Function):
    """One layer and direction: fused forward, fused BPTT backward.

    Inputs: x (batch, time, features) in input order, torch's weight_ih, weight_hh,
    bias_ih, bias_hh (or None), and the initial states (none, or n_states tensors of shape
    (batch, hidden)).  Returns the outputs (batch, time, hidden) in input order and the
    final states.  checked: the module checked every argument itself (its _one_layer: no
    mask, forward direction, exact shapes, contiguous weights), so both passes call the
    cell's kernels directly; else they go through fusedrnn.ops, whose checks also copy
    what the kernels cannot address."""

    @staticmethod
    def forward(ctx, cell, mask, go_backwards, checked, x, w_ih, w_hh, b_ih, b_hh, *initial):
        ctx.set_materialize_grads(False)  # None gradients reach the kernels as "zero"
        outputs, states, cache = _direction_forward(cell, checked, x, (w_ih, w_hh, b_ih, b_hh),
                                                    initial, mask, go_backwards, True)
        # The kernels' cache reads the weights and initial states in place (NumPy views):
        # saved here, so that autograd's version check raises, as torch.nn's does, when
        # one that backward reads is modified in place before it (else its new values would
        # be used).  weight_ih is read for x's gradient only.
        ctx.save_for_backward(w_hh, *initial, *((w_ih,) if ctx.needs_input_grad[4] else ()))
        ctx.cell = cell
        ctx.checked = checked
        ctx.cache = cache
        ctx.go_backwards = go_backwards
        ctx.n_initial = len(initial)
        return (_outputs_in_input_order(outputs, go_backwards),
                *(torch.from_numpy(s) for s in states))

    @staticmethod
    def backward(ctx, d_outputs, *d_states):
        if torch.is_grad_enabled():  # create_graph=True: results that refuse a 2nd derivative
            return _backward_once_differentiable(ctx, d_outputs, *d_states)
        return _FusedDirection.fused_backward(ctx, d_outputs, *d_states)

    @staticmethod
    def fused_backward(ctx, d_outputs, *d_states):
        """backward's gradients; BPTT in C: no double backward."""
        ctx.saved_tensors  # raises if a weight or initial state was modified in place
        # x's gradient only when autograd asks for it (not for a first layer fed with data,
        # like torch.nn's own RNNs): one GEMM less
        need_dx = ctx.needs_input_grad[4]
        # the initial states' likewise (a state carried from the last call without a
        # gradient: a single step then skips its product with weight_hh)
        need_initial = any(ctx.needs_input_grad[9:])
        if ctx.checked:
            dx, d_kernel, d_recurrent, d_bias, d_initial = ctx.cell.kernel_backward(
                ctx.cache, _kernel_gradient(d_outputs), tuple(map(_kernel_gradient, d_states)),
                need_dx, need_initial)
        else:
            d_out = _numpy(d_outputs)
            if d_out is not None and ctx.go_backwards:
                d_out = d_out[:, ::-1]  # the kernel wants processing order; a strided view
            dx, d_kernel, d_recurrent, d_bias, d_initial = ctx.cell.backward(
                ctx.cache, d_out, tuple(_numpy(d) for d in d_states), need_dx, need_initial)
        d_w_ih, d_w_hh, d_b_ih, d_b_hh = ctx.cell.torch_gradients(d_kernel, d_recurrent,
                                                                  d_bias)
        d_initial_t = (tuple(torch.from_numpy(d) for d in d_initial) if need_initial
                       else (None,) * ctx.n_initial)
        return (None, None, None, None, torch.from_numpy(dx) if need_dx else None, d_w_ih,
                d_w_hh, d_b_ih, d_b_hh, *d_initial_t)


# torch's wrapper makes a second derivative through the results raise; it costs a
# no_grad block a call, so backward takes it only when autograd builds a graph
_backward_once_differentiable = torch.autograd.function.once_differentiable(
    _FusedDirection.fused_backward)


def _run_direction(cell, x, weights, initial, mask, go_backwards, checked=False):
    """Outputs (batch, time, hidden) in input order and final states of one direction.

    Goes through autograd only when a gradient is wanted; otherwise the kernels run in
    inference mode (training=False) and cache nothing.  checked: as for _FusedDirection."""
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, *weights, *initial)):
        results = _FusedDirection.apply(cell, mask, go_backwards, checked, x, *weights,
                                        *initial)
        return results[0], tuple(results[1:])
    outputs, states, _ = _direction_forward(cell, checked, x, weights, initial, mask,
                                            go_backwards, False)
    return (_outputs_in_input_order(outputs, go_backwards),
            tuple(torch.from_numpy(s) for s in states))


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _weight_names(layer, direction, bias):
    """torch's parameter names of a layer and direction, weights then biases."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih",
                                                                         "weight_hh")
    return tuple(kind + suffix for kind in kinds)


class _FusedRNNMixin:
    """The shared ``forward`` of LSTM, GRU and RNN.  Expects torch.nn.RNNBase attributes
    (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)."""

    def _cell(self):
        raise NotImplementedError  # each module names its cell

    # -- argument checks -----------------------------------------------------------
    def _check_tensor(self, tensor, argname, dtype=None):
        cls = type(self).__name__
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{cls}: {argname} must be a torch.Tensor, got "
                            f"{type(tensor).__name__}")
        if not tensor.is_cpu:
            raise ValueError(f"{cls}: {argname} is on device {tensor.device}; the fused "
                             "kernels run on the CPU only (move it with .cpu())")
        if dtype is None and tensor.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"{cls}: {argname} has dtype {tensor.dtype}; expected "
                            "torch.float32 or torch.float64")
        if dtype is not None and tensor.dtype != dtype:
            raise TypeError(f"{cls}: {argname} has dtype {tensor.dtype} but the input has "
                            f"dtype {dtype}; convert one of them (e.g. model.to({dtype}))")

    def _layer_weights(self, layer, direction):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of a layer and direction (biases None
        without bias).  Straight from the module's parameter dict (a decoding loop's
        per-call cost), else by attribute, which also finds parametrized weights."""
        names = _weight_names(layer, direction, self.bias)
        params = self._parameters
        if all(name in params for name in names):
            weights = tuple(params[name] for name in names)
        else:
            weights = tuple(getattr(self, name) for name in names)
        return weights if self.bias else (*weights, None, None)

    def _initial_states(self, hx, batch, is_batched, dtype, n_states):
        """hx as a tuple of (layers*directions, batch, hidden) tensors, or None."""
        if hx is None:
            return None
        cls = type(self).__name__
        if n_states == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{cls}: hx must be a tuple (h_0, c_0) of tensors, got "
                                f"{type(hx).__name__}")
            names = ("hx[0] (h_0)", "hx[1] (c_0)")
            states = tuple(hx)
        else:
            names = ("hx",)
            states = (hx,)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        expected = (layers, batch, self.hidden_size) if is_batched else (layers,
                                                                          self.hidden_size)
        shape_names = ("(num_layers * num_directions, batch, hidden_size)" if is_batched
                       else "(num_layers * num_directions, hidden_size) for unbatched input")
        checked = []
        for state, name in zip(states, names):
            self._check_tensor(state, name, dtype)
            if tuple(state.shape) != expected:
                raise ValueError(f"{cls}: {name} must have shape {shape_names} = {expected}, "
                                 f"got {tuple(state.shape)}")
            checked.append(state if is_batched else state.unsqueeze(1))
        return tuple(checked)

    # -- forward ----------------------------------------------------------------------
    def forward(self, input, hx=None):
        """torch.nn's forward, computed with the fused kernels.

        input: (time, batch, input_size), (batch, time, input_size) with batch_first,
        (time, input_size) unbatched, or a PackedSequence.  hx: initial hidden state(s) of
        shape (num_layers * num_directions, batch, hidden_size) (no batch axis for
        unbatched input); a tuple (h_0, c_0) for LSTM; None means zeros.
        Returns (output, h_n) or, for LSTM, (output, (h_n, c_n)), shaped as torch's."""
        short = self._one_layer(input, hx)
        if short is not None:
            return short
        cls = type(self).__name__
        packed = isinstance(input, PackedSequence)
        if packed:
            data = input.data
            self._check_tensor(data, "input.data")
            # Work in the caller's batch order (pad_packed_sequence un-sorts), where hx
            # and h_n live too; padded time steps are masked out.
            x, lengths = pad_packed_sequence(input, batch_first=True)
            steps = x.shape[1]
            mask = (torch.arange(steps)[None, :] < lengths[:, None]).numpy()
            is_batched = True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"{cls}: input must be a torch.Tensor or a PackedSequence, "
                                f"got {type(input).__name__}")
            self._check_tensor(input, "input")
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{cls}: input must be 3-D ({'batch, time' if self.batch_first else 'time, batch'}"
                    f", input_size) or 2-D unbatched (time, input_size), got shape "
                    f"{tuple(input.shape)}")
            is_batched = input.dim() == 3
            if not is_batched:
                x = input.unsqueeze(0)
            else:
                x = input if self.batch_first else input.transpose(0, 1)  # a view
            mask = None
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{cls}: input's last dimension must be input_size = "
                             f"{self.input_size}, got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{cls}: input must have at least one sequence and one time "
                             f"step, got shape {tuple(input.shape)}")
        dtype = x.dtype
        for name, param in self._parameters.items():  # named_parameters(recurse=False)
            if param is not None and not (param.dtype == dtype and param.is_cpu):
                self._check_tensor(param, f"parameter {name}", dtype)  # raises
        cell = self._cell()
        initial = self._initial_states(hx, x.shape[0], is_batched, dtype, cell.n_states)

        output, finals = self._run_layers(cell, x, initial, mask)

        if len(finals) == 1:  # one layer and direction: a view, not torch.stack's copy
            final_states = tuple(state.unsqueeze(0) for state in finals[0])
        else:
            final_states = tuple(torch.stack([f[k] for f in finals])
                                 for k in range(cell.n_states))
        if packed:
            output = self._pack_like(output, lengths, input)
        elif not is_batched:
            output = output.squeeze(0)
            final_states = tuple(s.squeeze(1) for s in final_states)
        elif not self.batch_first:
            output = output.transpose(0, 1).contiguous()  # torch returns a contiguous tensor
        hidden = final_states if cell.n_states == 2 else final_states[0]
        return output, hidden

    def _one_layer(self, input, hx):
        """forward's result on a short path for the common calls (one layer and direction,
        a batched Tensor: a decoding loop's, a plain model's), with or without autograd,
        or None where that does not apply, including every malformed argument: forward's
        full path then runs, checks and raises.  Everything the kernels need is checked
        here (dtypes, devices, exact shapes, contiguity), so they are called directly,
        without fusedrnn.ops' own checks (_FusedDirection's `checked`).  Why: right after
        a kernel call that streamed the weights through the caches, Python runs from cold
        caches.  In a loop of one-step SimpleRNN calls (batch 1, 512 units) the full path
        took 90-94 us a call in inference, this one 59-62 us, and torch.nn 88-90 us (calls
        alternating); a training step (forward and every gradient, hx carried without one)
        took 306-315 us on the full path, this one 267-270 us, torch.nn 288-291 us."""
        if (type(input) is not torch.Tensor or input.dim() != 3 or self.num_layers != 1
                or self.bidirectional):
            return None
        dtype = input.dtype
        if dtype not in _SUPPORTED_DTYPES or not input.is_cpu or input.stride(2) != 1:
            return None
        x = input if self.batch_first else input.transpose(0, 1)
        batch, steps, features = x.shape
        hidden = self.hidden_size
        if features != self.input_size or batch == 0 or steps == 0 or input.numel() > _INT32_MAX:
            return None
        cell = self._cell()
        rows = cell.n_gates * hidden
        weights = self._layer_weights(0, 0)
        shapes = ((rows, features), (rows, hidden), (rows,), (rows,))
        for weight, shape in zip(weights, shapes):
            if weight is not None and not (weight.dtype == dtype and weight.is_cpu
                                           and weight.shape == shape
                                           and weight.is_contiguous()):
                return None
        initial = ()
        if hx is not None:
            states = hx if cell.n_states == 2 else (hx,)
            expected = (1, batch, hidden)
            if not (isinstance(hx, tuple if cell.n_states == 2 else torch.Tensor)
                    and len(states) == cell.n_states
                    and all(type(s) is torch.Tensor and s.dtype == dtype and s.is_cpu
                            and s.shape == expected and s.is_contiguous() for s in states)):
                return None
            initial = tuple(s[0] for s in states)
        output, finals = _run_direction(cell, x, weights, initial, None, False, checked=True)
        if not self.batch_first:
            output = output.transpose(0, 1).contiguous()  # torch returns a contiguous tensor
        finals = tuple(s.unsqueeze(0) for s in finals)
        return output, (finals if cell.n_states == 2 else finals[0])

    def _run_layers(self, cell, x, initial, mask):
        """Stack the layers on batch-major x (batch, time, features).

        Returns the last layer's output (batch, time, directions * hidden) and, per layer
        and direction in torch's order, the tuple of final states.

        Packed input arrives padded with a (batch, time) prefix mask.  Masked steps keep
        the state and output zeros, which gives torch's PackedSequence semantics: padding
        outputs are zero and h_n is each sequence's state at its last valid step.  The
        reverse direction runs with go_backwards on the same mask: the padded tail is then
        processed first, leaves the initial state untouched, and each sequence effectively
        starts from its own last valid step, which is torch's per-sequence reversal without
        an index gather; its outputs come back in processing order and are flipped."""
        directions = 2 if self.bidirectional else 1
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                start = () if initial is None else tuple(s[index] for s in initial)
                out, states = _run_direction(cell, layer_input,
                                             self._layer_weights(layer, direction), start,
                                             mask, go_backwards=direction == 1)
                outputs.append(out)
                finals.append(states)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                # torch's inter-layer dropout: on every layer's output but the last
                layer_input = torch.nn.functional.dropout(layer_input, self.dropout,
                                                          training=True)
        return layer_input, finals

    @staticmethod
    def _pack_like(output, lengths, packed_input):
        """Pack a padded batch-major output with the input's batch_sizes and orderings."""
        sorted_indices = packed_input.sorted_indices
        if sorted_indices is not None:
            output = output.index_select(0, sorted_indices)
            lengths = lengths.index_select(0, sorted_indices)
        data = pack_padded_sequence(output, lengths, batch_first=True,
                                    enforce_sorted=True).data
        return PackedSequence(data, packed_input.batch_sizes, sorted_indices,
                              packed_input.unsorted_indices)


class LSTM(_FusedRNNMixin, torch.nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` on the fused kernels (see the module docstring).

    Same arguments as torch.nn.LSTM; ``proj_size`` must be 0 (ValueError otherwise)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        if proj_size != 0:
            raise ValueError(
                f"LSTM: proj_size={proj_size} is not supported: the fused LSTM kernel has no "
                "projection inside the recurrence; use proj_size=0 (or torch.nn.LSTM)")
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, proj_size=0, device=device, dtype=dtype)

    def _cell(self):
        return _LSTMCell()


class GRU(_FusedRNNMixin, torch.nn.GRU):
    """Drop-in ``torch.nn.GRU`` on the fused kernels (see the module docstring)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)

    def _cell(self):
        return _GRUCell()


class RNN(_FusedRNNMixin, torch.nn.RNN):
    """Drop-in ``torch.nn.RNN`` (Elman, ``nonlinearity`` "tanh" or "relu") on the fused
    kernels (see the module docstring)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers,
                         nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, device=device,
                         dtype=dtype)

    def _cell(self):
        return _RNNCell(self.nonlinearity)
