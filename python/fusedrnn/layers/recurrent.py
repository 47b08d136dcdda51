"""SimpleRNN, GRU and LSTM layers on the fused kernels of fusedrnn.ops, matching Keras 3.15.

Keras semantics reproduced here (keras/src/layers/rnn/rnn.py and the jax backend's rnn()):

- ``go_backwards`` consumes the sequence from the last step to the first and returns the
  outputs in that processing order (the kernels do the same);
- a masked step keeps the previous state and re-emits the previous output, or zeros when
  ``zero_output_for_mask`` is set (Keras' RNN default is False; Bidirectional sets it to
  ``return_sequences`` on its two layers); without ``return_sequences`` the output is the
  last entry of that output sequence, as Keras' ``last_output = outputs[-1]``;
- dropout draws one (batch, features) mask per call and reuses it at every step; the
  recurrent dropout mask (batch, units) is handed to the kernel when it supports it;
- ``stateful=True`` starts each call from the previous call's final states (truncated BPTT:
  no gradient flows into the previous batch) until ``reset_state()``.

Keras' per-gate dropout masks (its ``implementation=1`` path, used when
``recurrent_dropout > 0``) are replaced by one mask shared by all gates: the expectation is
the same, the random draws differ (Keras' draws cannot be reproduced anyway).
"""
from __future__ import annotations

import inspect

import numpy as np

from .. import activations as activations_mod
from .. import initializers as initializers_mod
from .. import ops
from .base import (
    Layer, bool_mask, check_bool, check_positive_int, check_rate, check_seed, dropout_keep_mask,
    float_input, register,
)

__all__ = ["SimpleRNN", "GRU", "LSTM"]

# Keras constructor arguments we accept only with their default (no regularizers/constraints).
_KERAS_ONLY_DEFAULTS = {
    "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
    "activity_regularizer": None, "kernel_constraint": None, "recurrent_constraint": None,
    "bias_constraint": None,
}


def _op(kind: str, direction: str):
    return getattr(ops, f"{kind}_{direction}", None)


def op_supports_recurrent_dropout(kind: str) -> bool:
    """Whether fusedrnn.ops.<kind>_forward takes a ``recurrent_dropout_mask`` keyword."""
    forward = _op(kind, "forward")
    if forward is None:
        return False
    return "recurrent_dropout_mask" in inspect.signature(forward).parameters


def _kernel_activation(identifier, argname):
    """An activation the fused kernels implement, as an Activation object."""
    activation = activations_mod.get(identifier, argname)
    if activation.name not in activations_mod.KERNEL_ACTIVATIONS:
        raise ValueError(
            f"{argname}: the fused recurrent kernels support only "
            f"{sorted(activations_mod.KERNEL_ACTIVATIONS)} (or None), got {activation.name!r}"
        )
    return activation


class _RNNTape:
    """What backward() needs from one training forward pass."""

    __slots__ = ("cache", "input_dropout", "user_state", "steps")

    def __init__(self, cache, input_dropout, user_state, steps):
        self.cache = cache
        self.input_dropout = input_dropout  # (batch, features) multipliers or None
        self.user_state = user_state        # True when initial_state came from the caller
        self.steps = steps


class _RNN(Layer):
    """Shared machinery of the three recurrent layers; subclasses set the cell specifics."""

    supports_masking = True
    _kind = ""           # "lstm" | "gru" | "simple_rnn": selects fusedrnn.ops functions
    _gates = 1           # gate blocks in kernel / recurrent_kernel
    _state_names = ("h",)

    def __init__(self, units, *, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, use_cudnn="auto", **kwargs):
        for key, default in _KERAS_ONLY_DEFAULTS.items():
            if key in kwargs:
                value = kwargs.pop(key)
                if value is not default:
                    raise NotImplementedError(
                        f"{type(self).__name__}: {key}={value!r} is not supported by fusedrnn"
                    )
        if kwargs.pop("implementation", 2) not in (1, 2):
            raise ValueError(f"{type(self).__name__}: implementation must be 1 or 2")
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "units")
        self.activation = _kernel_activation(activation, "activation")
        self.use_bias = check_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers_mod.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers_mod.get(recurrent_initializer,
                                                          "recurrent_initializer")
        self.bias_initializer = initializers_mod.get(bias_initializer, "bias_initializer")
        self.dropout = check_rate(dropout, "dropout")
        self.recurrent_dropout = check_rate(recurrent_dropout, "recurrent_dropout")
        if self.recurrent_dropout > 0 and not op_supports_recurrent_dropout(self._kind):
            raise NotImplementedError(
                f"{type(self).__name__}: recurrent_dropout={recurrent_dropout} needs "
                f"fusedrnn.ops.{self._kind}_forward(recurrent_dropout_mask=...), which this build "
                "does not have; use recurrent_dropout=0"
            )
        self.seed = check_seed(seed)
        self._rng = np.random.default_rng(self.seed) if self.seed is not None else None
        self.return_sequences = check_bool(return_sequences, "return_sequences")
        self.return_state = check_bool(return_state, "return_state")
        self.go_backwards = check_bool(go_backwards, "go_backwards")
        self.stateful = check_bool(stateful, "stateful")
        if unroll:
            raise ValueError(
                f"{type(self).__name__}: unroll=True is not supported: the fused kernel runs the "
                "whole time loop in compiled code; use unroll=False"
            )
        self.unroll = False
        self.zero_output_for_mask = check_bool(zero_output_for_mask, "zero_output_for_mask")
        if use_cudnn not in ("auto", False):
            raise ValueError(
                f"{type(self).__name__}: use_cudnn={use_cudnn!r}: cuDNN is not available on this "
                "CPU implementation; use 'auto' or False"
            )
        self.states = None           # stateful: list of (batch, units) arrays
        self._stateful_batch = None
        self._input_dim = None

    # ---------------------------------------------------------------- build & weights
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initial_value(self, shape, dtype):
        return self.bias_initializer(shape, dtype)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected an input shape (batch, time, features) with known "
                f"features, got {input_shape}"
            )
        self._input_dim = int(input_shape[-1])
        if self.stateful:
            if input_shape[0] is None:
                raise ValueError(
                    f"{self.name}: stateful=True needs a static batch size; got input shape "
                    f"{input_shape} (give Input(batch_size=...))"
                )
            self._stateful_batch = int(input_shape[0])
        width = self._gates * self.units
        self.kernel = self.add_weight("kernel", (self._input_dim, width), self.kernel_initializer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, width),
                                                self.recurrent_initializer)
        self.bias = (self.add_weight("bias", self._bias_shape(), self._bias_initial_value)
                     if self.use_bias else None)
        super().build(input_shape)

    # ---------------------------------------------------------------- shapes & masks
    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[0], input_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output] + [(batch, self.units) for _ in self._state_names]
        return output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None for _ in self._state_names]
        return output_mask

    # ---------------------------------------------------------------- state
    def reset_state(self):
        """Zero the states kept by a stateful layer (Keras' reset_state)."""
        if self.states is not None:
            for state in self.states:
                state[...] = 0

    reset_states = reset_state  # Keras' compatibility alias

    def _initial_states(self, initial_state, batch):
        """(states tuple or None, whether the caller gave them)."""
        count = len(self._state_names)
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            if len(initial_state) != count:
                raise ValueError(
                    f"{self.name}: initial_state expected {count} array(s) "
                    f"({', '.join(self._state_names)}) of shape (batch, units) = "
                    f"({batch}, {self.units}), got {len(initial_state)}"
                )
            states = []
            for k, state in enumerate(initial_state):
                array = float_input(state, self.dtype, f"initial_state[{k}]", ndim=2)
                if array.shape != (batch, self.units):
                    raise ValueError(
                        f"{self.name}: initial_state[{k}] expected shape (batch, units) = "
                        f"({batch}, {self.units}), got {array.shape}"
                    )
                states.append(array)
            return tuple(states), True
        if self.stateful:
            expected = self._stateful_batch if self._stateful_batch is not None else batch
            if batch != expected:
                raise ValueError(
                    f"{self.name}: stateful layer built for batch size {expected}, got inputs "
                    f"with batch size {batch}"
                )
            self._stateful_batch = batch
            if self.states is not None:
                return tuple(s.copy() for s in self.states), False
        return None, False

    # ---------------------------------------------------------------- computation
    def _kernel_functions(self):
        forward, backward = _op(self._kind, "forward"), _op(self._kind, "backward")
        if forward is None or backward is None:
            raise NotImplementedError(
                f"{type(self).__name__}: fusedrnn.ops.{self._kind}_forward/backward are not "
                "available in this build of fusedrnn"
            )
        return forward, backward

    def _op_options(self):
        """Cell-specific keyword arguments of the op (activations, reset_after)."""
        return {"activation": self.activation.name}

    def _op_state_argument(self, states):
        return states[0]

    def forward(self, inputs, *, mask=None, training=False, initial_state=None):
        x = float_input(inputs, self.dtype, "inputs", ndim=3)
        if not self.built:
            self.build((None if not self.stateful else x.shape[0],) + x.shape[1:])
        batch, steps, features = x.shape
        if features != self._input_dim:
            raise ValueError(
                f"{self.name}: inputs expected {self._input_dim} features (the last axis), got "
                f"shape {x.shape}"
            )
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        mask = bool_mask(mask, (batch, steps))
        states, user_state = self._initial_states(initial_state, batch)
        forward_op, _ = self._kernel_functions()

        input_dropout = None
        if training and self.dropout > 0:
            input_dropout = dropout_keep_mask(self._rng, (batch, features), self.dropout, x.dtype)
            x = x * input_dropout[:, None, :]
        options = self._op_options()
        if training and self.recurrent_dropout > 0:
            options["recurrent_dropout_mask"] = dropout_keep_mask(
                self._rng, (batch, self.units), self.recurrent_dropout, x.dtype)
        result = forward_op(
            x, self.kernel, self.recurrent_kernel, self.bias,
            initial_state=None if states is None else self._op_state_argument(states),
            mask=mask, go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask, training=bool(training), **options,
        )
        sequence = result.outputs
        final_states = list(result[1:1 + len(self._state_names)])
        # Keras' last_output is the last entry of the (processing-order) output sequence
        output = sequence if self.return_sequences else sequence[:, -1].copy()
        if self.stateful:
            self.states = [s.copy() for s in final_states]
        outputs = [output, *final_states] if self.return_state else output
        tape = None
        if training:
            tape = _RNNTape(result.cache, input_dropout, user_state, steps)
        return outputs, tape

    _skips_input_gradient = True

    def backward(self, tape, d_outputs, input_gradient=True):
        """Gradients of one forward call: (d_inputs, d_initial_state, d_weights).  With
        input_gradient=False the kernels skip the input's gradient (d_inputs is None)."""
        self._check_tape(tape, self)
        _, backward_op = self._kernel_functions()
        count = len(self._state_names)
        if self.return_state:
            if not isinstance(d_outputs, (list, tuple)) or len(d_outputs) != 1 + count:
                raise ValueError(
                    f"{self.name}: d_outputs expected a list of {1 + count} gradients "
                    "[output, *states] (None for zero)"
                )
            d_output, *d_states = d_outputs
        else:
            d_output, d_states = d_outputs, [None] * count
        d_states = [None if d is None else np.asarray(d, self.dtype) for d in d_states]
        d_sequence = None
        if d_output is not None:
            d_output = np.asarray(d_output, self.dtype)
            if self.return_sequences:
                d_sequence = d_output
            elif self.zero_output_for_mask:
                # the output is the last written step, which may be zeros: not h_n
                d_sequence = np.zeros((d_output.shape[0], tape.steps, self.units), self.dtype)
                d_sequence[:, -1] = d_output
            else:
                # without zero_output_for_mask, the last output *is* the final h
                d_states[0] = d_output if d_states[0] is None else d_states[0] + d_output
        grads = backward_op(tape.cache, d_sequence, *d_states, input_gradient=input_gradient)
        d_inputs = grads.x
        if d_inputs is not None and tape.input_dropout is not None:
            d_inputs = d_inputs * tape.input_dropout[:, None, :]
        d_initial = None
        if tape.user_state:
            d_initial = [getattr(grads, f"{name}0") for name in self._state_names]
        by_id = {id(self.kernel): grads.kernel, id(self.recurrent_kernel): grads.recurrent_kernel}
        if self.bias is not None:
            by_id[id(self.bias)] = grads.bias
        return d_inputs, d_initial, self._weight_grads(by_id)

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "activation": activations_mod.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers_mod.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers_mod.serialize(self.recurrent_initializer),
            "bias_initializer": initializers_mod.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        })
        return config


@register
class SimpleRNN(_RNN):
    """Fully-connected RNN: ``h_t = activation(x_t W + h_{t-1} U + b)`` (keras.layers.SimpleRNN).

    Weights (get_weights order): kernel (features, units), recurrent_kernel (units, units),
    bias (units,)."""

    _kind = "simple_rnn"
    _gates = 1
    _state_names = ("h",)

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kwargs):
        super().__init__(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
            return_state=return_state, go_backwards=go_backwards, stateful=stateful,
            unroll=unroll, **kwargs)


@register
class GRU(_RNN):
    """Gated recurrent unit (keras.layers.GRU), gate order z, r, h.

    Weights: kernel (features, 3*units), recurrent_kernel (units, 3*units), bias
    (2, 3*units) [input; recurrent] with reset_after=True (Keras' default), else (3*units,)."""

    _kind = "gru"
    _gates = 3
    _state_names = ("h",)

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, reset_after=True, **kwargs):
        super().__init__(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
            return_state=return_state, go_backwards=go_backwards, stateful=stateful,
            unroll=unroll, **kwargs)
        self.recurrent_activation = _kernel_activation(recurrent_activation, "recurrent_activation")
        self.reset_after = check_bool(reset_after, "reset_after")

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _op_options(self):
        return {"activation": self.activation.name,
                "recurrent_activation": self.recurrent_activation.name,
                "reset_after": self.reset_after}

    def get_config(self):
        config = super().get_config()
        config["recurrent_activation"] = activations_mod.serialize(self.recurrent_activation)
        config["reset_after"] = self.reset_after
        return config


@register
class LSTM(_RNN):
    """Long short-term memory (keras.layers.LSTM), gate order i, f, c, o.

    Weights: kernel (features, 4*units), recurrent_kernel (units, 4*units), bias (4*units,).
    States: [h, c].  unit_forget_bias=True initialises the forget-gate bias to ones."""

    _kind = "lstm"
    _gates = 4
    _state_names = ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, **kwargs):
        super().__init__(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
            return_state=return_state, go_backwards=go_backwards, stateful=stateful,
            unroll=unroll, **kwargs)
        self.recurrent_activation = _kernel_activation(recurrent_activation, "recurrent_activation")
        self.unit_forget_bias = check_bool(unit_forget_bias, "unit_forget_bias")

    def _bias_initial_value(self, shape, dtype):
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype)
        units = self.units
        return np.concatenate([
            self.bias_initializer((units,), dtype),
            np.ones((units,), dtype),
            self.bias_initializer((2 * units,), dtype),
        ])

    def _op_options(self):
        return {"activation": self.activation.name,
                "recurrent_activation": self.recurrent_activation.name}

    def _op_state_argument(self, states):
        return tuple(states)

    def get_config(self):
        config = super().get_config()
        config["recurrent_activation"] = activations_mod.serialize(self.recurrent_activation)
        config["unit_forget_bias"] = self.unit_forget_bias
        return config
